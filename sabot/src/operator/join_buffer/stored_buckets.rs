//! A join buffer in the keyed state backend (RocksDB): rows larger than memory. The rows of
//! one key in one bucket are one entry, keyed by the bucket's start then the join key, so
//! that a probe reads one entry per bucket it spans and an expired bucket is one range of
//! keys. The value lists the rows in arrival order with their event times
//! ([`timed_rows`](crate::operator::timed_rows)).
//!
//! New rows first go to a bounded buffer on the heap ([`TimeBuckets`]); when it is full, and
//! at checkpoints, its rows are appended to their entries, read through the store's
//! write-back cache: one read and one write per key and bucket per flush, not per row.
//! Probes read the store, then the buffer, bucket by bucket, so rows come out in arrival
//! order as on the heap.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::time_buckets::{Gather, RowRef, TimeBuckets};
use super::{JoinBuffer, KeepKeys, KeyedRows, Matches, Probe};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::join_state::{EncodedKeys, JoinKeys, Side};
use crate::operator::row_codec::RowCodec;
use crate::operator::timed_rows::{append_row, arena_rows, for_each_row};
use crate::operator::{TIME_PREFIX, time_prefix};
use crate::state::{KeyedStateStore, SnapshotSource, StateBackend, ValueState, ValueStateDescriptor};
use crate::{Result, SabotError};

/// Rows the heap buffer holds before they are written to the store.
const DEFAULT_BUFFERED_ROWS: usize = 100_000;

/// The stored key of `key`'s rows in the bucket starting at `start`.
fn stored_key(start: i64, key: &[u8]) -> Vec<u8> {
    [&time_prefix(start)[..], key].concat()
}

/// The join key of a stored key.
fn join_key(stored: &[u8]) -> &[u8] {
    stored.get(TIME_PREFIX..).unwrap_or_default()
}

/// What the store knows of a bucket without reading it.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct BucketSummary {
    max_time: i64,
    rows: usize,
}

/// What a snapshot records besides the backend's checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLayout {
    /// The operator id the column family in the checkpoint is named after.
    operator: String,
    /// The buckets with rows in the checkpoint.
    buckets: Vec<(i64, BucketSummary)>,
}

/// Buffered rows of one join input in the keyed state backend.
pub(crate) struct StoredBuckets {
    /// The store's operator id (the prefix of its column family).
    operator: String,
    store: KeyedStateStore,
    /// Bucket start and join key → the key's rows in that bucket.
    entries: ValueState<Vec<u8>>,
    /// The buckets with rows in the store.
    stored: BTreeMap<i64, BucketSummary>,
    stored_rows: usize,
    /// Rows inserted since the last flush.
    recent: TimeBuckets,
    recent_limit: usize,
    /// Encodes whole rows of the input.
    codec: RowCodec,
}

impl StoredBuckets {
    /// Opens an empty buffer for rows of input `side` (of `schema`, event times in
    /// `time_column`) in buckets of `width` ms on `backend`.
    pub(crate) fn open(
        backend: &StateBackend,
        side: Side,
        schema: SchemaRef,
        time_column: &str,
        width: i64,
    ) -> Result<Self> {
        let codec = RowCodec::new(schema.clone(), "join")?;
        let mut store = KeyedStateStore::open_transient(backend, &format!("{}_join_rows", side.name()))?;
        let entries = store.value_state(&ValueStateDescriptor::<Vec<u8>>::new("rows"))?;
        Ok(StoredBuckets {
            operator: store.operator().to_string(),
            store,
            entries,
            stored: BTreeMap::new(),
            stored_rows: 0,
            recent: TimeBuckets::new(width, side, schema.clone(), time_column),
            recent_limit: DEFAULT_BUFFERED_ROWS,
            codec,
        })
    }

    /// Calls `f` with the event time and encoding of every row of a stored entry.
    fn for_each_row(&self, entry: &[u8], f: impl FnMut(i64, &[u8])) -> Result<()> {
        for_each_row(entry, &self.operator, f)
    }

    /// Rows of the input's schema from the encodings `ends` delimits in `arena`.
    fn decode(&self, arena: &[u8], ends: &[usize]) -> Result<RecordBatch> {
        self.codec.decode(arena_rows(arena, ends))
    }

