//! Key groups: keyed state that follows its Kafka partitions from worker to worker.
//!
//! When a topic is written by a Sabot sink partitioned by some keys
//! ([`KafkaSink::partition_by`](crate::kafka::KafkaSink::partition_by), as repartition topics
//! are), partition `g` of that topic holds exactly the keys `k` with
//! `hash(k) % partitions == g`: the partition is a *key group* of the keyed state downstream.
//! Workers of one consumer group then own disjoint key groups, and when the group rebalances
//! the state of a partition moves with it, as a Kafka Streams task's state does:
//!
//! 1. The worker losing partition `g` stops reading it, completes a checkpoint that holds
//!    `g`'s state and position (into a checkpoint store shared by the workers), then sends a
//!    [`KeyGroupChange`] releasing `g` down the pipeline, and only then gives the partition
//!    back to the group. Until it does, the rebalance waits: two workers never own `g` at once.
//! 2. The worker receiving `g` finds, in the shared store, the newest checkpoint that holds
//!    `g`, resumes the partition at the position recorded there, and sends a [`KeyGroupChange`]
//!    acquiring `g` from that checkpoint ahead of `g`'s first row: keyed operators load the
//!    keys of `g` (state and timers) before they see them.
//!
//! Every checkpoint records which partitions' state it holds, so the store can always tell
//! where a key group's latest state is, also after a worker died.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::storage::{CheckpointMetadata, METADATA_FILE};

/// The key group of an encoded key (its key columns in Arrow's row format) among
/// `partitions`: the partition a Sabot sink partitioned by those keys writes the key to.
///
/// ```
/// use sabot::checkpoint::key_group;
/// let g = key_group(b"some key", 8);
/// assert!(g < 8);
/// assert_eq!(g, key_group(b"some key", 8));
/// ```
pub fn key_group(key: &[u8], partitions: u32) -> u32 {
    (crate::operator::hash_bytes(key) % u64::from(partitions.max(1))) as u32
}

/// Numbers the key group changes of this process, in the order they are made.
static NEXT_CHANGE: AtomicU64 = AtomicU64::new(1);

/// A change of the key groups a worker owns, sent down the pipeline by a source.
///
/// ```
/// use sabot::checkpoint::KeyGroupChange;
/// let change = KeyGroupChange::release("clicks", 4, vec![1, 3]);
/// assert!(change.releases(3) && !change.releases(0));
/// let later = KeyGroupChange::acquire("clicks", 4, vec![(3, "chk-9".into())]);
/// assert!(later.sequence > change.sequence);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroupChange {
    /// The topic whose partitions are the key groups.
    pub topic: String,
    /// How many partitions (key groups) the topic has.
    pub partitions: u32,
    /// Key groups whose state the operators drop: their checkpoint is complete.
    pub released: Vec<u32>,
    /// Key groups whose state the operators load, with the checkpoint that holds it.
    pub acquired: Vec<(u32, PathBuf)>,
    /// The order of the change among those of this process. A partition that moves between
    /// two readers of one process is released by one and acquired by the other, and the two
    /// changes may reach an operator in either order: see [`Self::after_release`].
    pub sequence: u64,
    /// Acquired groups that this process released before, with the sequence of that release:
    /// an operator that has not seen it yet drops the group's state before loading it, and
    /// ignores the release when it comes.
    pub after_release: Vec<(u32, u64)>,
}

impl KeyGroupChange {
    /// Releases `groups` of `topic`.
    pub fn release(topic: impl Into<String>, partitions: u32, groups: Vec<u32>) -> Self {
        let sequence = NEXT_CHANGE.fetch_add(1, Ordering::SeqCst);
        KeyGroupChange {
            topic: topic.into(),
            partitions,
            released: groups,
            acquired: vec![],
            sequence,
            after_release: vec![],
        }
    }

    /// Acquires key groups of `topic` from the checkpoints that hold them.
    pub fn acquire(topic: impl Into<String>, partitions: u32, groups: Vec<(u32, PathBuf)>) -> Self {
        let sequence = NEXT_CHANGE.fetch_add(1, Ordering::SeqCst);
        KeyGroupChange {
            topic: topic.into(),
            partitions,
            released: vec![],
            acquired: groups,
            sequence,
            after_release: vec![],
        }
    }

