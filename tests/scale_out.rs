//! Scale-out across processes: two worker processes of the fraud-detection app (the example
//! binary, as deployed) share one consumer group on the embedded Kafka cluster. They split the
//! `transactions` partitions, together raise exactly the planted alerts, and when one is
//! killed the survivor takes over its partitions and catches the fraud of new traffic.
//!
//! The example binary must be built and current: plain `cargo test` builds the examples
//! first; `cargo test --test scale_out` does not, so run `cargo build --example
//! fraud_detection` before it (the test fails if the binary is older than the sources).

#[allow(dead_code)]
#[path = "../examples/fraud_detection/generator.rs"]
mod generator;
#[allow(dead_code)]
#[path = "../examples/fraud_detection/io.rs"]
mod io;
#[allow(dead_code)]
#[path = "../examples/fraud_detection/rules.rs"]
mod rules;
#[path = "support/example_binary.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sabot::deps::rdkafka::consumer::{BaseConsumer, Consumer};
use sabot::deps::rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sabot::kafka::EmbeddedCluster;

use generator::Traffic;
use rules::Alert;

/// The partitions of `transactions`.
const PARTITIONS: i32 = 4;
/// The partitions of `alerts`.
const ALERT_PARTITIONS: i32 = 2;
/// Phase 2's transaction ids start here.
const PHASE2_ID: i64 = 1_000_000;
/// The consumer group of the app's `detect` agent (`<app>-<agent>`).
const GROUP: &str = "fraud-detection-detect";

/// One worker process with its stderr (the tracing log) collected line by line.
struct Worker {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(name: &'static str, brokers: &str) -> Worker {
        let mut child = Command::new(support::example_binary())
            .args(["worker", "-b", brokers, "-c", "1", "--start-offset", "earliest"])
            // Heartbeats must come more often than the session timeout: librdkafka's default
            // interval (3 s) is longer than 2 s, and without this setting the coordinator
            // expires both members every 2 s (SESSTMOUT, then a rebalance) in a loop.
            .args(["--set", "session.timeout.ms=2000", "--set", "heartbeat.interval.ms=500", "--loglevel", "info"])
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a worker process");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("the worker's stderr");
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(strip_ansi(&line));
            }
        });
        Worker { name, child, log, reader: Some(reader) }
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The `transactions` partitions the worker holds according to its last rebalance events.
    fn held(&self) -> BTreeSet<i32> {
        held_partitions(&self.log_lines())
    }

    /// Fails the test with the worker's log if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll a worker") {
            panic!("worker {} exited unexpectedly ({status})\n{}", self.name, self.log_lines().join("\n"));
        }
    }

    /// Waits until the process exits, at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll a worker") {
                // The log is complete once the pipe closes.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The worker processes of the test; dropping them (also on a failed assertion) kills the
/// ones still running and, when the test fails, prints their logs.
struct Workers(Vec<Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.0 {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
            if std::thread::panicking() {
                eprintln!("----- log of worker {} -----\n{}", worker.name, worker.log_lines().join("\n"));
            }
        }
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Replays a worker's `partitions assigned` / `partitions revoked` events (per reader: an
/// assignment replaces the reader's partitions, a revocation removes them) and returns the
/// `transactions` partitions held at the end.
fn held_partitions(lines: &[String]) -> BTreeSet<i32> {
    let mut by_reader: BTreeMap<u64, BTreeSet<i32>> = BTreeMap::new();
    for line in lines {
        let assigned = line.contains(" partitions assigned ");
        if !assigned && !line.contains(" partitions revoked ") {
            continue;
        }
        let reader = field(line, "reader=").and_then(|v| v.parse().ok()).expect("a rebalance event names its reader");
        let partitions = transactions_partitions(line);
        let held = by_reader.entry(reader).or_default();
        if assigned {
            *held = partitions;
        } else {
            held.retain(|p| !partitions.contains(p));
        }
    }
    by_reader.into_values().flatten().collect()
}

/// The value of `key` (e.g. `reader=`) in a tracing line, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split(' ').next()
}

/// The partitions in `partitions=[("transactions", 0), ("transactions", 1)]`.
fn transactions_partitions(line: &str) -> BTreeSet<i32> {
    let list = &line[line.find("partitions=[").expect("a rebalance event lists its partitions")..];
    list.split("(\"transactions\", ")
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a partition number")
        })
        .collect()
}

