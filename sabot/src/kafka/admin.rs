//! Topic administration on a real cluster (the embedded cluster creates topics with
//! [`EmbeddedCluster::create_topic`](super::EmbeddedCluster::create_topic)).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaConfig;
use crate::{Result, SabotError};

/// Creates `topic` with `partitions` partitions (and the brokers' default replication) unless
/// it exists, as Kafka Streams creates its internal topics.
///
/// ```no_run
/// use sabot::kafka::{KafkaConfig, ensure_topic};
/// ensure_topic(&KafkaConfig::new("localhost:9092"), "payments", 12)?;
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub fn ensure_topic(config: &KafkaConfig, topic: &str, partitions: usize) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config.producer_config(&[]).create().map_err(|e| SabotError::kafka("create an admin client", e))?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| SabotError::kafka(format!("read the metadata of '{topic}'"), e))?;
    if metadata.topics().iter().any(|t| t.name() == topic && !t.partitions().is_empty()) {
        return Ok(());
    }
    let new = NewTopic::new(topic, partitions.max(1) as i32, TopicReplication::Fixed(-1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SabotError::Execution(format!("cannot start a runtime: {e}")))?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = runtime
        .block_on(admin.create_topics([&new], &options))
        .map_err(|e| SabotError::kafka(format!("create topic '{topic}'"), e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(SabotError::kafka(format!("create topic '{topic}'"), code)),
        }
    }
    Ok(())
}