    /// The same change for another topic: the twin that the other side of a co-partitioned
    /// join sends.
    pub(crate) fn twin(&self, topic: &str) -> Self {
        KeyGroupChange { topic: topic.to_string(), ..self.clone() }
    }

    /// Whether `other` is this change's twin (the same change, for the other side's topic).
    pub(crate) fn is_twin_of(&self, other: &KeyGroupChange) -> bool {
        self.sequence == other.sequence
            && self.partitions == other.partitions
            && self.released == other.released
            && self.acquired == other.acquired
    }

    /// Whether `group` is released.
    pub fn releases(&self, group: u32) -> bool {
        self.released.contains(&group)
    }
}

/// What one operator instance applied of the key group changes it received: the sequence of
/// the last change applied per group, so that changes apply in the order they were made.
#[derive(Debug, Default)]
pub(crate) struct KeyGroupLedger {
    last: std::collections::HashMap<u32, u64>,
}

impl KeyGroupLedger {
    /// What is still to apply of `change`: the groups to drop (released ones, and acquired
    /// ones whose earlier release has not arrived yet) and the groups to load. A change older
    /// than the last one applied to a group is skipped for it.
    pub(crate) fn effective(&mut self, change: &KeyGroupChange) -> (Vec<u32>, Vec<(u32, PathBuf)>) {
        let (mut released, mut acquired) = (vec![], vec![]);
        for &group in &change.released {
            let last = self.last.entry(group).or_insert(0);
            if *last < change.sequence {
                *last = change.sequence;
                released.push(group);
            }
        }
        for (group, checkpoint) in &change.acquired {
            let last = self.last.entry(*group).or_insert(0);
            if *last >= change.sequence {
                continue;
            }
            let release_pending = change.after_release.iter().any(|(g, release)| g == group && *release > *last);
            if release_pending {
                released.push(*group);
            }
            *last = change.sequence;
            acquired.push((*group, checkpoint.clone()));
        }
        (released, acquired)
    }
}

/// What a keyed operator instance gets from a [`KeyGroupChange`]: the groups to drop, and
/// for the groups to load, every snapshot its operator took in the checkpoints that hold them
/// (one per parallel instance of the run that took it).
#[derive(Debug, Clone)]
pub struct KeyGroupHandover {
    /// How many key groups there are.
    pub partitions: u32,
    /// Key groups to drop.
    pub released: Vec<u32>,
    /// Per checkpoint: the key groups to load from it, and the operator's snapshots there.
    pub acquired: Vec<(Vec<u32>, Vec<super::RestoredState>)>,
    /// This instance, and the number of instances: a loaded key must also be one the hash
    /// exchange in front of the operator routes here.
    pub instance: (usize, usize),
}

impl KeyGroupHandover {
    /// Whether the encoded `key` belongs to a released key group.
    ///
    /// ```
    /// use sabot::checkpoint::{KeyGroupHandover, key_group};
    /// let handover = KeyGroupHandover { partitions: 4, released: vec![key_group(b"k", 4)], acquired: vec![], instance: (0, 1) };
    /// assert!(handover.releases(b"k"));
    /// ```
    pub fn releases(&self, key: &[u8]) -> bool {
        !self.released.is_empty() && self.released.contains(&key_group(key, self.partitions))
    }

    /// Whether the encoded `key` belongs to `groups`, the key groups of one entry of
    /// [`acquired`](Self::acquired).
    pub fn acquires(&self, groups: &[u32], key: &[u8]) -> bool {
        groups.contains(&key_group(key, self.partitions))
    }
}

/// Asks the sources of a running pipeline for a checkpoint now, outside the interval: every
/// reader emits a barrier with the requested id at its next poll.
///
/// ```
/// use sabot::checkpoint::CheckpointTrigger;
/// let trigger = CheckpointTrigger::default();
/// assert_eq!(trigger.requested(), 0);
/// let id = trigger.request(100);
/// assert!(id > 100 && trigger.requested() == id);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CheckpointTrigger(Arc<AtomicU64>);

