//! Kafka: sources, sinks, message formats, dead letters and the embedded cluster.
//!
//! Kafka is Sabot's distributed engine, as in Kafka Streams: workers of one app share a
//! consumer group, partitions are the unit of parallelism and of fail-over, and internal
//! topics carry repartitioned data.
//!
//! - [`KafkaSource`] reads topics into Arrow batches ([`Stream::from_kafka`](crate::Stream::from_kafka)),
//!   with per-partition watermarks, dead letters, and offsets committed after the sink has
//!   written what they cover (at-least-once).
//! - [`KafkaSink`] writes rows as messages ([`Stream::to_kafka`](crate::Stream::to_kafka)).
//! - [`format`]: JSON, Arrow IPC, Avro with a schema registry, raw strings or bytes.
//! - [`EmbeddedCluster`]: an in-process cluster speaking the Kafka protocol, for apps started
//!   without a broker and for tests.

mod admin;
mod co_partition;
mod config;
mod consumer;
pub mod dead_letter;
mod embedded;
pub mod format;
pub mod registry;
mod sink;
mod source;

pub use admin::ensure_topic;
pub use config::KafkaConfig;
pub use embedded::EmbeddedCluster;
pub use sink::KafkaSink;
pub(crate) use source::GroupOffsets;
pub use source::{KafkaSource, SourceMetrics, StartOffset, StopHandle};
