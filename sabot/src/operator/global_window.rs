//! Global windows: one window per key that never ends by itself; a [`Trigger`] decides when
//! it emits its aggregates and whether it then forgets its rows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};

use super::row_lists::RowLists;
use super::window_aggregate::{window_output_schema, with_window_columns};
use super::{AggregateMode, AggregateOperator, Operator, Output, Watermark};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::state::StateBackend;
use crate::window::{Trigger, TriggerResult, TriggerState};

/// Rows the heap holds before they are moved to the state backend (when there is one).
const DEFAULT_BUFFERED_ROWS: usize = 100_000;

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

/// A window's rows: the batches holding them and `(batch, row)` positions into those.
#[derive(Default)]
struct WindowRows {
    sources: Vec<RecordBatch>,
    rows: Vec<(usize, usize)>,
}

/// One key's window: what the trigger knows and the `(batch, row)` positions of its rows on
/// the heap.
#[derive(Default)]
struct KeyWindow {
    state: TriggerState,
    rows: Vec<(usize, usize)>,
    /// Rows moved to the state backend (they arrived before the heap's rows).
    stored: usize,
}

/// Per key, rows gather in a window that only the trigger closes: on each row
/// ([`Trigger::on_element`]) and when event or processing time moves ([`Trigger::on_time`];
/// the exchange in front repeats its watermark as a heartbeat when idle). A firing emits the
/// key's aggregates with `window_start` / `window_end` spanning its rows' times (event time
/// when the input has an event-time column, arrival time otherwise).
///
/// With [`with_state_backend`](Self::with_state_backend) the windows' rows move to RocksDB in
/// bulk whenever the heap holds more than a bound; each key's trigger state stays on the heap.
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
    /// Where rows go when the heap holds more than `buffer_limit` (none: they stay).
    store: Option<RowLists>,
    buffer_limit: usize,
    /// Rows of open windows on the heap.
    held: usize,
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
            store: None,
            buffer_limit: DEFAULT_BUFFERED_ROWS,
            held: 0,
        }
    }

    /// Keeps the rows of open windows in `backend`: on the heap for [`StateBackend::Memory`]
    /// (the default), else in the backend's store (RocksDB: one entry per key listing its
    /// rows in Arrow's row format), moved there whenever the heap holds more than the
    /// buffered rows (see [`with_buffered_rows`](Self::with_buffered_rows)) and at
    /// checkpoints. Call it before the first row.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::expr::{col, sum};
    /// use sabot::operator::GlobalWindowOperator;
    /// use sabot::state::StateBackend;
    /// use sabot::window::CountTrigger;
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("k", DataType::Utf8, false),
    ///     Field::new("x", DataType::Int64, false),
    /// ]));
    /// let backend = StateBackend::RocksDb { path: "/var/lib/sabot/worker-0".into() };
    /// let op = GlobalWindowOperator::try_new(Arc::new(CountTrigger(1_000)), schema, vec![col("k")], vec![sum(col("x"))], None)?
    ///     .with_state_backend(&backend)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_state_backend(mut self, backend: &StateBackend) -> Result<Self> {
        self.store = match backend {
            StateBackend::Memory => None,
            #[allow(unreachable_patterns)]
            _ => Some(RowLists::open(backend, "global_window", self.input_schema.clone())?),
        };
        Ok(self)
    }

    /// Holds at most about `rows` rows on the heap before moving them to the state backend
    /// (default 100,000; the heap backend holds every row anyway).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use arrow::datatypes::{DataType, Field, Schema};
    /// # use sabot::expr::{col, sum};
    /// # use sabot::operator::GlobalWindowOperator;
    /// # use sabot::window::CountTrigger;
    /// # let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false), Field::new("x", DataType::Int64, false)]));
    /// let op = GlobalWindowOperator::try_new(Arc::new(CountTrigger(10)), schema, vec![col("k")], vec![sum(col("x"))], None)?
    ///     .with_buffered_rows(10_000);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_buffered_rows(mut self, rows: usize) -> Self {
        self.buffer_limit = rows;
        self
    }

    /// Moves every row on the heap to the store (if any).
    fn flush(&mut self) -> Result<()> {
        let Some(store) = self.store.as_mut() else { return Ok(()) };
        if self.held == 0 {
            return Ok(());
        }
        let mut appended = vec![];
        for (key, window) in &mut self.open {
            if window.rows.is_empty() {
                continue;
            }
            window.stored += window.rows.len();
            let rows = window.rows.drain(..).map(|(batch, row)| (batch as u64, row as u32, 0)).collect();
            appended.push((key.clone(), rows));
        }
        // One key at a time in key order: RocksDB reads and writes sorted keys faster.
        appended.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let batches = &self.batches;
        store.append(&appended, |id| batches.get(id as usize))?;
        self.batches.clear();
        self.held = 0;
        Ok(())
    }

    /// The rows of `key`'s window: stored ones first, then those on the heap.
    fn window_rows(&mut self, key: &[u8]) -> Result<WindowRows> {
        let Some(window) = self.open.get(key) else { return Ok(WindowRows::default()) };
        let mut sources = vec![];
        let mut rows = vec![];
        if window.stored > 0
            && let Some(store) = self.store.as_mut()
        {
            let (stored, _) = store.read(&[(key, i64::MIN, i64::MAX)])?;
            rows.extend((0..stored.num_rows()).map(|row| (0, row)));
            sources.push(stored);
        }
        let offset = sources.len();
        sources.extend(self.batches.iter().cloned());
        rows.extend(window.rows.iter().map(|&(batch, row)| (offset + batch, row)));
        Ok(WindowRows { sources, rows })
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
        let Some(window) = self.open.get(key) else { return Ok(()) };
        if window.rows.is_empty() && window.stored == 0 {
            return Ok(());
        }
        let (start, end) = (window.state.first_time.unwrap_or(0), window.state.last_time.unwrap_or(0) + 1);
        let WindowRows { sources, rows } = self.window_rows(key)?;
        if result == TriggerResult::FireAndPurge
            && let Some(window) = self.open.get_mut(key)
        {
            window.state = TriggerState { timer: window.state.timer, ..TriggerState::default() };
            self.held -= window.rows.len();
            window.rows.clear();
            if std::mem::take(&mut window.stored) > 0
                && let Some(store) = self.store.as_mut()
            {
                store.delete(&[(key, i64::MIN, i64::MAX)])?;
            }
        }
        WindowAggregation {
            input_schema: &self.input_schema,
            output_schema: &self.output_schema,
            keys: &self.keys,
            aggregates: &self.aggregates,
        }
        .emit(&sources, &rows, (start, end), out)
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
            self.held += 1;
            let state = &mut window.state;
            state.count += 1;
            state.first_time = Some(state.first_time.map_or(time, |t| t.min(time)));
            state.last_time = Some(state.last_time.map_or(time, |t| t.max(time)));
            let result = self.trigger.on_element(state, self.watermark, now);
            self.fire(&key, result, out)?;
        }
        if self.store.is_some() && self.held > self.buffer_limit {
            return self.flush();
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
    /// IPC batch; with a state backend, a checkpoint of the stored rows), and the watermark.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        if self.store.is_some() {
            self.flush()?;
            let store = self.store.as_mut().expect("checked above");
            store.snapshot(snapshot)?;
            let mut keys: Vec<(Vec<u8>, TriggerState, usize)> =
                self.open.iter().map(|(key, w)| (key.to_vec(), w.state, w.stored)).collect();
            keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            return snapshot.put_value("windows_stored", &GlobalWindowState { watermark: self.watermark, keys });
        }
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
        self.held = 0;
        if let Some(store) = self.store.as_mut() {
            store.clear()?;
        }
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
        let mut released = 0;
        self.open.retain(|key, window| {
            let keep = !handover.releases(key);
            if !keep {
                released += window.rows.len();
            }
            keep
        });
        self.held -= released;
        if let Some(store) = self.store.as_mut() {
            store.retain_keys(&|key| !handover.releases(key))?;
        }
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
        if let Some(state) = snapshot.value::<GlobalWindowState>("windows_stored")? {
            let Some(store) = self.store.as_mut() else {
                return Err(crate::SabotError::State {
                    state: self.name().to_string(),
                    message: "the checkpoint holds state of the rocksdb state backend; restore it with that backend"
                        .into(),
                });
            };
            store.merge_snapshot(snapshot, keep)?;
            for (key, trigger_state, stored) in state.keys.into_iter().filter(|(key, _, _)| keep(key)) {
                self.open.insert(key.into_boxed_slice(), KeyWindow { state: trigger_state, rows: vec![], stored });
            }
            return Ok(Some(state.watermark));
        }
        let Some(state) = snapshot.value::<GlobalWindowState>("windows")? else { return Ok(None) };
        if self.store.is_some() {
            return Err(crate::SabotError::State {
                state: self.name().to_string(),
                message: "the checkpoint holds state of the memory state backend; restore it with that backend".into(),
            });
        }
        let rows = saved_rows(snapshot, &self.input_schema)?;
        let mut positions = OpenRows::new(self.batches.len(), &rows);
        for (key, trigger_state, count) in state.keys {
            let rows = positions.take(count, self.name())?;
            if keep(&key) {
                self.held += rows.len();
                self.open.insert(key.into_boxed_slice(), KeyWindow { state: trigger_state, rows, stored: 0 });
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
    /// Per key (encoded, in order): the trigger's state and the number of rows of its window
    /// (saved with the state on the heap; in the backend's checkpoint with a state backend).
    keys: Vec<(Vec<u8>, TriggerState, usize)>,
}
