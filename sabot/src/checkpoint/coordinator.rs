//! The checkpoint coordinator of one running pipeline.
//!
//! Barriers come from the sources (every reader emits barrier `n` when checkpoint interval
//! `n` begins); exchanges and two-input operators align them, so an operator snapshots its
//! state exactly between the records before barrier `n` and those after it. Each operator
//! instance hands its snapshot to the coordinator, whose writer thread puts it on disk while
//! the pipeline goes on. When barrier `n` reaches the sink, every snapshot of `n` has been
//! handed over; the sink prepares its output, waits for the writes, and the coordinator
//! records the checkpoint as complete (its metadata: files with checksums, source positions,
//! the sink's committables). Only then are the sink's output published and the Kafka offsets
//! committed.
//!
//! With an object store (feature `object-store`), an uploader thread mirrors each completed
//! checkpoint to it; dropping the coordinator waits for the uploads.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::snapshot::{RestoredState, SnapshotFile, StateSnapshot};
use super::storage::{CheckpointMetadata, CheckpointStorage, to_hex};
use super::{CheckpointConfig, RestoreFrom};
use crate::io::Committable;
use crate::{Result, SabotError};

/// Counters of a pipeline's checkpoints.
///
/// ```
/// let metrics = sabot::checkpoint::CheckpointMetrics::default();
/// assert_eq!(metrics.completed(), 0);
/// ```
#[derive(Debug, Default)]
pub struct CheckpointMetrics {
    completed: AtomicU64,
    failed: AtomicU64,
    last_id: AtomicU64,
    last_duration_ms: AtomicU64,
    last_size_bytes: AtomicU64,
    restored_id: AtomicU64,
    uploaded: AtomicU64,
    remote_failed: AtomicU64,
    last_uploaded_id: AtomicU64,
}

impl CheckpointMetrics {
    /// Checkpoints completed.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }
    /// Checkpoints that failed (a state write failed; the previous checkpoint stays the latest).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// The id of the last completed checkpoint (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.last_id.load(Ordering::Relaxed)
    }
    /// From the first snapshot of the last completed checkpoint to its metadata, in ms.
    pub fn last_duration_ms(&self) -> u64 {
        self.last_duration_ms.load(Ordering::Relaxed)
    }
    /// The state size of the last completed checkpoint, in bytes.
    pub fn last_size_bytes(&self) -> u64 {
        self.last_size_bytes.load(Ordering::Relaxed)
    }
    /// The id of the checkpoint the pipeline restored on start (0 if none).
    pub fn restored_id(&self) -> u64 {
        self.restored_id.load(Ordering::Relaxed)
    }
    /// Checkpoints uploaded to the object store (feature `object-store`).
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }
    /// Uploads to the object store that failed (the checkpoint stays valid locally; the
    /// store keeps its previous ones).
    pub fn remote_failed(&self) -> u64 {
        self.remote_failed.load(Ordering::Relaxed)
    }
    /// The id of the last checkpoint uploaded to the object store (0 before the first).
    pub fn last_uploaded_id(&self) -> u64 {
        self.last_uploaded_id.load(Ordering::Relaxed)
    }
}

/// Snapshots of one checkpoint handed over but maybe not yet on disk.
struct Progress {
    outstanding: usize,
    files: Vec<SnapshotFile>,
    error: Option<String>,
    started: Instant,
}

struct WriteJob {
    checkpoint: u64,
    /// The task's directory, relative to the checkpoint's.
    task: String,
    snapshot: StateSnapshot,
}

/// Coordinates the checkpoints of one pipeline run (see the module documentation).
pub(crate) struct CheckpointCoordinator {
    storage: CheckpointStorage,
    parallelism: usize,
    restored: Option<(PathBuf, CheckpointMetadata)>,
    progress: Mutex<BTreeMap<u64, Progress>>,
    written: Condvar,
    jobs: Mutex<Option<Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    uids: Mutex<HashMap<(String, usize), usize>>,
    /// Committables of checkpoints that failed, published with the next one that completes.
    carried: Mutex<Vec<Committable>>,
    metrics: Arc<CheckpointMetrics>,
    /// Lets sources ask for a checkpoint outside the interval (before handing over state).
    trigger: super::CheckpointTrigger,
    /// The root of a store shared by workers, where key groups are looked up.
    shared_root: Option<PathBuf>,
    /// A source's partitions are key groups: keyed operators load their state per key group
    /// as partitions are assigned, not from this worker's last checkpoint.
    key_groups: std::sync::atomic::AtomicBool,
    /// The sink's commit is the pipeline's commit point: checkpoints say so in their metadata.
    transactional: std::sync::atomic::AtomicBool,
    /// Uploads completed checkpoints to the object store, if there is one.
    #[cfg(feature = "object-store")]
    uploader: Option<Uploader>,
}

