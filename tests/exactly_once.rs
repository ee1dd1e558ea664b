//! Crash recovery, end to end: the `exactly_once` example (running totals per user from Kafka
//! to two-phase JSON-lines files, checkpointing every 200 ms) runs as a child process and is
//! killed with SIGKILL four times while it reads new input, every other time just after a
//! checkpoint barrier is due and as soon as a checkpoint is seen under way, and restarted each
//! time with the same checkpoint and output directories. The published files must hold every
//! input event's row exactly once, with the running totals of an uninterrupted run. The same
//! runs into a Kafka topic (transactions with the consumed offsets), with two workers sharing
//! key groups, and with tumbling windows checked against a batch computation.
//!
//! The example binary must be built and current: plain `cargo test` builds the examples
//! first; `cargo test --test exactly_once` does not, so run `cargo build --example
//! exactly_once` before it (the test fails if the binary is older than the sources).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sabot::checkpoint::{METADATA_FILE, verify};
use sabot::deps::rdkafka::ClientConfig;
use sabot::deps::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sabot::kafka::EmbeddedCluster;

const TOPIC: &str = "events";
const GROUP: &str = "exactly-once-test";
const PARTITIONS: usize = 4;
const USERS: usize = 50;
const EVENTS: usize = 20_000;
/// The input arrives in this many bursts: one before the first start, two around each kill,
/// the rest after the last restart.
const BURSTS: usize = 10;
const KILLS: usize = 4;
const CHECKPOINT_INTERVAL_MS: u64 = 200;
const SEED: u64 = 0x05AB_07E0;

/// One input event; `seq` numbers the events of a user from 1.
struct Event {
    user: String,
    seq: i64,
    amount: i64,
    ts: i64,
}

/// `EVENTS` events over `USERS` users in a random (seeded) interleaving.
fn generate(rng: &mut SmallRng) -> Vec<Event> {
    let mut next_seq = vec![0i64; USERS];
    (0..EVENTS)
        .map(|i| {
            let user = rng.random_range(0..USERS);
            next_seq[user] += 1;
            Event {
                user: format!("user-{user:02}"),
                seq: next_seq[user],
                amount: rng.random_range(-500..=1_000),
                ts: 1_700_000_000_000 + i as i64,
            }
        })
        .collect()
}

/// Produces `events` as JSON, keyed by user (a user's events stay in order in one partition).
fn produce(brokers: &str, events: &[Event]) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    for e in events {
        let payload = serde_json::json!({"user": e.user, "seq": e.seq, "amount": e.amount, "ts": e.ts}).to_string();
        let mut record = BaseRecord::to(TOPIC).key(&e.user).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// `<target>/debug/examples/exactly_once`, next to this test's `<target>/debug/deps/`; fails
/// if it is missing or older than the sources it is built from.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("the test runs from <target>/<profile>/deps");
    let binary = profile_dir.join("examples").join(format!("exactly_once{}", std::env::consts::EXE_SUFFIX));
    let build = "run `cargo build --example exactly_once` (plain `cargo test` builds the examples first)";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("the example binary {} is missing: {build}", binary.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["examples/exactly_once", "sabot/src", "sabot-macros/src", "sabot-jit/src"] {
        if let Some(source) = newer_file(&root.join(dir), built) {
            panic!("the example binary {} is older than {}: {build}", binary.display(), source.display());
        }
    }
    binary
}

/// A file under `dir` modified after `than`, if any.
fn newer_file(dir: &Path, than: SystemTime) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let path = entry.path();
        if path.is_dir() {
            newer_file(&path, than)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok().filter(|m| *m > than).map(|_| path)
        }
    })
}

/// One run of the worker process, its stderr (the tracing log) in a file.
struct Worker {
    run: usize,
    child: Child,
    log: PathBuf,
}

