//! The embedded cluster: librdkafka's in-process mock Kafka cluster, used by apps when no
//! broker is given and by tests. It speaks the real Kafka protocol on 127.0.0.1 ports, so any
//! Kafka client (in this process or another) can use it.

use std::ffi::CString;

use rdkafka::ClientConfig;
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer};

use super::KafkaConfig;
use crate::{Result, SabotError};

/// An in-process Kafka cluster that lives as long as this value.
///
/// Limits (librdkafka's mock cluster): topics are created with
/// [`EmbeddedCluster::create_topic`] (the admin API's CreateTopics is not supported); each
/// partition keeps only the last 5 MiB or 100k batches, older data is dropped; transactions
/// run but aborted messages stay visible to `read_committed` consumers.
///
/// ```
/// use sabot::kafka::EmbeddedCluster;
///
/// let cluster = EmbeddedCluster::start(1)?;
/// cluster.create_topic("payments", 4)?;
/// assert!(cluster.bootstrap_servers().starts_with("127.0.0.1:"));
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct EmbeddedCluster {
    /// The client that owns the mock cluster: dropping it stops the cluster.
    owner: BaseProducer,
    bootstrap: String,
}

impl EmbeddedCluster {
    /// Starts a cluster of `brokers` brokers on free 127.0.0.1 ports.
    pub fn start(brokers: usize) -> Result<Self> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.max(1).to_string())
            .create()
            .map_err(|e| SabotError::kafka("start the embedded cluster", e))?;
        let bootstrap = owner
            .client()
            .mock_cluster()
            .map(|cluster| cluster.bootstrap_servers())
            .ok_or_else(|| SabotError::kafka("start the embedded cluster", "librdkafka created no mock cluster"))?;
        let cluster = EmbeddedCluster { owner, bootstrap };
        // A new group waits 300 ms (not the default 3 s) for its first members, so the
        // readers of a worker, started together, join one generation instead of taking all
        // partitions one after the other.
        // SAFETY: the handle belongs to `owner`, which is alive.
        unsafe { rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster.handle()?, 300) };
        tracing::info!(bootstrap = %cluster.bootstrap, brokers, "embedded Kafka cluster started");
        Ok(cluster)
    }

    fn handle(&self) -> Result<*mut rdsys::rd_kafka_mock_cluster_t> {
        // SAFETY: `owner` is a live client; the call only reads its mock cluster pointer.
        let handle = unsafe { rdsys::rd_kafka_handle_mock_cluster(self.owner.client().native_ptr()) };
        if handle.is_null() {
            return Err(SabotError::kafka("use the embedded cluster", "the mock cluster is gone"));
        }
        Ok(handle)
    }

    /// The `host:port` list clients connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    /// Client settings for this cluster: its bootstrap servers, and group timeouts short
    /// enough that members join and leave in about a second (the mock cluster's group
    /// coordinator otherwise waits out the 45 s default session timeout on every rebalance).
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig::new(self.bootstrap.clone()).set("session.timeout.ms", "2000").set("heartbeat.interval.ms", "300")
    }

    /// Creates `topic` with `partitions` partitions (a no-op if it exists with as many).
    pub fn create_topic(&self, topic: &str, partitions: usize) -> Result<()> {
        let name = CString::new(topic).map_err(|e| SabotError::kafka(format!("create topic '{topic}'"), e))?;
        // SAFETY: the handle is live (see `handle`) and `name` outlives the call.
        let err = unsafe { rdsys::rd_kafka_mock_topic_create(self.handle()?, name.as_ptr(), partitions as i32, 1) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(SabotError::kafka(format!("create topic '{topic}'"), format!("{err:?}")));
        }
        Ok(())
    }
}

impl EmbeddedCluster {
    /// Takes broker `broker_id` (1-based) down, closing its connections and refusing new
    /// ones, or brings it back up: for tests of an unreachable cluster.
    ///
    /// ```
    /// let cluster = sabot::kafka::EmbeddedCluster::start(1)?;
    /// cluster.set_broker_down(1, true)?;
    /// cluster.set_broker_down(1, false)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn set_broker_down(&self, broker_id: i32, down: bool) -> Result<()> {
        // SAFETY: the handle is live (see `handle`).
        let err = unsafe {
            if down {
                rdsys::rd_kafka_mock_broker_set_down(self.handle()?, broker_id)
            } else {
                rdsys::rd_kafka_mock_broker_set_up(self.handle()?, broker_id)
            }
        };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(SabotError::kafka(format!("set broker {broker_id} down={down}"), format!("{err:?}")));
        }
        tracing::info!(broker_id, down, "embedded broker state changed");
        Ok(())
    }
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster").field("bootstrap", &self.bootstrap).finish()
    }
}