/// The thread that uploads completed checkpoints to the object store, in the order they
/// complete; when it falls behind, only the newest waiting checkpoint is uploaded.
#[cfg(feature = "object-store")]
struct Uploader {
    queue: Mutex<Option<Sender<(u64, PathBuf)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<CheckpointMetrics>,
}

#[cfg(feature = "object-store")]
impl Uploader {
    fn start(remote: super::RemoteCheckpoints, metrics: Arc<CheckpointMetrics>) -> Result<Self> {
        let (tx, rx) = channel::<(u64, PathBuf)>();
        let counters = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("sabot-checkpoint-uploader".into())
            .spawn(move || {
                while let Ok(mut next) = rx.recv() {
                    // Superseded checkpoints waiting behind a slow upload are skipped.
                    while let Ok(newer) = rx.try_recv() {
                        next = newer;
                    }
                    let (id, dir) = next;
                    match remote.upload(&dir, id) {
                        Ok(()) => {
                            counters.uploaded.fetch_add(1, Ordering::Relaxed);
                            counters.last_uploaded_id.store(id, Ordering::Relaxed);
                        }
                        Err(e) => {
                            counters.remote_failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(checkpoint = id, prefix = %remote.prefix(), error = %e, "checkpoint upload failed");
                        }
                    }
                }
            })
            .map_err(|e| SabotError::Execution(format!("cannot start the checkpoint uploader: {e}")))?;
        Ok(Uploader { queue: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), metrics })
    }

    /// Queues checkpoint `id` (complete in `dir`) for upload.
    fn submit(&self, id: u64, dir: PathBuf) {
        let sent = self.queue.lock().ok().and_then(|q| q.as_ref().map(|tx| tx.send((id, dir))));
        if !matches!(sent, Some(Ok(()))) {
            self.metrics.remote_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(checkpoint = id, "the checkpoint uploader has stopped: not uploaded");
        }
    }

    /// Closes the queue and waits until what it holds is uploaded.
    fn finish(&self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the checkpoint uploader panicked");
        }
    }
}

/// The newest valid checkpoint in the object store, downloaded into the local directory.
#[cfg(feature = "object-store")]
fn download_latest(
    remote: Option<&super::RemoteCheckpoints>,
    storage: &CheckpointStorage,
) -> Result<Option<(PathBuf, CheckpointMetadata)>> {
    let Some(remote) = remote else { return Ok(None) };
    let found = remote.download_latest(storage.root())?;
    if let Some((_, meta)) = &found {
        tracing::info!(checkpoint = meta.id, prefix = %remote.prefix(), "restoring checkpoint from the object store");
    }
    Ok(found)
}

/// Turns an operator's description into a directory name: `[A-Za-z0-9_-]`, at most 48 bytes.
/// Decides on recovery whether the transaction of a checkpoint (given the one before it)
/// committed; see [`CheckpointCoordinator::start`].
pub(crate) type TransactionCheck<'a> = dyn Fn(&CheckpointMetadata, Option<&CheckpointMetadata>) -> Result<bool> + 'a;

/// The newest valid checkpoint whose sink commit is marked, or confirmed by `committed`;
/// newer ones whose commit did not go through are deleted.
fn latest_committed(
    storage: &CheckpointStorage,
    committed: Option<&TransactionCheck<'_>>,
) -> Result<Option<(PathBuf, CheckpointMetadata)>> {
    let mut candidate = storage.latest()?;
    let Some(committed) = committed else { return Ok(candidate) };
    while let Some((dir, meta)) = &candidate {
        if super::storage::is_marked_committed(dir) {
            break;
        }
        let previous = storage.latest_before(meta.id)?;
        if committed(meta, previous.as_ref().map(|(_, m)| m))? {
            tracing::info!(checkpoint = meta.id, "the transaction of the last checkpoint committed");
            storage.mark_committed(meta.id)?;
            break;
        }
        tracing::warn!(
            checkpoint = meta.id,
            previous = previous.as_ref().map(|(_, m)| m.id),
            "the last checkpoint's transaction did not commit (the worker stopped between its metadata and the \
             commit): it is discarded and the checkpoint before it restored, so that interval is processed again"
        );
        storage.discard(meta.id)?;
        candidate = previous;
    }
    Ok(candidate)
}

fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    out.truncate(48);
    if out.is_empty() { "operator".into() } else { out }
}

impl CheckpointCoordinator {
    /// Opens the checkpoint directory and finds the checkpoint to restore, if any. With a
    /// sink whose commit is the pipeline's commit point, `committed` tells whether the
    /// transaction of a checkpoint without a commit marker went through (given the checkpoint
    /// before it); the newest checkpoint that is marked or confirmed is restored, and newer
    /// ones, whose output was aborted, are deleted.
    pub(crate) fn start(
        config: &CheckpointConfig,
        parallelism: usize,
        committed: Option<&TransactionCheck<'_>>,
    ) -> Result<Arc<Self>> {
        // Workers sharing a store restore a savepoint by seeding the store with it; each then
        // finds its key groups there, and its other state in its own directory.
        let mut restore = config.restore.clone();
        if let (Some(_), RestoreFrom::Savepoint(savepoint)) = (&config.worker, &restore) {
            super::storage::seed_shared_store(&config.dir, savepoint)?;
            restore = RestoreFrom::Latest;
        }
        let storage = match &config.worker {
            Some(_) => CheckpointStorage::open_shared(config.worker_dir(), config.retain, config.dir.clone())?,
            None => CheckpointStorage::open(&config.dir, config.retain)?,
        };
        #[cfg(feature = "object-store")]
        let remote = config
            .worker_remote()
            .map(|remote| super::RemoteCheckpoints::from_config(&remote, config.retain))
            .transpose()?;
        let restored = match &restore {
            RestoreFrom::Nothing => None,
            #[cfg(feature = "object-store")]
            RestoreFrom::Latest => match latest_committed(&storage, committed)? {
                Some(local) => Some(local),
                None => download_latest(remote.as_ref(), &storage)?,
            },
            #[cfg(not(feature = "object-store"))]
            RestoreFrom::Latest => latest_committed(&storage, committed)?,
            RestoreFrom::Savepoint(dir) => Some((dir.clone(), super::storage::verify(dir)?)),
        };
        let metrics = config.metrics.clone();
        if let Some((dir, meta)) = &restored {
            if meta.parallelism != parallelism {
                tracing::info!(
                    from = meta.parallelism,
                    to = parallelism,
                    "the parallelism changed: keyed state is split anew"
                );
            }
            metrics.restored_id.store(meta.id, Ordering::Relaxed);
            tracing::info!(checkpoint = meta.id, dir = %dir.display(), savepoint = meta.savepoint, "restoring checkpoint");
        }
        #[cfg(feature = "object-store")]
        let uploader = remote.map(|remote| Uploader::start(remote, metrics.clone())).transpose()?;
        let coordinator = Arc::new(CheckpointCoordinator {
            storage,
            parallelism,
            restored,
            progress: Mutex::new(BTreeMap::new()),
            written: Condvar::new(),
            jobs: Mutex::new(None),
            writer: Mutex::new(None),
            uids: Mutex::new(HashMap::new()),
            carried: Mutex::new(vec![]),
            metrics,
            trigger: super::CheckpointTrigger::default(),
            shared_root: config.worker.as_ref().map(|_| config.dir.clone()),
            key_groups: std::sync::atomic::AtomicBool::new(false),
            transactional: std::sync::atomic::AtomicBool::new(committed.is_some()),
            #[cfg(feature = "object-store")]
            uploader,
        });
        let (tx, rx) = channel::<WriteJob>();
        let weak = Arc::downgrade(&coordinator);
        let handle = std::thread::Builder::new()
            .name("sabot-checkpoint-writer".into())
            .spawn(move || {
                for job in rx {
                    let Some(coordinator) = weak.upgrade() else { break };
                    coordinator.write(job);
                }
            })
            .map_err(|e| SabotError::Execution(format!("cannot start the checkpoint writer: {e}")))?;
        *coordinator.jobs.lock().expect("checkpoint jobs") = Some(tx);
        *coordinator.writer.lock().expect("checkpoint writer") = Some(handle);
        Ok(coordinator)
    }

    /// The trigger sources use to ask for a checkpoint now.
    pub(crate) fn trigger(&self) -> &super::CheckpointTrigger {
        &self.trigger
    }