/// Polls `done` every 50 ms until it holds; fails with the workers' state after `timeout`,
/// or at once if one of `alive` has exited.
fn wait_until(
    what: &str,
    timeout: Duration,
    workers: &mut Workers,
    alive: &[usize],
    mut done: impl FnMut(&Workers) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(workers) {
        for &i in alive {
            workers.0[i].assert_running();
        }
        let held: Vec<_> = workers.0.iter().map(|w| (w.name, w.held())).collect();
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}; partitions held: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same traffic with new accounts (`B-` prefix) and ids shifted by [`PHASE2_ID`].
fn second_traffic(mut traffic: Traffic) -> Traffic {
    for tx in &mut traffic.transactions {
        tx.account_number = format!("B-{}", tx.account_number);
        tx.transaction_id += PHASE2_ID;
    }
    for alert in &mut traffic.expected {
        alert.0 += PHASE2_ID;
    }
    traffic
}

type Key = (i64, String, String);

fn keys(alerts: &[Alert]) -> Vec<Key> {
    alerts.iter().map(|a| (a.transaction_id, a.rule.clone(), a.severity.clone())).collect()
}

fn planted(traffic: &Traffic) -> Vec<Key> {
    traffic.expected.iter().map(|(id, r, s)| (*id, r.to_string(), s.to_string())).collect()
}

/// Reads `alerts` from the beginning of its partitions (assigned, no consumer group, so no
/// rebalance can make it read anything twice) until `done` holds for what has arrived and
/// nothing more comes for `settle`, or until `timeout`.
fn read_all_alerts(brokers: &str, done: impl Fn(&[Alert]) -> bool, settle: Duration, timeout: Duration) -> Vec<Alert> {
    // librdkafka wants a group id for `assign`, but assigned partitions join no group.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "scale-out-alert-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..ALERT_PARTITIONS {
        tpl.add_partition_offset("alerts", p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut last_arrival = Instant::now();
    let mut alerts = Vec::new();
    while Instant::now() < deadline && (!done(&alerts) || last_arrival.elapsed() < settle) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            alerts.push(Alert {
                transaction_id: v["transaction_id"].as_i64().unwrap_or(-1),
                account_number: text("account_number"),
                rule: text("rule"),
                severity: text("severity"),
                detail: text("detail"),
                timestamp_ms: v["timestamp_ms"].as_i64().unwrap_or(-1),
            });
            last_arrival = Instant::now();
        }
    }
    alerts
}

/// Per partition of `transactions`: (committed offset of the app's group, high watermark).
fn commit_progress(brokers: &str) -> Vec<(Offset, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("transactions", p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let offset = committed.find_partition("transactions", p).unwrap().offset();
            let (_, high) = consumer.fetch_watermarks("transactions", p, Duration::from_secs(10)).unwrap();
            (offset, high)
        })
        .collect()
}

