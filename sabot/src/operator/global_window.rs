//! Global windows: one window per key that never ends by itself; a [`Trigger`] decides when
//! it emits its aggregates and whether it then forgets its rows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};

use super::window_aggregate::{window_output_schema, with_window_columns};
use super::{AggregateMode, AggregateOperator, Operator, Output, Watermark};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::window::{Trigger, TriggerResult, TriggerState};

/// Keeps memory proportional to the rows still referenced: once many batches are held, the
/// referenced rows are copied into one batch and the rest is released.
pub(crate) fn compact_rows<'a>(
    batches: &mut Vec<RecordBatch>,
    open: impl Iterator<Item = &'a mut Vec<(usize, usize)>>,
) -> Result<()> {
    let open: Vec<&mut Vec<(usize, usize)>> = open.collect();
    if open.iter().all(|rows| rows.is_empty()) {
        batches.clear();
        return Ok(());
    }
    if batches.len() < 32 {
        return Ok(());
    }
    let held: Vec<&RecordBatch> = batches.iter().collect();
    let mut all_rows = vec![];
    let mut open = open;
    for rows in open.iter_mut() {
        for r in rows.iter_mut() {
            all_rows.push(*r);
            *r = (0, all_rows.len() - 1);
        }
    }
    let compacted = interleave_record_batch(&held, &all_rows)?;
    *batches = vec![compacted];
    Ok(())
}

/// The rows `open` point to (per window, in the iterator's order), gathered into one batch
/// of `schema` for a checkpoint; the window `i`'s rows follow window `i - 1`'s.
pub(crate) fn gather_open_rows<'a>(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    open: impl Iterator<Item = &'a [(usize, usize)]>,
) -> Result<RecordBatch> {
    let all_rows: Vec<(usize, usize)> = open.flat_map(|rows| rows.iter().copied()).collect();
    if all_rows.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let held: Vec<&RecordBatch> = batches.iter().collect();
    Ok(interleave_record_batch(&held, &all_rows)?)
}

/// The rows a window operator saved with [`gather_open_rows`], as one batch.
pub(crate) fn saved_rows(restored: &RestoredState, schema: &SchemaRef) -> Result<RecordBatch> {
    let batches = restored.batches("rows")?;
    Ok(match batches.first() {
        Some(first) => arrow::compute::concat_batches(&first.schema(), &batches)?,
        None => RecordBatch::new_empty(schema.clone()),
    })
}

/// Hands out the consecutive rows of a batch [`gather_open_rows`] built, as `(batch, row)`
/// positions once the batch is held at index `batch`.
pub(crate) struct OpenRows {
    batch: usize,
    next: usize,
    total: usize,
}

impl OpenRows {
    pub(crate) fn new(batch: usize, rows: &RecordBatch) -> Self {
        OpenRows { batch, next: 0, total: rows.num_rows() }
    }

    /// The positions of the next `rows` rows.
    pub(crate) fn take(&mut self, rows: usize, operator: &str) -> Result<Vec<(usize, usize)>> {
        if self.next + rows > self.total {
            return Err(crate::SabotError::State {
                state: format!("{operator}/rows"),
                message: format!("the snapshot holds {} rows, {} expected", self.total, self.next + rows),
            });
        }
        let positions = (self.next..self.next + rows).map(|r| (self.batch, r)).collect();
        self.next += rows;
        Ok(positions)
    }
}

/// What a window operator needs to aggregate a window's rows.
pub(crate) struct WindowAggregation<'a> {
    pub(crate) input_schema: &'a SchemaRef,
    pub(crate) output_schema: &'a SchemaRef,
    pub(crate) keys: &'a [Expr],
    pub(crate) aggregates: &'a [AggExpr],
}