    /// The root of the store shared by the app's workers, if the checkpoints are shared.
    pub(crate) fn shared_root(&self) -> Option<&std::path::Path> {
        self.shared_root.as_deref()
    }

    /// Marks the pipeline's keyed state as handed over per key group.
    pub(crate) fn set_key_groups(&self) {
        self.key_groups.store(true, Ordering::Release);
    }

    /// Whether keyed state is handed over per key group.
    pub(crate) fn key_groups(&self) -> bool {
        self.key_groups.load(Ordering::Acquire)
    }

    /// The snapshots that every instance of the operator of task `task` took in the
    /// checkpoint in `checkpoint` (another worker's, possibly with another parallelism).
    pub(crate) fn operator_snapshots(&self, checkpoint: &std::path::Path, task: &str) -> Vec<RestoredState> {
        let Some((operator, _)) = task.rsplit_once("/p") else { return vec![] };
        let id = checkpoint
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("chk-"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let Ok(entries) = std::fs::read_dir(checkpoint.join(operator)) else { return vec![] };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with('p')))
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs.into_iter().map(|dir| RestoredState::new(id, dir)).collect()
    }

    /// The checkpoint being restored, if any.
    pub(crate) fn restored(&self) -> Option<&CheckpointMetadata> {
        self.restored.as_ref().map(|(_, meta)| meta)
    }

    /// A stable id for the `partition`-th instance of the operator described by `name`: the
    /// same plan gives the same ids in every run (the k-th operator of that description).
    pub(crate) fn task_id(&self, name: &str, partition: usize) -> String {
        let base = sanitize(name);
        let mut uids = self.uids.lock().expect("checkpoint uids");
        let n = uids.entry((base.clone(), partition)).or_insert(0);
        *n += 1;
        let suffix = if *n > 1 { format!("-{n}") } else { String::new() };
        format!("{base}{suffix}/p{partition}")
    }

    /// The state that task `task` saved in the restored checkpoint, if it saved any.
    /// With another parallelism than the checkpoint's, every old instance's directory of the
    /// operator comes with it (see [`Rescale`](super::Rescale)).
    pub(crate) fn restored_state(&self, task: &str) -> Option<RestoredState> {
        let (dir, meta) = self.restored.as_ref()?;
        let task_dir = dir.join(task);
        if meta.parallelism == self.parallelism {
            return task_dir.is_dir().then(|| RestoredState::new(meta.id, task_dir));
        }
        let (operator, partition) = task.rsplit_once("/p")?;
        let partition = partition.parse().ok()?;
        let snapshots: Vec<PathBuf> =
            (0..meta.parallelism).map(|p| dir.join(operator).join(format!("p{p}"))).filter(|d| d.is_dir()).collect();
        if snapshots.is_empty() {
            return None;
        }
        let rescale = super::Rescale { from: meta.parallelism, to: self.parallelism, partition, snapshots };
        Some(RestoredState::rescaled(meta.id, task_dir, rescale))
    }

    /// A snapshot for task `task` at checkpoint `checkpoint`.
    pub(crate) fn snapshot(&self, checkpoint: u64, task: &str) -> StateSnapshot {
        StateSnapshot::new(checkpoint, self.storage.checkpoint_dir(checkpoint).join(task))
    }

    /// Hands a filled snapshot to the writer thread (empty ones are dropped).
    pub(crate) fn submit(&self, task: &str, snapshot: StateSnapshot) {
        if snapshot.is_empty() {
            return;
        }
        let checkpoint = snapshot.checkpoint_id();
        self.progress
            .lock()
            .expect("checkpoint progress")
            .entry(checkpoint)
            .or_insert_with(|| Progress { outstanding: 0, files: vec![], error: None, started: Instant::now() })
            .outstanding += 1;
        let job = WriteJob { checkpoint, task: task.to_string(), snapshot };
        let sent = self.jobs.lock().expect("checkpoint jobs").as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            self.finish_job(checkpoint, Err("the checkpoint writer has stopped".into()));
        }
    }

    fn write(&self, job: WriteJob) {
        let result = job.snapshot.write().map(|files| {
            files.into_iter().map(|f| SnapshotFile { path: format!("{}/{}", job.task, f.path), ..f }).collect()
        });
        self.finish_job(job.checkpoint, result.map_err(|e| e.to_string()));
    }

    fn finish_job(&self, checkpoint: u64, result: std::result::Result<Vec<SnapshotFile>, String>) {
        let mut progress = self.progress.lock().expect("checkpoint progress");
        if let Some(p) = progress.get_mut(&checkpoint) {
            p.outstanding -= 1;
            match result {
                Ok(files) => p.files.extend(files),
                Err(e) => p.error = Some(e),
            }
        }
        self.written.notify_all();
    }

    /// Records that the sink committed checkpoint `checkpoint` (its transaction went
    /// through). A marker that cannot be written is not fatal: recovery then asks the
    /// sources whether the transaction committed.
    pub(crate) fn mark_committed(&self, checkpoint: u64) {
        if let Err(e) = self.storage.mark_committed(checkpoint) {
            tracing::warn!(checkpoint, error = %e, "cannot mark the checkpoint committed");
        }
    }

    /// Completes checkpoint `checkpoint` once its barrier reached the sink: waits until
    /// every snapshot handed over for it is on disk, then writes its metadata with the
    /// sources' positions and the sink's committable. Returns every committable to publish
    /// (those of failed checkpoints before it, then this one's). On failure the checkpoint
    /// does not count: the previous one stays the latest and the committables wait for the
    /// next.
    pub(crate) fn complete(
        &self,
        checkpoint: u64,
        sources: BTreeMap<String, serde_json::Value>,
        committable: Option<Committable>,
    ) -> Result<Vec<Committable>> {
        let mut carried = self.carried.lock().expect("checkpoint committables");
        carried.extend(committable);
        let progress = {
            let mut progress = self.progress.lock().expect("checkpoint progress");
            while progress.get(&checkpoint).is_some_and(|p| p.outstanding > 0) {
                progress = self.written.wait(progress).expect("checkpoint progress");
            }
            // Earlier checkpoints that never reached the sink were subsumed by this one.
            let done = progress.remove(&checkpoint);
            progress.retain(|&id, _| id > checkpoint);
            done
        };
        let (files, started) = match progress {
            Some(Progress { error: Some(e), .. }) => {
                self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                return Err(SabotError::checkpoint(self.storage.checkpoint_dir(checkpoint), e));
            }
            Some(p) => (p.files, p.started),
            None => (vec![], Instant::now()),
        };
        let mut meta = CheckpointMetadata::new(checkpoint, self.parallelism);
        meta.files = files;
        meta.files.sort_by(|a, b| a.path.cmp(&b.path));
        meta.sources = sources;
        meta.committables = carried.iter().map(|c| to_hex(c)).collect();
        meta.transactional = self.transactional.load(Ordering::Relaxed);
        if let Err(e) = self.storage.complete(&meta) {
            self.metrics.failed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.metrics.completed.fetch_add(1, Ordering::Relaxed);
        self.metrics.last_id.store(checkpoint, Ordering::Relaxed);
        self.metrics.last_duration_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.metrics.last_size_bytes.store(meta.state_size(), Ordering::Relaxed);
        #[cfg(feature = "object-store")]
        if let Some(uploader) = &self.uploader {
            uploader.submit(checkpoint, self.storage.checkpoint_dir(checkpoint));
        }
        tracing::debug!(
            checkpoint,
            files = meta.files.len(),
            bytes = meta.state_size(),
            ms = started.elapsed().as_millis() as u64,
            "checkpoint complete"
        );
        Ok(std::mem::take(&mut *carried))
    }
}

