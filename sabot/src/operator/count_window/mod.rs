//! Count windows: per key, every `size` consecutive rows form one window.

mod stored_counts;

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};

use self::stored_counts::StoredCounts;
use super::global_window::{OpenRows, WindowAggregation, gather_open_rows, saved_rows};
use super::window_aggregate::window_output_schema;
use super::{AggregateMode, AggregateOperator, Operator, Output};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::state::StateBackend;

/// Per key, rows buffered until the key has `size` of them; the window then fires with
/// `window_start`/`window_end` counting that key's rows (`[0, size)`, `[size, 2 size)`, …).
/// As in Flink, an incomplete window at the end of a bounded input does not fire.
pub struct CountWindowOperator {
    size: usize,
    keys: Vec<Expr>,
    aggregates: Vec<AggExpr>,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    converter: Option<RowConverter>,
    /// Batches still referenced by some key's open window.
    batches: Vec<RecordBatch>,
    /// Per key: the index of its next window and its rows so far, as `(batch, row)`.
    open: HashMap<Box<[u8]>, OpenWindow>,
    /// The open windows in a state backend instead (see `with_state_backend`).
    stored: Option<StoredCounts>,
}

/// A key's next window number and the `(batch, row)` positions of its rows so far.
type OpenWindow = (i64, Vec<(usize, usize)>);

impl CountWindowOperator {
    /// Windows of `size` rows per `keys`.
    pub fn try_new(size: usize, input_schema: SchemaRef, keys: Vec<Expr>, aggregates: Vec<AggExpr>) -> Result<Self> {
        let output_schema = window_output_schema(&input_schema, &keys, &aggregates, &DataType::Int64)?;
        AggregateOperator::try_new(AggregateMode::Single, &input_schema, keys.clone(), aggregates.clone())?;
        Ok(CountWindowOperator {
            size: size.max(1),
            keys,
            aggregates,
            input_schema,
            output_schema,
            converter: None,
            batches: vec![],
            open: HashMap::new(),
            stored: None,
        })
    }

    /// Keeps the open windows in `backend`: on the heap for [`StateBackend::Memory`] (the
    /// default), else in the backend's store (RocksDB: one entry per key with its window
    /// number and rows so far), so that the open windows of many keys can outgrow memory.
    /// Call it before the first row.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::expr::{col, count_all};
    /// use sabot::operator::CountWindowOperator;
    /// use sabot::state::StateBackend;
    ///
    /// let schema = Arc::new(Schema::new(vec![Field::new("user", DataType::Utf8, false)]));
    /// let op = CountWindowOperator::try_new(100, schema, vec![col("user")], vec![count_all()])?
    ///     .with_state_backend(&StateBackend::Memory)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_state_backend(mut self, backend: &StateBackend) -> Result<Self> {
        self.stored = match backend {
            StateBackend::Memory => None,
            #[allow(unreachable_patterns)]
            _ => Some(StoredCounts::open(self.input_schema.clone(), backend)?),
        };
        Ok(self)
    }

    /// Keeps memory proportional to the rows of open windows.
    fn compact(&mut self) -> Result<()> {
        super::global_window::compact_rows(&mut self.batches, self.open.values_mut().map(|(_, rows)| rows))
    }

    /// The bounds of window number `window`: its rows' positions in their key's sequence.
    fn bounds(&self, window: i64) -> (i64, i64) {
        (window * self.size as i64, (window + 1) * self.size as i64)
    }

    /// Emits the windows of the rows at the `(batch, row)` positions `rows` of `batches`,
    /// row `i` in the window `[starts[i], ends[i])`, aggregated together.
    fn fire(
        &self,
        batches: &[RecordBatch],
        rows: &[(usize, usize)],
        starts: Vec<i64>,
        ends: Vec<i64>,
        out: &mut Output,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let held: Vec<&RecordBatch> = batches.iter().collect();
        let window_rows = arrow::compute::interleave_record_batch(&held, rows)?;
        WindowAggregation {
            input_schema: &self.input_schema,
            output_schema: &self.output_schema,
            keys: &self.keys,
            aggregates: &self.aggregates,
        }
        .emit_many(window_rows, starts, ends, out)
    }
}

