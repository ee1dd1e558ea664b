//! Stream–table (enrichment) join against the latest row per key of a changelog.

mod heap_table;
mod stored_table;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use self::heap_table::LatestRows;
use self::stored_table::StoredTable;
use super::join_state::{EncodedKeys, JoinKeys, JoinOutput, Picks, Side};
use super::{Output, TwoInputOperator};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::plan::{JoinType, StreamJoinKind, stream_join_output};
use crate::state::StateBackend;

/// Joins each left row with the right side's *current* row for its key, in processing order:
/// the right input is a changelog of which the latest row per key is kept (a later row
/// replaces an earlier one). [`JoinType::Inner`] emits only left rows with a table row;
/// [`JoinType::Left`] emits every left row, with null right columns when the key is absent.
///
/// Event time is not needed: the left input alone drives the watermark (the table's
/// watermarks, if any, do not hold it back), and left rows pass in arrival order. State is
/// one row per distinct right key (rows replaced by newer ones are compacted away).
///
/// When run by the engine with a bounded right side, the whole table is loaded before the
/// first left row is processed, so the result does not depend on thread timing.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch, StringArray};
/// use sabot::operator::TableJoinOperator;
/// use sabot::plan::JoinType;
/// use sabot::testing::TwoInputHarness;
///
/// let orders = RecordBatch::try_from_iter([("user", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
/// let users = |name: &str| RecordBatch::try_from_iter([
///     ("id", Arc::new(Int64Array::from(vec![1])) as _),
///     ("name", Arc::new(StringArray::from(vec![name])) as _),
/// ]).unwrap();
/// let op = TableJoinOperator::try_new(orders.schema(), users("").schema(), &["user"], &["id"], JoinType::Left)?;
/// let mut h = TwoInputHarness::new(op);
/// h.process_right(users("ann"))?;
/// h.process_right(users("anna"))?; // replaces the row of id 1
/// h.process_left(orders)?;
/// let out = h.take_output();
/// assert_eq!(out[0].num_rows(), 2, "left join: user 2 has nulls");
/// assert_eq!(h.operator().buffered_rows(), 1);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct TableJoinOperator {
    keys: JoinKeys,
    output: JoinOutput,
    join_type: JoinType,
    right_schema: SchemaRef,
    table: Box<dyn TableStore>,
}

/// Where a table join keeps the latest row per key: on the heap ([`LatestRows`]) or in the
/// keyed state backend ([`StoredTable`]). Keys are the join keys in [`JoinKeys`]' encoding.
trait TableStore: Send {
    /// Makes the rows of `batch` the current rows of their keys; rows with a null key are
    /// not kept.
    fn upsert(&mut self, batch: RecordBatch, keys: &EncodedKeys) -> Result<()>;

    /// The current row of each of the first `rows` keys of `keys`, if any: the batches
    /// holding them and, per key, the batch and row.
    fn lookup(&mut self, keys: &EncodedKeys, rows: usize) -> Result<Lookup>;

    /// The number of keys with a current row.
    fn rows(&self) -> usize;

    /// Saves the current rows into `snapshot`.
    fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()>;

    /// Adds the rows whose keys `keep` accepts from a snapshot of an instance of the operator.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keys: &JoinKeys, keep: &dyn Fn(&[u8]) -> bool)
    -> Result<()>;

    /// Drops the rows whose keys `keep` rejects (key groups handed to another worker);
    /// returns how many.
    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<usize>;
}

/// Rows found by [`TableStore::lookup`].
struct Lookup {
    sources: Vec<RecordBatch>,
    found: Vec<Option<(usize, usize)>>,
}

impl TableJoinOperator {
    /// Joins rows of `left_schema` with the latest row of `right_schema` whose `right_keys`
    /// equal their `left_keys`; `join_type` is [`JoinType::Inner`] or [`JoinType::Left`].
    pub fn try_new(
        left_schema: SchemaRef,
        right_schema: SchemaRef,
        left_keys: &[&str],
        right_keys: &[&str],
        join_type: JoinType,
    ) -> Result<Self> {
        let kind = StreamJoinKind::Table { join_type };
        let output = stream_join_output(&left_schema, &right_schema, left_keys, right_keys, &kind)?;
        Ok(TableJoinOperator {
            keys: JoinKeys::try_new(&left_schema, &right_schema, left_keys, right_keys)?,
            output,
            join_type,
            table: Box::new(LatestRows::new(right_schema.clone())),
            right_schema,
        })
    }

    /// Keeps the table in `backend`: on the heap for [`StateBackend::Memory`] (the default),
    /// else in the backend's store (RocksDB: one entry per key holding its row in Arrow's row
    /// format, read through the store's cache), so that the table can outgrow memory. Call it
    /// before the first row.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::operator::TableJoinOperator;
    /// use sabot::plan::JoinType;
    /// use sabot::state::StateBackend;
    ///
    /// let orders = Arc::new(Schema::new(vec![Field::new("user", DataType::Int64, false)]));
    /// let users = Arc::new(Schema::new(vec![
    ///     Field::new("id", DataType::Int64, false),
    ///     Field::new("name", DataType::Utf8, false),
    /// ]));
    /// let backend = StateBackend::RocksDb { path: "/var/lib/sabot/worker-0".into() };
    /// let op = TableJoinOperator::try_new(orders, users, &["user"], &["id"], JoinType::Left)?
    ///     .with_state_backend(&backend)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_state_backend(mut self, backend: &StateBackend) -> Result<Self> {
        self.table = match backend {
            StateBackend::Memory => Box::new(LatestRows::new(self.right_schema.clone())),
            #[allow(unreachable_patterns)]
            _ => Box::new(StoredTable::open(self.right_schema.clone(), backend)?),
        };
        Ok(self)
    }

    /// The output schema.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.schema()
    }

    /// The table's rows: one per distinct right key.
    pub fn buffered_rows(&self) -> usize {
        self.table.rows()
    }
}

