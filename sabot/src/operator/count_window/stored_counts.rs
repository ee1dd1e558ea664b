//! The open count windows in the keyed state backend (RocksDB): per key, one entry with the
//! number of its next window and its rows so far in Arrow's row format, so that the open
//! windows of many keys can outgrow memory. A batch's rows are grouped by key first: one read
//! and one write per key and batch.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::row_codec::RowCodec;
use crate::state::{KeyedStateStore, SnapshotSource, StateBackend, ValueState, ValueStateDescriptor};
use crate::{Result, SabotError};

/// A key's open window.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct OpenWindow {
    /// The number of the window the rows belong to.
    window: i64,
    /// The window's rows so far, row-encoded, in arrival order.
    rows: Vec<Vec<u8>>,
}

/// What a snapshot records besides the backend's checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLayout {
    /// The operator id the column family in the checkpoint is named after.
    operator: String,
}

/// The open count windows in the keyed state backend.
pub(super) struct StoredCounts {
    store: KeyedStateStore,
    open: ValueState<OpenWindow>,
    /// Encodes whole input rows.
    rows: RowCodec,
}

/// A full window: its key's window number and its rows.
pub(super) type FullWindow = (i64, RecordBatch);

impl StoredCounts {
    /// Opens an empty store of the open windows of rows of `schema` on `backend`.
    pub(super) fn open(schema: SchemaRef, backend: &StateBackend) -> Result<Self> {
        let rows = RowCodec::new(schema, "count window")?;
        let mut store = KeyedStateStore::open_transient(backend, "count_window")?;
        let open = store.value_state(&ValueStateDescriptor::<OpenWindow>::new("open"))?;
        Ok(StoredCounts { store, open, rows })
    }

    /// Adds the rows of `batch` (of encoded keys `keys`) to their keys' windows of `size`
    /// rows; returns the windows they filled, in the order they filled.
    pub(super) fn add(&mut self, batch: &RecordBatch, keys: &[&[u8]], size: usize) -> Result<Vec<FullWindow>> {
        let encoded = self.rows.encode(batch)?;
        // Each key's rows, keys in order of first appearance.
        let mut order: Vec<&[u8]> = vec![];
        let mut rows_of: hashbrown::HashMap<&[u8], Vec<usize>> = hashbrown::HashMap::new();
        for (row, &key) in keys.iter().enumerate() {
            rows_of
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    vec![]
                })
                .push(row);
        }
        self.open.prefetch_for(&mut self.store, order.iter().copied())?;
        let mut full = vec![];
        for key in order {
            let mut open = self.open.value_for(&mut self.store, key)?.unwrap_or_default();
            for &row in &rows_of[key] {
                open.rows.push(encoded.row(row).data().to_vec());
                if open.rows.len() == size {
                    let rows = std::mem::take(&mut open.rows);
                    full.push((open.window, self.decode(&rows)?));
                    open.window += 1;
                }
            }
            self.open.update_for(&mut self.store, key, open)?;
        }
        Ok(full)
    }

    fn decode(&self, rows: &[Vec<u8>]) -> Result<RecordBatch> {
        self.rows.decode(rows.iter().map(Vec::as_slice))
    }

    /// Drops the open windows of the keys `keep` rejects.
    pub(super) fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<()> {
        self.store.retain_keys(keep).map(drop)
    }

    /// A checkpoint of the backend (RocksDB: hard links).
    pub(super) fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        self.store.snapshot_into(snapshot, "open_rows")?;
        snapshot.put_value("stored_counts", &StoredLayout { operator: self.store.operator().to_string() })
    }

    /// Adds the open windows whose keys `keep` accepts from a snapshot of an instance of the
    /// operator.
    pub(super) fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        let Some(layout) = snapshot.value::<StoredLayout>("stored_counts")? else {
            return crate::operator::saved_by_another_backend(snapshot, self.store.operator(), "windows", "memory");
        };
        let Some(dir) = snapshot.directory("open_rows")? else {
            return Err(SabotError::State {
                state: self.store.operator().to_string(),
                message: "the snapshot names stored count windows but holds no state directory".into(),
            });
        };
        self.store.import_keys(&[SnapshotSource { dir, operator: layout.operator }], keep)
    }
}
