//! Session windows: per key, rows closer than a gap to each other form one window.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};

use super::watermark_assigner::event_times;
use super::window_aggregate::window_output_schema;
use super::{AggregateMode, AggregateOperator, Operator, Output, Watermark};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::window::{LateData, divert_late_rows};
use crate::{Result, SabotError};

/// Session windows over event time. A row at `t` opens the window `[t, t + gap)`; windows of
/// one key that overlap merge. A session fires when the watermark passes its end; rows that
/// extend a fired session within `allowed_lateness` make it fire again with new totals.
///
/// Rows are kept until their session can no longer change, then aggregated at once: memory is
/// proportional to the rows of open sessions.
pub struct SessionWindowOperator {
    gap: i64,
    time_column: String,
    keys: Vec<Expr>,
    aggregates: Vec<AggExpr>,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    lateness: i64,
    late: Option<LateData>,
    pending: Vec<RecordBatch>,
    watermark: i64,
    /// Rows already emitted per (key, session start): re-emit only when a session changed.
    emitted: HashMap<(Box<[u8]>, i64), usize>,
}

impl SessionWindowOperator {
    /// Sessions of `gap` ms per `keys` on `time_column`.
    pub fn try_new(
        gap: i64,
        time_column: &str,
        input_schema: SchemaRef,
        keys: Vec<Expr>,
        aggregates: Vec<AggExpr>,
        allowed_lateness: i64,
        late: Option<LateData>,
    ) -> Result<Self> {
        let time_type = input_schema
            .field_with_name(time_column)
            .map_err(|_| SabotError::column_not_found(&input_schema, time_column))?;
        let output_schema = window_output_schema(&input_schema, &keys, &aggregates, time_type.data_type())?;
        AggregateOperator::try_new(AggregateMode::Single, &input_schema, keys.clone(), aggregates.clone())?;
        Ok(SessionWindowOperator {
            gap: gap.max(1),
            time_column: time_column.to_string(),
            keys,
            aggregates,
            input_schema,
            output_schema,
            lateness: allowed_lateness.max(0),
            late,
            pending: vec![],
            watermark: i64::MIN,
            emitted: HashMap::new(),
        })
    }

    /// Splits pending rows into sessions, emits the complete ones, keeps rows that may change.
    fn evaluate(&mut self, out: &mut Output) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let all = concat_batches(&self.input_schema, &self.pending)?;
        self.pending.clear();
        let times = event_times(&all, &self.time_column)?;
        let key_arrays = self.keys.iter().map(|k| k.evaluate(&all)).collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(key_arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        let key_rows = converter.convert_columns(&key_arrays)?;
        let key = |i: usize| -> &[u8] { if self.keys.is_empty() { &[] } else { key_rows.row(i).data() } };
        let mut order: Vec<usize> = (0..all.num_rows()).collect();
        order.sort_by(|&a, &b| key(a).cmp(key(b)).then(times.value(a).cmp(&times.value(b))));

        let mut keep: Vec<u32> = vec![];
        // Rows of the sessions to emit, with their bounds: aggregated together at the end.
        let (mut done_rows, mut done_start, mut done_end) = (vec![], vec![], vec![]);
        let mut i = 0;
        while i < order.len() {
            // One session: consecutive rows of one key whose windows [t, t + gap) overlap.
            let mut j = i + 1;
            let mut max_t = times.value(order[i]);
            while j < order.len() && key(order[j]) == key(order[i]) && times.value(order[j]) < max_t + self.gap {
                max_t = max_t.max(times.value(order[j]));
                j += 1;
            }
            let (start, end) = (times.value(order[i]), max_t + self.gap);
            let rows: Vec<u32> = order[i..j].iter().map(|&r| r as u32).collect();
            if end <= self.watermark {
                let id = (Box::<[u8]>::from(key(order[i])), start);
                if self.emitted.get(&id) != Some(&rows.len()) {
                    done_rows.extend_from_slice(&rows);
                    done_start.extend(std::iter::repeat_n(start, rows.len()));
                    done_end.extend(std::iter::repeat_n(end, rows.len()));
                    self.emitted.insert(id.clone(), rows.len());
                }
                if end.saturating_add(self.lateness) > self.watermark {
                    keep.extend(rows);
                } else {
                    self.emitted.remove(&id);
                }
            } else {
                keep.extend(rows);
            }
            i = j;
        }
        if !done_rows.is_empty() {
            let sessions = take_record_batch(&all, &UInt32Array::from(done_rows))?;
            self.emit_sessions(sessions, done_start, done_end, out)?;
        }
        keep.sort_unstable();
        if !keep.is_empty() {
            self.pending.push(take_record_batch(&all, &UInt32Array::from(keep))?);
        }
        Ok(())
    }

