//! Wire compatibility with a Kafka client that is not librdkafka: kafka-python (pure Python)
//! produces the generated transactions and consumes the alerts of a fraud-detection worker
//! process, through the embedded cluster. The alerts it reads must be exactly the planted ones.
//!
//! Needs Python with kafka-python, so it only runs with `SABOT_WIRE_TESTS=1` (and `PYTHON`,
//! default `python3`): `scripts/wire-test.sh` sets both up. The example binary must be built
//! and current (`cargo build --example fraud_detection`; the script does it).

#[allow(dead_code)]
#[path = "../examples/fraud_detection/generator.rs"]
mod generator;
#[allow(dead_code)]
#[path = "../examples/fraud_detection/rules.rs"]
mod rules;
#[path = "support/example_binary.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sabot::kafka::EmbeddedCluster;

/// Produces the JSON lines of a file (keyed by `account_number`), then reads `alerts` in a
/// consumer group until `expected` alerts have arrived and no more come for 2 s, or until
/// the deadline, printing each alert as a JSON line.
///
/// `api_version=(2, 3)`: left to probe, kafka-python 3.0 asks for ApiVersions v3, which the
/// mock cluster does not support; its UNSUPPORTED_VERSION answer (in the v0 format, as the
/// protocol says) is one kafka-python cannot decode, and the client never connects. 2.3 is
/// the newest setting that uses ApiVersions v2 or older; 2.4 and up fail the same way.
const CLIENT: &str = r#"
import json, sys, time
from kafka import KafkaConsumer, KafkaProducer

bootstrap, path, expected, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
API_VERSION = (2, 3)
deadline = time.monotonic() + timeout

producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=API_VERSION, linger_ms=5, acks="all")
sent = 0
with open(path, "rb") as lines:
    for line in lines:
        line = line.rstrip(b"\n")
        key = json.loads(line)["account_number"].encode()
        producer.send("transactions", key=key, value=line)
        sent += 1
producer.flush(timeout=max(1.0, deadline - time.monotonic()))
producer.close()
print(f"produced {sent} transactions", file=sys.stderr, flush=True)

consumer = KafkaConsumer(
    "alerts",
    bootstrap_servers=bootstrap,
    api_version=API_VERSION,
    group_id="wire-compat-alert-reader",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    session_timeout_ms=6000,
    heartbeat_interval_ms=500,
)
received, last_arrival = 0, time.monotonic()
while time.monotonic() < deadline and (received < expected or time.monotonic() - last_arrival < 2.0):
    for records in consumer.poll(timeout_ms=100).values():
        for record in records:
            print(json.dumps(json.loads(record.value)), flush=True)
            received += 1
            last_arrival = time.monotonic()
consumer.close()
print(f"read {received} alerts", file=sys.stderr, flush=True)
"#;

/// Child processes killed when dropped (also on a failed assertion); the worker's log is
/// printed when the test fails.
struct Guard {
    children: Vec<Child>,
    worker_log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- worker log -----\n{}", self.worker_log.lock().unwrap().join("\n"));
        }
    }
}

/// Collects the lines of `from` into `into`, on a thread.
fn collect_lines(from: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    })
}

/// The `transactions` partitions in the worker's last `partitions assigned` event (one
/// reader), without a revocation after it.
fn held_partitions(lines: &[String]) -> BTreeSet<i32> {
    let mut held = BTreeSet::new();
    for line in lines {
        if line.contains(" partitions revoked ") {
            held.clear();
        } else if let Some(start) = line.find(" partitions assigned ") {
            held = line[start..]
                .split("(\"transactions\", ")
                .skip(1)
                .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap())
                .collect();
        }
    }
    held
}

#[test]
fn kafka_python_produces_transactions_and_reads_exactly_the_planted_alerts() {
    if std::env::var("SABOT_WIRE_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set SABOT_WIRE_TESTS=1 and PYTHON (with kafka-python), or run scripts/wire-test.sh");
        return;
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let started = Instant::now();
    let cluster = EmbeddedCluster::start(1).unwrap();
    for (topic, partitions) in [("transactions", 4), ("alerts", 2), ("transactions.dlq", 1)] {
        cluster.create_topic(topic, partitions).unwrap();
    }
    let brokers = cluster.bootstrap_servers();

    let worker_log = Arc::new(Mutex::new(Vec::new()));
    let mut guard = Guard { children: Vec::new(), worker_log: worker_log.clone() };
    let mut worker = Command::new(support::example_binary())
        .args(["worker", "-b", &brokers, "-c", "1", "--start-offset", "earliest", "--loglevel", "info"])
        .args(["--set", "session.timeout.ms=2000", "--set", "heartbeat.interval.ms=500"])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker process");
    collect_lines(worker.stderr.take().unwrap(), worker_log.clone());
    guard.children.push(worker);

    // The worker has joined its group and holds every partition.
    let deadline = Instant::now() + Duration::from_secs(30);
    while held_partitions(&worker_log.lock().unwrap()) != (0..4).collect() {
        if let Some(status) = guard.children[0].try_wait().unwrap() {
            panic!("the worker exited: {status}");
        }
        assert!(Instant::now() < deadline, "the worker did not get the 4 partitions within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let traffic = generator::generate(7, 300, 12);
    let dir = tempfile::tempdir().unwrap();
    let (script, input) = (dir.path().join("client.py"), dir.path().join("transactions.jsonl"));
    std::fs::write(&script, CLIENT).unwrap();
    let mut lines = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for tx in &traffic.transactions {
        lines.write_all(&generator::to_json(tx)).unwrap();
        lines.write_all(b"\n").unwrap();
    }
    lines.into_inner().unwrap().sync_all().unwrap();

    let expected = traffic.expected.len().to_string();
    let mut client = Command::new(&python)
        .arg(&script)
        .args([brokers.as_str(), input.to_str().unwrap(), expected.as_str(), "40"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let (stdout, stderr) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let readers = [
        collect_lines(client.stdout.take().unwrap(), stdout.clone()),
        collect_lines(client.stderr.take().unwrap(), stderr.clone()),
    ];
    guard.children.push(client);
    let deadline = Instant::now() + Duration::from_secs(50);
    let status = loop {
        if let Some(status) = guard.children[1].try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the Python client did not finish within 50 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    readers.into_iter().for_each(|r| r.join().unwrap());
    let (stdout, stderr) = (stdout.lock().unwrap().clone(), stderr.lock().unwrap().join("\n"));
    assert!(status.success(), "the Python client failed ({status}):\n{stderr}");
    eprintln!("{stderr}");

    let alerts: Vec<serde_json::Value> =
        stdout.iter().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect();
    let mut got: Vec<(i64, String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["transaction_id"].as_i64().unwrap(),
                a["rule"].as_str().unwrap().into(),
                a["severity"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut want: Vec<(i64, String, String)> =
        traffic.expected.iter().map(|(id, r, s)| (*id, r.to_string(), s.to_string())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "exactly the planted alerts, each once");
    for alert in &alerts {
        let tx = &traffic.transactions[alert["transaction_id"].as_i64().unwrap() as usize];
        assert_eq!(alert["account_number"].as_str(), Some(tx.account_number.as_str()));
        assert_eq!(alert["timestamp_ms"].as_i64(), Some(tx.timestamp_ms));
    }
    eprintln!("{} alerts through kafka-python in {:.1} s", alerts.len(), started.elapsed().as_secs_f64());
}
