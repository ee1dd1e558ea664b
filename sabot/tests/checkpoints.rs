//! Checkpoints end to end: a keyed, stateful pipeline over Kafka (librdkafka's mock cluster,
//! real protocol) stops, restarts from its checkpoint directory, and goes on where it was:
//! state restored, reading resumed from the recorded offsets, nothing counted twice.
#![cfg(feature = "kafka")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sabot::checkpoint::{CheckpointConfig, CheckpointStorage};
use sabot::kafka::format::JsonFormat;
use sabot::kafka::{EmbeddedCluster, KafkaSource, StartOffset};
use sabot::operator::{KeyedProcessFunction, ProcessContext};
use sabot::prelude::*;
use sabot::state::{StateBackend, ValueState, ValueStateDescriptor};

#[derive(sabot::Record, Debug, Clone)]
pub struct Click {
    pub user: String,
    pub page: i64,
}

/// Clicks whose users are numbers of two widths (for a join whose key types differ).
#[derive(sabot::Record, Debug, Clone)]
pub struct NumberedClick {
    pub user: i64,
    pub page: i64,
}

#[derive(sabot::Record, Debug, Clone)]
pub struct ShortNumberedClick {
    pub user: i32,
    pub page: i64,
}

#[derive(sabot::Record, Debug, Clone, PartialEq)]
pub struct Count {
    pub user: String,
    pub clicks: i64,
    pub page: i64,
}

/// A running count of clicks per user, in keyed state.
#[derive(Default)]
pub struct CountClicks {
    count: Option<ValueState<i64>>,
}

impl KeyedProcessFunction for CountClicks {
    type In = Click;
    type Out = Count;