    /// Aggregates the rows of many sessions in one pass, grouped by key and session bounds
    /// (one aggregation per session would cost a hash table per session).
    fn emit_sessions(&self, rows: RecordBatch, starts: Vec<i64>, ends: Vec<i64>, out: &mut Output) -> Result<()> {
        const START: &str = "__session_start";
        const END: &str = "__session_end";
        let mut fields: Vec<_> = rows.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(START, DataType::Int64, false)));
        fields.push(Arc::new(Field::new(END, DataType::Int64, false)));
        let schema = Arc::new(Schema::new(fields));
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(starts)));
        columns.push(Arc::new(Int64Array::from(ends)));
        let with_bounds = RecordBatch::try_new(schema.clone(), columns)?;
        let mut group_by = self.keys.clone();
        group_by.push(crate::expr::col(START));
        group_by.push(crate::expr::col(END));
        let mut aggregate =
            AggregateOperator::try_new(AggregateMode::Single, &schema, group_by, self.aggregates.clone())?;
        aggregate.process_batch(with_bounds, &mut Output::default())?;
        let mut result = Output::default();
        aggregate.on_close(&mut result)?;
        let time_type = self.output_schema.field(self.keys.len()).data_type();
        while let Some(super::Message::Batch(b)) = result.pop() {
            // Columns: keys, start, end, aggregates: the window columns take the time type.
            let mut columns = b.columns().to_vec();
            for bound in [self.keys.len(), self.keys.len() + 1] {
                columns[bound] = cast(&columns[bound], time_type)?;
            }
            let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            out.emit(RecordBatch::try_new_with_options(self.output_schema.clone(), columns, &options)?);
        }
        Ok(())
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> &str {
        "session_window"
    }

    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let times = event_times(&batch, &self.time_column)?;
        let (gap, lateness, watermark) = (self.gap, self.lateness, self.watermark);
        // A row whose own window [t, t + gap) expired cannot join a live session.
        let late_mask: BooleanArray =
            times.values().iter().map(|&t| Some((t + gap).saturating_add(lateness) <= watermark)).collect();
        self.pending.push(divert_late_rows(batch, &late_mask, self.late.as_ref())?);
        Ok(())
    }

    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if watermark.0 <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark.0;
        self.evaluate(out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = i64::MAX;
        self.evaluate(out)
    }

    /// Saves the rows of the open sessions (Arrow IPC, in arrival order), the watermark, and
    /// the row counts of the sessions already emitted (so that only changed ones re-fire).
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let mut emitted: Vec<(Vec<u8>, i64, usize)> =
            self.emitted.iter().map(|((key, start), &rows)| (key.to_vec(), *start, rows)).collect();
        emitted.sort_unstable();
        let pending: Vec<RecordBatch> = self.pending.iter().filter(|b| b.num_rows() > 0).cloned().collect();
        snapshot.put_batches("pending", &self.input_schema, &pending)?;
        snapshot.put_value("session", &SessionState { watermark: self.watermark, emitted })
    }

    fn follows_key_groups(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Drops the rows and emitted sessions of released key groups; adds those of acquired
    /// ones that the exchange routes here from the other worker's snapshots.
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        if !handover.released.is_empty() {
            let keep = |key: &[u8]| !handover.releases(key);
            let pending = std::mem::take(&mut self.pending);
            for batch in pending {
                let kept = super::filter_rows_by_key(&batch, &self.keys, &keep)?;
                if kept.num_rows() > 0 {
                    self.pending.push(kept);
                }
            }
            self.emitted.retain(|(key, _), _| keep(key));
        }
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        super::merge_acquired(handover, &name, &types, |snapshot, keep| self.merge_snapshot(snapshot, keep).map(drop))
    }

    /// Keeps the rows and emitted sessions of every old instance whose keys the hash
    /// exchange now routes to this instance; the watermark is the lowest of the old ones'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        let saved = super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep))?;
        self.watermark = saved.into_iter().flatten().min().unwrap_or(i64::MIN);
        Ok(())
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        let Some(state) = restored.value::<SessionState>("session")? else { return Ok(()) };
        self.watermark = state.watermark;
        self.emitted =
            state.emitted.into_iter().map(|(key, start, rows)| ((key.into_boxed_slice(), start), rows)).collect();
        self.pending = restored.batches("pending")?;
        Ok(())
    }
}

impl SessionWindowOperator {
    /// Adds the pending rows and emitted sessions whose keys `keep` accepts from a snapshot
    /// of another instance of this operator. Returns the snapshot's watermark.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<Option<i64>> {
        let Some(state) = snapshot.value::<SessionState>("session")? else { return Ok(None) };
        let watermark = state.watermark;
        for batch in snapshot.batches("pending")? {
            let kept = super::filter_rows_by_key(&batch, &self.keys, keep)?;
            if kept.num_rows() > 0 {
                self.pending.push(kept);
            }
        }
        let emitted = state.emitted.into_iter().filter(|(key, _, _)| keep(key));
        self.emitted.extend(emitted.map(|(key, start, rows)| ((key.into_boxed_slice(), start), rows)));
        Ok(Some(watermark))
    }
}

/// What a session window saves besides its rows.
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionState {
    watermark: i64,
    /// `(encoded key, session start, rows emitted)` of the sessions that fired.
    emitted: Vec<(Vec<u8>, i64, usize)>,
}
