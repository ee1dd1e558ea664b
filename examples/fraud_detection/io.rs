//! Kafka in and out: transactions produced keyed by account (so each account's transactions
//! stay in order in one partition), alerts read back.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sabot::deps::rdkafka::ClientConfig;
use sabot::deps::rdkafka::error::KafkaError;
use sabot::deps::rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sabot::deps::rdkafka::types::RDKafkaErrorCode;
use sabot::{Result, SabotError};

use sabot::deps::rdkafka::Message;
use sabot::deps::rdkafka::consumer::{BaseConsumer, Consumer};

use crate::generator::to_json;
use crate::rules::{Alert, Transaction};

/// Sends `transactions` (and `malformed` payloads after them) to `topic`; `rate` caps the
/// messages per second (0: as fast as possible). Returns the seconds it took.
pub fn produce(
    brokers: &str,
    topic: &str,
    transactions: &[Transaction],
    malformed: &[&[u8]],
    rate: u64,
    progress: bool,
) -> Result<f64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| SabotError::kafka("create the producer", e))?;
    let bar = if progress { ProgressBar::new(transactions.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} producing [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("a valid template"),
    );
    let start = Instant::now();
    for (i, tx) in transactions.iter().enumerate() {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        send(&producer, topic, Some(&tx.account_number), &to_json(tx))?;
        if i % 1024 == 0 {
            bar.set_position(i as u64);
        }
    }
    for payload in malformed {
        send(&producer, topic, None, payload)?;
    }
    producer.flush(Duration::from_secs(60)).map_err(|e| SabotError::kafka(format!("flush to '{topic}'"), e))?;
    bar.finish_and_clear();
    Ok(start.elapsed().as_secs_f64())
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
) -> Result<()> {
    let mut record = BaseRecord::<str, [u8]>::to(topic).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => return Err(SabotError::kafka(format!("produce to '{topic}'"), e)),
        }
    }
}

/// Reads alerts from `topic` until `expected` have arrived and no more come for `settle`, or
/// until `timeout`.
pub fn read_alerts(
    brokers: &str,
    topic: &str,
    expected: usize,
    settle: Duration,
    timeout: Duration,
) -> Result<Vec<Alert>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("alert-reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .map_err(|e| SabotError::kafka("create the alert reader", e))?;
    consumer.subscribe(&[topic]).map_err(|e| SabotError::kafka(format!("subscribe to '{topic}'"), e))?;
    let deadline = Instant::now() + timeout;
    let mut last_arrival = Instant::now();
    let mut alerts = Vec::new();
    while Instant::now() < deadline && (alerts.len() < expected || last_arrival.elapsed() < settle) {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                let alert: serde_json::Value = serde_json::from_slice(payload)
                    .map_err(|e| SabotError::kafka(format!("read an alert from '{topic}'"), e))?;
                let text = |k: &str| alert[k].as_str().unwrap_or_default().to_string();
                alerts.push(Alert {
                    transaction_id: alert["transaction_id"].as_i64().unwrap_or(-1),
                    account_number: text("account_number"),
                    rule: text("rule"),
                    severity: text("severity"),
                    detail: text("detail"),
                    timestamp_ms: alert["timestamp_ms"].as_i64().unwrap_or(-1),
                });
                last_arrival = Instant::now();
            }
            Some(Err(e)) => tracing::warn!(error = %e, "alert reader"),
            None => {}
        }
    }
    Ok(alerts)
}