impl TwoInputOperator for TableJoinOperator {
    fn name(&self) -> &str {
        "table_join"
    }

    fn process_left(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let keys = self.keys.encode(&batch, Side::Left)?;
        let Lookup { sources, found } = self.table.lookup(&keys, batch.num_rows())?;
        let (mut left_rows, mut picks) = (vec![], vec![]);
        for (row, pick) in found.into_iter().enumerate() {
            if pick.is_none() && self.join_type == JoinType::Inner {
                continue;
            }
            left_rows.push(row as u32);
            picks.push(pick);
        }
        if !left_rows.is_empty() {
            let sources: Vec<&RecordBatch> = sources.iter().collect();
            out.emit(self.output.build(
                Picks::Take(&batch, &left_rows),
                Picks::Interleave(&sources, &picks),
                vec![],
            )?);
        }
        Ok(())
    }

    fn process_right(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let keys = self.keys.encode(&batch, Side::Right)?;
        self.table.upsert(batch, &keys)
    }

    fn tracks_right_watermark(&self) -> bool {
        false
    }

    /// Saves the table: the current row of every key (heap: one Arrow IPC batch; RocksDB: a
    /// checkpoint of the backend).
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        self.table.snapshot(snapshot)
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.table.merge_snapshot(restored, &self.keys, &|_| true)
    }

    /// Keeps the table rows of every old instance whose keys the exchange now routes to this
    /// instance.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), self.keys.types().to_vec());
        super::merge_rescaled(restored, &name, &types, |old, keep| self.table.merge_snapshot(old, &self.keys, keep))
            .map(drop)
    }

    fn follows_key_groups(&self) -> bool {
        true
    }

    /// The table's rows of released key groups go; those of acquired ones come from the
    /// snapshots that hold them (the changelog topic is partitioned like the stream).
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        if !handover.released.is_empty() {
            let dropped = self.table.retain_keys(&|key: &[u8]| !handover.releases(key))?;
            tracing::info!(operator = self.name(), groups = ?handover.released, rows = dropped, "released key groups");
        }
        let types = self.keys.types().to_vec();
        super::merge_acquired(handover, "table_join", &types, |snapshot, keep| {
            self.table.merge_snapshot(snapshot, &self.keys, keep)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;
    use crate::testing::TwoInputHarness;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true), Field::new("v", DataType::Int64, false)]))
    }

    fn rows(k: Vec<Option<i64>>, v: Vec<i64>) -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))]).unwrap()
    }

    /// Two instances' tables restored into three: each keeps the keys the exchange routes
    /// to it, and together they hold every key once.
    #[test]
    fn a_rescaled_table_keeps_the_keys_routed_to_each_instance() {
        crate::state::on_each_backend(rescaled_table_keeps_the_keys_routed_to_each_instance);
    }

    fn rescaled_table_keeps_the_keys_routed_to_each_instance(backend: &StateBackend) {
        let new = || {
            TableJoinOperator::try_new(schema(), schema(), &["k"], &["k"], JoinType::Inner)
                .unwrap()
                .with_state_backend(backend)
                .unwrap()
        };
        let old: Vec<_> = (0..2)
            .map(|instance| {
                let mut h = TwoInputHarness::new(new());
                let keys: Vec<Option<i64>> = (0..40).filter(|k| k % 2 == instance).map(Some).collect();
                let values = keys.iter().map(|k| k.unwrap() * 10).collect();
                h.process_right(rows(keys, values)).unwrap();
                h.snapshot().unwrap()
            })
            .collect();
        let dirs: Vec<_> = old.iter().map(|s| s.restored_state().dir().to_path_buf()).collect();
        let mut found = vec![];
        for partition in 0..3 {
            let rescale = crate::checkpoint::Rescale { from: 2, to: 3, partition, snapshots: dirs.clone() };
            let restored = RestoredState::rescaled(1, &dirs[0], rescale);
            let mut op = new();
            op.restore_rescaled_state(&restored).unwrap();
            let routed_here = crate::operator::key_router_of_types(&[DataType::Int64], 3, partition).unwrap();
            let mut h = TwoInputHarness::new(op);
            h.process_left(rows((0..40).map(Some).collect(), vec![0; 40])).unwrap();
            for batch in h.take_output() {
                let keys = batch.column_by_name("k").unwrap().as_primitive::<Int64Type>();
                let values = batch.column_by_name("v_right").unwrap().as_primitive::<Int64Type>();
                for (k, v) in keys.values().iter().zip(values.values()) {
                    let encoded = arrow::row::RowConverter::new(vec![arrow::row::SortField::new(DataType::Int64)])
                        .unwrap()
                        .convert_columns(&[Arc::new(Int64Array::from(vec![*k])) as _])
                        .unwrap();
                    assert!(routed_here(encoded.row(0).as_ref()), "key {k} is routed to instance {partition}");
                    assert_eq!(*v, k * 10);
                    found.push(*k);
                }
            }
        }
        found.sort();
        assert_eq!(found, (0..40).collect::<Vec<_>>(), "every key in exactly one instance");
    }

    #[test]
    fn unsupported_join_types_are_plan_errors() {
        let err = TableJoinOperator::try_new(schema(), schema(), &["k"], &["k"], JoinType::Full).err().unwrap();
        assert!(err.to_string().contains("Inner or Left"), "{err}");
    }
}
