//! Stream–table (enrichment) join against the latest row per key of a changelog.

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;

use super::join_state::{EncodedKeys, JoinKeys, JoinOutput, Picks, Side};
use super::{Output, TwoInputOperator};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::plan::{JoinType, StreamJoinKind, stream_join_output};
use crate::{Result, SabotError};

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
    table: LatestRows,
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
            right_schema,
            table: LatestRows::default(),
        })
    }

    /// The output schema.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.schema()
    }

    /// The table's rows: one per distinct right key.
    pub fn buffered_rows(&self) -> usize {
        self.table.index.len()
    }
}

impl TwoInputOperator for TableJoinOperator {
    fn name(&self) -> &str {
        "table_join"
    }

    fn process_left(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let keys = self.keys.encode(&batch, Side::Left)?;
        let mut sources: Vec<&RecordBatch> = vec![];
        let mut source_of: hashbrown::HashMap<u64, usize> = hashbrown::HashMap::new();
        let (mut left_rows, mut picks) = (vec![], vec![]);
        for row in 0..batch.num_rows() {
            let found = keys.get(row).and_then(|k| self.table.index.get(k).copied());
            let pick = match found {
                Some((segment, r)) => {
                    let source = match source_of.get(&segment) {
                        Some(&s) => s,
                        None => {
                            sources.push(self.table.segment(segment)?);
                            source_of.insert(segment, sources.len() - 1);
                            sources.len() - 1
                        }
                    };
                    Some((source, r as usize))
                }
                None if self.join_type == JoinType::Inner => continue,
                None => None,
            };
            left_rows.push(row as u32);
            picks.push(pick);
        }
        if !left_rows.is_empty() {
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
        self.table.upsert(batch, &keys)?;
        self.table.compact_if_sparse(&self.right_schema)
    }

    fn tracks_right_watermark(&self) -> bool {
        false
    }

    /// Saves the table: the current row of every key (Arrow IPC, one batch).
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let rows = self.table.current_rows(&self.right_schema)?;
        snapshot.put_batches("table", &self.right_schema, &[rows])
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.table = LatestRows::default();
        self.merge_snapshot(restored, &|_| true)
    }

    /// Keeps the table rows of every old instance whose keys the exchange now routes to this
    /// instance.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), self.keys.types().to_vec());
        super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep)).map(drop)
    }
}

impl TableJoinOperator {
    /// Adds the table rows whose keys `keep` accepts from a snapshot of an instance of this
    /// operator.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        for batch in snapshot.batches("table")? {
            let batch = self.keys.filter(&batch, Side::Right, keep)?;
            let keys = self.keys.encode(&batch, Side::Right)?;
            self.table.upsert(batch, &keys)?;
        }
        Ok(())
    }
}

/// The latest row per key; columns stay in the arriving batches (segments) until enough of
/// their rows were replaced, then the live rows are compacted into one batch.
#[derive(Default)]
struct LatestRows {
    segments: hashbrown::HashMap<u64, (RecordBatch, usize)>,
    next_segment: u64,
    index: hashbrown::HashMap<Box<[u8]>, (u64, u32)>,
    /// Rows held by the segments, replaced ones included.
    stored: usize,
}

impl LatestRows {
    fn segment(&self, id: u64) -> Result<&RecordBatch> {
        self.segments
            .get(&id)
            .map(|(b, _)| b)
            .ok_or_else(|| SabotError::Execution("a table join row points to dropped state".into()))
    }

    /// One row of `segment` is no longer current.
    fn release(&mut self, segment: u64) {
        if let Some((batch, live)) = self.segments.get_mut(&segment) {
            *live -= 1;
            if *live == 0 {
                self.stored -= batch.num_rows();
                self.segments.remove(&segment);
            }
        }
    }