impl Operator for CountWindowOperator {
    fn name(&self) -> &str {
        "count_window"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let key_arrays = self.keys.iter().map(|k| k.evaluate(&batch)).collect::<Result<Vec<_>>>()?;
        if self.converter.is_none() && !self.keys.is_empty() {
            let fields = key_arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        let rows = match &self.converter {
            Some(c) => Some(c.convert_columns(&key_arrays)?),
            None => None,
        };
        if let Some(stored) = self.stored.as_mut() {
            let keys: Vec<&[u8]> = match &rows {
                Some(rows) => rows.iter().map(|r| r.data()).collect(),
                None => vec![&[][..]; batch.num_rows()],
            };
            let full = stored.add(&batch, &keys, self.size)?;
            let (mut batches, mut positions, mut starts, mut ends) = (vec![], vec![], vec![], vec![]);
            for (window, rows) in full {
                let (start, end) = self.bounds(window);
                positions.extend((0..rows.num_rows()).map(|row| (batches.len(), row)));
                starts.extend(std::iter::repeat_n(start, rows.num_rows()));
                ends.extend(std::iter::repeat_n(end, rows.num_rows()));
                batches.push(rows);
            }
            return self.fire(&batches, &positions, starts, ends, out);
        }
        let batch_index = self.batches.len();
        self.batches.push(batch.clone());
        // The windows the batch fills, fired together after it.
        let (mut positions, mut starts, mut ends) = (vec![], vec![], vec![]);
        for row in 0..batch.num_rows() {
            let key: &[u8] = rows.as_ref().map_or(&[][..], |r| r.row(row).data());
            if !self.open.contains_key(key) {
                self.open.insert(Box::from(key), (0, Vec::with_capacity(self.size)));
            }
            let entry = self.open.get_mut(key).expect("inserted above");
            entry.1.push((batch_index, row));
            if entry.1.len() == self.size {
                let window = entry.0;
                entry.0 += 1;
                let full = std::mem::replace(&mut entry.1, Vec::with_capacity(self.size));
                let (start, end) = self.bounds(window);
                starts.extend(std::iter::repeat_n(start, full.len()));
                ends.extend(std::iter::repeat_n(end, full.len()));
                positions.extend(full);
            }
        }
        self.fire(&self.batches, &positions, starts, ends, out)?;
        self.compact()
    }

    /// Saves, per key, the number of its next window and its rows so far (gathered into one
    /// Arrow IPC batch).
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        if let Some(stored) = self.stored.as_mut() {
            return stored.snapshot(snapshot);
        }
        let mut windows: Vec<(&Box<[u8]>, &OpenWindow)> = self.open.iter().collect();
        windows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let rows = gather_open_rows(&self.input_schema, &self.batches, windows.iter().map(|(_, w)| &w.1[..]))?;
        let keys: Vec<(Vec<u8>, i64, usize)> =
            windows.iter().map(|(key, (window, rows))| (key.to_vec(), *window, rows.len())).collect();
        snapshot.put_batches("rows", &self.input_schema, &[rows])?;
        snapshot.put_value("windows", &keys)
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.open.clear();
        self.batches.clear();
        self.merge_snapshot(restored, &|_| true)
    }

    fn follows_key_groups(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Drops the open windows of released key groups; adds those of acquired ones that the
    /// exchange routes here from the other worker's snapshots.
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        self.open.retain(|key, _| !handover.releases(key));
        if let Some(stored) = self.stored.as_mut() {
            stored.retain_keys(&|key| !handover.releases(key))?;
        }
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        super::merge_acquired(handover, &name, &types, |snapshot, keep| self.merge_snapshot(snapshot, keep))?;
        self.compact()
    }

    /// Keeps the open windows of every old instance whose keys the hash exchange now routes
    /// to this instance.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep))?;
        self.compact()
    }
}

impl CountWindowOperator {
    /// Adds the open windows whose keys `keep` accepts from a snapshot of an instance of
    /// this operator.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        if let Some(stored) = self.stored.as_mut() {
            return stored.merge_snapshot(snapshot, keep);
        }
        let Some(keys) = snapshot.value::<Vec<(Vec<u8>, i64, usize)>>("windows")? else {
            return super::saved_by_another_backend(snapshot, "count_window", "stored_counts", "rocksdb");
        };
        let rows = saved_rows(snapshot, &self.input_schema)?;
        let mut positions = OpenRows::new(self.batches.len(), &rows);
        for (key, window, count) in keys {
            let mut open = positions.take(count, self.name())?;
            if keep(&key) {
                open.reserve(self.size.saturating_sub(count));
                self.open.insert(key.into_boxed_slice(), (window, open));
            }
        }
        self.batches.push(rows);
        Ok(())
    }
}