impl Worker {
    /// Starts a worker; with a worker id, as one of several sharing the checkpoint directory,
    /// publishing into `out/<id>`.
    fn spawn_as(run: usize, brokers: &str, dir: &Path, id: Option<&str>, extra: &[&str]) -> Worker {
        let log = dir.join(format!("worker-{}{run}.log", id.map_or(String::new(), |id| format!("{id}-"))));
        let stderr = File::create(&log).unwrap();
        let mut command = Command::new(example_binary());
        if let Some(id) = id {
            command.args(["--worker-id", id]);
        }
        if !extra.contains(&"--output-topic") {
            command.arg("--output-dir").arg(dir.join("out").join(id.unwrap_or_default()));
        }
        let child = command
            .args(extra)
            .args(["--broker", brokers, "--topic", TOPIC, "--group", GROUP])
            .arg("--checkpoint-dir")
            .arg(dir.join("checkpoints"))
            .args(["--checkpoint-interval-ms", &CHECKPOINT_INTERVAL_MS.to_string(), "--parallelism", "2"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the worker process");
        Worker { run, child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test with the worker's log if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll the worker") {
            panic!("worker run {} exited unexpectedly ({status})\n{}", self.run, self.log_text());
        }
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the worker");
        self.child.wait().expect("reap the worker");
    }

    /// Sends `signal` (e.g. `STOP`) to the worker.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits for the worker to exit by itself, at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll the worker") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits for the exit, at most `timeout`.
    fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll the worker") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Kills the running worker when the test ends (also on a failed assertion) and then prints
/// the logs of every run.
struct Runs {
    current: Option<Worker>,
    logs: Vec<PathBuf>,
}

impl Drop for Runs {
    fn drop(&mut self) {
        if let Some(worker) = &mut self.current {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
        if std::thread::panicking() {
            for (run, log) in self.logs.iter().enumerate() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!("----- log of worker run {run} -----\n{text}");
            }
        }
    }
}

impl Runs {
    /// Starts the next run of the worker (named `id`, if several share the checkpoints).
    fn start(&mut self, brokers: &str, dir: &Path, id: Option<&str>, extra: &[&str]) {
        let worker = Worker::spawn_as(self.logs.len(), brokers, dir, id, extra);
        self.logs.push(worker.log.clone());
        self.current = Some(worker);
    }

    fn worker(&mut self) -> &mut Worker {
        self.current.as_mut().expect("a worker runs")
    }
}

/// One published output row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    user: String,
    count: i64,
    total: i64,
    seq: i64,
}

/// The rows of the published files (`part-*.jsonl` in `out`; `.pending/` is not output).
fn published(out: &Path) -> Vec<Row> {
    let Ok(entries) = std::fs::read_dir(out) else { return vec![] };
    let mut rows = vec![];
    for entry in entries.flatten() {
        let name = entry.file_name().into_string().unwrap();
        if !(name.starts_with("part-") && name.ends_with(".jsonl") && entry.path().is_file()) {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            rows.push(parse_row(&name, line));
        }
    }
    rows
}

/// One output row, a JSON object, read from `source` (a file or topic name).
fn parse_row(source: &str, line: &str) -> Row {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{source}: bad JSON line {line:?}: {e}"));
    let int = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{source}: no integer {k} in {line}"));
    let user = v["user"].as_str().unwrap_or_else(|| panic!("{source}: no user in {line}")).to_string();
    Row { user, count: int("count"), total: int("total"), seq: int("seq") }
}

/// The newest checkpoint directory with metadata, if any.
fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let mut complete: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("chk-")))
        .filter(|p| p.join(METADATA_FILE).is_file())
        .collect();
    complete.sort();
    complete.pop()
}

/// Whether a checkpoint directory without metadata or a prepared (not in-progress) pending
/// file exists: a checkpoint is between its first snapshot and the sink's commit.
fn checkpoint_under_way(checkpoints: &Path, out: &Path) -> bool {
    let incomplete = std::fs::read_dir(checkpoints).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("chk-") && !e.path().join(METADATA_FILE).exists())
    });
    incomplete
        || std::fs::read_dir(out.join(".pending"))
            .is_ok_and(|d| d.flatten().any(|e| !e.file_name().to_string_lossy().ends_with(".inprogress")))
}

