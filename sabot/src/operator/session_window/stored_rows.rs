//! The rows of open sessions in the keyed state backend (RocksDB): one entry per key listing
//! its rows with their event times ([`timed_rows`](crate::operator::timed_rows)) in arrival
//! order. The sessions of a key never overlap in time, so a session's rows are the rows of
//! its key's list within its bounds: firing a session reads its key's entry, expiring one
//! rewrites it without them.

use std::collections::BTreeMap;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};

use super::sessions::Key;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::decode_rows;
use crate::operator::timed_rows::{append_row, arena_rows, for_each_row};
use crate::state::{KeyedStateStore, SnapshotSource, StateBackend, ValueState, ValueStateDescriptor};
use crate::{Result, SabotError};

/// Per key, rows to append: `(segment, row, event time)`, in arrival order.
pub(super) type Appended = [(Key, Vec<(u64, u32, i64)>)];

/// Per session read, the offset of its rows in the batch read and their event times.
pub(super) type SessionTimes = Vec<(usize, Vec<i64>)>;

/// Session rows in the keyed state backend.
pub(super) struct StoredRows {
    store: KeyedStateStore,
    /// Key → its rows, with their event times, in arrival order.
    lists: ValueState<Vec<u8>>,
    schema: SchemaRef,
    /// Encodes whole input rows.
    converter: RowConverter,
}

impl StoredRows {
    /// Opens an empty store for rows of `schema` on `backend`.
    pub(super) fn open(backend: &StateBackend, schema: SchemaRef) -> Result<Self> {
        if let Some(field) =
            schema.fields().iter().find(|f| !RowConverter::supports_fields(&[SortField::new(f.data_type().clone())]))
        {
            return Err(SabotError::plan(format!(
                "session window column {} of type {} cannot be kept in a state backend",
                field.name(),
                field.data_type()
            )));
        }
        let fields: Vec<SortField> = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let mut store = KeyedStateStore::open_transient(backend, "session_window")?;
        let lists = store.value_state(&ValueStateDescriptor::<Vec<u8>>::new("rows"))?;
        Ok(StoredRows { store, lists, schema, converter: RowConverter::new(fields)? })
    }

    /// Appends, per key, the rows `(segment, row, event time)` (in arrival order) of the
    /// batches `segments` to its list.
    pub(super) fn append(
        &mut self,
        appended: &Appended,
        segments: &hashbrown::HashMap<u64, (RecordBatch, usize)>,
    ) -> Result<()> {
        let mut encoded: hashbrown::HashMap<u64, Rows> = hashbrown::HashMap::new();
        for (&id, (batch, _)) in segments {
            encoded.insert(id, self.converter.convert_columns(batch.columns())?);
        }
        self.lists.prefetch_for(&mut self.store, appended.iter().map(|(key, _)| key.as_ref()))?;
        for (key, rows) in appended {
            let mut list = vec![];
            for &(segment, row, time) in rows {
                let rows = encoded.get(&segment).ok_or_else(|| SabotError::State {
                    state: self.store.operator().to_string(),
                    message: "a session row points to a dropped batch".into(),
                })?;
                append_row(&mut list, time, rows.row(row as usize).data());
            }
            self.lists.update_with_for(&mut self.store, key, |old| match old {
                Some(old) => [old.as_slice(), &list].concat(),
                None => list,
            })?;
        }
        Ok(())
    }

    /// The stored rows of the sessions `(key, start, end)`, in one batch, and per session the
    /// offset of its rows in it with their event times (in arrival order).
    pub(super) fn read(&mut self, sessions: &[(&[u8], i64, i64)]) -> Result<(RecordBatch, SessionTimes)> {
        self.lists.prefetch_for(&mut self.store, sessions.iter().map(|(key, _, _)| *key))?;
        let (mut arena, mut ends) = (vec![], vec![]);
        let mut per_session = Vec::with_capacity(sessions.len());
        for &(key, start, end) in sessions {
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
            per_session.push((offset, times));
        }
        let columns = decode_rows(&self.converter, arena_rows(&arena, &ends), self.schema.fields())?;
        let options = RecordBatchOptions::new().with_row_count(Some(ends.len()));
        Ok((RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?, per_session))
    }

    /// Deletes the rows of the sessions `(key, start, end)`.
    pub(super) fn delete(&mut self, sessions: &[(Key, i64, i64)]) -> Result<()> {
        let mut by_key: BTreeMap<&[u8], Vec<(i64, i64)>> = BTreeMap::new();
        for (key, start, end) in sessions {
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
    pub(super) fn clear(&mut self) -> Result<()> {
        self.store.retain_keys(&|_| false).map(drop)
    }

    /// Drops the rows of the keys `keep` rejects.
    pub(super) fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<()> {
        self.store.retain_keys(keep).map(drop)
    }

    /// The entries in the backend: keys with stored rows.
    #[cfg(all(test, feature = "rocksdb"))]
    pub(super) fn stored_entries(&mut self) -> Result<usize> {
        self.store.stored_entries()
    }

    /// A checkpoint of the backend (RocksDB: hard links).
    pub(super) fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        self.store.snapshot_into(snapshot, "session_rows")?;
        snapshot.put_value("session_rows_operator", self.store.operator())
    }

    /// Adds the rows of the keys `keep` accepts from a snapshot.
    pub(super) fn merge_snapshot(&mut self, restored: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        let missing = |what: &str| SabotError::State {
            state: "session_window".into(),
            message: format!("the snapshot lists stored sessions but holds no {what}"),
        };
        let operator = restored.value::<String>("session_rows_operator")?.ok_or_else(|| missing("store id"))?;
        let dir = restored.directory("session_rows")?.ok_or_else(|| missing("state directory"))?;
        self.store.import_keys(&[SnapshotSource { dir, operator }], keep)
    }
}
