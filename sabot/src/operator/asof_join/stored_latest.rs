//! The sealed right rows of an as-of join in the keyed state backend (RocksDB): per key, the
//! latest right row before the watermark, so that the rows of many keys can outgrow memory.
//! Each is one entry keyed by the join key (its time, then the row in Arrow's row format).
//! With a tolerance, a second store indexes them by time (time prefix, then key), so that the
//! rows the tolerance makes useless are found by one scan from the oldest and deleted.
//!
//! Rows at or after the watermark stay on the heap ([`RightIndex`](super::right_index)):
//! they are bounded by the inputs' out-of-orderness.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::right_index::LatestRows;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::row_codec::RowCodec;
use crate::operator::{TIME_PREFIX, time_prefix};
use crate::state::{KeyedStateStore, SnapshotSource, StateBackend, ValueState, ValueStateDescriptor};
use crate::{Result, SabotError};

/// Per probe of [`StoredLatest::lookup`]: the row of the returned batch and its time.
pub(super) type Found = Vec<Option<(usize, i64)>>;

/// What a snapshot records besides the backends' checkpoints.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLayout {
    /// The operator ids the column families in the checkpoints are named after.
    latest: String,
    by_time: String,
}

/// The latest sealed right row per key, in the keyed state backend.
pub(super) struct StoredLatest {
    latest_store: KeyedStateStore,
    /// Join key → its latest row before the watermark: the time (8 bytes, LE), then the row.
    latest: ValueState<Vec<u8>>,
    by_time_store: KeyedStateStore,
    /// Time prefix and join key → nothing: the sealed rows by time (with a tolerance only).
    by_time: ValueState<()>,
    tolerance: Option<i64>,
    /// Sealed rows before this time are deleted already: expiry scans start here.
    expired_before: i64,
    /// Encodes whole right rows.
    codec: RowCodec,
    rows: usize,
}

/// The time and the row of a stored entry.
fn split_entry<'a>(entry: &'a [u8], operator: &str) -> Result<(i64, &'a [u8])> {
    let time = entry.get(..8).ok_or_else(|| SabotError::State {
        state: operator.to_string(),
        message: "a stored as-of join row is truncated".into(),
    })?;
    Ok((i64::from_le_bytes(time.try_into().expect("8 bytes")), &entry[8..]))
}

impl StoredLatest {
    /// Opens an empty store of right rows of `schema` on `backend`; rows older than the
    /// watermark by more than `tolerance` are deleted when the watermark passes.
    pub(super) fn open(backend: &StateBackend, schema: SchemaRef, tolerance: Option<i64>) -> Result<Self> {
        let codec = RowCodec::new(schema, "as-of join")?;
        let mut latest_store = KeyedStateStore::open_transient(backend, "asof_join_latest")?;
        let latest = latest_store.value_state(&ValueStateDescriptor::<Vec<u8>>::new("latest"))?;
        let mut by_time_store = KeyedStateStore::open_transient(backend, "asof_join_by_time")?;
        let by_time = by_time_store.value_state(&ValueStateDescriptor::<()>::new("by_time"))?;
        Ok(StoredLatest {
            latest_store,
            latest,
            by_time_store,
            by_time,
            tolerance,
            expired_before: i64::MIN,
            codec,
            rows: 0,
        })
    }

    /// The keys with a sealed row.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// Makes `latest` (one row per key) the latest sealed rows of their keys, except where a
    /// key's stored row is later (restored from an instance whose watermark was ahead).
    pub(super) fn put(&mut self, latest: &LatestRows) -> Result<()> {
        let LatestRows { rows, times, keys } = latest;
        let encoded = self.codec.encode(rows)?;
        self.latest.prefetch_for(&mut self.latest_store, keys.iter().map(|k| k.as_ref()))?;
        for (row, key) in keys.iter().enumerate() {
            let previous = self.latest.value_for(&mut self.latest_store, key)?;
            match previous {
                Some(old) => {
                    let (old_time, _) = split_entry(&old, self.latest_store.operator())?;
                    if old_time > times[row] {
                        continue;
                    }
                    if self.tolerance.is_some() {
                        let old_index = [&time_prefix(old_time)[..], key].concat();
                        self.by_time.clear_for(&mut self.by_time_store, &old_index)?;
                    }
                }
                None => self.rows += 1,
            }
            let entry = [&times[row].to_le_bytes()[..], encoded.row(row).data()].concat();
            self.latest.update_for(&mut self.latest_store, key, entry)?;
            if self.tolerance.is_some() {
                let index = [&time_prefix(times[row])[..], key].concat();
                self.by_time.update_for(&mut self.by_time_store, &index, ())?;
            }
        }
        Ok(())
    }