/// What the output and checkpoint directories hold: published rows and files, pending files
/// (prepared or in progress), the newest complete checkpoint and checkpoints under way.
fn output_state(checkpoints: &Path, out: &Path) -> String {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir).map_or(vec![], |d| d.flatten().map(|e| e.file_name().to_string_lossy().into()).collect())
    };
    let files = names(out).iter().filter(|n| n.starts_with("part-")).count();
    let pending = names(&out.join(".pending"));
    let in_progress = pending.iter().filter(|n| n.ends_with(".inprogress")).count();
    let latest = latest_checkpoint(checkpoints).map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
    let incomplete = names(checkpoints)
        .iter()
        .filter(|n| n.starts_with("chk-") && !checkpoints.join(n).join(METADATA_FILE).is_file())
        .count();
    format!(
        "{} rows in {files} published files, {} prepared and {in_progress} in-progress files pending, latest \
         checkpoint {latest:?}, {incomplete} under way",
        published(out).len(),
        pending.len() - in_progress
    )
}

/// Sleeps until `offset` after the next multiple of the checkpoint interval in wall-clock
/// time: readers emit barrier `n` when interval `n` begins (ids are aligned to wall-clock
/// time), so a checkpoint is most likely under way then.
fn sleep_until_after_barrier(offset: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let next = (now / CHECKPOINT_INTERVAL_MS + 1) * CHECKPOINT_INTERVAL_MS;
    std::thread::sleep(Duration::from_millis(next - now) + offset);
}

fn wait_until(what: &str, timeout: Duration, runs: &mut Runs, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        runs.worker().assert_running();
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where the worker writes its rows.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// Two-phase-commit JSON-lines files in `out/`.
    Files,
    /// Kafka topic `OUTPUT_TOPIC`, in transactions.
    Topic,
}

const OUTPUT_TOPIC: &str = "totals";

/// Reads every message of `OUTPUT_TOPIC` in the background, as a `read_committed` consumer.
struct TopicRows {
    rows: Arc<Mutex<Vec<Row>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TopicRows {
    fn start(brokers: &str) -> TopicRows {
        use sabot::deps::rdkafka::consumer::{BaseConsumer, Consumer};
        use sabot::deps::rdkafka::{Message, Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "exactly-once-check")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut partitions = TopicPartitionList::new();
        for p in 0..PARTITIONS as i32 {
            partitions.add_partition_offset(OUTPUT_TOPIC, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&partitions).unwrap();
        let (rows, stop) = (Arc::<Mutex<Vec<Row>>>::default(), Arc::<AtomicBool>::default());
        let thread = {
            let (rows, stop) = (rows.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(message) = consumer.poll(Duration::from_millis(50)) else { continue };
                    let message = message.expect("read the output topic");
                    let line = std::str::from_utf8(message.payload().unwrap_or_default()).unwrap();
                    rows.lock().unwrap().push(parse_row(OUTPUT_TOPIC, line));
                }
            })
        };
        TopicRows { rows, stop, thread: Some(thread) }
    }

    fn rows(&self) -> Vec<Row> {
        self.rows.lock().unwrap().clone()
    }
}

impl Drop for TopicRows {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The rows of every event of `events`, per user, in `seq` order: (seq, running total).
fn expected_totals(events: &[Event]) -> BTreeMap<&str, Vec<(i64, i64)>> {
    let mut expected: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for e in events {
        let totals = expected.entry(&e.user).or_default();
        let total = totals.last().map_or(0, |(_, t)| *t) + e.amount;
        totals.push((e.seq, total));
    }
    expected
}

/// Asserts that `rows` hold one row per event of `events`, with the running totals of an
/// uninterrupted run. With `identical_repeats`, a row may appear more than once if every
/// copy is identical (the mock cluster shows aborted transactions' messages).
fn check_running_totals(rows: &[Row], events: &[Event], identical_repeats: bool) {
    let mut by_user: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        by_user.entry(&row.user).or_default().push(row);
    }
    let expected = expected_totals(events);
    assert_eq!(by_user.len(), expected.len(), "users in the output");
    for (user, want) in &expected {
        let mut got = by_user.remove(user).unwrap_or_else(|| panic!("no rows of {user}"));
        got.sort();
        if identical_repeats {
            got.dedup();
        }
        let counts: Vec<i64> = got.iter().map(|r| r.count).collect();
        assert_eq!(counts, (1..=want.len() as i64).collect::<Vec<_>>(), "{user}: counts 1..=n, once each");
        for (row, (seq, total)) in got.iter().zip(want) {
            assert_eq!((row.seq, row.total), (*seq, *total), "{user}: the row of count {}", row.count);
        }
    }
}