impl Drop for CheckpointCoordinator {
    fn drop(&mut self) {
        self.jobs.get_mut().map(|j| j.take()).ok();
        if let Some(handle) = self.writer.get_mut().ok().and_then(Option::take)
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
        // The last checkpoints reach the object store before the pipeline is done.
        #[cfg(feature = "object-store")]
        if let Some(uploader) = &self.uploader {
            uploader.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_become_stable_directory_names() {
        assert_eq!(sanitize("KeyedProcess: fraud_rules keys=[account]"), "KeyedProcess_fraud_rules_keys_account");
        assert_eq!(sanitize("::"), "operator");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 48);
    }

    #[test]
    fn snapshots_are_written_in_the_background_and_recorded_in_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let config = CheckpointConfig::new(dir.path());
        let coordinator = CheckpointCoordinator::start(&config, 2, None).unwrap();
        let (a, b) = (coordinator.task_id("Count", 0), coordinator.task_id("Count", 1));
        assert_eq!((a.as_str(), b.as_str()), ("Count/p0", "Count/p1"));
        assert_eq!(coordinator.task_id("Count", 0), "Count-2/p0");
        for (task, value) in [(&a, 1u64), (&b, 2)] {
            let mut snapshot = coordinator.snapshot(100, task);
            snapshot.put_value("n", &value).unwrap();
            coordinator.submit(task, snapshot);
        }
        let sources = BTreeMap::from([("kafka-0".to_string(), serde_json::json!([["in", 0, 17]]))]);
        let published = coordinator.complete(100, sources.clone(), Some(vec![1, 2])).unwrap();
        assert_eq!(published, vec![vec![1, 2]]);
        drop(coordinator);

        let restart = CheckpointCoordinator::start(&config, 2, None).unwrap();
        let meta = restart.restored().expect("restored").clone();
        assert_eq!((meta.id, meta.sources.clone(), meta.committables().unwrap()), (100, sources, vec![vec![1, 2]]));
        assert_eq!(meta.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["Count/p0/n", "Count/p1/n"]);
        assert_eq!(restart.restored_state("Count/p1").unwrap().value::<u64>("n").unwrap(), Some(2));
        assert!(restart.restored_state("Other/p0").is_none());
        let rescaled = CheckpointCoordinator::start(&config, 3, None).unwrap();
        let state = rescaled.restored_state("Count/p2").expect("every old instance's state");
        let rescale = state.rescale().expect("another parallelism");
        assert_eq!((rescale.from, rescale.to, rescale.partition, rescale.snapshots.len()), (2, 3, 2, 2));
    }

