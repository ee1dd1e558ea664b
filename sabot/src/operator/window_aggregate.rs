//! Tumbling and sliding event-time windows, aggregated incrementally in panes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::{cast, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};

use super::watermark_assigner::event_times;
use super::{AggregateMode, AggregateOperator, Operator, Output, Watermark};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::window::{LateData, WindowSpec, divert_late_rows};
use crate::{Result, SabotError};

/// The output schema of a window aggregation: keys, `window_start`, `window_end`, aggregates.
pub(crate) fn window_output_schema(
    input: &Schema,
    keys: &[Expr],
    aggregates: &[AggExpr],
    time_type: &DataType,
) -> Result<SchemaRef> {
    let mut fields = keys.iter().map(|k| k.to_field(input)).collect::<Result<Vec<Field>>>()?;
    fields.push(Field::new("window_start", time_type.clone(), false));
    fields.push(Field::new("window_end", time_type.clone(), false));
    for a in aggregates {
        fields.push(a.to_field(input)?);
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Inserts `window_start`/`window_end` after the key columns of an aggregate result.
pub(crate) fn with_window_columns(
    aggregated: &RecordBatch,
    num_keys: usize,
    start: i64,
    end: i64,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let rows = aggregated.num_rows();
    let time_type = schema.field(num_keys).data_type();
    let bound = |v: i64| -> Result<ArrayRef> { Ok(cast(&Int64Array::from(vec![v; rows]), time_type)?) };
    let mut columns: Vec<ArrayRef> = aggregated.columns()[..num_keys].to_vec();
    columns.push(bound(start)?);
    columns.push(bound(end)?);
    columns.extend_from_slice(&aggregated.columns()[num_keys..]);
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

/// Tumbling and sliding windows over event time. Each row is aggregated once, into the pane
/// (a slice of `gcd(size, slide)`) holding its timestamp; a firing window merges the partial
/// aggregates of its panes, so a sliding window never recomputes from the rows.
///
/// A window fires when the watermark reaches its end. Rows for a fired window that arrive
/// within `allowed_lateness` update it and it fires again with the new totals; later rows go
/// to the [`LateData`] side output.
pub struct WindowAggregateOperator {
    size: i64,
    slide: i64,
    pane: i64,
    time_column: String,
    keys: Vec<Expr>,
    aggregates: Vec<AggExpr>,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    lateness: i64,
    late: Option<LateData>,
    open_panes: BTreeMap<i64, AggregateOperator>,
    closed_panes: BTreeMap<i64, Vec<RecordBatch>>,
    watermark: i64,
    /// Windows (by start) that received rows after firing, with the keys of those rows:
    /// they fire again for those keys only.
    updated: BTreeMap<i64, HashSet<Box<[u8]>>>,
    /// Tumbling windows without lateness: a window is one pane and fires once, so panes
    /// aggregate to final values directly (no partial states, no merge).
    single_pane: bool,
}

impl WindowAggregateOperator {
    /// Aggregates `aggregates` per `keys` in `spec` windows (tumbling or sliding) of the
    /// event time in `time_column`.
    pub fn try_new(
        spec: WindowSpec,
        time_column: &str,
        input_schema: SchemaRef,
        keys: Vec<Expr>,
        aggregates: Vec<AggExpr>,
        allowed_lateness: i64,
        late: Option<LateData>,
    ) -> Result<Self> {
        let (Some(size), Some(slide), Some(pane)) = (spec.size(), spec.slide(), spec.pane_size()) else {
            return Err(SabotError::plan(format!("{spec} is not an aligned time window")));
        };
        let time_type = input_schema
            .field_with_name(time_column)
            .map_err(|_| SabotError::column_not_found(&input_schema, time_column))?;
        let output_schema = window_output_schema(&input_schema, &keys, &aggregates, time_type.data_type())?;
        // Validate the aggregation now rather than at the first row.
        AggregateOperator::try_new(AggregateMode::Partial, &input_schema, keys.clone(), aggregates.clone())?;
        Ok(WindowAggregateOperator {
            size,
            slide,
            pane,
            time_column: time_column.to_string(),
            keys,
            aggregates,
            input_schema,
            output_schema,
            lateness: allowed_lateness.max(0),
            late,
            open_panes: BTreeMap::new(),
            closed_panes: BTreeMap::new(),
            watermark: i64::MIN,
            updated: BTreeMap::new(),
            single_pane: size == slide && pane == size && allowed_lateness <= 0,
        })
    }

    /// The output schema.
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    /// Starts of the windows containing the pane starting at `pane`.
    fn windows_of_pane(&self, pane: i64) -> impl Iterator<Item = i64> + use<> {
        let (size, slide) = (self.size, self.slide);
        let last = pane.div_euclid(slide) * slide;
        let first = (pane + self.pane - size).div_euclid(slide) * slide;
        let first = if first + size < pane + self.pane { first + slide } else { first };
        (0..).map(move |i| first + i * slide).take_while(move |&s| s <= last)
    }

    /// Whether a window ending at `end` can still change.
    fn alive(&self, end: i64) -> bool {
        end.saturating_add(self.lateness) > self.watermark
    }

    fn add_to_pane(&mut self, pane: i64, rows: RecordBatch) -> Result<()> {
        let refire: Vec<i64> = self
            .windows_of_pane(pane)
            .filter(|&start| start + self.size <= self.watermark && self.alive(start + self.size))
            .collect();
        if !refire.is_empty() {
            let keys = self.key_bytes(&rows)?;
            for start in refire {
                self.updated.entry(start).or_default().extend(keys.iter().cloned());
            }
        }
        if !self.open_panes.contains_key(&pane) {
            let op = self.new_pane()?;
            self.open_panes.insert(pane, op);
        }
        let op = self.open_panes.get_mut(&pane).expect("inserted above");
        op.process_batch(rows, &mut Output::default())?;
        Ok(())
    }

    /// The aggregation of a new open pane.
    fn new_pane(&self) -> Result<AggregateOperator> {
        let mode = if self.single_pane { AggregateMode::Single } else { AggregateMode::Partial };
        AggregateOperator::try_new(mode, &self.input_schema, self.keys.clone(), self.aggregates.clone())
    }

    /// The encoded key of every row (empty keys for a global window).
    fn key_bytes(&self, batch: &RecordBatch) -> Result<Vec<Box<[u8]>>> {
        if self.keys.is_empty() {
            return Ok(vec![Box::from(&[][..])]);
        }
        let arrays = self.keys.iter().map(|k| k.evaluate(batch)).collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        let rows = converter.convert_columns(&arrays)?;
        Ok(rows.iter().map(|r| Box::from(r.data())).collect())
    }

    fn close_panes(&mut self, from: i64, to: i64) -> Result<()> {
        let starts: Vec<i64> = self.open_panes.range(from..to).map(|(s, _)| *s).collect();
        for start in starts {
            let mut op = self.open_panes.remove(&start).expect("listed");
            let mut out = Output::default();
            op.on_close(&mut out)?;
            while let Some(super::Message::Batch(b)) = out.pop() {
                self.closed_panes.entry(start).or_default().push(b);
            }
        }
        Ok(())
    }

    fn fire(&mut self, start: i64, only_keys: Option<&HashSet<Box<[u8]>>>, out: &mut Output) -> Result<()> {
        let end = start + self.size;
        if self.single_pane {
            let Some(mut pane) = self.open_panes.remove(&start) else { return Ok(()) };
            let mut results = Output::default();
            pane.on_close(&mut results)?;
            while let Some(super::Message::Batch(b)) = results.pop() {
                out.emit(with_window_columns(&b, self.keys.len(), start, end, &self.output_schema)?);
            }
            return Ok(());
        }
        self.close_panes(start, end)?;
        let mut merge = AggregateOperator::try_new(
            AggregateMode::Final,
            &self.input_schema,
            self.keys.clone(),
            self.aggregates.clone(),
        )?;
        let mut any = false;
        for partials in self.closed_panes.range(start..end).map(|(_, p)| p) {
            for p in partials {
                any = true;
                merge.process_batch(p.clone(), &mut Output::default())?;
            }
        }
        if !any {
            return Ok(());
        }
        let mut merged = Output::default();
        merge.on_close(&mut merged)?;
        while let Some(super::Message::Batch(b)) = merged.pop() {
            let b = match only_keys {
                Some(keys) if !self.keys.is_empty() => {
                    let names: Vec<Expr> =
                        (0..self.keys.len()).map(|i| crate::expr::col(b.schema_ref().field(i).name())).collect();
                    let key_arrays = names.iter().map(|k| k.evaluate(&b)).collect::<Result<Vec<_>>>()?;
                    let converter =
                        RowConverter::new(key_arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
                    let rows = converter.convert_columns(&key_arrays)?;
                    let mask: BooleanArray = rows.iter().map(|r| Some(keys.contains(r.data()))).collect();
                    filter_record_batch(&b, &mask)?
                }
                _ => b,
            };
            out.emit(with_window_columns(&b, self.keys.len(), start, end, &self.output_schema)?);
        }
        Ok(())
    }

    /// Fires every window ending in `(previous watermark, watermark]`, plus updated ones.
    fn advance(&mut self, previous: i64, out: &mut Output) -> Result<()> {
        let mut due: BTreeSet<i64> = std::mem::take(&mut self.updated).into_keys().collect();
        let panes: Vec<i64> = self.open_panes.keys().chain(self.closed_panes.keys()).copied().collect();
        for pane in panes {
            for start in self.windows_of_pane(pane) {
                let end = start + self.size;
                if end > previous && end <= self.watermark {
                    due.insert(start);
                }
            }
        }
        // Fire in order of window end (equal to start order: all windows have one size).
        for start in due {
            self.fire(start, None, out)?;
        }
        // Panes whose last window can no longer change are dropped.
        let (size, slide, lateness, watermark) = (self.size, self.slide, self.lateness, self.watermark);
        let expired = |pane: &i64| (pane.div_euclid(slide) * slide + size).saturating_add(lateness) <= watermark;
        self.open_panes.retain(|p, _| !expired(p));
        self.closed_panes.retain(|p, _| !expired(p));
        Ok(())
    }
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> &str {
        "window_aggregate"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let times = event_times(&batch, &self.time_column)?;
        let (pane, slide, size, lateness, watermark) =
            (self.pane, self.slide, self.size, self.lateness, self.watermark);
        // A row is late when even the last window containing it can no longer change.
        let is_late = |t: i64| (t.div_euclid(slide) * slide + size).saturating_add(lateness) <= watermark;
        let late_mask: BooleanArray = times.values().iter().map(|&t| Some(is_late(t))).collect();
        if late_mask.true_count() == 0 {
            return self.split_into_panes(batch, &times, pane, out);
        }
        let kept = divert_late_rows(batch, &late_mask, self.late.as_ref())?;
        let kept_times = event_times(&kept, &self.time_column)?;
        self.split_into_panes(kept, &kept_times, pane, out)
    }

    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if watermark.0 <= self.watermark {
            return Ok(());
        }
        let previous = self.watermark;
        self.watermark = watermark.0;
        self.advance(previous, out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        if self.watermark < i64::MAX {
            let previous = self.watermark;
            self.watermark = i64::MAX;
            self.advance(previous, out)?;
        }
        Ok(())
    }

    /// Saves the watermark, every open pane's groups with their partial states (final-value
    /// states on the single-pane path) as one Arrow IPC stream, the partial batches of the
    /// closed panes as another, and the windows waiting to fire again.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let name = self.name().to_string();
        let mut open = Vec::with_capacity(self.open_panes.len());
        let mut open_batches = Vec::with_capacity(self.open_panes.len());
        for (&start, pane) in &mut self.open_panes {
            let batch = pane.snapshot_batch(&name)?;
            open.push((start, batch.num_rows()));
            open_batches.push(batch);
        }
        let mut closed = Vec::with_capacity(self.closed_panes.len());
        let mut closed_batches = vec![];
        for (&start, partials) in &self.closed_panes {
            closed.push((start, partials.iter().map(|b| b.num_rows()).collect()));
            closed_batches.extend(partials.iter().cloned());
        }
        let updated = self
            .updated
            .iter()
            .map(|(&start, keys)| {
                let mut keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
                keys.sort_unstable();
                (start, keys)
            })
            .collect();
        if let Some(first) = open_batches.first() {
            snapshot.put_batches("open_panes", &first.schema(), &open_batches)?;
        }
        if let Some(first) = closed_batches.first() {
            snapshot.put_batches("closed_panes", &first.schema(), &closed_batches)?;
        }
        snapshot.put_value("window", &PaneState { watermark: self.watermark, open, closed, updated })
    }

    fn follows_key_groups(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Drops the groups of released key groups from every pane (and from the windows to fire
    /// again); adds those of acquired key groups that the exchange routes here from the
    /// other worker's snapshots, merged into the panes of the same start. (A window that
    /// already fired here does not fire again for the acquired keys.)
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        let (name, n) = (self.name().to_string(), self.keys.len());
        if !handover.released.is_empty() {
            let keep = |key: &[u8]| !handover.releases(key);
            for (start, mut pane) in std::mem::take(&mut self.open_panes) {
                let kept = super::filter_keys(&pane.snapshot_batch(&name)?, n, &keep)?;
                if kept.num_rows() > 0 {
                    let mut pane = self.new_pane()?;
                    pane.restore_batch(&kept, &name)?;
                    self.open_panes.insert(start, pane);
                }
            }
            for partials in self.closed_panes.values_mut() {
                for partial in partials.iter_mut() {
                    *partial = super::filter_keys(partial, n, &keep)?;
                }
                partials.retain(|b| b.num_rows() > 0);
            }
            self.closed_panes.retain(|_, partials| !partials.is_empty());
            for keys in self.updated.values_mut() {
                keys.retain(|key| keep(key));
            }
        }
        let types = super::key_types(&self.keys, &self.input_schema)?;
        super::merge_acquired(handover, &name, &types, |snapshot, keep| self.merge_snapshot(snapshot, keep).map(drop))
    }

    /// Keeps the groups of every old instance's panes that the hash exchange now routes to
    /// this instance; the watermark is the lowest of the old instances'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        let saved = super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep))?;
        self.watermark = saved.into_iter().flatten().min().unwrap_or(i64::MIN);
        Ok(())
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        let Some(state) = restored.value::<PaneState>("window")? else { return Ok(()) };
        let name = self.name().to_string();
        self.watermark = state.watermark;
        self.open_panes.clear();
        let mut open = SavedRows::read(restored, "open_panes", &name)?;
        for (start, rows) in state.open {
            let mut pane = self.new_pane()?;
            pane.restore_batch(&open.next(rows)?, &name)?;
            self.open_panes.insert(start, pane);
        }
        self.closed_panes.clear();
        let mut closed = SavedRows::read(restored, "closed_panes", &name)?;
        for (start, sizes) in state.closed {
            let partials = sizes.into_iter().map(|rows| closed.next(rows)).collect::<Result<Vec<_>>>()?;
            self.closed_panes.insert(start, partials);
        }
        self.updated = state
            .updated
            .into_iter()
            .map(|(start, keys)| (start, keys.into_iter().map(Vec::into_boxed_slice).collect()))
            .collect();
        Ok(())
    }
}

/// What a window aggregation saves besides its batches.
#[derive(serde::Serialize, serde::Deserialize)]
struct PaneState {
    watermark: i64,
    /// Open panes in order: start and number of groups (rows of `open_panes`).
    open: Vec<(i64, usize)>,
    /// Closed panes in order: start and the rows of each partial batch (of `closed_panes`).
    closed: Vec<(i64, Vec<usize>)>,
    /// Windows to fire again, with the encoded keys that changed.
    updated: Vec<(i64, Vec<Vec<u8>>)>,
}

/// Saved batches read back as one, handed out in consecutive slices.
pub(crate) struct SavedRows {
    all: Option<RecordBatch>,
    offset: usize,
    what: String,
}

impl SavedRows {
    /// The batches saved under `name` by `operator`.
    pub(crate) fn read(restored: &RestoredState, name: &str, operator: &str) -> Result<Self> {
        let batches = restored.batches(name)?;
        let all = match batches.first() {
            None => None,
            Some(first) => Some(arrow::compute::concat_batches(&first.schema(), &batches)?),
        };
        Ok(SavedRows { all, offset: 0, what: format!("{operator}/{name}") })
    }

    /// The next `rows` rows.
    pub(crate) fn next(&mut self, rows: usize) -> Result<RecordBatch> {
        let available = self.all.as_ref().map_or(0, |b| b.num_rows());
        match &self.all {
            Some(all) if self.offset + rows <= available => {
                let batch = all.slice(self.offset, rows);
                self.offset += rows;
                Ok(batch)
            }
            _ => Err(SabotError::State {
                state: self.what.clone(),
                message: format!("the snapshot holds {available} rows, {} expected", self.offset + rows),
            }),
        }
    }
}

impl WindowAggregateOperator {
    /// Adds the groups that `keep` accepts (by encoded key) from a snapshot of another
    /// instance of this operator: open panes merge into the pane of the same start (their
    /// groups are disjoint from this instance's), closed panes' partials and the windows to
    /// fire again are added. Returns the snapshot's watermark.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<Option<i64>> {
        let Some(state) = snapshot.value::<PaneState>("window")? else { return Ok(None) };
        let watermark = state.watermark;
        let (name, n) = (self.name().to_string(), self.keys.len());
        let mut open = SavedRows::read(snapshot, "open_panes", &name)?;
        for (start, rows) in state.open {
            let saved = super::filter_keys(&open.next(rows)?, n, keep)?;
            if saved.num_rows() == 0 {
                continue;
            }
            let merged = match self.open_panes.remove(&start) {
                Some(mut pane) => {
                    let mine = pane.snapshot_batch(&name)?;
                    arrow::compute::concat_batches(&mine.schema(), [&mine, &saved])?
                }
                None => saved,
            };
            let mut pane = self.new_pane()?;
            pane.restore_batch(&merged, &name)?;
            self.open_panes.insert(start, pane);
        }
        let mut closed = SavedRows::read(snapshot, "closed_panes", &name)?;
        for (start, sizes) in state.closed {
            for rows in sizes {
                let saved = super::filter_keys(&closed.next(rows)?, n, keep)?;
                if saved.num_rows() > 0 {
                    self.closed_panes.entry(start).or_default().push(saved);
                }
            }
        }
        for (start, keys) in state.updated {
            let keys = keys.into_iter().filter(|key| keep(key)).map(Vec::into_boxed_slice);
            self.updated.entry(start).or_default().extend(keys);
        }
        Ok(Some(watermark))
    }

    fn split_into_panes(&mut self, batch: RecordBatch, times: &Int64Array, pane: i64, out: &mut Output) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let values = times.values();
        let first = values[0].div_euclid(pane) * pane;
        if values.iter().all(|&t| t.div_euclid(pane) * pane == first) {
            self.add_to_pane(first, batch)?;
        } else {
            let mut rows: HashMap<i64, Vec<u32>> = HashMap::new();
            for (i, &t) in values.iter().enumerate() {
                rows.entry(t.div_euclid(pane) * pane).or_default().push(i as u32);
            }
            let mut panes: Vec<(i64, Vec<u32>)> = rows.into_iter().collect();
            panes.sort_unstable_by_key(|(p, _)| *p);
            for (p, indices) in panes {
                let part = take_record_batch(&batch, &arrow::array::UInt32Array::from(indices))?;
                self.add_to_pane(p, part)?;
            }
        }
        // Late rows within the allowed lateness re-fire their windows right away.
        if !self.updated.is_empty() {
            let due = std::mem::take(&mut self.updated);
            for (start, keys) in due {
                self.fire(start, Some(&keys), out)?;
            }
        }
        Ok(())
    }
}
