//! Checkpoints: consistent snapshots of a running pipeline, for recovery and exactly-once.
//!
//! Sabot follows Flink's asynchronous barrier snapshotting (Chandy–Lamport for DAGs). Sources
//! emit numbered barriers with the data on an interval; operators with several inputs align
//! them (an input that delivered barrier `n` waits until every input has); each operator
//! instance copies its state when the barrier passes ([`Operator::snapshot_state`]) and a
//! writer thread puts it on disk while processing goes on. When the barrier reaches the sink,
//! the checkpoint is complete: its metadata records every state file with a checksum, where
//! each source was (Kafka offsets per partition) and what the sink prepared. Then the sink
//! publishes its output and the sources commit their offsets.
//!
//! On start, a pipeline with checkpointing restores the newest valid checkpoint (or a
//! savepoint): operators reload their state ([`Operator::restore_state`]), sources resume
//! from the recorded positions, and the sink publishes what the checkpoint had prepared.
//! With a two-phase sink the output holds every result exactly once.
//!
//! ```
//! use std::time::Duration;
//! use sabot::checkpoint::CheckpointConfig;
//! use sabot::exec::ExecConfig;
//!
//! let config = ExecConfig::default()
//!     .with_checkpointing(CheckpointConfig::new("/var/lib/myapp/checkpoints").with_interval(Duration::from_secs(10)));
//! assert_eq!(config.checkpointing.unwrap().interval, Duration::from_secs(10));
//! ```
//!
//! With the `object-store` feature, the checkpoint directory can be mirrored to an object
//! store ([`CheckpointConfig::with_object_store`]): each completed checkpoint is uploaded in
//! the background, and a worker that starts with an empty local directory (a new machine)
//! restores the newest checkpoint found in the store.
//!
//! [`Operator::snapshot_state`]: crate::operator::Operator::snapshot_state
//! [`Operator::restore_state`]: crate::operator::Operator::restore_state

mod coordinator;
mod key_groups;
#[cfg(feature = "object-store")]
mod remote;
mod snapshot;
pub(crate) mod storage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use coordinator::CheckpointMetrics;
pub(crate) use coordinator::{CheckpointCoordinator, TransactionCheck};
pub use key_groups::{CheckpointTrigger, KeyGroupChange, KeyGroupHandover, KeyGroupHolder, KeyGroupStore, key_group};
pub(crate) use key_groups::{KeyGroupLedger, OwnedPositions};
/// The `object_store` crate this feature is built with, to create stores of a matching version.
#[cfg(feature = "object-store")]
pub use object_store;
#[cfg(feature = "object-store")]
pub use remote::{RemoteCheckpoints, RemoteConfig};
pub use snapshot::{Rescale, RestoredState, SnapshotFile, StateSnapshot};
pub use storage::{CheckpointMetadata, CheckpointStorage, METADATA_FILE, copy_savepoint, verify};

/// What a pipeline restores when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The newest valid checkpoint in the checkpoint directory, if there is one (default).
    Latest,
    /// A savepoint (or any checkpoint directory) taken before.
    Savepoint(PathBuf),
    /// Nothing: start empty (old checkpoints are left alone).
    Nothing,
}

/// How a pipeline checkpoints.
///
/// ```
/// use sabot::checkpoint::{CheckpointConfig, RestoreFrom};
/// let config = CheckpointConfig::new("/tmp/checkpoints").with_retained(5).restore_from(RestoreFrom::Nothing);
/// assert_eq!(config.retain, 5);
/// ```
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The checkpoint directory (local filesystem).
    pub dir: PathBuf,
    /// How often sources emit barriers (default 10 s).
    pub interval: Duration,
    /// How many completed checkpoints are kept (default 3).
    pub retain: usize,
    /// What to restore on start.
    pub restore: RestoreFrom,
    /// Counters, shared with whoever holds a clone of this config.
    pub metrics: Arc<CheckpointMetrics>,
    /// Workers of one app sharing `dir` as their checkpoint store: this worker's id. Its
    /// checkpoints go to `dir/<worker>`, and key groups (see [`KeyGroupStore`]) are looked
    /// up in every worker's directory.
    pub worker: Option<String>,
    /// The object store the checkpoints are mirrored to, if any (see
    /// [`CheckpointConfig::with_object_store`]). Configs compare it as [`RemoteConfig`]
    /// does: by prefix and by how the stores display.
    #[cfg(feature = "object-store")]
    pub remote: Option<RemoteConfig>,
}