impl CheckpointTrigger {
    /// Requests a checkpoint with an id above `after` (the newest barrier id emitted) and the
    /// current time in ms (ids of periodic barriers are times too); returns the id. A request
    /// not yet served is reused.
    pub fn request(&self, after: u64) -> u64 {
        let pending = self.0.load(Ordering::Acquire);
        if pending > after {
            return pending;
        }
        let id = super::storage::now_ms().max(after + 1);
        self.0.fetch_max(id, Ordering::AcqRel);
        self.0.load(Ordering::Acquire)
    }

    /// Requests a checkpoint with an id above `after` and above any requested so far, written
    /// by this call: whoever reads that id also sees what this thread did before (a reader
    /// following a source that pauses partitions for the checkpoint sees the pause first).
    ///
    /// ```
    /// use sabot::checkpoint::CheckpointTrigger;
    /// let trigger = CheckpointTrigger::default();
    /// let first = trigger.request(100);
    /// let fresh = trigger.request_fresh(100);
    /// assert!(fresh > first && trigger.requested() == fresh);
    /// ```
    pub fn request_fresh(&self, after: u64) -> u64 {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let id = super::storage::now_ms().max(after + 1).max(current + 1);
            match self.0.compare_exchange_weak(current, id, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return id,
                Err(newer) => current = newer,
            }
        }
    }

    /// The id of the newest requested checkpoint (0: none).
    pub fn requested(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Where the latest state of a key group is: a checkpoint that holds it and the position
/// (next offset) of its partition there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroupHolder {
    /// The checkpoint's directory.
    pub checkpoint: PathBuf,
    /// The next offset of the partition in that checkpoint.
    pub position: i64,
}

/// What a Kafka source records in a checkpoint's metadata when its partitions are key groups.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct OwnedPositions {
    /// The consumer group.
    pub(crate) group: String,
    /// `(topic, partition, next offset)` of every partition read so far.
    pub(crate) positions: Vec<(String, i32, i64)>,
    /// The partitions whose key group's state the checkpoint holds.
    pub(crate) owned: Vec<(String, i32)>,
}

/// The checkpoint directories of every worker sharing one store: `<root>/<worker>/chk-*`.
///
/// ```
/// use sabot::checkpoint::KeyGroupStore;
/// let dir = tempfile::tempdir().unwrap();
/// let store = KeyGroupStore::new(dir.path(), "orders-app");
/// assert_eq!(store.locate("orders", 0)?, None);
/// # Ok::<(), sabot::SabotError>(())
/// ```
#[derive(Debug, Clone)]
pub struct KeyGroupStore {
    root: PathBuf,
    group: String,
}

impl KeyGroupStore {
    /// The store under `root`, for the sources of consumer group `group`.
    pub fn new(root: impl Into<PathBuf>, group: impl Into<String>) -> Self {
        KeyGroupStore { root: root.into(), group: group.into() }
    }

    /// The newest state of partition `partition` of `topic`: of the checkpoints that hold it,
    /// the one furthest in the partition (the newest one on a tie). A checkpoint whose sink
    /// commit is the commit point and has no commit marker does not count: its transaction
    /// may have been aborted (a worker handing partitions over marks its checkpoint first).
    pub fn locate(&self, topic: &str, partition: i32) -> crate::Result<Option<KeyGroupHolder>> {
        let mut best: Option<(i64, u64, PathBuf)> = None;
        for (dir, meta) in self.checkpoints()?.into_iter().filter(|(dir, meta)| meta.is_committed(dir)) {
            for owned in self.owned_positions(&meta) {
                if !owned.owned.iter().any(|(t, p)| t == topic && *p == partition) {
                    continue;
                }
                let Some(position) =
                    owned.positions.iter().find(|(t, p, _)| t == topic && *p == partition).map(|(_, _, o)| *o)
                else {
                    continue;
                };
                let candidate = (position, meta.created_ms, dir.clone());
                if best.as_ref().is_none_or(|b| (candidate.0, candidate.1) > (b.0, b.1)) {
                    best = Some(candidate);
                }
            }
        }
        Ok(best.map(|(position, _, checkpoint)| KeyGroupHolder { checkpoint, position }))
    }