    /// Appends the buffered rows to their entries in the store and empties the buffer.
    fn flush(&mut self) -> Result<()> {
        if self.recent.rows() == 0 {
            return Ok(());
        }
        let mut appended: Vec<(Vec<u8>, Vec<u8>)> = vec![];
        let mut read_first: Vec<usize> = vec![];
        for (start, bucket) in self.recent.buckets() {
            let encoded = bucket.batches.iter().map(|b| self.codec.encode(b)).collect::<Result<Vec<_>>>()?;
            let existed = self.stored.contains_key(&start);
            for (key, list) in &bucket.index {
                let mut entry = vec![];
                for &(batch, row) in list {
                    let (batch, row) = (batch as usize, row as usize);
                    append_row(&mut entry, bucket.times[batch][row], encoded[batch].row(row).data());
                }
                if existed {
                    read_first.push(appended.len());
                }
                appended.push((stored_key(start, key), entry));
            }
            let summary = self.stored.entry(start).or_insert(BucketSummary { max_time: i64::MIN, rows: 0 });
            summary.max_time = summary.max_time.max(bucket.max_time);
            summary.rows += bucket.rows;
        }
        self.entries.prefetch_for(&mut self.store, read_first.iter().map(|&i| appended[i].0.as_slice()))?;
        for (key, entry) in appended {
            self.entries.update_with_for(&mut self.store, &key, |old| match old {
                Some(old) => [old.as_slice(), &entry].concat(),
                None => entry,
            })?;
        }
        self.stored_rows += self.recent.rows();
        self.recent.clear()
    }

    /// The starts of the buckets, stored or buffered, in `[from, to]`, in order.
    fn starts_within(&self, from: i64, to: i64, starts: &mut Vec<i64>) {
        starts.clear();
        if from > to {
            return;
        }
        starts.extend(self.stored.range(from..=to).map(|(s, _)| *s));
        starts.extend(self.recent.starts_between(from, to));
        starts.sort_unstable();
        starts.dedup();
    }

    /// Reads the bucket at `start` again after an import and records what it holds.
    fn recount(&mut self, start: i64) -> Result<()> {
        let entries = self.entries.entries_with_prefix(&mut self.store, &time_prefix(start))?;
        let mut summary = BucketSummary { max_time: i64::MIN, rows: 0 };
        for (_, entry) in &entries {
            self.for_each_row(entry, |time, _| {
                summary.max_time = summary.max_time.max(time);
                summary.rows += 1;
            })?;
        }
        if let Some(old) = self.stored.remove(&start) {
            self.stored_rows -= old.rows;
        }
        if summary.rows > 0 {
            self.stored_rows += summary.rows;
            self.stored.insert(start, summary);
        }
        Ok(())
    }
}

impl JoinBuffer for StoredBuckets {
    fn insert(&mut self, batch: &RecordBatch, times: &[i64], keys: &EncodedKeys, selected: &[u32]) -> Result<()> {
        self.recent.insert(batch, times, keys, selected)?;
        if self.recent.rows() > self.recent_limit {
            self.flush()?;
        }
        Ok(())
    }

