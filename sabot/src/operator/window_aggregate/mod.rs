//! Tumbling and sliding event-time windows, aggregated incrementally in panes.

mod heap_panes;
mod panes;
mod stored_panes;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};

use self::heap_panes::HeapPanes;
use self::panes::{PaneAggregation, PaneStore};
use self::stored_panes::StoredPanes;
use super::watermark_assigner::event_times;
use super::{AggregateMode, AggregateOperator, Operator, Output, Watermark};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::state::StateBackend;
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
///
/// Panes live on the heap by default; [`with_state_backend`](Self::with_state_backend) puts
/// them in RocksDB, for window state larger than memory.
pub struct WindowAggregateOperator {
    size: i64,
    slide: i64,
    pane: i64,
    time_column: String,
    aggregation: PaneAggregation,
    output_schema: SchemaRef,
    lateness: i64,
    late: Option<LateData>,
    panes: Box<dyn PaneStore>,
    /// See [`with_buffered_groups`](Self::with_buffered_groups).
    buffered_groups: usize,
    watermark: i64,
    /// Windows (by start) that received rows after firing, with the keys of those rows:
    /// they fire again for those keys only.
    updated: BTreeMap<i64, HashSet<Box<[u8]>>>,
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
        let aggregation = PaneAggregation {
            input_schema,
            keys,
            aggregates,
            single_pane: size == slide && pane == size && allowed_lateness <= 0,
        };
        Ok(WindowAggregateOperator {
            size,
            slide,
            pane,
            time_column: time_column.to_string(),
            panes: Box::new(HeapPanes::new(aggregation.clone())),
            buffered_groups: stored_panes::DEFAULT_BUFFERED_GROUPS,
            aggregation,
            output_schema,
            lateness: allowed_lateness.max(0),
            late,
            watermark: i64::MIN,
            updated: BTreeMap::new(),
        })
    }

    /// Keeps the panes in `backend`: on the heap for [`StateBackend::Memory`] (the default),
    /// else in the backend's store (RocksDB: one entry per group and pane, in a column family
    /// of the worker's instance), so that window state can outgrow memory. Call it before the
    /// first row.
    ///
    /// ```no_run
    /// use std::{sync::Arc, time::Duration};
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::expr::{col, count_all};
    /// use sabot::operator::WindowAggregateOperator;
    /// use sabot::state::StateBackend;
    /// use sabot::window::WindowSpec;
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("user", DataType::Utf8, false),
    ///     Field::new("ts", DataType::Int64, false),
    /// ]));
    /// let backend = StateBackend::RocksDb { path: "/var/lib/sabot/worker-0".into() };
    /// let op = WindowAggregateOperator::try_new(
    ///     WindowSpec::tumbling(Duration::from_secs(60)), "ts", schema, vec![col("user")], vec![count_all()], 0, None,
    /// )?
    /// .with_state_backend(&backend)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_state_backend(mut self, backend: &StateBackend) -> Result<Self> {
        self.panes = match backend {
            StateBackend::Memory => Box::new(HeapPanes::new(self.aggregation.clone())),
            #[allow(unreachable_patterns)]
            _ => Box::new(StoredPanes::open(self.aggregation.clone(), backend)?),
        };
        self.panes.limit_buffer(self.buffered_groups);
        Ok(self)
    }

    /// With the panes in a state backend: how many groups, over all panes, are aggregated
    /// in memory before they are merged into the backend (default 100,000). A larger buffer
    /// reads and writes the backend less often; a smaller one holds less memory.
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use arrow::datatypes::{DataType, Field, Schema};
    /// # use sabot::expr::{col, count_all};
    /// # use sabot::operator::WindowAggregateOperator;
    /// # use sabot::window::WindowSpec;
    /// # let schema = Arc::new(Schema::new(vec![Field::new("user", DataType::Utf8, false), Field::new("ts", DataType::Int64, false)]));
    /// let op = WindowAggregateOperator::try_new(
    ///     WindowSpec::tumbling(Duration::from_secs(60)), "ts", schema, vec![col("user")], vec![count_all()], 0, None,
    /// )?
    /// .with_buffered_groups(10_000);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_buffered_groups(mut self, groups: usize) -> Self {
        self.buffered_groups = groups;
        self.panes.limit_buffer(groups);
        self
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
        self.panes.add(pane, rows)
    }

    /// The encoded key of every row (empty keys for a global window).
    fn key_bytes(&self, batch: &RecordBatch) -> Result<Vec<Box<[u8]>>> {
        let keys = &self.aggregation.keys;
        if keys.is_empty() {
            return Ok(vec![Box::from(&[][..])]);
        }
        let arrays = keys.iter().map(|k| k.evaluate(batch)).collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        let rows = converter.convert_columns(&arrays)?;
        Ok(rows.iter().map(|r| Box::from(r.data())).collect())
    }

    fn fire(&mut self, start: i64, only_keys: Option<&HashSet<Box<[u8]>>>, out: &mut Output) -> Result<()> {
        let end = start + self.size;
        let num_keys = self.aggregation.keys.len();
        let results = if self.aggregation.single_pane {
            self.panes.take_final(start)?
        } else {
            let partials = self.panes.partials(start, end)?;
            if partials.is_empty() {
                return Ok(());
            }
            let mut merge = self.aggregation.new_merge()?;
            for partial in partials {
                merge.process_batch(partial, &mut Output::default())?;
            }
            let mut merged = Output::default();
            merge.on_close(&mut merged)?;
            let mut results = vec![];
            while let Some(super::Message::Batch(b)) = merged.pop() {
                results.push(b);
            }
            results
        };
        for b in results {
            let b = match only_keys {
                Some(keys) if num_keys > 0 => super::filter_keys(&b, num_keys, &|key| keys.contains(key))?,
                _ => b,
            };
            out.emit(with_window_columns(&b, num_keys, start, end, &self.output_schema)?);
        }
        Ok(())
    }

    /// Fires every window ending in `(previous watermark, watermark]`, plus updated ones.
    fn advance(&mut self, previous: i64, out: &mut Output) -> Result<()> {
        let mut due: BTreeSet<i64> = std::mem::take(&mut self.updated).into_keys().collect();
        for pane in self.panes.starts() {
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
        self.panes.expire(&|pane| (pane.div_euclid(slide) * slide + size).saturating_add(lateness) <= watermark)
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
        // A row is late when even the last window containing it can no longer change; that
        // grows with the time, so no row is late when the earliest is not.
        let is_late = |t: i64| (t.div_euclid(slide) * slide + size).saturating_add(lateness) <= watermark;
        let earliest = arrow::compute::min(&times);
        if earliest.is_none_or(|t| !is_late(t)) {
            return self.split_into_panes(batch, &times, pane, out);
        }
        let late_mask: BooleanArray = times.values().iter().map(|&t| Some(is_late(t))).collect();
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

    /// Saves the panes (heap: Arrow IPC batches; RocksDB: a checkpoint of the backend), the
    /// watermark and the windows waiting to fire again.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        self.panes.snapshot(snapshot)?;
        let updated = self
            .updated
            .iter()
            .map(|(&start, keys)| {
                let mut keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
                keys.sort_unstable();
                (start, keys)
            })
            .collect();
        snapshot.put_value("window", &WindowProgress { watermark: self.watermark, updated })
    }

    fn follows_key_groups(&self) -> bool {
        !self.aggregation.keys.is_empty()
    }

    /// Drops the groups of released key groups from every pane (and from the windows to fire
    /// again); adds those of acquired key groups that the exchange routes here from the
    /// other worker's snapshots, merged into the panes of the same start. (A window that
    /// already fired here does not fire again for the acquired keys.)
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        if !handover.released.is_empty() {
            let keep = |key: &[u8]| !handover.releases(key);
            self.panes.retain_keys(&keep)?;
            for keys in self.updated.values_mut() {
                keys.retain(|key| keep(key));
            }
        }
        let name = self.name().to_string();
        let types = super::key_types(&self.aggregation.keys, &self.aggregation.input_schema)?;
        super::merge_acquired(handover, &name, &types, |snapshot, keep| self.merge_snapshot(snapshot, keep).map(drop))
    }

    /// Keeps the groups of every old instance's panes that the hash exchange now routes to
    /// this instance; the watermark is the lowest of the old instances'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let name = self.name().to_string();
        let types = super::key_types(&self.aggregation.keys, &self.aggregation.input_schema)?;
        let saved = super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep))?;
        self.watermark = saved.into_iter().flatten().min().unwrap_or(i64::MIN);
        Ok(())
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        let Some(progress) = restored.value::<WindowProgress>("window")? else { return Ok(()) };
        self.watermark = progress.watermark;
        self.panes.restore(restored)?;
        self.updated = progress
            .updated
            .into_iter()
            .map(|(start, keys)| (start, keys.into_iter().map(Vec::into_boxed_slice).collect()))
            .collect();
        Ok(())
    }
}

