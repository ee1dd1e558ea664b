//! Per-key lists of rows in the keyed state backend (RocksDB), for window operators whose
//! windows hold rows rather than aggregates (sessions, global windows). A key's newest rows
//! are one entry, its head, listing them with their event times
//! ([`timed_rows`](crate::operator::timed_rows)) in arrival order; once the head holds a
//! chunk's worth of bytes they are sealed into a numbered chunk entry and the head starts
//! again. Appending rewrites only the head, so a key that keeps growing costs linear work, and
//! every read is a point lookup. A key's windows are ranges of event time in its list: a
//! session's rows are those within its bounds, a global window's all of them.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::row::Rows;

use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::row_codec::RowCodec;
use crate::operator::timed_rows::{append_row, arena_rows, for_each_row};
use crate::state::{
    KeyedStateStore, MapState, MapStateDescriptor, SnapshotSource, StateBackend, ValueState, ValueStateDescriptor,
};
use crate::{Result, SabotError};

/// A key's rows to append: `(batch, row, event time)`, in arrival order.
pub(crate) type HeldRows = Vec<(u64, u32, i64)>;

/// Per range read, the offset of its rows in the batch read and their event times.
pub(crate) type RangeTimes = Vec<(usize, Vec<i64>)>;

/// Bytes of rows a head holds before they are sealed into a chunk.
const CHUNK_BYTES: usize = 256 << 10;

/// Bytes of the number of sealed chunks in front of a head's rows.
const COUNT: usize = 4;

/// A head's number of sealed chunks and its rows.
fn split_head(head: &[u8]) -> (u32, &[u8]) {
    match head.get(..COUNT) {
        Some(count) => (u32::from_le_bytes(count.try_into().expect("4 bytes")), &head[COUNT..]),
        None => (0, &[]),
    }
}

/// A head from its number of sealed chunks and its rows.
fn head(chunks: u32, rows: &[u8]) -> Vec<u8> {
    [&chunks.to_le_bytes()[..], rows].concat()
}

/// Per-key lists of rows in the keyed state backend.
pub(crate) struct RowLists {
    /// The operator kind, for errors.
    kind: &'static str,
    store: KeyedStateStore,
    /// Key → the number of its sealed chunks, then its newest rows (with their event times,
    /// in arrival order).
    heads: ValueState<Vec<u8>>,
    /// Key and chunk number → its older rows, a chunk at a time.
    chunks: MapState<u32, Vec<u8>>,
    chunk_bytes: usize,
    /// Encodes whole input rows.
    codec: RowCodec,
}

impl RowLists {
    /// Opens an empty store for rows of `schema` on `backend`, for an operator of `kind`.
    pub(crate) fn open(backend: &StateBackend, kind: &'static str, schema: SchemaRef) -> Result<Self> {
        let codec = RowCodec::new(schema, kind)?;
        let mut store = KeyedStateStore::open_transient(backend, kind)?;
        let heads = store.value_state(&ValueStateDescriptor::<Vec<u8>>::new("heads"))?;
        let chunks = store.map_state(&MapStateDescriptor::<u32, Vec<u8>>::new("chunks"))?;
        Ok(RowLists { kind, store, heads, chunks, chunk_bytes: CHUNK_BYTES, codec })
    }

