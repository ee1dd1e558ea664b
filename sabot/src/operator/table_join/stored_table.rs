//! The table of a table join in the keyed state backend (RocksDB): one entry per key, its
//! current row in Arrow's row format, so that the table can outgrow memory. Upserts and
//! lookups go through the store's write-back cache, which batches writes and keeps recently
//! used keys in memory.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::{Lookup, TableStore};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::join_state::{EncodedKeys, JoinKeys};
use crate::operator::row_codec::RowCodec;
use crate::state::{KeyedStateStore, SnapshotSource, StateBackend, ValueState, ValueStateDescriptor};
use crate::{Result, SabotError};

/// The table in the keyed state backend.
pub(super) struct StoredTable {
    /// The store's operator id (the prefix of its column families).
    operator: String,
    store: KeyedStateStore,
    /// Join key → the key's current row, row-encoded.
    current: ValueState<Vec<u8>>,
    /// Encodes whole rows of the table side.
    rows: RowCodec,
    /// Keys with a current row.
    live: usize,
}

/// What a snapshot records besides the backend's checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLayout {
    /// The operator id the column family in the checkpoint is named after.
    operator: String,
}

impl StoredTable {
    /// Opens an empty table of rows of `schema` on `backend`.
    pub(super) fn open(schema: SchemaRef, backend: &StateBackend) -> Result<Self> {
        let rows = RowCodec::new(schema, "table join")?;
        let mut store = KeyedStateStore::open_transient(backend, "table_join")?;
        let operator = store.operator().to_string();
        let current = store.value_state(&ValueStateDescriptor::<Vec<u8>>::new("current"))?;
        Ok(StoredTable { operator, store, current, rows, live: 0 })
    }

    /// Rows of the table's schema from their encodings.
    fn decode(&self, encoded: &[Vec<u8>]) -> Result<RecordBatch> {
        self.rows.decode(encoded.iter().map(Vec::as_slice))
    }
}

impl TableStore for StoredTable {
    fn upsert(&mut self, batch: RecordBatch, keys: &EncodedKeys) -> Result<()> {
        let encoded = self.rows.encode(&batch)?;
        self.current.prefetch_for(&mut self.store, (0..batch.num_rows()).filter_map(|row| keys.get(row)))?;
        for (row, value) in encoded.iter().enumerate() {
            let Some(key) = keys.get(row) else { continue };
            let mut added = false;
            self.current.update_with_for(&mut self.store, key, |previous| {
                added = previous.is_none();
                value.data().to_vec()
            })?;
            self.live += usize::from(added);
        }
        Ok(())
    }

    fn lookup(&mut self, keys: &EncodedKeys, rows: usize) -> Result<Lookup> {
        self.current.prefetch_for(&mut self.store, (0..rows).filter_map(|row| keys.get(row)))?;
        let mut encoded = vec![];
        let mut found = Vec::with_capacity(rows);
        for row in 0..rows {
            let current = match keys.get(row) {
                Some(key) => self.current.value_for(&mut self.store, key)?,
                None => None,
            };
            found.push(current.map(|value| {
                encoded.push(value);
                (0, encoded.len() - 1)
            }));
        }
        let sources = if encoded.is_empty() { vec![] } else { vec![self.decode(&encoded)?] };
        Ok(Lookup { sources, found })
    }

    fn rows(&self) -> usize {
        self.live
    }

    /// A checkpoint of the backend (RocksDB: hard links).
    fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        self.store.snapshot_into(snapshot, "table_rows")?;
        snapshot.put_value("stored_table", &StoredLayout { operator: self.operator.clone() })
    }

    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<usize> {
        let dropped = self.store.retain_keys(keep)?;
        self.live -= dropped;
        Ok(dropped)
    }

    fn merge_snapshot(
        &mut self,
        snapshot: &RestoredState,
        _keys: &JoinKeys,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<()> {
        let Some(layout) = snapshot.value::<StoredLayout>("stored_table")? else {
            return crate::operator::saved_by_another_backend(snapshot, &self.operator, "table", "memory");
        };
        let Some(dir) = snapshot.directory("table_rows")? else {
            return Err(SabotError::State {
                state: self.operator.clone(),
                message: "the snapshot names a stored table but holds no state directory".into(),
            });
        };
        self.store.import_keys(&[SnapshotSource { dir, operator: layout.operator }], keep)?;
        self.live = self.store.stored_entries()?;
        Ok(())
    }
}