/// What a window aggregation saves besides its panes.
#[derive(serde::Serialize, serde::Deserialize)]
struct WindowProgress {
    watermark: i64,
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
    /// instance of this operator, with the windows to fire again for them. Returns the
    /// snapshot's watermark.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<Option<i64>> {
        let Some(progress) = snapshot.value::<WindowProgress>("window")? else { return Ok(None) };
        self.panes.merge_snapshot(snapshot, keep)?;
        for (start, keys) in progress.updated {
            let keys = keys.into_iter().filter(|key| keep(key)).map(Vec::into_boxed_slice);
            self.updated.entry(start).or_default().extend(keys);
        }
        Ok(Some(progress.watermark))
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
            // The rows of each pane, in arrival order. Rows mostly come in time order, so
            // consecutive rows usually share their pane: only pane changes are looked up.
            let mut panes: Vec<(i64, Vec<u32>)> = vec![];
            let mut slot_of: hashbrown::HashMap<i64, usize, foldhash::fast::FixedState> = Default::default();
            let mut current = (i64::MIN, usize::MAX);
            for (i, &t) in values.iter().enumerate() {
                let start = t.div_euclid(pane) * pane;
                if start != current.0 {
                    let slot = *slot_of.entry(start).or_insert_with(|| {
                        panes.push((start, vec![]));
                        panes.len() - 1
                    });
                    current = (start, slot);
                }
                panes[current.1].1.push(i as u32);
            }
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