    /// Seals heads into chunks at `bytes` instead (tests).
    #[cfg(all(test, feature = "rocksdb"))]
    fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes;
        self
    }

    /// Every row of `key`'s list (sealed chunks, then the head), as `f(event time, row)`;
    /// returns its number of sealed chunks.
    fn for_each_row_of(&mut self, key: &[u8], mut f: impl FnMut(i64, &[u8])) -> Result<u32> {
        let Some(stored) = self.heads.value_for(&mut self.store, key)? else { return Ok(0) };
        let (count, rows) = split_head(&stored);
        for chunk in 0..count {
            if let Some(chunk) = self.chunks.get_for(&mut self.store, key, &chunk)? {
                for_each_row(&chunk, self.store.operator(), &mut f)?;
            }
        }
        for_each_row(rows, self.store.operator(), f)?;
        Ok(count)
    }

    /// Deletes `key`'s list: its head and its `chunks` sealed chunks.
    fn remove_list(&mut self, key: &[u8], chunks: u32) -> Result<()> {
        self.store.set_current_key(key);
        for chunk in 0..chunks {
            self.chunks.remove(&mut self.store, &chunk)?;
        }
        self.heads.clear_for(&mut self.store, key)
    }

    /// Appends, per key, its rows `(batch, row, event time)` (in arrival order) to its list;
    /// `batch` finds the batches by id.
    pub(crate) fn append<'b, K: AsRef<[u8]>>(
        &mut self,
        appended: &[(K, HeldRows)],
        batch: impl Fn(u64) -> Option<&'b RecordBatch>,
    ) -> Result<()> {
        let mut encoded: hashbrown::HashMap<u64, Rows> = hashbrown::HashMap::new();
        self.heads.prefetch_for(&mut self.store, appended.iter().map(|(key, _)| key.as_ref()))?;
        for (key, rows) in appended {
            let mut list = vec![];
            for &(id, row, time) in rows {
                if !encoded.contains_key(&id) {
                    let held = batch(id).ok_or_else(|| SabotError::State {
                        state: self.store.operator().to_string(),
                        message: format!("a {} row points to a dropped batch", self.kind),
                    })?;
                    encoded.insert(id, self.codec.encode(held)?);
                }
                append_row(&mut list, time, encoded[&id].row(row as usize).data());
            }
            let (key, chunk_bytes) = (key.as_ref(), self.chunk_bytes);
            let mut full: Option<(u32, Vec<u8>)> = None;
            self.heads.update_with_for(&mut self.store, key, |old| {
                let (count, rows) = old.map_or((0, &[][..]), |old| split_head(old));
                if rows.len() + list.len() >= chunk_bytes {
                    full = Some((count, [rows, &list].concat()));
                    head(count + 1, &[])
                } else {
                    let mut new = Vec::with_capacity(COUNT + rows.len() + list.len());
                    new.extend_from_slice(&count.to_le_bytes());
                    new.extend_from_slice(rows);
                    new.extend_from_slice(&list);
                    new
                }
            })?;
            if let Some((number, chunk)) = full {
                self.chunks.put_for(&mut self.store, key, number, chunk)?;
            }
        }
        Ok(())
    }

    /// The stored rows of the ranges `(key, start, end)` (event times in `[start, end)`), in
    /// one batch, and per range the offset of its rows in it with their event times (in
    /// arrival order).
    pub(crate) fn read(&mut self, ranges: &[(&[u8], i64, i64)]) -> Result<(RecordBatch, RangeTimes)> {
        self.heads.prefetch_for(&mut self.store, ranges.iter().map(|(key, _, _)| *key))?;
        let (mut arena, mut ends) = (vec![], vec![]);
        let mut per_range = Vec::with_capacity(ranges.len());
        for &(key, start, end) in ranges {
            let offset = ends.len();
            let mut times = vec![];
            self.for_each_row_of(key, |time, row| {
                if time >= start && time < end {
                    arena.extend_from_slice(row);
                    ends.push(arena.len());
                    times.push(time);
                }
            })?;
            per_range.push((offset, times));
        }
        Ok((self.codec.decode(arena_rows(&arena, &ends))?, per_range))
    }

    /// Deletes the rows of the ranges `(key, start, end)`.
    pub(crate) fn delete<K: AsRef<[u8]>>(&mut self, ranges: &[(K, i64, i64)]) -> Result<()> {
        let mut by_key: BTreeMap<&[u8], Vec<(i64, i64)>> = BTreeMap::new();
        for (key, start, end) in ranges {
            by_key.entry(key.as_ref()).or_default().push((*start, *end));
        }
        self.heads.prefetch_for(&mut self.store, by_key.keys().copied())?;
        for (key, ranges) in by_key {
            if ranges.iter().any(|&(start, end)| start == i64::MIN && end == i64::MAX) {
                let chunks = self.heads.value_for(&mut self.store, key)?.map_or(0, |h| split_head(&h).0);
                self.remove_list(key, chunks)?;
                continue;
            }
            // The rows kept, re-chunked: sealed chunks of about `chunk_bytes`, then a head.
            let (chunk_bytes, mut sealed, mut current) = (self.chunk_bytes, vec![], vec![]);
            let mut dropped = false;
            let old_chunks = self.for_each_row_of(key, |time, row| {
                if ranges.iter().any(|&(start, end)| time >= start && time < end) {
                    dropped = true;
                    return;
                }
                append_row(&mut current, time, row);
                if current.len() >= chunk_bytes {
                    sealed.push(std::mem::take(&mut current));
                }
            })?;
            if !dropped {
                continue;
            }
            self.remove_list(key, old_chunks)?;
            if sealed.is_empty() && current.is_empty() {
                continue;
            }
            let count = u32::try_from(sealed.len()).map_err(|_| SabotError::State {
                state: self.store.operator().to_string(),
                message: "too many chunks in one list".into(),
            })?;
            for (number, chunk) in sealed.into_iter().enumerate() {
                self.chunks.put_for(&mut self.store, key, number as u32, chunk)?;
            }
            self.heads.update_for(&mut self.store, key, head(count, &current))?;
        }
        Ok(())
    }

    /// Drops every row.
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.store.retain_keys(&|_| false).map(drop)
    }

    /// Drops the rows of the keys `keep` rejects.
    pub(crate) fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<()> {
        self.store.retain_keys(keep).map(drop)
    }

    /// The entries in the backend: keys with stored rows.
    #[cfg(all(test, feature = "rocksdb"))]
    pub(crate) fn stored_entries(&mut self) -> Result<usize> {
        self.store.stored_entries()
    }

    /// A checkpoint of the backend (RocksDB: hard links).
    pub(crate) fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        self.store.snapshot_into(snapshot, "row_lists")?;
        snapshot.put_value("row_lists_operator", self.store.operator())
    }

    /// Adds the rows of the keys `keep` accepts from a snapshot.
    pub(crate) fn merge_snapshot(&mut self, restored: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        let missing = |what: &str| SabotError::State {
            state: self.kind.to_string(),
            message: format!("the snapshot lists stored rows but holds no {what}"),
        };
        let operator = restored.value::<String>("row_lists_operator")?.ok_or_else(|| missing("store id"))?;
        let dir = restored.directory("row_lists")?.ok_or_else(|| missing("state directory"))?;
        self.store.import_keys(&[SnapshotSource { dir, operator }], keep)
    }
}