    #[test]
    fn a_failed_write_fails_the_checkpoint_and_carries_its_committables() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = CheckpointCoordinator::start(&CheckpointConfig::new(dir.path()), 1, None).unwrap();
        // A file where the checkpoint's directory should go makes the write fail.
        std::fs::write(coordinator.storage.checkpoint_dir(1), b"in the way").unwrap();
        let mut snapshot = coordinator.snapshot(1, "Op/p0");
        snapshot.put("s", vec![1]).unwrap();
        coordinator.submit("Op/p0", snapshot);
        assert!(matches!(coordinator.complete(1, BTreeMap::new(), Some(vec![1])), Err(SabotError::Checkpoint { .. })));
        assert_eq!(coordinator.metrics.failed(), 1);
        let published = coordinator.complete(2, BTreeMap::new(), Some(vec![2])).unwrap();
        assert_eq!(published, vec![vec![1], vec![2]]);
        assert_eq!(coordinator.storage.latest().unwrap().unwrap().1.id, 2);
    }

    #[cfg(feature = "object-store")]
    #[test]
    fn checkpoints_are_uploaded_and_restored_into_an_empty_directory() {
        use object_store::memory::InMemory;
        let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let config = CheckpointConfig::new(first.path()).with_object_store(store.clone(), "app");
        let coordinator = CheckpointCoordinator::start(&config, 1, None).unwrap();
        // A checkpoint that is not on disk fails to upload, counted, and nothing else fails.
        coordinator.uploader.as_ref().expect("an uploader").submit(50, first.path().join("missing"));
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while config.metrics.remote_failed() == 0 {
            assert!(Instant::now() < deadline, "the failed upload is counted");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for (checkpoint, value) in [(100, 1u64), (200, 2)] {
            let mut snapshot = coordinator.snapshot(checkpoint, "Op/p0");
            snapshot.put_value("n", &value).unwrap();
            coordinator.submit("Op/p0", snapshot);
            coordinator.complete(checkpoint, BTreeMap::new(), None).unwrap();
        }
        drop(coordinator); // waits for the uploads
        let metrics = &config.metrics;
        assert_eq!((metrics.last_uploaded_id(), metrics.remote_failed()), (200, 1));
        assert!((1..=2).contains(&metrics.uploaded()), "{}", metrics.uploaded());

        let restart = CheckpointConfig::new(second.path()).with_object_store(store, "app");
        let coordinator = CheckpointCoordinator::start(&restart, 1, None).unwrap();
        assert_eq!(coordinator.restored().map(|m| m.id), Some(200));
        assert_eq!(restart.metrics.restored_id(), 200);
        assert_eq!(coordinator.restored_state("Op/p0").unwrap().value::<u64>("n").unwrap(), Some(2));
        assert!(second.path().join("chk-00000000000000000200/_metadata.json").is_file());
    }
}