    /// Deletes the rows no left row at or after `watermark` can match: those older than it by
    /// more than the tolerance.
    pub(super) fn seal(&mut self, watermark: i64) -> Result<()> {
        let Some(tolerance) = self.tolerance else { return Ok(()) };
        let oldest_useful = watermark.saturating_sub(tolerance);
        if oldest_useful <= self.expired_before {
            return Ok(());
        }
        let (from, bound) = (time_prefix(self.expired_before), time_prefix(oldest_useful));
        let expired = self.by_time.keys_between(&mut self.by_time_store, &from, &bound)?;
        self.expired_before = oldest_useful;
        for index in expired {
            let key = index.get(TIME_PREFIX..).unwrap_or_default();
            self.latest.clear_for(&mut self.latest_store, key)?;
            self.by_time.clear_for(&mut self.by_time_store, &index)?;
            self.rows -= 1;
        }
        Ok(())
    }

    /// For each `(key, time)`: the key's sealed row if it is at or before `time` and within
    /// the tolerance, as a row of the returned batch with its time.
    pub(super) fn lookup(&mut self, probes: &[(&[u8], i64)]) -> Result<(RecordBatch, Found)> {
        self.latest.prefetch_for(&mut self.latest_store, probes.iter().map(|(k, _)| *k))?;
        let (mut found, mut picks) = (vec![], Vec::with_capacity(probes.len()));
        for &(key, time) in probes {
            let entry = self.latest.value_for(&mut self.latest_store, key)?;
            let matched = match &entry {
                Some(entry) => {
                    let (at, _) = split_entry(entry, self.latest_store.operator())?;
                    (at <= time && self.tolerance.is_none_or(|tol| time.saturating_sub(at) <= tol)).then_some(at)
                }
                None => None,
            };
            picks.push(match (entry, matched) {
                (Some(entry), Some(at)) => {
                    found.push(entry);
                    Some((found.len() - 1, at))
                }
                _ => None,
            });
        }
        let rows = found.iter().map(|entry| &entry[8..]);
        Ok((self.codec.decode(rows)?, picks))
    }

    /// Drops every row.
    pub(super) fn clear(&mut self) -> Result<()> {
        self.latest_store.retain_keys(&|_| false)?;
        self.by_time_store.retain_keys(&|_| false)?;
        (self.rows, self.expired_before) = (0, i64::MIN);
        Ok(())
    }

    /// Checkpoints of both stores (RocksDB: hard links).
    pub(super) fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        self.latest_store.snapshot_into(snapshot, "sealed_latest")?;
        self.by_time_store.snapshot_into(snapshot, "sealed_by_time")?;
        let layout = StoredLayout {
            latest: self.latest_store.operator().to_string(),
            by_time: self.by_time_store.operator().to_string(),
        };
        snapshot.put_value("asof_stored", &layout)
    }

    /// Adds the sealed rows whose keys `keep` accepts from a snapshot of another instance (or
    /// of this one); their keys are disjoint from the keys stored here.
    pub(super) fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        let Some(layout) = snapshot.value::<StoredLayout>("asof_stored")? else {
            return Err(SabotError::State {
                state: "asof_join".into(),
                message: "the checkpoint holds state of the memory state backend; restore it with that backend".into(),
            });
        };
        let directory = |name: &str| {
            snapshot.directory(name)?.ok_or_else(|| SabotError::State {
                state: "asof_join".into(),
                message: format!("the snapshot lists stored as-of join rows but holds no {name} directory"),
            })
        };
        // Imported rows may be of any age: the next expiry scans from the start.
        self.expired_before = i64::MIN;
        let latest = SnapshotSource { dir: directory("sealed_latest")?, operator: layout.latest };
        self.latest_store.import_keys(&[latest], keep)?;
        let by_time = SnapshotSource { dir: directory("sealed_by_time")?, operator: layout.by_time };
        self.by_time_store
            .import_keys(&[by_time], &|index: &[u8]| keep(index.get(TIME_PREFIX..).unwrap_or_default()))?;
        self.rows = self.latest_store.stored_entries()?;
        Ok(())
    }
}
