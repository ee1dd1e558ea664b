//! Dead letters: malformed messages, kept with where they came from and why they failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message as _};

use super::KafkaConfig;
use crate::{Result, SabotError};

/// Header names of a dead letter; the key and payload are the original message's.
pub mod headers {
    /// The topic the message was read from.
    pub const SOURCE_TOPIC: &str = "sabot.source.topic";
    /// Its partition (decimal).
    pub const SOURCE_PARTITION: &str = "sabot.source.partition";
    /// Its offset (decimal).
    pub const SOURCE_OFFSET: &str = "sabot.source.offset";
    /// Why it could not be decoded.
    pub const ERROR: &str = "sabot.error";
}

/// A malformed message on its way to the dead-letter topic.
pub(crate) struct DeadLetter<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: &'a [u8],
    pub(crate) reason: &'a str,
}

/// Counts failed deliveries, so a flush can report them.
#[derive(Default)]
pub(crate) struct DeliveryCounter {
    pub(crate) failed: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) last_error: std::sync::Mutex<Option<String>>,
}

/// The producer context that feeds a [`DeliveryCounter`].
pub(crate) struct DeliveryContext(pub(crate) Arc<DeliveryCounter>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = &self.0;
        match result {
            Ok(_) => {
                counter.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, message)) => {
                counter.failed.fetch_add(1, Ordering::Relaxed);
                let text = format!("topic '{}': {e}", message.topic());
                *counter.last_error.lock().expect("delivery error") = Some(text);
            }
        }
    }
}

impl DeliveryCounter {
    /// An error if any delivery failed since the last check.
    pub(crate) fn check(&self, what: &str) -> Result<()> {
        let failed = self.failed.swap(0, Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let last = self.last_error.lock().expect("delivery error").take().unwrap_or_default();
        Err(SabotError::kafka(what, format!("{failed} message(s) were not delivered; last error: {last}")))
    }
}

/// Produces dead letters to one topic (idempotent, so retries do not duplicate them).
pub(crate) struct DeadLetterProducer {
    topic: String,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<DeliveryCounter>,
}

impl DeadLetterProducer {
    pub(crate) fn new(config: &KafkaConfig, topic: &str) -> Result<Self> {
        let deliveries = Arc::new(DeliveryCounter::default());
        let producer = config
            .producer_config(&[("enable.idempotence", "true"), ("linger.ms", "5")])
            .create_with_context(DeliveryContext(deliveries.clone()))
            .map_err(|e| SabotError::kafka(format!("create the dead-letter producer for '{topic}'"), e))?;
        Ok(DeadLetterProducer { topic: topic.to_string(), producer, deliveries })
    }

    pub(crate) fn send(&self, letter: &DeadLetter<'_>) -> Result<()> {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: headers::SOURCE_TOPIC, value: Some(letter.topic) })
            .insert(Header { key: headers::SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: headers::SOURCE_OFFSET, value: Some(&offset) })
            .insert(Header { key: headers::ERROR, value: Some(letter.reason) });
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(letter.payload).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(SabotError::kafka(format!("produce to '{}'", self.topic), e)),
            }
        }
    }

    /// Waits until every dead letter sent so far is acknowledged.
    pub(crate) fn flush(&self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| SabotError::kafka(format!("flush dead letters to '{}'", self.topic), e))?;
        self.deliveries.check(&format!("produce dead letters to '{}'", self.topic))
    }
}

/// Reads the origin of a dead letter from its headers: `(topic, partition, offset, error)`.
///
/// ```
/// use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
/// use sabot::kafka::dead_letter::{origin, headers};
///
/// let h = OwnedHeaders::new()
///     .insert(Header { key: headers::SOURCE_TOPIC, value: Some("payments") })
///     .insert(Header { key: headers::SOURCE_PARTITION, value: Some("3") })
///     .insert(Header { key: headers::SOURCE_OFFSET, value: Some("42") })
///     .insert(Header { key: headers::ERROR, value: Some("bad JSON") });
/// let message = OwnedMessage::new(None, None, "payments.dlq".into(), Timestamp::NotAvailable, 0, 0, Some(h));
/// assert_eq!(origin(&message), Some(("payments".to_string(), 3, 42, "bad JSON".to_string())));
/// ```
pub fn origin(message: &impl rdkafka::Message) -> Option<(String, i32, i64, String)> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    let get = |name: &str| {
        headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some((
        get(headers::SOURCE_TOPIC)?,
        get(headers::SOURCE_PARTITION)?.parse().ok()?,
        get(headers::SOURCE_OFFSET)?.parse().ok()?,
        get(headers::ERROR)?,
    ))
}