/// The number of distinct rows: every event's row counts once however often it was written.
fn distinct_rows(rows: Vec<Row>) -> usize {
    rows.into_iter().collect::<std::collections::BTreeSet<Row>>().len()
}

#[test]
fn killed_and_restarted_worker_publishes_every_row_exactly_once() {
    kill_and_restart(Output::Files);
}

/// As above, into a Kafka topic through transactions that carry the consumed offsets; every
/// other kill comes when a checkpoint is under way, including between its metadata and its
/// transaction commit. The mock cluster shows aborted transactions' messages to
/// `read_committed` consumers, so duplicates cannot be ruled out here: the test asserts that
/// no row is lost and that every copy of a row is identical (replays are deterministic).
#[test]
fn killed_and_restarted_worker_writing_to_kafka_loses_no_row() {
    kill_and_restart(Output::Topic);
}

fn kill_and_restart(output: Output) {
    let started = Instant::now();
    let elapsed = || started.elapsed().as_secs_f64();
    let mut rng = SmallRng::seed_from_u64(if output == Output::Files { SEED } else { SEED ^ 4 });
    let events = generate(&mut rng);
    let bursts: Vec<&[Event]> = events.chunks(EVENTS.div_ceil(BURSTS)).collect();
    assert_eq!(bursts.len(), BURSTS);

    let tmp = tempfile::tempdir().unwrap();
    let (checkpoints, out) = (tmp.path().join("checkpoints"), tmp.path().join("out"));
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS).unwrap();
    cluster.create_topic(OUTPUT_TOPIC, PARTITIONS).unwrap();
    let brokers = cluster.bootstrap_servers();
    let topic_rows = (output == Output::Topic).then(|| TopicRows::start(&brokers));
    let rows = || match &topic_rows {
        Some(topic) => topic.rows(),
        None => published(&out),
    };
    let extra: &[&str] = match output {
        Output::Files => &[],
        Output::Topic => &["--output-topic", OUTPUT_TOPIC],
    };
    // A checkpoint is under way: its state written but no metadata yet, the sink's files
    // prepared but not published, or (into Kafka) its metadata written but its transaction
    // not yet committed.
    let under_way = || {
        checkpoint_under_way(&checkpoints, &out)
            || (output == Output::Topic
                && latest_checkpoint(&checkpoints).is_some_and(|c| !c.join("_COMMITTED").exists()))
    };
    let mut runs = Runs { current: None, logs: vec![] };

    let mut remaining = bursts.iter();
    let mut produced = 0;
    let mut next_burst = |produced: &mut usize| {
        let burst = remaining.next().expect("a burst left");
        *produced += burst.len();
        *burst
    };
    produce(&brokers, next_burst(&mut produced));
    runs.start(&brokers, tmp.path(), None, extra);
    // The first kill comes once a checkpoint has published output, so every restart has
    // state and positions to restore.
    wait_until("the first checkpoint published output", Duration::from_secs(30), &mut runs, || {
        latest_checkpoint(&checkpoints).is_some() && !rows().is_empty()
    });
    eprintln!("first checkpoint after {:.1} s", elapsed());

    for kill in 0..KILLS {
        // Once the (restarted) worker has caught up with the input so far, the next burst
        // comes in slices of 200 every 100 ms, and the worker is killed while it reads them:
        // after a random delay, and every other time just after a checkpoint barrier is due.
        let before = produced;
        wait_until("the worker caught up", Duration::from_secs(30), &mut runs, || distinct_rows(rows()) >= before);
        let burst = next_burst(&mut produced);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for slice in burst.chunks(200) {
                    produce(&brokers, slice);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            std::thread::sleep(Duration::from_millis(rng.random_range(100..900)));
            if kill % 2 == 1 {
                sleep_until_after_barrier(Duration::from_millis(rng.random_range(0..5)));
                // Kill as soon as a checkpoint is seen under way, if that happens within
                // 300 ms.
                let deadline = Instant::now() + Duration::from_millis(300);
                while Instant::now() < deadline && !under_way() {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            runs.worker().assert_running();
            runs.worker().kill();
        });
        eprintln!("kill {kill} at {:.1} s: {} rows; {}", elapsed(), rows().len(), output_state(&checkpoints, &out));
        // The next burst arrives while the worker is down, or while it recovers.
        let down = kill % 2 == 0;
        if down {
            produce(&brokers, next_burst(&mut produced));
        }
        runs.start(&brokers, tmp.path(), None, extra);
        if !down {
            produce(&brokers, next_burst(&mut produced));
        }
    }
    while produced < EVENTS {
        produce(&brokers, next_burst(&mut produced));
    }

    wait_until("every row is written", Duration::from_secs(40), &mut runs, || distinct_rows(rows()) >= EVENTS);
    eprintln!("all {EVENTS} rows written after {:.1} s", elapsed());
    let worker = runs.worker();
    let exit = worker.terminate(Duration::from_secs(15)).expect("the worker exits within 15 s of SIGTERM");
    assert!(exit.success(), "the worker's exit: {exit}\n{}", worker.log_text());
    runs.current = None;

    // Exactly once: one row per event, the running totals of an uninterrupted run.
    let rows = rows();
    if output == Output::Files {
        assert_eq!(rows.len(), EVENTS, "published rows");
    }
    check_running_totals(&rows, &events, output == Output::Topic);
    eprintln!("{} rows read for {EVENTS} events", rows.len());

    // The last checkpoint is complete and valid and covers every message.
    let last = latest_checkpoint(&checkpoints).expect("a checkpoint at the end");
    let meta = verify(&last).unwrap_or_else(|e| panic!("{}: {e}", last.display()));
    let positions: Vec<(String, i32, i64)> =
        serde_json::from_value(meta.sources.get("kafka-0").cloned().expect("the Kafka positions")).unwrap();
    let read: i64 = positions.iter().map(|(_, _, next)| next).sum();
    assert_eq!(read as usize, EVENTS, "the last checkpoint's positions cover every message: {positions:?}");
    // Every restart restored a checkpoint.
    let mut discarded = 0;
    for (run, log) in runs.logs.iter().enumerate().skip(1) {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("restoring checkpoint"), "run {run} restored no checkpoint:\n{text}");
        discarded += usize::from(text.contains("transaction did not commit"));
    }
    eprintln!("{discarded} restarts discarded a checkpoint whose transaction had not committed");
    eprintln!("done in {:.1} s ({} runs)", elapsed(), runs.logs.len());
}