#[test]
fn two_worker_processes_split_the_partitions_and_the_survivor_takes_over() {
    let started = Instant::now();
    let cluster = EmbeddedCluster::start(1).unwrap();
    for (topic, partitions) in
        [("transactions", PARTITIONS as usize), ("alerts", ALERT_PARTITIONS as usize), ("transactions.dlq", 1)]
    {
        cluster.create_topic(topic, partitions).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let mut workers = Workers(vec![Worker::spawn("A", &brokers), Worker::spawn("B", &brokers)]);

    // Phase 1: the group splits the 4 partitions between the two processes.
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    wait_until("the workers hold all partitions, none twice", Duration::from_secs(30), &mut workers, &[0, 1], |w| {
        let (a, b) = (w.0[0].held(), w.0[1].held());
        !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.union(&b).copied().collect::<BTreeSet<_>>() == all
    });
    let split = (workers.0[0].held(), workers.0[1].held());
    eprintln!("phase 1: A holds {:?}, B holds {:?} ({:.1} s)", split.0, split.1, started.elapsed().as_secs_f64());

    let first = generator::generate(7, 300, 12);
    assert_eq!(first.expected.len(), 25, "30 planted accounts: 5 bursts of 2 alerts, 15 single alerts");
    io::produce(&brokers, "transactions", &first.transactions, &[], 0, false).unwrap();
    // Not `io::read_alerts`: its reader joins a group with a 2 s session but librdkafka's
    // default 3 s heartbeat, so a read longer than 2 s is rebalanced and reads every alert again.
    let expected = first.expected.len();
    let alerts = read_all_alerts(&brokers, |a| a.len() >= expected, Duration::from_secs(2), Duration::from_secs(60));
    let (mut got, mut want) = (keys(&alerts), planted(&first));
    got.sort();
    want.sort();
    assert_eq!(got, want, "phase 1: exactly the planted alerts, each once");
    // Both processes worked: the partitions did not move while the traffic was processed.
    assert_eq!((workers.0[0].held(), workers.0[1].held()), split, "no rebalance during phase 1");
    eprintln!("phase 1: {} alerts ({:.1} s)", alerts.len(), started.elapsed().as_secs_f64());

    // Phase 2: worker A dies without leaving the group; B takes its partitions once A's
    // session times out. State handover between processes is a later issue: B starts the
    // partitions it takes over without A's per-account state, so phase 2 uses only new
    // accounts, whose history is all in phase 2's traffic.
    workers.0[0].child.kill().unwrap();
    assert!(workers.0[0].wait_exit(Duration::from_secs(10)).is_some(), "worker A survived SIGKILL");
    let second = second_traffic(generator::generate(8, 300, 12));
    assert!(second.transactions.iter().all(|tx| tx.account_number.starts_with("B-")));
    io::produce(&brokers, "transactions", &second.transactions, &[], 0, false).unwrap();

    let want2: BTreeSet<Key> = planted(&second).into_iter().collect();
    let phase2 = |alerts: &[Alert]| -> BTreeSet<Key> {
        keys(alerts).into_iter().filter(|(id, _, _)| *id >= PHASE2_ID).collect()
    };
    let alerts = read_all_alerts(
        &brokers,
        |alerts| phase2(alerts).is_superset(&want2),
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    assert_eq!(phase2(&alerts), want2, "phase 2: the survivor raises every planted alert of the new accounts");
    // B reads the partitions it takes over from their start (`--start-offset earliest`
    // applies to a partition the first time a process gets it, whatever A committed), and a
    // kill may leave work uncommitted anyway: A's phase-1 alerts may repeat, but no alert may
    // be one that was not planted.
    let planted_any: BTreeSet<Key> = planted(&first).into_iter().chain(want2.iter().cloned()).collect();
    let unplanted: Vec<&Alert> = alerts
        .iter()
        .filter(|a| !planted_any.contains(&(a.transaction_id, a.rule.clone(), a.severity.clone())))
        .collect();
    assert!(unplanted.is_empty(), "alerts that were not planted: {unplanted:#?}");
    for alert in &alerts {
        let (traffic, index) = if alert.transaction_id >= PHASE2_ID {
            (&second, alert.transaction_id - PHASE2_ID)
        } else {
            (&first, alert.transaction_id)
        };
        let tx = &traffic.transactions[index as usize];
        assert_eq!((&alert.account_number, alert.timestamp_ms), (&tx.account_number, tx.timestamp_ms));
    }
    let phase2_count = alerts.iter().filter(|a| a.transaction_id >= PHASE2_ID).count();
    eprintln!(
        "phase 2: {} alerts in the topic: {} of phase 1 (planted {}), {phase2_count} of phase 2 (planted {}) ({:.1} s)",
        alerts.len(),
        alerts.len() - phase2_count,
        first.expected.len(),
        want2.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(workers.0[1].held(), all, "the survivor holds every partition");

    // A graceful stop (SIGTERM) commits the final offsets and leaves the group.
    let survivor = &mut workers.0[1];
    let status = Command::new("kill").arg("-TERM").arg(survivor.child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -TERM failed: {status}");
    let exit = survivor.wait_exit(Duration::from_secs(10)).expect("the survivor exits within 10 s of SIGTERM");
    assert!(exit.success(), "the survivor's exit: {exit}\n{}", survivor.log_lines().join("\n"));
    for (partition, (committed, high)) in commit_progress(&brokers).into_iter().enumerate() {
        assert_eq!(committed, Offset::Offset(high), "partition {partition}: everything read is committed");
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}