    fn probe(&mut self, probes: &[Probe<'_>]) -> Result<Matches> {
        let mut wanted = vec![];
        for p in probes.iter().filter(|p| p.low <= p.high) {
            let first = self.recent.bucket_of(p.low);
            wanted.extend(self.stored.range(first..=p.high).map(|(&start, _)| stored_key(start, p.key)));
        }
        self.entries.prefetch_for(&mut self.store, wanted.iter().map(Vec::as_slice))?;
        // Source 0 is the stored rows, decoded at the end; the buffer's batches follow.
        let mut gather = Gather::after(vec![RecordBatch::new_empty(self.codec.schema().clone())]);
        let (mut arena, mut ends) = (vec![], vec![]);
        let mut matches = Matches::default();
        let (mut starts, mut recent): (Vec<i64>, Vec<RowRef>) = (vec![], vec![]);
        let mut lookup = vec![];
        for p in probes {
            self.starts_within(self.recent.bucket_of(p.low), p.high, &mut starts);
            for &start in &starts {
                let entry = if self.stored.contains_key(&start) {
                    lookup.clear();
                    lookup.extend_from_slice(&time_prefix(start));
                    lookup.extend_from_slice(p.key);
                    self.entries.value_for(&mut self.store, &lookup)?
                } else {
                    None
                };
                if let Some(entry) = entry {
                    self.for_each_row(&entry, |time, row| {
                        if time >= p.low && time <= p.high {
                            arena.extend_from_slice(row);
                            ends.push(arena.len());
                            matches.probe_rows.push(p.row);
                            matches.rows.push(Some((0, ends.len() - 1)));
                        }
                    })?;
                }
                recent.clear();
                self.recent.probe_bucket(start, p.key, p.low, p.high, |r| recent.push(r));
                for &r in &recent {
                    matches.probe_rows.push(p.row);
                    matches.rows.push(Some(gather.pick(&self.recent, r)?));
                }
            }
        }
        if !ends.is_empty() {
            gather.sources[0] = self.decode(&arena, &ends)?;
        }
        matches.sources = gather.sources;
        Ok(matches)
    }

    fn rows_in(&mut self, from: i64, to: i64, wanted: &dyn Fn(&[u8]) -> bool) -> Result<KeyedRows> {
        let mut out =
            KeyedRows { sources: vec![RecordBatch::new_empty(self.codec.schema().clone())], ..KeyedRows::default() };
        let (mut arena, mut ends) = (vec![], vec![]);
        let mut starts = vec![];
        self.starts_within(from, to.saturating_sub(1), &mut starts);
        for start in starts {
            if self.stored.contains_key(&start) {
                for (stored, entry) in self.entries.entries_with_prefix(&mut self.store, &time_prefix(start))? {
                    let key = join_key(&stored);
                    if !wanted(key) {
                        continue;
                    }
                    let list = out.rows_of(key);
                    self.for_each_row(&entry, |_, row| {
                        arena.extend_from_slice(row);
                        ends.push(arena.len());
                        list.push((0, ends.len() - 1));
                    })?;
                }
            }
            self.recent.add_rows_in(start, start.saturating_add(1), wanted, &mut out)?;
        }
        if !ends.is_empty() {
            out.sources[0] = self.decode(&arena, &ends)?;
        }
        Ok(out)
    }

    fn starts(&self) -> Vec<i64> {
        let mut starts = vec![];
        self.starts_within(i64::MIN, i64::MAX, &mut starts);
        starts
    }

    fn expire(&mut self, dead: &dyn Fn(i64, i64) -> bool) -> Result<()> {
        self.recent.expire(dead)?;
        let gone: Vec<i64> = self.stored.iter().filter(|(s, b)| dead(**s, b.max_time)).map(|(s, _)| *s).collect();
        for start in gone {
            self.entries.clear_prefix(&mut self.store, &time_prefix(start))?;
            if let Some(summary) = self.stored.remove(&start) {
                self.stored_rows -= summary.rows;
            }
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<()> {
        self.expire(&|_, _| true)
    }

    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<usize> {
        let before = self.rows();
        let dropped_recent = self.recent.retain_keys(keep)?;
        self.store.retain_keys(&|stored: &[u8]| keep(join_key(stored)))?;
        for start in self.stored.keys().copied().collect::<Vec<_>>() {
            self.recount(start)?;
        }
        debug_assert!(self.rows() + dropped_recent <= before);
        Ok(before - self.rows())
    }

    fn rows(&self) -> usize {
        self.stored_rows + self.recent.rows()
    }

    fn limit_memory(&mut self, rows: usize) {
        self.recent_limit = rows;
    }

    /// A checkpoint of the backend (RocksDB: hard links) after a flush, and the buckets.
    fn snapshot(&mut self, snapshot: &mut StateSnapshot, name: &str) -> Result<()> {
        self.flush()?;
        self.store.snapshot_into(snapshot, &format!("{name}_rows"))?;
        let layout = StoredLayout {
            operator: self.operator.clone(),
            buckets: self.stored.iter().map(|(s, b)| (*s, *b)).collect(),
        };
        snapshot.put_value(&format!("{name}_stored"), &layout)
    }

    fn merge_snapshot(
        &mut self,
        restored: &RestoredState,
        name: &str,
        _keys: &JoinKeys,
        keep: KeepKeys<'_>,
    ) -> Result<()> {
        let Some(layout) = restored.value::<StoredLayout>(&format!("{name}_stored"))? else {
            return crate::operator::saved_by_another_backend(restored, &self.operator, name, "memory");
        };
        let Some(dir) = restored.directory(&format!("{name}_rows"))? else {
            return Err(SabotError::State {
                state: self.operator.clone(),
                message: format!("the snapshot lists stored {name} join rows but holds no state directory"),
            });
        };
        let source = SnapshotSource { dir, operator: layout.operator };
        match keep {
            None => {
                self.store.import_keys(&[source], &|_| true)?;
                for (start, summary) in layout.buckets {
                    let mine = self.stored.entry(start).or_insert(BucketSummary { max_time: i64::MIN, rows: 0 });
                    mine.max_time = mine.max_time.max(summary.max_time);
                    mine.rows += summary.rows;
                    self.stored_rows += summary.rows;
                }
            }
            // Part of each bucket stays behind: count what came.
            Some(keep) => {
                self.store.import_keys(&[source], &|stored: &[u8]| keep(join_key(stored)))?;
                for (start, _) in layout.buckets {
                    self.recount(start)?;
                }
            }
        }
        Ok(())
    }
}