    fn open(&mut self, ctx: &mut ProcessContext<'_>) -> sabot::Result<()> {
        self.count = Some(ctx.state().value_state(&ValueStateDescriptor::new("clicks"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        click: ClickView<'_>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Vec<Count>,
    ) -> sabot::Result<()> {
        let state = self.count.expect("opened");
        let clicks = state.value(ctx.state())?.unwrap_or(0) + 1;
        state.update(ctx.state(), clicks)?;
        out.push(Count { user: click.user.to_string(), clicks, page: click.page });
        Ok(())
    }
}

fn produce_clicks(brokers: &str, pages: std::ops::Range<i64>) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    for page in pages {
        let payload = format!(r#"{{"user":"u{}","page":{page}}}"#, page % 7);
        let key = format!("k{page}");
        loop {
            match producer.send(BaseRecord::to("clicks").key(&key).payload(&payload)) {
                Ok(()) => break,
                Err((_, _)) => producer.poll(Duration::from_millis(10)),
            }
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Runs the counting pipeline until `expected` counts were delivered in total, then stops it;
/// returns the id of the checkpoint it restored (0 if none).
fn run_with_backend(
    kafka: sabot::kafka::KafkaConfig,
    checkpoints: &CheckpointConfig,
    delivered: &Arc<Mutex<Vec<Count>>>,
    expected: usize,
    backend: StateBackend,
) -> u64 {
    run_with(kafka, checkpoints, delivered, expected, backend, 2)
}

fn run_with(
    kafka: sabot::kafka::KafkaConfig,
    checkpoints: &CheckpointConfig,
    delivered: &Arc<Mutex<Vec<Count>>>,
    expected: usize,
    backend: StateBackend,
    parallelism: usize,
) -> u64 {
    let source = KafkaSource::with_config(kafka, "clicks")
        .group("counter")
        .start_offset(StartOffset::Earliest)
        .format(JsonFormat::for_record::<Click>());
    let stop = source.stop_handle();
    let pipeline = Stream::from_kafka(source)
        .unwrap()
        .with_config(ExecConfig::default().with_state_backend(backend))
        .with_parallelism(parallelism)
        .with_checkpointing(checkpoints.clone())
        .key_by(["user"])
        .process(CountClicks::default)
        .unwrap();
    let sink = delivered.clone();
    let runner = std::thread::spawn(move || {
        pipeline.for_each_batch(|batch| {
            sink.lock().unwrap().extend(Count::from_batch(&batch)?);
            Ok(())
        })
    });
    let completed_before = checkpoints.metrics.completed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered.lock().unwrap().len() < expected || checkpoints.metrics.completed() < completed_before + 1 {
        assert!(Instant::now() < deadline, "only {} of {expected} counts", delivered.lock().unwrap().len());
        if runner.is_finished() {
            panic!("the pipeline ended early: {:?}", runner.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.stop();
    runner.join().unwrap().unwrap();
    checkpoints.metrics.restored_id()
}

#[test]
fn a_stopped_pipeline_restarts_from_its_checkpoint_with_its_state_and_offsets() {
    stop_and_restart(|_| StateBackend::Memory);
}

/// RocksDB state is checkpointed as a RocksDB checkpoint (hard links); the instance's own
/// directory, which has moved on past the checkpoint, is reset from it on restore.
#[cfg(feature = "rocksdb")]
#[test]
fn a_stopped_pipeline_with_rocksdb_state_restarts_from_its_checkpoint() {
    let db = tempfile::tempdir().unwrap();
    let path = db.path().to_path_buf();
    stop_and_restart(move |_| StateBackend::RocksDb { path: path.clone() });
}

fn stop_and_restart(backend: impl Fn(usize) -> StateBackend) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("clicks", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = CheckpointConfig::new(dir.path()).with_interval(Duration::from_millis(100));
    let delivered = Arc::new(Mutex::new(vec![]));

    produce_clicks(&cluster.bootstrap_servers(), 0..300);
    let first_run = run_with_backend(cluster.config(), &checkpoints, &delivered, 300, backend(1));
    assert_eq!(first_run, 0, "nothing to restore the first time");
    let storage = CheckpointStorage::open(dir.path(), 3).unwrap();
    let (_, first) = storage.latest().unwrap().expect("a checkpoint after the first run");
    assert!(first.files.iter().any(|f| f.path.contains("/keyed/")), "keyed state saved: {:?}", first.files);
    let offsets: i64 = serde_json::from_value::<Vec<(String, i32, i64)>>(first.sources["kafka-0"].clone())
        .unwrap()
        .iter()
        .map(|(_, _, next)| next)
        .sum();
    assert_eq!(offsets, 300, "the last checkpoint covers every message read");

    produce_clicks(&cluster.bootstrap_servers(), 300..500);
    let restored = run_with_backend(cluster.config(), &checkpoints, &delivered, 500, backend(2));
    assert_eq!(restored, first.id, "the second run restored the first run's last checkpoint");

    // Every user's counts are exactly 1..=n over both runs: state carried over, no message
    // read twice, none skipped.
    let delivered = delivered.lock().unwrap();
    assert_eq!(delivered.len(), 500);
    let mut per_user: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for c in delivered.iter() {
        per_user.entry(c.user.clone()).or_default().push((c.clicks, c.page));
    }
    for (user, counts) in per_user {
        let mut clicks: Vec<i64> = counts.iter().map(|(c, _)| *c).collect();
        clicks.sort();
        let n = (0..500).filter(|p| format!("u{}", p % 7) == user).count() as i64;
        assert_eq!(clicks, (1..=n).collect::<Vec<_>>(), "{user}");
    }
}

#[test]
fn a_broker_outage_makes_the_pipeline_wait_and_lose_nothing() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("clicks", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = CheckpointConfig::new(dir.path()).with_interval(Duration::from_millis(100));
    let delivered = Arc::new(Mutex::new(vec![]));
    produce_clicks(&cluster.bootstrap_servers(), 0..200);

    let outage = {
        let watched = delivered.clone();
        let brokers = cluster.bootstrap_servers();
        let cluster = &cluster;
        std::thread::scope(|scope| {
            let during = scope.spawn(move || {
                // Once the first counts are out, the broker goes away for 2 s (within the
                // session timeout: a longer outage makes the group rebalance, and a partition
                // taken back resumes from its committed offset); new clicks are produced
                // after it is back.
                while watched.lock().unwrap().len() < 200 {
                    std::thread::sleep(Duration::from_millis(10));
                }
                cluster.set_broker_down(1, true).unwrap();
                std::thread::sleep(Duration::from_secs(2));
                cluster.set_broker_down(1, false).unwrap();
                produce_clicks(&brokers, 200..400);
            });
            let kafka = cluster.config().set("session.timeout.ms", "10000").set("heartbeat.interval.ms", "1000");
            let restored = run_with_backend(kafka, &checkpoints, &delivered, 400, StateBackend::Memory);
            during.join().unwrap();
            restored
        })
    };
    assert_eq!(outage, 0);
    let delivered = delivered.lock().unwrap();
    let mut per_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in delivered.iter() {
        per_user.entry(c.user.clone()).or_default().push(c.clicks);
    }
    assert_eq!(delivered.len(), 400, "every click counted once");
    for (user, mut clicks) in per_user {
        clicks.sort();
        let n = (0..400).filter(|p| format!("u{}", p % 7) == user).count() as i64;
        assert_eq!(clicks, (1..=n).collect::<Vec<_>>(), "{user}");
    }
}

/// A restart with another parallelism splits the keyed state anew: each instance keeps the
/// keys the hash exchange now sends it (Flink's rescaling from a checkpoint).
#[test]
fn keyed_state_follows_its_keys_when_the_parallelism_changes() {
    rescale(|| StateBackend::Memory);
}

/// RocksDB state is split anew too: each instance copies the keys it now owns out of every
/// old instance's RocksDB checkpoint.
#[cfg(feature = "rocksdb")]
#[test]
fn keyed_rocksdb_state_follows_its_keys_when_the_parallelism_changes() {
    let db = tempfile::tempdir().unwrap();
    let path = db.path().to_path_buf();
    rescale(move || StateBackend::RocksDb { path: path.clone() });
}

fn rescale(backend: impl Fn() -> StateBackend) {
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("clicks", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = CheckpointConfig::new(dir.path()).with_interval(Duration::from_millis(100));
    let delivered = Arc::new(Mutex::new(vec![]));
    let mut produced = 0;
    for (round, parallelism) in [2, 3, 1].into_iter().enumerate() {
        produce_clicks(&cluster.bootstrap_servers(), produced..produced + 150);
        produced += 150;
        let restored = run_with(cluster.config(), &checkpoints, &delivered, produced as usize, backend(), parallelism);
        assert_eq!(restored > 0, round > 0, "round {round} restores the previous one's checkpoint");
    }
    let delivered = delivered.lock().unwrap();
    assert_eq!(delivered.len(), 450);
    let mut per_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in delivered.iter() {
        per_user.entry(c.user.clone()).or_default().push(c.clicks);
    }
    for (user, mut clicks) in per_user {
        clicks.sort();
        let n = (0..450).filter(|p| format!("u{}", p % 7) == user).count() as i64;
        assert_eq!(clicks, (1..=n).collect::<Vec<_>>(), "{user}: counts go on across parallelism 2, 3 and 1");
    }
}

/// Writes clicks `pages` to `topic` partitioned by user, as a Sabot repartition sink does:
/// each partition holds the users of one key group.
fn produce_clicks_by_user(kafka: sabot::kafka::KafkaConfig, topic: &str, pages: std::ops::Range<i64>) {
    let clicks: Vec<Click> = pages.map(|page| Click { user: format!("u{}", page % 11), page }).collect();
    let sink = sabot::kafka::KafkaSink::with_config(kafka, topic)
        .format(JsonFormat::for_record::<Click>())
        .partition_by(vec![col("user")]);
    Stream::from_records(clicks).to_kafka(sink).unwrap();
}

/// One worker of the key-group test: a keyed count reading `clicks-by-user` in group
/// `counter`, checkpointing into the store shared by the workers.
struct Worker {
    stop: sabot::kafka::StopHandle,
    metrics: Arc<sabot::kafka::SourceMetrics>,
    checkpoints: CheckpointConfig,
    runner: std::thread::JoinHandle<sabot::Result<()>>,
}

impl Worker {
    fn start(
        kafka: sabot::kafka::KafkaConfig,
        store: &std::path::Path,
        name: &str,
        backend: StateBackend,
        out: &Arc<Mutex<Vec<(String, Count)>>>,
    ) -> Self {
        let source = KafkaSource::with_config(kafka, "clicks-by-user")
            .group("counter")
            .start_offset(StartOffset::Earliest)
            .format(JsonFormat::for_record::<Click>())
            .partitioned_by(vec![col("user")]);
        let (stop, metrics) = (source.stop_handle(), source.metrics());
        let checkpoints = CheckpointConfig::new(store).shared_by(name).with_interval(Duration::from_millis(200));
        let pipeline = Stream::from_kafka(source)
            .unwrap()
            .with_config(ExecConfig::default().with_state_backend(backend))
            .with_parallelism(2)
            .with_checkpointing(checkpoints.clone())
            .key_by(["user"])
            .process(CountClicks::default)
            .unwrap();
        let (out, name) = (out.clone(), name.to_string());
        let runner = std::thread::spawn(move || {
            pipeline.for_each_batch(|batch| {
                out.lock().unwrap().extend(Count::from_batch(&batch)?.into_iter().map(|c| (name.clone(), c)));
                Ok(())
            })
        });
        Worker { stop, metrics, checkpoints, runner }
    }

    fn stop(self) {
        self.stop.stop();
        self.runner.join().unwrap().unwrap();
    }
}

/// Window rows of the windowed key-group test: (worker, user, window start, count).
type WindowRows = Arc<Mutex<Vec<(String, String, i64, i64)>>>;

impl Worker {
    /// A worker counting clicks per user in `window` windows (the page number is the event
    /// time), keeping its window state in key groups.
    fn start_windowed(
        kafka: sabot::kafka::KafkaConfig,
        store: &std::path::Path,
        name: &str,
        windows: Windows,
        backend: StateBackend,
        out: &WindowRows,
    ) -> Self {
        let source = KafkaSource::with_config(kafka, "clicks-by-user")
            .group("windows")
            .start_offset(StartOffset::Earliest)
            .format(JsonFormat::for_record::<Click>())
            .watermarks("page", sabot::window::WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
            // Between the test's phases no partition counts as idle: a window fires only
            // once every partition has passed it.
            .idle_timeout(Duration::from_secs(3600))
            .partitioned_by(vec![col("user")]);
        let (stop, metrics) = (source.stop_handle(), source.metrics());
        let checkpoints = CheckpointConfig::new(store).shared_by(name).with_interval(Duration::from_millis(200));
        let pipeline = Stream::from_kafka(source)
            .unwrap()
            .with_config(ExecConfig::default().with_parallelism(2).with_state_backend(backend))
            .with_checkpointing(checkpoints.clone());
        let pipeline = windows.count_clicks(pipeline.key_by(["user"])).unwrap();
        let (out, name) = (out.clone(), name.to_string());
        let runner = std::thread::spawn(move || {
            pipeline.for_each_batch(|batch| {
                let users = batch
                    .column_by_name("user")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<sabot::deps::arrow::array::StringArray>()
                    .unwrap()
                    .clone();
                let starts = sabot::deps::arrow::compute::cast(
                    batch.column_by_name("window_start").unwrap(),
                    &sabot::deps::arrow::datatypes::DataType::Int64,
                )?;
                let starts = starts.as_any().downcast_ref::<sabot::deps::arrow::array::Int64Array>().unwrap().clone();
                let counts = batch
                    .column_by_name("count")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<sabot::deps::arrow::array::Int64Array>()
                    .unwrap()
                    .clone();
                let mut out = out.lock().unwrap();
                for row in 0..batch.num_rows() {
                    out.push((name.clone(), users.value(row).to_string(), starts.value(row), counts.value(row)));
                }
                Ok(())
            })
        });
        Worker { stop, metrics, checkpoints, runner }
    }
}

/// Runs `window` windows (page number as event time) counting clicks per user over `clicks`
/// with `parallelism` until `expected` window rows were delivered and a checkpoint completed
/// after that, then stops; returns the restored checkpoint's id.
fn run_windowed(
    kafka: sabot::kafka::KafkaConfig,
    checkpoints: &CheckpointConfig,
    out: &WindowRows,
    expected: usize,
    parallelism: usize,
    windows: Windows,
    backend: StateBackend,
) -> u64 {
    let source = KafkaSource::with_config(kafka, "clicks")
        .group("window-counter")
        .start_offset(StartOffset::Earliest)
        .format(JsonFormat::for_record::<Click>())
        .watermarks("page", sabot::window::WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
        .idle_timeout(Duration::from_secs(3600));
    let stop = source.stop_handle();
    let pipeline = Stream::from_kafka(source)
        .unwrap()
        .with_config(ExecConfig::default().with_parallelism(parallelism).with_state_backend(backend))
        .with_checkpointing(checkpoints.clone());
    let pipeline = windows.count_clicks(pipeline.key_by(["user"])).unwrap();
    let sink = out.clone();
    let runner = std::thread::spawn(move || {
        pipeline.for_each_batch(|batch| {
            use sabot::deps::arrow::array::AsArray;
            use sabot::deps::arrow::datatypes::{DataType, Int64Type};
            let users = batch.column_by_name("user").unwrap().as_string::<i32>().clone();
            let starts =
                sabot::deps::arrow::compute::cast(batch.column_by_name("window_start").unwrap(), &DataType::Int64)?;
            let counts = batch.column_by_name("count").unwrap().as_primitive::<Int64Type>().clone();
            let mut sink = sink.lock().unwrap();
            for row in 0..batch.num_rows() {
                let start = starts.as_primitive::<Int64Type>().value(row);
                sink.push((String::new(), users.value(row).to_string(), start, counts.value(row)));
            }
            Ok(())
        })
    });
    let completed_before = checkpoints.metrics.completed();
    wait_for("the windows of this round", || {
        assert!(!runner.is_finished(), "the pipeline ended early");
        out.lock().unwrap().len() >= expected && checkpoints.metrics.completed() > completed_before + 1
    });
    stop.stop();
    runner.join().unwrap().unwrap();
    checkpoints.metrics.restored_id()
}

/// How a window kind groups the test's clicks (page number = event time; user
/// `u{page % users}`): a click's window start, and the page by which a window has fired.
struct Windowing {
    windows: Windows,
    start_of: fn(page: i64, users: i64) -> i64,
    fired_by: fn(start: i64, users: i64) -> i64,
}

/// The windows of a [`Windowing`].
#[derive(Clone, Copy)]
enum Windows {
    Spec(sabot::window::WindowSpec),
    /// A global window per key with a purging count trigger.
    GlobalCount(u64),
}

impl Windows {
    /// The clicks of each window of `keyed`, counted.
    fn count_clicks(self, keyed: sabot::stream::KeyedStream) -> sabot::Result<Stream<Untyped>> {
        match self {
            Windows::Spec(spec) => keyed.window(spec).aggregate([count_all()]),
            Windows::GlobalCount(n) => keyed.global_window(sabot::window::CountTrigger(n)).aggregate([count_all()]),
        }
    }
}

/// Tumbling windows of 100 pages: with rounds of 150 pages, windows span restarts.
fn tumbling() -> Windowing {
    Windowing {
        windows: Windows::Spec(sabot::window::WindowSpec::tumbling(Duration::from_millis(100))),
        start_of: |page, _| page / 100 * 100,
        fired_by: |start, _| start + 100,
    }
}

/// Sessions with a gap of 5 pages: a user's clicks are 11 pages apart, so each click is
/// a session of its own, open until the watermark passes it by 5.
fn sessions() -> Windowing {
    Windowing {
        windows: Windows::Spec(sabot::window::WindowSpec::session(Duration::from_millis(5))),
        start_of: |page, _| page,
        fired_by: |start, _| start + 5,
    }
}

/// Count windows of 5 clicks per user (a user's clicks arrive in page order: one
/// partition): the `k`-th click (from 0) of a user is in the window starting at `k / 5 * 5`,
/// which fires with its 5th click.
fn counts() -> Windowing {
    Windowing {
        windows: Windows::Spec(sabot::window::WindowSpec::count(5)),
        start_of: |page, users| page / users / 5 * 5,
        fired_by: |start, users| (start + 5) * users,
    }
}

/// Global windows per user fired and purged by every 5th click: each spans a user's
/// clicks `5j..5j + 4` (from 0) and starts at the first one's page.
fn global_counts() -> Windowing {
    Windowing {
        windows: Windows::GlobalCount(5),
        start_of: |page, users| (page / users / 5 * 5) * users + page % users,
        fired_by: |start, users| start + 5 * users,
    }
}

/// The windows of the clicks `0..produced` (users `u{page % users}`) that must have fired, a
/// margin of pages before the newest, with their click counts.
fn due_windows(w: &Windowing, users: i64, produced: i64) -> BTreeMap<(String, i64), i64> {
    let mut all = all_windows(w, users, produced);
    all.retain(|(_, start), _| (w.fired_by)(*start, users) + 15 <= produced);
    all
}

/// Every window of the clicks `0..produced`, with its click count.
fn all_windows(w: &Windowing, users: i64, produced: i64) -> BTreeMap<(String, i64), i64> {
    let mut all: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for page in 0..produced {
        *all.entry((format!("u{}", page % users), (w.start_of)(page, users))).or_default() += 1;
    }
    all
}

/// Every fired window once, with all its clicks among `0..produced`, and every due one fired.
fn check_windows(out: &[(String, String, i64, i64)], w: &Windowing, users: i64, produced: i64) {
    let mut fired: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (_, user, start, count) in out {
        assert!(fired.insert((user.clone(), *start), *count).is_none(), "{user} window {start} fired twice");
    }
    let all = all_windows(w, users, produced);
    for (window, count) in &fired {
        assert_eq!(all.get(window), Some(count), "window {window:?} holds all its clicks");
    }
    for window in due_windows(w, users, produced).keys() {
        assert!(fired.contains_key(window), "window {window:?} fired");
    }
}

/// Window state follows its key groups too: windows open when partitions move fire at their
/// new owner with the rows both workers saw, each exactly once, as a batch computation.
fn windows_follow_their_partitions(w: Windowing, backend: impl Fn(&str) -> StateBackend) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("clicks-by-user", 4).unwrap();
    let store = tempfile::tempdir().unwrap();
    let out: WindowRows = Arc::default();
    let due = |produced: i64| due_windows(&w, 11, produced).len();

    produce_clicks_by_user(cluster.config(), "clicks-by-user", 0..450);
    let first = Worker::start_windowed(cluster.config(), store.path(), "w1", w.windows, backend("w1"), &out);
    wait_for("the first worker's windows", || out.lock().unwrap().len() >= due(450));
    let second = Worker::start_windowed(cluster.config(), store.path(), "w2", w.windows, backend("w2"), &out);
    wait_for("the group to share the partitions", || {
        first.metrics.assigned_partitions() == 2 && second.metrics.assigned_partitions() == 2
    });
    produce_clicks_by_user(cluster.config(), "clicks-by-user", 450..850);
    wait_for("both workers' windows", || out.lock().unwrap().len() >= due(850));
    first.stop();
    wait_for("the second worker to own every partition", || second.metrics.assigned_partitions() == 4);
    produce_clicks_by_user(cluster.config(), "clicks-by-user", 850..1250);
    wait_for("the second worker's windows", || out.lock().unwrap().len() >= due(1250));
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would show up by now
    second.stop();

    let out = out.lock().unwrap();
    check_windows(&out, &w, 11, 1250);
    let by = |worker: &str| out.iter().filter(|(w, ..)| w == worker).count();
    assert!(by("w1") > 0 && by("w2") > 0, "both workers fired windows");
}

#[test]
fn window_state_follows_its_partitions_when_workers_join_and_leave() {
    windows_follow_their_partitions(tumbling(), |_| StateBackend::Memory);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_window_state_follows_its_partitions_when_workers_join_and_leave() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_path_buf();
    windows_follow_their_partitions(tumbling(), move |worker| StateBackend::RocksDb { path: root.join(worker) });
}

#[test]
fn session_state_follows_its_partitions_when_workers_join_and_leave() {
    windows_follow_their_partitions(sessions(), |_| StateBackend::Memory);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_session_state_follows_its_partitions_when_workers_join_and_leave() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_path_buf();
    windows_follow_their_partitions(sessions(), move |worker| StateBackend::RocksDb { path: root.join(worker) });
}

#[test]
fn count_window_state_follows_its_partitions_when_workers_join_and_leave() {
    windows_follow_their_partitions(counts(), |_| StateBackend::Memory);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_count_window_state_follows_its_partitions_when_workers_join_and_leave() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_path_buf();
    windows_follow_their_partitions(counts(), move |worker| StateBackend::RocksDb { path: root.join(worker) });
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_global_window_state_follows_its_partitions_when_workers_join_and_leave() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_path_buf();
    windows_follow_their_partitions(global_counts(), move |worker| StateBackend::RocksDb { path: root.join(worker) });
}

#[test]
fn global_window_state_follows_its_partitions_when_workers_join_and_leave() {
    windows_follow_their_partitions(global_counts(), |_| StateBackend::Memory);
}

/// Windows rescale on restart too: each new instance takes the state of the keys the hash
/// exchange now routes to it, from every old instance's snapshot; every window fires once
/// with all its rows across parallelism 2, 3 and 1.
fn windows_follow_their_keys(w: Windowing, backend: impl Fn() -> StateBackend) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("clicks", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = CheckpointConfig::new(dir.path()).with_interval(Duration::from_millis(100));
    let out: WindowRows = Arc::default();
    let mut produced = 0;
    for (round, parallelism) in [2, 3, 1].into_iter().enumerate() {
        // Partitioned by user: a user's clicks arrive in order (count windows depend on it).
        produce_clicks_by_user(cluster.config(), "clicks", produced..produced + 150);
        produced += 150;
        let expected = due_windows(&w, 11, produced).len();
        let restored = run_windowed(cluster.config(), &checkpoints, &out, expected, parallelism, w.windows, backend());
        assert_eq!(restored > 0, round > 0, "round {round} restores the previous one's checkpoint");
    }
    check_windows(&out.lock().unwrap(), &w, 11, produced);
}

#[test]
fn window_state_follows_its_keys_when_the_parallelism_changes() {
    windows_follow_their_keys(tumbling(), || StateBackend::Memory);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_window_state_follows_its_keys_when_the_parallelism_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocksdb");
    windows_follow_their_keys(tumbling(), move || StateBackend::RocksDb { path: path.clone() });
}

#[test]
fn session_state_follows_its_keys_when_the_parallelism_changes() {
    windows_follow_their_keys(sessions(), || StateBackend::Memory);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_session_state_follows_its_keys_when_the_parallelism_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocksdb");
    windows_follow_their_keys(sessions(), move || StateBackend::RocksDb { path: path.clone() });
}

#[test]
fn count_window_state_follows_its_keys_when_the_parallelism_changes() {
    windows_follow_their_keys(counts(), || StateBackend::Memory);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_count_window_state_follows_its_keys_when_the_parallelism_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocksdb");
    windows_follow_their_keys(counts(), move || StateBackend::RocksDb { path: path.clone() });
}

#[test]
fn global_window_state_follows_its_keys_when_the_parallelism_changes() {
    windows_follow_their_keys(global_counts(), || StateBackend::Memory);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_global_window_state_follows_its_keys_when_the_parallelism_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocksdb");
    windows_follow_their_keys(global_counts(), move || StateBackend::RocksDb { path: path.clone() });
}

/// Joined clicks: (user, left page, right page).
type Pairs = Arc<Mutex<Vec<(String, i64, i64)>>>;

/// A streaming join of the clicks of `left-clicks` and `right-clicks` by user (page number =
/// event time; user `u{page % 11}`, one click per page on each side).
#[derive(Clone, Copy)]
enum ClickJoin {
    /// Tumbling windows of 100 pages.
    Window,
    /// Right clicks within 20 pages before or after the left one.
    Interval,
    /// The latest right click at or before the left one.
    AsOf,
}

impl ClickJoin {
    fn join(self, left: Stream<Untyped>, right: Stream<Untyped>) -> sabot::Result<Stream<Untyped>> {
        match self {
            ClickJoin::Window => left.window_join(
                &right,
                ["user"],
                ["user"],
                sabot::window::WindowSpec::tumbling(Duration::from_millis(100)),
            ),
            ClickJoin::Interval => left.interval_join(&right, ["user"], ["user"], -20, 20),
            ClickJoin::AsOf => left.asof_join(&right, ["user"], ["user"], None),
        }
    }

    /// Every pair the join emits among pages `0..produced`; with `due`, only those it must
    /// have emitted by then (window joins and as-of joins wait for the watermark, a margin
    /// of pages behind the newest).
    fn pairs(self, produced: i64, due: bool) -> std::collections::BTreeSet<(String, i64, i64)> {
        let mut pairs = std::collections::BTreeSet::new();
        for l in 0..produced {
            let user = format!("u{}", l % 11);
            let (matches, ready): (Vec<i64>, bool) = match self {
                ClickJoin::Window => {
                    let start = l / 100 * 100;
                    ((start..(start + 100).min(produced)).collect(), start + 100 + 15 <= produced)
                }
                ClickJoin::Interval => (((l - 20).max(0)..(l + 21).min(produced)).collect(), true),
                ClickJoin::AsOf => (vec![l], l + 15 <= produced),
            };
            if due && !ready {
                continue;
            }
            for r in matches.into_iter().filter(|r| r % 11 == l % 11) {
                pairs.insert((user.clone(), l, r));
            }
        }
        pairs
    }
}

impl ClickJoin {
    /// Checks the pairs joined among pages `0..produced`: none twice, every due one, and
    /// only pairs the join matches.
    fn check_joined_once(self, out: &[(String, i64, i64)], produced: i64) {
        let joined: std::collections::BTreeSet<(String, i64, i64)> = out.iter().cloned().collect();
        assert_eq!(joined.len(), out.len(), "no pair joined twice");
        let due = self.pairs(produced, true);
        assert!(joined.is_superset(&due), "every due pair: {} missing", due.difference(&joined).count());
        assert!(joined.is_subset(&self.pairs(produced, false)), "only pairs the join matches");
    }
}

/// The rows of a join of clicks: (user, left page, right page if any).
fn joined_rows(batch: &sabot::deps::arrow::array::RecordBatch) -> Vec<(String, i64, Option<i64>)> {
    use sabot::deps::arrow::array::{Array, AsArray};
    use sabot::deps::arrow::datatypes::Int64Type;
    let users = batch.column_by_name("user").unwrap().as_string::<i32>();
    let left = batch.column_by_name("page").unwrap().as_primitive::<Int64Type>();
    let right = batch.column_by_name("page_right").unwrap().as_primitive::<Int64Type>();
    (0..batch.num_rows())
        .map(|row| (users.value(row).to_string(), left.value(row), right.is_valid(row).then(|| right.value(row))))
        .collect()
}

/// Runs `join` with `parallelism` until `expected` pairs were delivered and a checkpoint
/// completed after that, then stops; returns the restored checkpoint's id.
fn run_join(
    kafka: sabot::kafka::KafkaConfig,
    checkpoints: &CheckpointConfig,
    join: ClickJoin,
    out: &Pairs,
    expected: usize,
    parallelism: usize,
    backend: StateBackend,
) -> u64 {
    let side = |topic: &str| {
        KafkaSource::with_config(kafka.clone(), topic)
            .group(format!("join-{topic}"))
            .start_offset(StartOffset::Earliest)
            .format(JsonFormat::for_record::<Click>())
            .watermarks("page", sabot::window::WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
            .idle_timeout(Duration::from_secs(3600))
    };
    let (left, right) = (side("left-clicks"), side("right-clicks"));
    let stops = [left.stop_handle(), right.stop_handle()];
    let left = Stream::from_kafka(left)
        .unwrap()
        .with_config(ExecConfig::default().with_parallelism(parallelism).with_state_backend(backend))
        .with_checkpointing(checkpoints.clone());
    let pipeline = join.join(left, Stream::from_kafka(right).unwrap()).unwrap();
    let sink = out.clone();
    let runner = std::thread::spawn(move || {
        pipeline.for_each_batch(|batch| {
            let rows = joined_rows(&batch).into_iter().map(|(u, l, r)| (u, l, r.expect("an inner join")));
            sink.lock().unwrap().extend(rows);
            Ok(())
        })
    });
    let completed_before = checkpoints.metrics.completed();
    wait_for("the joined pairs of this round", || {
        assert!(!runner.is_finished(), "the pipeline ended early");
        out.lock().unwrap().len() >= expected && checkpoints.metrics.completed() > completed_before + 1
    });
    stops.iter().for_each(|stop| stop.stop());
    runner.join().unwrap().unwrap();
    checkpoints.metrics.restored_id()
}

/// Streaming joins rescale on restart: each new instance takes both sides' buffered rows of
/// the keys the exchanges now route to it, from every old instance's snapshot. Rounds of
/// 150 pages end inside windows and intervals, so rows read by runs with different
/// parallelism must meet: every pair is joined exactly once across parallelism 2, 3 and 1.
fn joins_follow_their_keys(join: ClickJoin, backend: impl Fn() -> StateBackend) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("left-clicks", 4).unwrap();
    cluster.create_topic("right-clicks", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = CheckpointConfig::new(dir.path()).with_interval(Duration::from_millis(100));
    let out: Pairs = Arc::default();
    let mut produced = 0;
    for (round, parallelism) in [2, 3, 1].into_iter().enumerate() {
        for topic in ["left-clicks", "right-clicks"] {
            produce_clicks_by_user(cluster.config(), topic, produced..produced + 150);
        }
        produced += 150;
        let expected = join.pairs(produced, true).len();
        let restored = run_join(cluster.config(), &checkpoints, join, &out, expected, parallelism, backend());
        assert_eq!(restored > 0, round > 0, "round {round} restores the previous one's checkpoint");
    }
    join.check_joined_once(&out.lock().unwrap(), produced);
}

#[test]
fn window_join_state_follows_its_keys_when_the_parallelism_changes() {
    joins_follow_their_keys(ClickJoin::Window, || StateBackend::Memory);
}

#[test]
fn interval_join_state_follows_its_keys_when_the_parallelism_changes() {
    joins_follow_their_keys(ClickJoin::Interval, || StateBackend::Memory);
}

#[test]
fn asof_join_state_follows_its_keys_when_the_parallelism_changes() {
    joins_follow_their_keys(ClickJoin::AsOf, || StateBackend::Memory);
}

/// The join's buffered rows in RocksDB: each new instance copies the entries of its keys out
/// of the old instances' RocksDB checkpoints.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_window_join_state_follows_its_keys_when_the_parallelism_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocksdb");
    joins_follow_their_keys(ClickJoin::Window, move || StateBackend::RocksDb { path: path.clone() });
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_asof_join_state_follows_its_keys_when_the_parallelism_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocksdb");
    joins_follow_their_keys(ClickJoin::AsOf, move || StateBackend::RocksDb { path: path.clone() });
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_interval_join_state_follows_its_keys_when_the_parallelism_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocksdb");
    joins_follow_their_keys(ClickJoin::Interval, move || StateBackend::RocksDb { path: path.clone() });
}

/// Rows of a join of clicks: (user, left page, right page if any).
type Joined = Arc<Mutex<Vec<(String, i64, Option<i64>)>>>;

/// How a worker of the stream-join key-group tests joins its two sides.
type JoinOf = fn(Stream<Untyped>, Stream<Untyped>) -> sabot::Result<Stream<Untyped>>;

/// One worker of the stream-join key-group tests: `join` of `left-clicks` and `right` (both
/// partitioned by user), the right side following the left side's partitions, checkpointing
/// into the store shared by the workers.
struct JoinWorker {
    stops: [sabot::kafka::StopHandle; 2],
    assigned: Arc<sabot::kafka::SourceMetrics>,
    runner: std::thread::JoinHandle<sabot::Result<()>>,
}

impl JoinWorker {
    fn start(
        kafka: &sabot::kafka::KafkaConfig,
        store: &std::path::Path,
        name: &str,
        (right, join): (&str, JoinOf),
        backend: StateBackend,
        out: &Joined,
    ) -> Self {
        let side = |topic: &str| {
            KafkaSource::with_config(kafka.clone(), topic)
                .group(format!("joiner-{topic}"))
                .start_offset(StartOffset::Earliest)
                .format(JsonFormat::for_record::<Click>())
                .watermarks("page", sabot::window::WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
                .idle_timeout(Duration::from_secs(3600))
                .partitioned_by(vec![col("user")])
        };
        let (left, right) = (side("left-clicks"), side(right));
        let (stops, assigned) = ([left.stop_handle(), right.stop_handle()], left.metrics());
        let checkpoints = CheckpointConfig::new(store).shared_by(name).with_interval(Duration::from_millis(100));
        let left = Stream::from_kafka(left)
            .unwrap()
            .with_config(ExecConfig::default().with_parallelism(2).with_state_backend(backend))
            .with_checkpointing(checkpoints);
        let pipeline = join(left, Stream::from_kafka(right).unwrap()).unwrap();
        let sink = out.clone();
        let name = name.to_string();
        let runner = std::thread::spawn(move || {
            let result = pipeline.for_each_batch(|batch| {
                sink.lock().unwrap().extend(joined_rows(&batch));
                Ok(())
            });
            if let Err(e) = &result {
                eprintln!("worker {name} failed: {e}"); // seen before a round times out
            }
            result
        });
        JoinWorker { stops, assigned, runner }
    }

    fn stop(self) {
        self.stops.iter().for_each(|stop| stop.stop());
        self.runner.join().unwrap().unwrap();
    }
}

/// Scale-out of a stream join: a second worker joins, takes half of the key groups of both
/// topics with the join's state for them, then the first worker leaves and the second takes
/// the rest. Rounds end inside windows and intervals, so rows read by different workers must
/// meet in the handed-over state: every due pair is joined exactly once.
fn stream_join_follows_key_groups(join: ClickJoin, backend: impl Fn(&str) -> StateBackend) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    for topic in ["left-clicks", "right-clicks"] {
        cluster.create_topic(topic, 4).unwrap();
    }
    let store = tempfile::tempdir().unwrap();
    let joined: Joined = Arc::default();
    let out: Pairs = Arc::default();
    let pairs = |joined: &Joined| {
        let mut out = out.lock().unwrap();
        *out = joined.lock().unwrap().iter().map(|(u, l, r)| (u.clone(), *l, r.expect("an inner join"))).collect();
    };
    let mut produced = 0;
    let round = |produced: &mut i64| {
        for topic in ["left-clicks", "right-clicks"] {
            produce_clicks_by_user(cluster.config(), topic, *produced..*produced + 150);
        }
        *produced += 150;
        let due = join.pairs(*produced, true);
        let deadline = Instant::now() + Duration::from_secs(60);
        while joined.lock().unwrap().len() < due.len() {
            pairs(&joined);
            let joined: std::collections::BTreeSet<_> = out.lock().unwrap().iter().cloned().collect();
            let missing: Vec<_> = due.difference(&joined).take(5).collect();
            assert!(Instant::now() < deadline, "{} of {} pairs; missing e.g. {missing:?}", joined.len(), due.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let sides: (&str, JoinOf) = match join {
        ClickJoin::Window => ("right-clicks", |l, r| ClickJoin::Window.join(l, r)),
        ClickJoin::Interval => ("right-clicks", |l, r| ClickJoin::Interval.join(l, r)),
        ClickJoin::AsOf => ("right-clicks", |l, r| ClickJoin::AsOf.join(l, r)),
    };
    let first = JoinWorker::start(&cluster.config(), store.path(), "w1", sides, backend("w1"), &joined);
    round(&mut produced);
    let second = JoinWorker::start(&cluster.config(), store.path(), "w2", sides, backend("w2"), &joined);
    wait_for("the group to share the partitions", || {
        first.assigned.assigned_partitions() == 2 && second.assigned.assigned_partitions() == 2
    });
    round(&mut produced);
    first.stop();
    wait_for("the second worker to own every partition", || second.assigned.assigned_partitions() == 4);
    round(&mut produced);
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would show up by now
    second.stop();

    pairs(&joined);
    join.check_joined_once(&out.lock().unwrap(), produced);
}

#[test]
fn interval_join_follows_key_groups_when_workers_join_and_leave() {
    stream_join_follows_key_groups(ClickJoin::Interval, |_| StateBackend::Memory);
}

#[test]
fn window_join_follows_key_groups_when_workers_join_and_leave() {
    stream_join_follows_key_groups(ClickJoin::Window, |_| StateBackend::Memory);
}

#[test]
fn asof_join_follows_key_groups_when_workers_join_and_leave() {
    stream_join_follows_key_groups(ClickJoin::AsOf, |_| StateBackend::Memory);
}

/// The join's buffered rows in each worker's RocksDB: released key groups' entries are
/// deleted, acquired ones copied out of the other worker's RocksDB checkpoint.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_window_join_follows_key_groups_when_workers_join_and_leave() {
    let dbs = tempfile::tempdir().unwrap();
    let root = dbs.path().to_path_buf();
    stream_join_follows_key_groups(ClickJoin::Window, move |worker| StateBackend::RocksDb { path: root.join(worker) });
}

/// A stream-table join across workers: the table (a changelog of each user's profile, here a
/// click whose page is `10_000 + user`) is read once, before the handovers; the workers that
/// acquire key groups later get the table rows of those groups from the checkpoints (its
/// partitions resume past them), so every click after the first round finds its profile.
fn table_join_follows_key_groups(backend: impl Fn(&str) -> StateBackend) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    for topic in ["left-clicks", "profiles"] {
        cluster.create_topic(topic, 4).unwrap();
    }
    let profile = |user: &str| 10_000 + user[1..].parse::<i64>().unwrap();
    let profiles: Vec<Click> = (0..11).map(|u| Click { user: format!("u{u}"), page: 10_000 + u }).collect();
    let sink = sabot::kafka::KafkaSink::with_config(cluster.config(), "profiles")
        .format(JsonFormat::for_record::<Click>())
        .partition_by(vec![col("user")]);
    Stream::from_records(profiles).to_kafka(sink).unwrap();

    let store = tempfile::tempdir().unwrap();
    let joined: Joined = Arc::default();
    let delivered = |n: i64| {
        wait_for("every click joined", || joined.lock().unwrap().len() as i64 >= n);
    };
    let sides: (&str, JoinOf) = ("profiles", |l, r| l.table_join(&r, ["user"], ["user"], sabot::plan::JoinType::Left));
    let first = JoinWorker::start(&cluster.config(), store.path(), "w1", sides, backend("w1"), &joined);
    // The first worker reads the table while clicks come in, round after round, until every
    // user's clicks find their profile.
    let mut produced = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        produce_clicks_by_user(cluster.config(), "left-clicks", produced..produced + 11);
        produced += 11;
        delivered(produced);
        let found: std::collections::BTreeSet<String> =
            joined.lock().unwrap().iter().filter(|(.., p)| p.is_some()).map(|(u, ..)| u.clone()).collect();
        if found.len() == 11 {
            break;
        }
        assert!(Instant::now() < deadline, "the table was never read: profiles of {found:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_load = produced;
    let second = JoinWorker::start(&cluster.config(), store.path(), "w2", sides, backend("w2"), &joined);
    wait_for("the group to share the partitions", || {
        first.assigned.assigned_partitions() == 2 && second.assigned.assigned_partitions() == 2
    });
    produce_clicks_by_user(cluster.config(), "left-clicks", produced..produced + 150);
    produced += 150;
    delivered(produced);
    first.stop();
    wait_for("the second worker to own every partition", || second.assigned.assigned_partitions() == 4);
    produce_clicks_by_user(cluster.config(), "left-clicks", produced..produced + 150);
    produced += 150;
    delivered(produced);
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would show up by now
    second.stop();

    let joined = joined.lock().unwrap();
    let pages: std::collections::BTreeSet<i64> = joined.iter().map(|(_, page, _)| *page).collect();
    assert_eq!(joined.len() as i64, produced, "every click joined once");
    assert_eq!(pages, (0..produced).collect(), "every click joined once");
    for (user, page, found) in joined.iter().filter(|(_, page, _)| *page >= after_load) {
        assert_eq!(*found, Some(profile(user)), "click {page} of {user} finds the profile its key group carried");
    }
}

#[test]
fn table_join_follows_key_groups_when_workers_join_and_leave() {
    table_join_follows_key_groups(|_| StateBackend::Memory);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_table_join_follows_key_groups_when_workers_join_and_leave() {
    let dbs = tempfile::tempdir().unwrap();
    let root = dbs.path().to_path_buf();
    table_join_follows_key_groups(move |worker| StateBackend::RocksDb { path: root.join(worker) });
}

/// A stream join whose right side is not partitioned like its left side cannot follow key
/// groups: refused at start with an error that says why.
#[test]
fn a_stream_join_of_unpaired_sides_is_refused_where_workers_share_key_groups() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("left-clicks", 2).unwrap();
    cluster.create_topic("right-clicks", 3).unwrap();
    let store = tempfile::tempdir().unwrap();
    let side = |topic: &str, partitioned: bool| {
        let source = KafkaSource::with_config(cluster.config(), topic)
            .group(format!("joined-{topic}"))
            .format(JsonFormat::for_record::<Click>())
            .watermarks("page", sabot::window::WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO));
        if partitioned { source.partitioned_by(vec![col("user")]) } else { source }
    };
    let run = |right_partitioned: bool| {
        let left = Stream::from_kafka(side("left-clicks", true))
            .unwrap()
            .with_checkpointing(CheckpointConfig::new(store.path()).shared_by("w1"));
        let right = Stream::from_kafka(side("right-clicks", right_partitioned)).unwrap();
        let joined = ClickJoin::Interval.join(left, right).unwrap();
        joined.for_each_batch(|_| Ok(())).unwrap_err().to_string()
    };
    let err = run(false);
    assert!(err.contains("declare how 'right-clicks' is partitioned too"), "{err}");
    let err = run(true);
    assert!(err.contains("'left-clicks' has 2 partitions, 'right-clicks' has 3"), "{err}");

    let numbered = |topic: &str, format: JsonFormat| {
        KafkaSource::with_config(cluster.config(), topic)
            .group(format!("numbered-{topic}"))
            .format(format)
            .watermarks("page", sabot::window::WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
            .partitioned_by(vec![col("user")])
    };
    cluster.create_topic("right-numbered", 2).unwrap();
    let left = Stream::from_kafka(numbered("left-clicks", JsonFormat::for_record::<NumberedClick>()))
        .unwrap()
        .with_checkpointing(CheckpointConfig::new(store.path()).shared_by("w1"));
    let right = Stream::from_kafka(numbered("right-numbered", JsonFormat::for_record::<ShortNumberedClick>())).unwrap();
    let err = ClickJoin::Interval.join(left, right).unwrap().for_each_batch(|_| Ok(())).unwrap_err().to_string();
    assert!(err.contains("differ in type"), "{err}");
}

/// Waits until `condition` holds, failing after 60 s.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Scale-out with state: a second worker joins the consumer group, takes half of the key
/// groups with their state from the first worker's checkpoint, then the first worker leaves
/// and the second takes the rest. Every user's counts run exactly 1..n across both workers.
#[test]
fn keyed_state_follows_its_partitions_when_workers_join_and_leave() {
    hand_over_key_groups(|_| StateBackend::Memory);
}

/// The same with RocksDB state: a handed-over key group's entries are copied out of the
/// other worker's RocksDB checkpoint; released ones are deleted.
#[cfg(feature = "rocksdb")]
#[test]
fn keyed_rocksdb_state_follows_its_partitions_when_workers_join_and_leave() {
    let dbs = tempfile::tempdir().unwrap();
    let root = dbs.path().to_path_buf();
    hand_over_key_groups(move |worker| StateBackend::RocksDb { path: root.join(worker) });
}

fn hand_over_key_groups(backend: impl Fn(&str) -> StateBackend) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("clicks-by-user", 4).unwrap();
    let store = tempfile::tempdir().unwrap();
    let out: Arc<Mutex<Vec<(String, Count)>>> = Arc::default();
    let delivered = |out: &Arc<Mutex<Vec<(String, Count)>>>| out.lock().unwrap().len();

    produce_clicks_by_user(cluster.config(), "clicks-by-user", 0..400);
    let first = Worker::start(cluster.config(), store.path(), "w1", backend("w1"), &out);
    wait_for("the first worker's counts", || delivered(&out) == 400 && first.checkpoints.metrics.completed() > 0);

    let second = Worker::start(cluster.config(), store.path(), "w2", backend("w2"), &out);
    wait_for("the group to share the partitions", || {
        first.metrics.assigned_partitions() == 2 && second.metrics.assigned_partitions() == 2
    });
    produce_clicks_by_user(cluster.config(), "clicks-by-user", 400..800);
    wait_for("both workers' counts", || delivered(&out) == 800);
    let by_second = out.lock().unwrap().iter().filter(|(w, _)| w == "w2").count();
    assert!(by_second > 0 && by_second < 400, "both workers counted: {by_second} of 400 by the second");

    first.stop();
    wait_for("the second worker to own every partition", || second.metrics.assigned_partitions() == 4);
    produce_clicks_by_user(cluster.config(), "clicks-by-user", 800..1200);
    wait_for("the second worker's counts", || delivered(&out) >= 1200);
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would show up by now
    let restored_checkpoints = second.checkpoints.metrics.completed();
    second.stop();
    assert!(restored_checkpoints > 0);

    let out = out.lock().unwrap();
    assert_eq!(out.len(), 1200, "every click counted once");
    let mut per_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (_, c) in out.iter() {
        per_user.entry(c.user.clone()).or_default().push(c.clicks);
    }
    assert_eq!(per_user.len(), 11);
    for (user, mut clicks) in per_user {
        clicks.sort();
        let n = (0..1200).filter(|p| format!("u{}", p % 11) == user).count() as i64;
        assert_eq!(clicks, (1..=n).collect::<Vec<_>>(), "{user}: state carried across workers, nothing twice");
    }
    // The store knows where every key group's newest state is: with the second worker.
    let groups = sabot::checkpoint::KeyGroupStore::new(store.path(), "counter");
    for partition in 0..4 {
        let holder = groups.locate("clicks-by-user", partition).unwrap().expect("a holder");
        assert!(holder.checkpoint.starts_with(store.path().join("w2")), "{partition}: {holder:?}");
    }
}

/// The checkpoint directory stops being writable for a while (here: replaced by a file, which
/// fails every write even for root): checkpoints fail and are counted, the job goes on, the
/// last good checkpoint stays the one to restore; once the directory is back, checkpoints
/// complete again and a restart restores the newest one.
#[test]
fn an_unwritable_checkpoint_directory_fails_checkpoints_but_not_the_job() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("clicks", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (chk, moved) = (dir.path().join("chk"), dir.path().join("chk.moved"));
    let checkpoints = CheckpointConfig::new(&chk).with_interval(Duration::from_millis(100));
    let metrics = checkpoints.metrics.clone();
    let delivered: Arc<Mutex<Vec<Count>>> = Arc::default();
    produce_clicks(&cluster.bootstrap_servers(), 0..200);

    let source = KafkaSource::with_config(cluster.config(), "clicks")
        .group("counter")
        .start_offset(StartOffset::Earliest)
        .format(JsonFormat::for_record::<Click>());
    let stop = source.stop_handle();
    let pipeline = Stream::from_kafka(source)
        .unwrap()
        .with_parallelism(2)
        .with_checkpointing(checkpoints.clone())
        .key_by(["user"])
        .process(CountClicks::default)
        .unwrap();
    let sink = delivered.clone();
    let runner = std::thread::spawn(move || {
        pipeline.for_each_batch(|batch| {
            sink.lock().unwrap().extend(Count::from_batch(&batch)?);
            Ok(())
        })
    });
    let count = || delivered.lock().unwrap().len();
    wait_for("the first counts and checkpoint", || count() == 200 && metrics.completed() > 0);

    std::fs::rename(&chk, &moved).unwrap();
    std::fs::write(&chk, "not a directory").unwrap();
    let (completed, failed) = (metrics.completed(), metrics.failed());
    produce_clicks(&cluster.bootstrap_servers(), 200..400);
    wait_for("failed checkpoints while the job goes on", || count() == 400 && metrics.failed() >= failed + 3);
    assert!(!runner.is_finished(), "the job goes on");
    assert_eq!(metrics.completed(), completed, "no checkpoint completes without its directory");
    let storage = CheckpointStorage::open(&moved, 3).unwrap();
    let (_, good) = storage.latest().unwrap().expect("the last good checkpoint");
    assert_eq!(good.id, metrics.last_id(), "the last good checkpoint stays the latest");

    std::fs::remove_file(&chk).unwrap();
    std::fs::rename(&moved, &chk).unwrap();
    wait_for("checkpoints to complete again", || metrics.completed() >= completed + 2);
    stop.stop();
    runner.join().unwrap().unwrap();

    produce_clicks(&cluster.bootstrap_servers(), 400..500);
    let restored = run_with_backend(cluster.config(), &checkpoints, &delivered, 500, StateBackend::Memory);
    assert!(restored > good.id, "the restart restored a checkpoint taken after the outage");
    let delivered = delivered.lock().unwrap();
    assert_eq!(delivered.len(), 500, "every click counted once");
    let mut per_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in delivered.iter() {
        per_user.entry(c.user.clone()).or_default().push(c.clicks);
    }
    for (user, mut clicks) in per_user {
        clicks.sort();
        let n = (0..500).filter(|p| format!("u{}", p % 7) == user).count() as i64;
        assert_eq!(clicks, (1..=n).collect::<Vec<_>>(), "{user}");
    }
}

/// Checkpoints mirrored to an object store: the second run starts on a new machine (an empty
/// local checkpoint directory), downloads the first run's last checkpoint from the store and
/// goes on with its state and offsets.
#[cfg(feature = "object-store")]
#[test]
fn object_store_checkpoints_restore_into_an_empty_local_directory() {
    use sabot::checkpoint::RemoteCheckpoints;
    use sabot::checkpoint::object_store::ObjectStore;
    use sabot::checkpoint::object_store::local::LocalFileSystem;

    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("clicks", 4).unwrap();
    let (bucket, dir_a, dir_b) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(bucket.path()).unwrap());
    let first_config = CheckpointConfig::new(dir_a.path())
        .with_interval(Duration::from_millis(100))
        .with_object_store(store.clone(), "jobs/clicks");
    let delivered = Arc::new(Mutex::new(vec![]));

    produce_clicks(&cluster.bootstrap_servers(), 0..300);
    let first_run = run_with_backend(cluster.config(), &first_config, &delivered, 300, StateBackend::Memory);
    assert_eq!(first_run, 0, "nothing to restore the first time");
    let last = first_config.metrics.last_id();
    assert!(last > 0);
    // The stopped pipeline waited for its uploads: its last checkpoint is in the store.
    assert_eq!(first_config.metrics.remote_failed(), 0);
    assert_eq!(first_config.metrics.last_uploaded_id(), last);
    let remote = RemoteCheckpoints::new(store.clone(), "jobs/clicks", 3).unwrap();
    assert_eq!(remote.completed().unwrap().last(), Some(&last));
    assert!(remote.completed().unwrap().len() <= 3, "remote retention keeps the last 3");

    produce_clicks(&cluster.bootstrap_servers(), 300..500);
    let second_config = CheckpointConfig::new(dir_b.path())
        .with_interval(Duration::from_millis(100))
        .with_object_store(store, "jobs/clicks");
    assert!(CheckpointStorage::open(dir_b.path(), 3).unwrap().latest().unwrap().is_none(), "a new machine");
    let restored = run_with_backend(cluster.config(), &second_config, &delivered, 500, StateBackend::Memory);
    assert_eq!(restored, last, "the second run restored the first run's last checkpoint from the store");
    assert_eq!(second_config.metrics.restored_id(), last);
    assert!(second_config.metrics.last_uploaded_id() > last, "the second run uploads its own checkpoints");

    // Every user's counts are exactly 1..=n over both runs.
    let delivered = delivered.lock().unwrap();
    assert_eq!(delivered.len(), 500);
    let mut per_user: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in delivered.iter() {
        per_user.entry(c.user.clone()).or_default().push(c.clicks);
    }
    assert_eq!(per_user.len(), 7);
    for (user, mut clicks) in per_user {
        clicks.sort();
        let n = (0..500).filter(|p| format!("u{}", p % 7) == user).count() as i64;
        assert_eq!(clicks, (1..=n).collect::<Vec<_>>(), "{user}");
    }
}