    fn upsert(&mut self, batch: RecordBatch, keys: &EncodedKeys) -> Result<()> {
        let segment = self.next_segment;
        self.next_segment += 1;
        let rows = batch.num_rows();
        self.segments.insert(segment, (batch, 0));
        self.stored += rows;
        for row in 0..rows {
            let Some(key) = keys.get(row) else { continue };
            let row = u32::try_from(row).map_err(|_| SabotError::Execution("table batch too large".into()))?;
            let previous = match self.index.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, (segment, row))),
                None => {
                    self.index.insert(Box::from(key), (segment, row));
                    None
                }
            };
            if let Some((_, live)) = self.segments.get_mut(&segment) {
                *live += 1;
            }
            if let Some((old, _)) = previous {
                self.release(old);
            }
        }
        // A batch without a current row (all keys null) is not kept.
        if self.segments.get(&segment).is_some_and(|(_, live)| *live == 0) {
            self.segments.remove(&segment);
            self.stored -= rows;
        }
        Ok(())
    }

    /// The current row of every key, by segment and row, as one batch of `schema`.
    fn current_rows(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut current: Vec<(u64, u32)> = self.index.values().copied().collect();
        current.sort_unstable();
        let mut sources: Vec<&RecordBatch> = vec![];
        let mut source_of: hashbrown::HashMap<u64, usize> = hashbrown::HashMap::new();
        let mut picks = Vec::with_capacity(current.len());
        for (segment, row) in current {
            let source = match source_of.get(&segment) {
                Some(&s) => s,
                None => {
                    sources.push(self.segment(segment)?);
                    source_of.insert(segment, sources.len() - 1);
                    sources.len() - 1
                }
            };
            picks.push((source, row as usize));
        }
        if picks.is_empty() {
            return Ok(RecordBatch::new_empty(schema.clone()));
        }
        Ok(arrow::compute::interleave_record_batch(&sources, &picks)?)
    }

    /// Rewrites the current rows into one batch when most stored rows were replaced.
    fn compact_if_sparse(&mut self, schema: &SchemaRef) -> Result<()> {
        let live = self.index.len();
        if self.stored <= 2 * live + 1024 {
            return Ok(());
        }
        let ids: Vec<u64> = self.segments.keys().copied().collect();
        let position: hashbrown::HashMap<u64, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut picks = Vec::with_capacity(live);
        for (at, slot) in self.index.values_mut().enumerate() {
            picks.push((position[&slot.0], slot.1 as usize));
            *slot = (self.next_segment, at as u32);
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for c in 0..schema.fields().len() {
            let arrays: Vec<&dyn Array> = ids.iter().map(|id| self.segments[id].0.column(c).as_ref()).collect();
            columns.push(interleave(&arrays, &picks)?);
        }
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(live));
        let compacted = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
        self.segments.clear();
        self.segments.insert(self.next_segment, (compacted, live));
        self.next_segment += 1;
        self.stored = live;
        Ok(())
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

    #[test]
    fn compaction_keeps_the_latest_rows_only() {
        let op = TableJoinOperator::try_new(schema(), schema(), &["k"], &["k"], JoinType::Inner).unwrap();
        let mut h = TwoInputHarness::new(op);
        for round in 0..100 {
            let keys: Vec<Option<i64>> = (0..50).map(Some).collect();
            h.process_right(rows(keys, (0..50).map(|k| k * 1000 + round).collect())).unwrap();
        }
        assert_eq!(h.operator().buffered_rows(), 50);
        assert!(h.operator().table.stored <= 2 * 50 + 1024 + 50, "compacted: {}", h.operator().table.stored);
        h.process_left(rows(vec![Some(7), None, Some(99)], vec![0, 0, 0])).unwrap();
        let out = h.take_output();
        let v = out[0].column_by_name("v_right").unwrap().as_primitive::<Int64Type>();
        assert_eq!(v.values().to_vec(), vec![7099], "inner: the null key and unknown key 99 have no row");
    }

    /// Two instances' tables restored into three: each keeps the keys the exchange routes
    /// to it, and together they hold every key once.
    #[test]
    fn a_rescaled_table_keeps_the_keys_routed_to_each_instance() {
        let new = || TableJoinOperator::try_new(schema(), schema(), &["k"], &["k"], JoinType::Inner).unwrap();
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