impl WindowAggregation<'_> {
    /// Aggregates the `(batch, row)` positions `rows` of `batches` per key and emits the
    /// results with `window_start` = `start` and `window_end` = `end`.
    pub(crate) fn emit(
        &self,
        batches: &[RecordBatch],
        rows: &[(usize, usize)],
        (start, end): (i64, i64),
        out: &mut Output,
    ) -> Result<()> {
        let held: Vec<&RecordBatch> = batches.iter().collect();
        let window_rows = interleave_record_batch(&held, rows)?;
        let mut aggregate = AggregateOperator::try_new(
            AggregateMode::Single,
            self.input_schema,
            self.keys.to_vec(),
            self.aggregates.to_vec(),
        )?;
        aggregate.process_batch(window_rows, &mut Output::default())?;
        let mut result = Output::default();
        aggregate.on_close(&mut result)?;
        while let Some(super::Message::Batch(b)) = result.pop() {
            out.emit(with_window_columns(&b, self.keys.len(), start, end, self.output_schema)?);
        }
        Ok(())
    }

    /// Aggregates the rows of many windows in one pass, grouped by key and window bounds
    /// (one aggregation per window would cost a hash table per window): row `i` of `rows`
    /// belongs to the window `[starts[i], ends[i])`.
    pub(crate) fn emit_many(
        &self,
        rows: RecordBatch,
        starts: Vec<i64>,
        ends: Vec<i64>,
        out: &mut Output,
    ) -> Result<()> {
        const START: &str = "__window_start";
        const END: &str = "__window_end";
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let mut fields: Vec<_> = rows.schema().fields().iter().cloned().collect();
        fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(START, arrow::datatypes::DataType::Int64, false)));
        fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(END, arrow::datatypes::DataType::Int64, false)));
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
        let mut columns = rows.columns().to_vec();
        columns.push(std::sync::Arc::new(arrow::array::Int64Array::from(starts)));
        columns.push(std::sync::Arc::new(arrow::array::Int64Array::from(ends)));
        let with_bounds = RecordBatch::try_new(schema.clone(), columns)?;
        let mut group_by = self.keys.to_vec();
        group_by.push(crate::expr::col(START));
        group_by.push(crate::expr::col(END));
        let mut aggregate =
            AggregateOperator::try_new(AggregateMode::Single, &schema, group_by, self.aggregates.to_vec())?;
        aggregate.process_batch(with_bounds, &mut Output::default())?;
        let mut result = Output::default();
        aggregate.on_close(&mut result)?;
        let time_type = self.output_schema.field(self.keys.len()).data_type();
        while let Some(super::Message::Batch(b)) = result.pop() {
            // Columns: keys, start, end, aggregates: the window columns take the time type.
            let mut columns = b.columns().to_vec();
            for bound in [self.keys.len(), self.keys.len() + 1] {
                columns[bound] = arrow::compute::cast(&columns[bound], time_type)?;
            }
            let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            out.emit(RecordBatch::try_new_with_options(self.output_schema.clone(), columns, &options)?);
        }
        Ok(())
    }
}

/// One key's window: what the trigger knows and the `(batch, row)` positions of its rows.
#[derive(Default)]
struct KeyWindow {
    state: TriggerState,
    rows: Vec<(usize, usize)>,
}

/// Per key, rows gather in a window that only the trigger closes: on each row
/// ([`Trigger::on_element`]) and when event or processing time moves ([`Trigger::on_time`];
/// the exchange in front repeats its watermark as a heartbeat when idle). A firing emits the
/// key's aggregates with `window_start` / `window_end` spanning its rows' times (event time
/// when the input has an event-time column, arrival time otherwise).
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch, StringArray};
/// use sabot::expr::{col, sum};
/// use sabot::operator::GlobalWindowOperator;
/// use sabot::testing::OperatorHarness;
/// use sabot::window::CountTrigger;
///
/// let batch = RecordBatch::try_from_iter([
///     ("k", Arc::new(StringArray::from(vec!["a", "a", "b", "a"])) as _),
///     ("x", Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as _),
/// ])?;
/// let op = GlobalWindowOperator::try_new(
///     Arc::new(CountTrigger(2)), batch.schema(), vec![col("k")], vec![sum(col("x"))], None)?;
/// let mut harness = OperatorHarness::new(op);
/// harness.process(batch)?;
/// assert_eq!(harness.output_rows(), 1); // a: 1 + 2; b and the second a wait for more rows
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct GlobalWindowOperator {
    trigger: Arc<dyn Trigger>,
    keys: Vec<Expr>,
    aggregates: Vec<AggExpr>,
    time_column: Option<String>,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    converter: Option<RowConverter>,
    /// Batches still referenced by some key's window.
    batches: Vec<RecordBatch>,
    open: HashMap<Box<[u8]>, KeyWindow>,
    watermark: i64,
}