    /// The position of partition `partition` of `topic` recorded in the checkpoint in `dir`
    /// (by a source of this store's group), if it records one: where a source that follows
    /// another one's partitions resumes, in the checkpoint its leader loads the state from.
    pub fn position_in(&self, dir: &Path, topic: &str, partition: i32) -> crate::Result<Option<i64>> {
        let meta = read_metadata(dir)?;
        Ok(self
            .owned_positions(&meta)
            .into_iter()
            .flat_map(|o| o.positions)
            .find(|(t, p, _)| t == topic && *p == partition)
            .map(|(_, _, position)| position))
    }

    /// Whether the checkpoint in `dir` is, for some partition, the newest holder of its
    /// state: retention must keep it until another worker has checkpointed that key group.
    pub fn holds_latest(&self, dir: &Path) -> bool {
        let Ok(meta) = read_metadata(dir) else { return false };
        let owned: Vec<(String, i32)> = self.owned_positions(&meta).into_iter().flat_map(|o| o.owned).collect();
        owned.iter().any(|(topic, partition)| {
            self.locate(topic, *partition).ok().flatten().is_some_and(|holder| holder.checkpoint == dir)
        })
    }

    fn owned_positions(&self, meta: &CheckpointMetadata) -> Vec<OwnedPositions> {
        meta.sources
            .values()
            .filter_map(|v| serde_json::from_value::<OwnedPositions>(v.clone()).ok())
            .filter(|o| o.group == self.group)
            .collect()
    }

    /// Every completed checkpoint of every worker, with its metadata (unreadable ones are
    /// skipped: they are being written, deleted, or corrupt).
    fn checkpoints(&self) -> crate::Result<Vec<(PathBuf, CheckpointMetadata)>> {
        let mut out = vec![];
        let Ok(workers) = std::fs::read_dir(&self.root) else { return Ok(out) };
        for worker in workers.flatten() {
            let Ok(entries) = std::fs::read_dir(worker.path()) else { continue };
            for entry in entries.flatten() {
                let dir = entry.path();
                if !entry.file_name().to_str().is_some_and(|n| n.starts_with("chk-")) {
                    continue;
                }
                if let Ok(meta) = read_metadata(&dir) {
                    out.push((dir, meta));
                }
            }
        }
        Ok(out)
    }
}

/// Whether retention must keep the checkpoint in `dir` of a store under `root`: it is the
/// newest holder of some key group's state.
pub(crate) fn pinned(root: &Path, dir: &Path) -> bool {
    let Ok(meta) = read_metadata(dir) else { return false };
    let mut groups: Vec<String> = meta
        .sources
        .values()
        .filter_map(|v| serde_json::from_value::<OwnedPositions>(v.clone()).ok())
        .map(|o| o.group)
        .collect();
    groups.dedup();
    groups.into_iter().any(|group| KeyGroupStore::new(root, group).holds_latest(dir))
}

