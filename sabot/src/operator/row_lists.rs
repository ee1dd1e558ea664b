//! Per-key lists of rows in the keyed state backend (RocksDB), for window operators whose
//! windows hold rows rather than aggregates (sessions, global windows): one entry per key
//! listing its rows with their event times ([`timed_rows`](crate::operator::timed_rows)) in
//! arrival order. A key's windows are ranges of event time in its list: a session's rows are
//! those within its bounds, a global window's all of them.

use std::collections::BTreeMap;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};

use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::decode_rows;
use crate::operator::timed_rows::{append_row, arena_rows, for_each_row};
use crate::state::{KeyedStateStore, SnapshotSource, StateBackend, ValueState, ValueStateDescriptor};
use crate::{Result, SabotError};

/// A key's rows to append: `(batch, row, event time)`, in arrival order.
pub(crate) type HeldRows = Vec<(u64, u32, i64)>;

/// Per range read, the offset of its rows in the batch read and their event times.
pub(crate) type RangeTimes = Vec<(usize, Vec<i64>)>;

/// Per-key lists of rows in the keyed state backend.
pub(crate) struct RowLists {
    /// The operator kind, for errors.
    kind: &'static str,
    store: KeyedStateStore,
    /// Key → its rows, with their event times, in arrival order.
    lists: ValueState<Vec<u8>>,
    schema: SchemaRef,
    /// Encodes whole input rows.
    converter: RowConverter,
}

impl RowLists {
    /// Opens an empty store for rows of `schema` on `backend`, for an operator of `kind`.
    pub(crate) fn open(backend: &StateBackend, kind: &'static str, schema: SchemaRef) -> Result<Self> {
        if let Some(field) =
            schema.fields().iter().find(|f| !RowConverter::supports_fields(&[SortField::new(f.data_type().clone())]))
        {
            return Err(SabotError::plan(format!(
                "{kind} column {} of type {} cannot be kept in a state backend",
                field.name(),
                field.data_type()
            )));
        }
        let fields: Vec<SortField> = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let mut store = KeyedStateStore::open_transient(backend, kind)?;
        let lists = store.value_state(&ValueStateDescriptor::<Vec<u8>>::new("rows"))?;
        Ok(RowLists { kind, store, lists, schema, converter: RowConverter::new(fields)? })
    }

    /// Appends, per key, its rows `(batch, row, event time)` (in arrival order) to its list;
    /// `batch` finds the batches by id.
    pub(crate) fn append<'b, K: AsRef<[u8]>>(
        &mut self,
        appended: &[(K, HeldRows)],
        batch: impl Fn(u64) -> Option<&'b RecordBatch>,
    ) -> Result<()> {
        let mut encoded: hashbrown::HashMap<u64, Rows> = hashbrown::HashMap::new();
        self.lists.prefetch_for(&mut self.store, appended.iter().map(|(key, _)| key.as_ref()))?;
        for (key, rows) in appended {
            let mut list = vec![];
            for &(id, row, time) in rows {
                if !encoded.contains_key(&id) {
                    let held = batch(id).ok_or_else(|| SabotError::State {
                        state: self.store.operator().to_string(),
                        message: format!("a {} row points to a dropped batch", self.kind),
                    })?;
                    encoded.insert(id, self.converter.convert_columns(held.columns())?);
                }
                append_row(&mut list, time, encoded[&id].row(row as usize).data());
            }
            self.lists.update_with_for(&mut self.store, key.as_ref(), |old| match old {
                Some(old) => [old.as_slice(), &list].concat(),
                None => list,
            })?;
        }
        Ok(())
    }

    /// The stored rows of the ranges `(key, start, end)` (event times in `[start, end)`), in
    /// one batch, and per range the offset of its rows in it with their event times (in
    /// arrival order).
    pub(crate) fn read(&mut self, ranges: &[(&[u8], i64, i64)]) -> Result<(RecordBatch, RangeTimes)> {
        self.lists.prefetch_for(&mut self.store, ranges.iter().map(|(key, _, _)| *key))?;
        let (mut arena, mut ends) = (vec![], vec![]);
        let mut per_range = Vec::with_capacity(ranges.len());
        for &(key, start, end) in ranges {
            let offset = ends.len();
            let mut times = vec![];
            if let Some(list) = self.lists.value_for(&mut self.store, key)? {
                for_each_row(&list, self.store.operator(), |time, row| {
                    if time >= start && time < end {
                        arena.extend_from_slice(row);
                        ends.push(arena.len());
                        times.push(time);
                    }
                })?;
            }
            per_range.push((offset, times));
        }
        let columns = decode_rows(&self.converter, arena_rows(&arena, &ends), self.schema.fields())?;
        let options = RecordBatchOptions::new().with_row_count(Some(ends.len()));
        Ok((RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?, per_range))
    }

    /// Deletes the rows of the ranges `(key, start, end)`.
    pub(crate) fn delete<K: AsRef<[u8]>>(&mut self, ranges: &[(K, i64, i64)]) -> Result<()> {
        let mut by_key: BTreeMap<&[u8], Vec<(i64, i64)>> = BTreeMap::new();
        for (key, start, end) in ranges {
            by_key.entry(key.as_ref()).or_default().push((*start, *end));
        }
        self.lists.prefetch_for(&mut self.store, by_key.keys().copied())?;
        for (key, ranges) in by_key {
            let Some(list) = self.lists.value_for(&mut self.store, key)? else { continue };
            let mut kept = vec![];
            for_each_row(&list, self.store.operator(), |time, row| {
                if !ranges.iter().any(|&(start, end)| time >= start && time < end) {
                    append_row(&mut kept, time, row);
                }
            })?;
            if kept.is_empty() {
                self.lists.clear_for(&mut self.store, key)?;
            } else {
                self.lists.update_for(&mut self.store, key, kept)?;
            }
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