/// One input event as a Sabot record, to write the topic partitioned by user with Sabot's
/// partitioner (each partition is then a key group of the running totals).
#[derive(sabot::Record, Debug, Clone)]
struct EventRecord {
    user: String,
    seq: i64,
    amount: i64,
    ts: i64,
}

fn produce_partitioned(brokers: &str, events: &[Event]) {
    use sabot::prelude::*;
    let records: Vec<EventRecord> =
        events.iter().map(|e| EventRecord { user: e.user.clone(), seq: e.seq, amount: e.amount, ts: e.ts }).collect();
    let sink = sabot::kafka::KafkaSink::new(brokers, TOPIC)
        .format(sabot::kafka::format::JsonFormat::for_record::<EventRecord>())
        .partition_by(vec![col("user")]);
    Stream::from_records(records).to_kafka(sink).unwrap();
}

/// Two workers, each with its own output directory, one shared checkpoint directory: they
/// are killed in turn (SIGKILL, every other time during a checkpoint) and restarted. While one
/// is down, the other takes its partitions with their running totals from the dead worker's
/// last checkpoint; when it comes back, partitions move again. Together the published files
/// hold every event's row exactly once, with the totals of an uninterrupted run.
#[test]
fn two_workers_killed_in_turn_publish_every_row_exactly_once() {
    let started = Instant::now();
    let elapsed = || started.elapsed().as_secs_f64();
    let mut rng = SmallRng::seed_from_u64(SEED ^ 2);
    let events = generate(&mut rng);
    let bursts: Vec<&[Event]> = events.chunks(EVENTS.div_ceil(BURSTS)).collect();
    let tmp = tempfile::tempdir().unwrap();
    let ids = ["w1", "w2"];
    let outs: Vec<PathBuf> = ids.iter().map(|id| tmp.path().join("out").join(id)).collect();
    let all_published = || outs.iter().map(|o| published(o).len()).sum::<usize>();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut runs = [Runs { current: None, logs: vec![] }, Runs { current: None, logs: vec![] }];
    let start = |runs: &mut Runs, id: &str| runs.start(&brokers, tmp.path(), Some(id), &[]);

    let mut remaining = bursts.iter();
    let mut produced = 0;
    let mut next_burst = |produced: &mut usize| {
        let burst = remaining.next().expect("a burst left");
        *produced += burst.len();
        *burst
    };
    produce_partitioned(&brokers, next_burst(&mut produced));
    for (i, id) in ids.iter().enumerate() {
        start(&mut runs[i], id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !outs.iter().all(|o| !published(o).is_empty()) {
        runs.iter_mut().for_each(|r| r.worker().assert_running());
        assert!(Instant::now() < deadline, "both workers publish output");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("both workers published after {:.1} s", elapsed());

    for kill in 0..KILLS {
        let victim = kill % 2;
        let before = produced;
        let deadline = Instant::now() + Duration::from_secs(60);
        while all_published() < before {
            runs.iter_mut().for_each(|r| r.worker().assert_running());
            assert!(Instant::now() < deadline, "caught up before kill {kill}: {} of {before}", all_published());
            std::thread::sleep(Duration::from_millis(50));
        }
        let burst = next_burst(&mut produced);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for slice in burst.chunks(200) {
                    produce_partitioned(&brokers, slice);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            std::thread::sleep(Duration::from_millis(rng.random_range(100..900)));
            if kill % 2 == 1 {
                sleep_until_after_barrier(Duration::from_millis(rng.random_range(0..5)));
                let checkpoints = tmp.path().join("checkpoints").join(ids[victim]);
                let deadline = Instant::now() + Duration::from_millis(300);
                while Instant::now() < deadline && !checkpoint_under_way(&checkpoints, &outs[victim]) {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            runs[victim].worker().assert_running();
            runs[victim].worker().kill();
        });
        eprintln!("kill {kill} of {} at {:.1} s: {} rows published", ids[victim], elapsed(), all_published());
        // The survivor takes the dead worker's partitions (after the session timeout) and
        // reads the next burst alone; then the dead worker comes back.
        produce_partitioned(&brokers, next_burst(&mut produced));
        let deadline = Instant::now() + Duration::from_secs(60);
        while all_published() < produced {
            runs[1 - victim].worker().assert_running();
            assert!(Instant::now() < deadline, "the survivor took over: {} of {produced}", all_published());
            std::thread::sleep(Duration::from_millis(50));
        }
        start(&mut runs[victim], ids[victim]);
    }
    while produced < EVENTS {
        produce_partitioned(&brokers, next_burst(&mut produced));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while all_published() < EVENTS {
        runs.iter_mut().for_each(|r| r.worker().assert_running());
        assert!(Instant::now() < deadline, "every row published: {} of {EVENTS}", all_published());
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("all {EVENTS} rows published after {:.1} s", elapsed());
    for runs in &mut runs {
        let worker = runs.worker();
        let exit = worker.terminate(Duration::from_secs(15)).expect("the worker exits within 15 s of SIGTERM");
        assert!(exit.success(), "the worker's exit: {exit}\n{}", worker.log_text());
        runs.current = None;
    }

    let rows: Vec<Row> = outs.iter().flat_map(|o| published(o)).collect();
    assert_eq!(rows.len(), EVENTS, "published rows over both workers");
    check_running_totals(&rows, &events, false);
    // The store's newest holders of the key groups cover every message.
    let store = sabot::checkpoint::KeyGroupStore::new(tmp.path().join("checkpoints"), GROUP);
    let read: i64 = (0..PARTITIONS as i32)
        .map(|p| store.locate(TOPIC, p).unwrap().unwrap_or_else(|| panic!("no holder of partition {p}")).position)
        .sum();
    assert_eq!(read as usize, EVENTS, "the key groups' newest checkpoints cover every message");
    // State moved between the workers.
    let logs: String = runs.iter().flat_map(|r| &r.logs).map(|l| std::fs::read_to_string(l).unwrap()).collect();
    assert!(logs.contains("acquired key groups"), "no key group was handed over");
    eprintln!("done in {:.1} s", elapsed());
}

/// Window rows published by the `--window-ms` mode: (user, window start, count, total).
fn published_windows(out: &Path) -> Vec<(String, i64, i64, i64)> {
    let Ok(entries) = std::fs::read_dir(out) else { return vec![] };
    let mut rows = vec![];
    for entry in entries.flatten() {
        let name = entry.file_name().into_string().unwrap();
        if !(name.starts_with("part-") && name.ends_with(".jsonl") && entry.path().is_file()) {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let int = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{name}: no integer {k} in {line}"));
            rows.push((v["user"].as_str().unwrap().to_string(), int("window_start"), int("count"), int("total")));
        }
    }
    rows
}

/// Windowed results through crashes: the example's tumbling 1 s event-time windows (count and
/// total per user), killed with SIGKILL four times (every other time during a checkpoint) and
/// restarted. The published windows equal a batch computation over the same input: each
/// window exactly once, with its full contents.
#[test]
fn windowed_results_of_a_killed_worker_match_a_batch_computation() {
    const WINDOW_MS: i64 = 1_000;
    let mut rng = SmallRng::seed_from_u64(SEED ^ 3);
    let events = generate(&mut rng);
    let bursts: Vec<&[Event]> = events.chunks(EVENTS.div_ceil(BURSTS)).collect();
    let tmp = tempfile::tempdir().unwrap();
    let (checkpoints, out) = (tmp.path().join("checkpoints"), tmp.path().join("out"));
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut runs = Runs { current: None, logs: vec![] };
    let window_ms = WINDOW_MS.to_string();
    let start = |runs: &mut Runs| runs.start(&brokers, tmp.path(), None, &["--window-ms", &window_ms]);

    // The windows that must have fired once the first `n` events are read: those ending
    // 100 ms before the newest event (every partition has an event about that late).
    let fired = |n: usize| -> usize {
        let horizon = events[n - 1].ts - 100;
        let windows: std::collections::BTreeSet<(&str, i64)> = events[..n]
            .iter()
            .map(|e| (e.user.as_str(), e.ts.div_euclid(WINDOW_MS) * WINDOW_MS))
            .filter(|(_, start)| start + WINDOW_MS <= horizon)
            .collect();
        windows.len()
    };
    let mut bursts = bursts.into_iter();
    let mut produced = 0;
    let mut next_burst = |produced: &mut usize| {
        let burst = bursts.next().expect("a burst left");
        *produced += burst.len();
        burst
    };
    produce(&brokers, next_burst(&mut produced));
    start(&mut runs);
    for kill in 0..KILLS {
        // Kill while the (restarted) worker reads new input, once it has caught up.
        let due = fired(produced);
        wait_until("the worker caught up", Duration::from_secs(30), &mut runs, || published_windows(&out).len() >= due);
        let burst = next_burst(&mut produced);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for slice in burst.chunks(200) {
                    produce(&brokers, slice);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            std::thread::sleep(Duration::from_millis(rng.random_range(100..900)));
            if kill % 2 == 1 {
                sleep_until_after_barrier(Duration::from_millis(rng.random_range(0..5)));
                let deadline = Instant::now() + Duration::from_millis(300);
                while Instant::now() < deadline && !checkpoint_under_way(&checkpoints, &out) {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            runs.worker().assert_running();
            runs.worker().kill();
        });
        eprintln!("kill {kill}: {} windows published", published_windows(&out).len());
        produce(&brokers, next_burst(&mut produced));
        start(&mut runs);
    }
    while produced < EVENTS {
        produce(&brokers, next_burst(&mut produced));
    }
    // One event far ahead in every partition moves every partition's watermark past the
    // last window.
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for partition in 0..PARTITIONS as i32 {
        let flush = serde_json::json!({"user": "flush", "seq": 0, "amount": 0, "ts": 1_800_000_000_000i64}).to_string();
        producer.send(BaseRecord::<str, str>::to(TOPIC).payload(&flush).partition(partition)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let mut expected: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for e in &events {
        let window = e.ts.div_euclid(WINDOW_MS) * WINDOW_MS;
        let entry = expected.entry((e.user.clone(), window)).or_default();
        entry.0 += 1;
        entry.1 += e.amount;
    }
    wait_until("every window is published", Duration::from_secs(60), &mut runs, || {
        published_windows(&out).len() >= expected.len()
    });
    let worker = runs.worker();
    let exit = worker.terminate(Duration::from_secs(15)).expect("the worker exits within 15 s of SIGTERM");
    assert!(exit.success(), "the worker's exit: {exit}\n{}", worker.log_text());
    runs.current = None;

    let rows = published_windows(&out);
    assert_eq!(rows.len(), expected.len(), "one row per (user, window)");
    let got: BTreeMap<(String, i64), (i64, i64)> =
        rows.into_iter().map(|(user, start, count, total)| ((user, start), (count, total))).collect();
    assert_eq!(got.len(), expected.len(), "no window published twice");
    assert_eq!(got, expected, "every window's count and total as in a batch computation");
}

/// A zombie worker: `w1` is stopped (SIGSTOP) past its session timeout while input flows, so
/// the group expels it and `w2` takes its partitions over from its last checkpoint. When `w1`
/// resumes, its next checkpoint's fencing commit is rejected by the group coordinator: it
/// exits without completing that checkpoint, so it publishes nothing for the partitions it
/// lost. Restarted, it rejoins. The published files hold every row exactly once.
#[test]
fn a_stalled_worker_is_fenced_and_publishes_no_duplicate() {
    let mut rng = SmallRng::seed_from_u64(SEED ^ 5);
    let events = generate(&mut rng);
    let bursts: Vec<&[Event]> = events.chunks(EVENTS.div_ceil(4)).collect();
    let tmp = tempfile::tempdir().unwrap();
    let ids = ["w1", "w2"];
    let outs: Vec<PathBuf> = ids.iter().map(|id| tmp.path().join("out").join(id)).collect();
    let all_published = || outs.iter().map(|o| published(o).len()).sum::<usize>();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut runs = [Runs { current: None, logs: vec![] }, Runs { current: None, logs: vec![] }];
    let start = |runs: &mut Runs, id: &str| runs.start(&brokers, tmp.path(), Some(id), &[]);
    let wait_published = |runs: &mut [Runs; 2], rows: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while all_published() < rows {
            runs[1].worker().assert_running();
            assert!(Instant::now() < deadline, "{what}: {} of {rows} rows published", all_published());
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    produce_partitioned(&brokers, bursts[0]);
    for (i, id) in ids.iter().enumerate() {
        start(&mut runs[i], id);
    }
    wait_published(&mut runs, bursts[0].len(), "both workers started");
    let first_log = runs[0].logs[0].clone();

    // w1 stalls while it reads the next burst (with rows read but not yet checkpointed);
    // w2 takes its partitions once the session expires (2 s) and publishes their rows.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for slice in bursts[1].chunks(200) {
                produce_partitioned(&brokers, slice);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(300..900)));
        runs[0].worker().signal("STOP");
    });
    wait_published(&mut runs, bursts[0].len() + bursts[1].len(), "w2 took over");
    produce_partitioned(&brokers, bursts[2]);
    wait_published(&mut runs, EVENTS - bursts[3].len(), "w2 read the next burst");
    runs[0].worker().signal("CONT");
    let exit = runs[0].worker().wait_exit(Duration::from_secs(30)).expect("the zombie exits by itself");
    assert!(!exit.success(), "the zombie fails: {exit}");
    let log = std::fs::read_to_string(&first_log).unwrap();
    assert!(log.contains("no longer a member of the group"), "the zombie was fenced:\n{log}");
    runs[0].current = None;

    start(&mut runs[0], ids[0]);
    produce_partitioned(&brokers, bursts[3]);
    wait_published(&mut runs, EVENTS, "every row");
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would show up by now
    for runs in &mut runs {
        let worker = runs.worker();
        let exit = worker.terminate(Duration::from_secs(15)).expect("the worker exits within 15 s of SIGTERM");
        assert!(exit.success(), "the worker's exit: {exit}\n{}", worker.log_text());
        runs.current = None;
    }
    let rows: Vec<Row> = outs.iter().flat_map(|o| published(o)).collect();
    assert_eq!(rows.len(), EVENTS, "published rows over both workers");
    check_running_totals(&rows, &events, false);
}