#[cfg(all(test, feature = "rocksdb"))]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    /// A list that outgrows its head is sealed chunk by chunk and reads back whole, in
    /// arrival order; deleting a range re-chunks what is left; deleting all leaves nothing.
    #[test]
    fn lists_seal_chunks_and_read_back_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let backend = StateBackend::RocksDb { path: dir.path().to_path_buf() };
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let mut lists = RowLists::open(&backend, "test_lists", schema.clone()).unwrap().with_chunk_bytes(64);
        let mut expected = vec![];
        for flush in 0..10i64 {
            // Event time = value; three rows per flush, out of order within it.
            let values = vec![flush * 3 + 2, flush * 3, flush * 3 + 1];
            expected.extend(values.iter().copied());
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values.clone()))]).unwrap();
            let rows: HeldRows = values.iter().enumerate().map(|(i, &v)| (0, i as u32, v)).collect();
            lists.append(&[(b"a".to_vec(), rows)], |_| Some(&batch)).unwrap();
        }
        let read = |lists: &mut RowLists, start: i64, end: i64| -> Vec<i64> {
            let (batch, _) = lists.read(&[(b"a", start, end)]).unwrap();
            batch.column(0).as_primitive::<Int64Type>().values().to_vec()
        };
        assert_eq!(read(&mut lists, i64::MIN, i64::MAX), expected);
        assert!(lists.stored_entries().unwrap() > 3, "sealed chunks and a head");
        assert_eq!(
            read(&mut lists, 10, 20),
            expected.iter().copied().filter(|v| (10..20).contains(v)).collect::<Vec<_>>()
        );
        lists.delete(&[(b"a", 5, 25)]).unwrap();
        let kept: Vec<i64> = expected.iter().copied().filter(|v| !(5..25).contains(v)).collect();
        assert_eq!(read(&mut lists, i64::MIN, i64::MAX), kept);
        lists.delete(&[(b"a", i64::MIN, i64::MAX)]).unwrap();
        assert_eq!(read(&mut lists, i64::MIN, i64::MAX), Vec::<i64>::new());
        assert_eq!(lists.stored_entries().unwrap(), 0, "nothing left behind");
    }
}