/// Compares everything but the metrics (and, with the `object-store` feature, the remote
/// store as `RemoteConfig` compares it: by prefix and by how the stores display).
impl PartialEq for CheckpointConfig {
    fn eq(&self, other: &Self) -> bool {
        #[cfg(feature = "object-store")]
        if self.remote != other.remote {
            return false;
        }
        (&self.dir, self.interval, self.retain, &self.restore, &self.worker)
            == (&other.dir, other.interval, other.retain, &other.restore, &other.worker)
    }
}

impl Eq for CheckpointConfig {}

impl CheckpointConfig {
    /// Checkpoints into `dir` every 10 s, keeping the last 3, restoring the latest on start.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CheckpointConfig {
            dir: dir.into(),
            interval: Duration::from_secs(10),
            retain: 3,
            restore: RestoreFrom::Latest,
            metrics: Arc::default(),
            worker: None,
            #[cfg(feature = "object-store")]
            remote: None,
        }
    }

    /// Mirrors the checkpoints to `store` under `prefix` (feature `object-store`): each
    /// completed checkpoint is uploaded by a background thread (its state files, then its
    /// metadata, which makes it complete in the store), and the store keeps the newest
    /// [`retain`](CheckpointConfig::retain) too. On start with [`RestoreFrom::Latest`], when
    /// the local directory has no valid checkpoint, the newest valid one in the store is
    /// downloaded into it and restored. A pipeline that stops waits for its uploads.
    ///
    /// With [`shared_by`](CheckpointConfig::shared_by), a worker's checkpoints go under
    /// `<prefix>/<worker>`. Failed uploads are logged and counted
    /// ([`CheckpointMetrics::remote_failed`]); they do not fail the checkpoint.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use object_store::memory::InMemory;
    /// use sabot::checkpoint::CheckpointConfig;
    ///
    /// let store = Arc::new(InMemory::new());
    /// let config = CheckpointConfig::new("/var/lib/clicks/checkpoints").with_object_store(store, "jobs/clicks");
    /// assert_eq!(config.remote.unwrap().prefix.as_ref(), "jobs/clicks");
    /// ```
    #[cfg(feature = "object-store")]
    pub fn with_object_store(
        mut self,
        store: Arc<dyn object_store::ObjectStore>,
        prefix: impl Into<object_store::path::Path>,
    ) -> Self {
        self.remote = Some(RemoteConfig::new(store, prefix));
        self
    }

    /// Where this worker's checkpoints go in the object store: the remote prefix, or
    /// `<prefix>/<worker>` in a shared store (`None` without an object store).
    #[cfg(feature = "object-store")]
    pub fn worker_remote(&self) -> Option<RemoteConfig> {
        let mut remote = self.remote.clone()?;
        if let Some(worker) = &self.worker {
            remote.prefix = remote.prefix.join(worker.as_str());
        }
        Some(remote)
    }

    /// Shares `dir` with the other workers of the app as worker `worker` (a name unique in
    /// the group and stable across restarts): this worker checkpoints into `dir/<worker>`,
    /// and Kafka sources whose partitions are key groups
    /// ([`KafkaSource::partitioned_by`](crate::kafka::KafkaSource::partitioned_by)) take the
    /// state of a partition they are assigned from whichever worker checkpointed it last.
    ///
    /// ```
    /// use sabot::checkpoint::CheckpointConfig;
    /// let config = CheckpointConfig::new("/mnt/shared/checkpoints").shared_by("worker-1");
    /// assert_eq!(config.worker_dir(), std::path::Path::new("/mnt/shared/checkpoints/worker-1"));
    /// ```
    pub fn shared_by(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// Where this worker's checkpoints go: `dir`, or `dir/<worker>` in a shared store.
    pub fn worker_dir(&self) -> PathBuf {
        match &self.worker {
            Some(worker) => self.dir.join(worker),
            None => self.dir.clone(),
        }
    }

    /// Sets [`CheckpointConfig::interval`].
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Sets [`CheckpointConfig::retain`] (at least 1).
    pub fn with_retained(mut self, retain: usize) -> Self {
        self.retain = retain.max(1);
        self
    }

    /// Sets [`CheckpointConfig::restore`].
    pub fn restore_from(mut self, restore: RestoreFrom) -> Self {
        self.restore = restore;
        self
    }
}