impl GlobalWindowOperator {
    /// Global windows per `keys`, fired by `trigger`; `time_column` holds event times.
    pub fn try_new(
        trigger: Arc<dyn Trigger>,
        input_schema: SchemaRef,
        keys: Vec<Expr>,
        aggregates: Vec<AggExpr>,
        time_column: Option<String>,
    ) -> Result<Self> {
        let output_schema = window_output_schema(&input_schema, &keys, &aggregates, &DataType::Int64)?;
        AggregateOperator::try_new(AggregateMode::Single, &input_schema, keys.clone(), aggregates.clone())?;
        if let Some(column) = &time_column {
            input_schema.index_of(column).map_err(|_| crate::SabotError::column_not_found(&input_schema, column))?;
        }
        Ok(Self::validated(trigger, input_schema, output_schema, keys, aggregates, time_column))
    }

    /// An instance from parts [`GlobalWindowOperator::try_new`] has checked (one per partition).
    pub(crate) fn validated(
        trigger: Arc<dyn Trigger>,
        input_schema: SchemaRef,
        output_schema: SchemaRef,
        keys: Vec<Expr>,
        aggregates: Vec<AggExpr>,
        time_column: Option<String>,
    ) -> Self {
        GlobalWindowOperator {
            trigger,
            keys,
            aggregates,
            time_column,
            input_schema,
            output_schema,
            converter: None,
            batches: vec![],
            open: HashMap::new(),
            watermark: i64::MIN,
        }
    }

    /// The schema of the results.
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// Emits the aggregates of `key`'s window, purging it when asked.
    fn fire(&mut self, key: &[u8], result: TriggerResult, out: &mut Output) -> Result<()> {
        if result == TriggerResult::Continue {
            return Ok(());
        }
        let Some(window) = self.open.get_mut(key) else { return Ok(()) };
        if window.rows.is_empty() {
            return Ok(());
        }
        let (start, end) = (window.state.first_time.unwrap_or(0), window.state.last_time.unwrap_or(0) + 1);
        let rows = if result == TriggerResult::FireAndPurge {
            window.state = TriggerState { timer: window.state.timer, ..TriggerState::default() };
            std::mem::take(&mut window.rows)
        } else {
            window.rows.clone()
        };
        WindowAggregation {
            input_schema: &self.input_schema,
            output_schema: &self.output_schema,
            keys: &self.keys,
            aggregates: &self.aggregates,
        }
        .emit(&self.batches, &rows, (start, end), out)
    }

    /// Asks the trigger about every key with a timer; keys that fire do so in key order.
    fn on_time(&mut self, out: &mut Output) -> Result<()> {
        let now = Self::now();
        let mut due: Vec<(Box<[u8]>, TriggerResult)> = self
            .open
            .iter_mut()
            .filter(|(_, w)| w.state.timer.is_some())
            .map(|(key, w)| (key.clone(), self.trigger.on_time(&mut w.state, self.watermark, now)))
            .filter(|(_, r)| *r != TriggerResult::Continue)
            .collect();
        // Not the hash map's order, which differs between instances (and restored ones).
        due.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, result) in due {
            self.fire(&key, result, out)?;
        }
        compact_rows(&mut self.batches, self.open.values_mut().map(|w| &mut w.rows))
    }
}