fn read_metadata(dir: &Path) -> crate::Result<CheckpointMetadata> {
    let path = dir.join(METADATA_FILE);
    let text = std::fs::read(&path).map_err(|e| crate::SabotError::io(&path, e))?;
    serde_json::from_slice(&text).map_err(|e| crate::SabotError::checkpoint(dir, format!("unreadable metadata: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointStorage;

    fn complete(root: &Path, worker: &str, id: u64, created: u64, positions: &[(i32, i64)], owned: &[i32]) -> PathBuf {
        let storage = CheckpointStorage::open(root.join(worker), 10).unwrap();
        let mut meta = CheckpointMetadata::new(id, 1);
        meta.created_ms = created;
        let source = OwnedPositions {
            group: "g".into(),
            positions: positions.iter().map(|(p, o)| ("t".to_string(), *p, *o)).collect(),
            owned: owned.iter().map(|p| ("t".to_string(), *p)).collect(),
        };
        meta.sources.insert("kafka-0".into(), serde_json::to_value(source).unwrap());
        storage.complete(&meta).unwrap();
        storage.checkpoint_dir(id)
    }

    #[test]
    fn the_ledger_applies_a_release_and_an_acquire_in_the_order_they_were_made() {
        let released = KeyGroupChange::release("t", 4, vec![2]);
        let acquired = KeyGroupChange {
            after_release: vec![(2, released.sequence)],
            ..KeyGroupChange::acquire("t", 4, vec![(2, "x".into())])
        };
        // In order: the release drops the group, the acquire loads it.
        let mut ledger = KeyGroupLedger::default();
        assert_eq!(ledger.effective(&released), (vec![2], vec![]));
        assert_eq!(ledger.effective(&acquired), (vec![], vec![(2, "x".into())]));
        // The acquire first: it drops what the pending release would, and the release then
        // does nothing.
        let mut ledger = KeyGroupLedger::default();
        assert_eq!(ledger.effective(&acquired), (vec![2], vec![(2, "x".into())]));
        assert_eq!(ledger.effective(&released), (vec![], vec![]));
        // An acquire of a group this process never released drops nothing.
        let fresh = KeyGroupChange::acquire("t", 4, vec![(1, "y".into())]);
        assert_eq!(KeyGroupLedger::default().effective(&fresh), (vec![], vec![(1, "y".into())]));
        assert!(fresh.twin("u").is_twin_of(&fresh) && !released.is_twin_of(&acquired));
    }

    #[test]
    fn the_holder_is_the_owning_checkpoint_furthest_in_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let a1 = complete(dir.path(), "a", 1, 1, &[(0, 10), (1, 20)], &[0, 1]);
        // Worker a released partition 1 at offset 20; b took it and went on.
        let a2 = complete(dir.path(), "a", 2, 2, &[(0, 15), (1, 20)], &[0]);
        let b1 = complete(dir.path(), "b", 3, 3, &[(1, 20)], &[1]);
        let store = KeyGroupStore::new(dir.path(), "g");
        assert_eq!(store.locate("t", 0).unwrap(), Some(KeyGroupHolder { checkpoint: a2.clone(), position: 15 }));
        // a2 records partition 1 without owning it; b1 ties with a1 and is newer.
        assert_eq!(store.locate("t", 1).unwrap(), Some(KeyGroupHolder { checkpoint: b1.clone(), position: 20 }));
        assert_eq!(store.locate("t", 2).unwrap(), None);
        assert_eq!(store.position_in(&a2, "t", 0).unwrap(), Some(15));
        assert_eq!(store.position_in(&b1, "t", 0).unwrap(), None);
        assert_eq!(KeyGroupStore::new(dir.path(), "other").locate("t", 0).unwrap(), None);
        assert!(store.holds_latest(&a2) && store.holds_latest(&b1));
        assert!(!store.holds_latest(&a1), "a1 is superseded for both partitions");
        assert!(pinned(dir.path(), &a2) && !pinned(dir.path(), &a1));
    }

    #[test]
    fn a_transactional_checkpoint_holds_its_key_groups_once_its_commit_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let older = complete(dir.path(), "a", 1, 1, &[(0, 10)], &[0]);
        let newer = complete(dir.path(), "a", 2, 2, &[(0, 15)], &[0]);
        let mut meta = crate::checkpoint::verify(&newer).unwrap();
        meta.transactional = true;
        CheckpointStorage::open(dir.path().join("a"), 10).unwrap().complete(&meta).unwrap();
        let store = KeyGroupStore::new(dir.path(), "g");
        assert_eq!(store.locate("t", 0).unwrap().unwrap().checkpoint, older, "its transaction may have aborted");
        std::fs::write(newer.join(super::super::storage::COMMITTED_MARKER), b"").unwrap();
        assert_eq!(store.locate("t", 0).unwrap().unwrap().checkpoint, newer);
    }

    #[test]
    fn a_trigger_request_is_above_every_emitted_barrier_and_reused_until_served() {
        let trigger = CheckpointTrigger::default();
        let far = u64::MAX / 2;
        assert_eq!(trigger.request(far), far + 1);
        assert_eq!(trigger.request(far), far + 1, "pending request reused");
        assert_eq!(trigger.request(far + 1), far + 2);
    }
}
