//! The fraud-detection example end to end over the embedded Kafka cluster: known fraud is
//! planted in generated traffic, and the `alerts` topic must hold exactly the planted alerts.

#[path = "../examples/fraud_detection/app.rs"]
mod app;
#[path = "../examples/fraud_detection/generator.rs"]
mod generator;
#[path = "../examples/fraud_detection/io.rs"]
mod io;
#[path = "../examples/fraud_detection/rules.rs"]
mod rules;

use std::time::Duration;

use sabot::app::WorkerOptions;
use sabot::kafka::{EmbeddedCluster, StartOffset, StopHandle};

fn worker_options(brokers: &str) -> WorkerOptions {
    WorkerOptions::default()
        .with_broker(brokers)
        .with_concurrency(2)
        .with_start_offset(StartOffset::Earliest)
        .with_property("session.timeout.ms", "2000")
}

#[test]
fn the_alerts_topic_holds_exactly_the_planted_fraud() {
    let traffic = generator::generate(7, 300, 12);
    // 30 planted accounts, 5 per kind: bursts raise 2 alerts, large amounts and teleports 1, moves 0.
    assert_eq!(traffic.expected.len(), 5 * 2 + 5 + 5 + 5);
    let cluster = EmbeddedCluster::start(1).unwrap();
    for (topic, partitions) in [("transactions", 4), ("alerts", 2), ("transactions.dlq", 1)] {
        cluster.create_topic(topic, partitions).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let malformed: [&[u8]; 3] = [b"{\"transaction_id\": \"x\"}", b"\xff\xfe", b"{}"];
    io::produce(&brokers, "transactions", &traffic.transactions, &malformed, 0, false).unwrap();

    let stop = StopHandle::default();
    let (worker_stop, options) = (stop.clone(), worker_options(&brokers));
    let worker = std::thread::spawn(move || app::fraud::app().run_worker(&options, Some(worker_stop)));
    let alerts =
        io::read_alerts(&brokers, "alerts", traffic.expected.len(), Duration::from_secs(2), Duration::from_secs(60))
            .unwrap();
    stop.stop();
    let produced = worker.join().unwrap().unwrap();
    assert_eq!(produced, vec![("detect".to_string(), traffic.expected.len() as u64)]);

    let mut got: Vec<(i64, String, String)> =
        alerts.iter().map(|a| (a.transaction_id, a.rule.clone(), a.severity.clone())).collect();
    let mut want: Vec<(i64, String, String)> =
        traffic.expected.iter().map(|(id, r, s)| (*id, r.to_string(), s.to_string())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "exactly the planted alerts, no more");

    // Each alert names its transaction's account and time.
    for alert in &alerts {
        let tx = &traffic.transactions[alert.transaction_id as usize];
        assert_eq!((&alert.account_number, alert.timestamp_ms), (&tx.account_number, tx.timestamp_ms));
    }

    // The malformed messages are in the dead-letter topic with where they came from.
    let dead = dead_letters(&brokers, 3);
    assert_eq!(dead.len(), 3);
    for (payload, (topic, _partition, offset, reason)) in &dead {
        assert_eq!(topic, "transactions");
        assert!(malformed.contains(&payload.as_slice()), "{payload:?}");
        assert!(*offset >= 0 && !reason.is_empty());
    }
}

/// Where a dead letter came from: topic, partition, offset, error.
type Origin = (String, i32, i64, String);

/// The dead letters: payload and origin.
fn dead_letters(brokers: &str, expected: usize) -> Vec<(Vec<u8>, Origin)> {
    use sabot::deps::rdkafka::consumer::{BaseConsumer, Consumer};
    use sabot::deps::rdkafka::{ClientConfig, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["transactions.dlq"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut out = vec![];
    while out.len() < expected && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((m.payload().unwrap_or_default().to_vec(), sabot::kafka::dead_letter::origin(&m).unwrap()));
        }
    }
    out
}

#[test]
fn rules_match_their_definitions_on_hand_made_cases() {
    use rules::{CITIES, haversine_km};
    // Santiago -> Lima is about 2,460 km.
    let km = haversine_km((CITIES[0].2, CITIES[0].3), (CITIES[6].2, CITIES[6].3));
    assert!((2400.0..2520.0).contains(&km), "{km}");
    // Lima -> Callao is about 8 km: a taxi ride, not fraud.
    let km = haversine_km((CITIES[6].2, CITIES[6].3), (CITIES[7].2, CITIES[7].3));
    assert!(km < 15.0, "{km}");
}