impl Operator for GlobalWindowOperator {
    fn name(&self) -> &str {
        "global_window"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let key_arrays = self.keys.iter().map(|k| k.evaluate(&batch)).collect::<Result<Vec<_>>>()?;
        if self.converter.is_none() && !self.keys.is_empty() {
            let fields = key_arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        let key_rows = match &self.converter {
            Some(c) => Some(c.convert_columns(&key_arrays)?),
            None => None,
        };
        let times = match &self.time_column {
            Some(column) => Some(super::event_times(&batch, column)?),
            None => None,
        };
        let now = Self::now();
        let batch_index = self.batches.len();
        self.batches.push(batch.clone());
        for row in 0..batch.num_rows() {
            let key: Box<[u8]> = key_rows.as_ref().map_or(Box::from(&[][..]), |r| Box::from(r.row(row).data()));
            let time = times.as_ref().map_or(now, |t| t.value(row));
            let window = self.open.entry(key.clone()).or_default();
            window.rows.push((batch_index, row));
            let state = &mut window.state;
            state.count += 1;
            state.first_time = Some(state.first_time.map_or(time, |t| t.min(time)));
            state.last_time = Some(state.last_time.map_or(time, |t| t.max(time)));
            let result = self.trigger.on_element(state, self.watermark, now);
            self.fire(&key, result, out)?;
        }
        compact_rows(&mut self.batches, self.open.values_mut().map(|w| &mut w.rows))
    }

    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        let advanced = watermark.0 > self.watermark;
        self.watermark = self.watermark.max(watermark.0);
        self.on_time(out)?;
        if advanced {
            out.emit_watermark(watermark);
        }
        Ok(())
    }

    /// The end of a bounded input: event time is complete, so event-time triggers get the
    /// final watermark; windows their trigger never fires are dropped, as in Flink.
    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = i64::MAX;
        self.on_time(out)
    }

    /// Saves, per key, the trigger's state and the window's rows (gathered into one Arrow
    /// IPC batch), and the watermark.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let mut windows: Vec<(&Box<[u8]>, &KeyWindow)> = self.open.iter().collect();
        windows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let rows = gather_open_rows(&self.input_schema, &self.batches, windows.iter().map(|(_, w)| &w.rows[..]))?;
        let keys = windows.iter().map(|(key, w)| (key.to_vec(), w.state, w.rows.len())).collect();
        snapshot.put_batches("rows", &self.input_schema, &[rows])?;
        snapshot.put_value("windows", &GlobalWindowState { watermark: self.watermark, keys })
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.open.clear();
        self.batches.clear();
        if let Some(watermark) = self.merge_snapshot(restored, &|_| true)? {
            self.watermark = watermark;
        }
        Ok(())
    }

    fn follows_key_groups(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Drops the windows of released key groups; adds those of acquired ones that the
    /// exchange routes here from the other worker's snapshots.
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        self.open.retain(|key, _| !handover.releases(key));
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        super::merge_acquired(handover, &name, &types, |snapshot, keep| self.merge_snapshot(snapshot, keep).map(drop))?;
        compact_rows(&mut self.batches, self.open.values_mut().map(|w| &mut w.rows))
    }

    /// Keeps the windows of every old instance whose keys the hash exchange now routes to
    /// this instance; the watermark is the lowest of the old ones'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        let saved = super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep))?;
        self.watermark = saved.into_iter().flatten().min().unwrap_or(i64::MIN);
        compact_rows(&mut self.batches, self.open.values_mut().map(|w| &mut w.rows))
    }
}

impl GlobalWindowOperator {
    /// Adds the windows whose keys `keep` accepts from a snapshot of an instance of this
    /// operator. Returns the snapshot's watermark.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<Option<i64>> {
        let Some(state) = snapshot.value::<GlobalWindowState>("windows")? else { return Ok(None) };
        let rows = saved_rows(snapshot, &self.input_schema)?;
        let mut positions = OpenRows::new(self.batches.len(), &rows);
        for (key, trigger_state, count) in state.keys {
            let rows = positions.take(count, self.name())?;
            if keep(&key) {
                self.open.insert(key.into_boxed_slice(), KeyWindow { state: trigger_state, rows });
            }
        }
        self.batches.push(rows);
        Ok(Some(state.watermark))
    }
}

/// What a global window saves besides its rows.
#[derive(serde::Serialize, serde::Deserialize)]
struct GlobalWindowState {
    watermark: i64,
    /// Per key (encoded, in order): the trigger's state and the number of rows of its window.
    keys: Vec<(Vec<u8>, TriggerState, usize)>,
}
