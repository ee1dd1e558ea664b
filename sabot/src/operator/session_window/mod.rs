//! Session windows: per key, rows closer than a gap to each other form one window.

mod sessions;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};

use super::global_window::WindowAggregation;
use super::row_lists::RowLists;
use super::watermark_assigner::event_times;
use super::window_aggregate::window_output_schema;
use super::{AggregateMode, AggregateOperator, Operator, Output, Watermark};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::state::StateBackend;
use crate::window::{LateData, divert_late_rows};
use crate::{Result, SabotError};
use sessions::{Emitted, SavedSession, Sessions};

/// Session windows over event time. A row at `t` opens the window `[t, t + gap)`; windows of
/// one key that overlap merge. A session fires when the watermark passes its end; rows that
/// extend a fired session within `allowed_lateness` make it fire again with new totals.
///
/// Sessions are kept per key, each with its rows (in the arriving batches, by reference) and
/// indexed by end: a row joins or merges the sessions of its key as it arrives, and a
/// watermark touches only the sessions it completes or expires. A session's rows are
/// aggregated when it fires (in event-time order, so `first` and `last` follow event time),
/// so every aggregate works, single-phase ones included; memory is proportional to the rows
/// of the sessions that can still change.
///
/// With [`with_state_backend`](Self::with_state_backend) the rows move to RocksDB in bulk
/// whenever the heap holds more than a bound; the sessions' bounds and indices stay on the
/// heap (a few dozen bytes per open session, as Flink's heap timers).
pub struct SessionWindowOperator {
    gap: i64,
    time_column: String,
    keys: Vec<Expr>,
    aggregates: Vec<AggExpr>,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    lateness: i64,
    late: Option<LateData>,
    sessions: Sessions,
    watermark: i64,
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
            sessions: Sessions::default(),
            watermark: i64::MIN,
        })
    }

    /// Keeps the rows of open sessions in `backend`: on the heap for [`StateBackend::Memory`]
    /// (the default), else in the backend's store (RocksDB: one entry per key listing its
    /// rows in Arrow's row format), moved there whenever the heap holds more than the
    /// buffered rows (see [`with_buffered_rows`](Self::with_buffered_rows)) and at
    /// checkpoints. Call it before the first row.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::expr::{col, count_all};
    /// use sabot::operator::SessionWindowOperator;
    /// use sabot::state::StateBackend;
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("user", DataType::Utf8, false),
    ///     Field::new("ts", DataType::Int64, false),
    /// ]));
    /// let backend = StateBackend::RocksDb { path: "/var/lib/sabot/worker-0".into() };
    /// let op = SessionWindowOperator::try_new(30_000, "ts", schema, vec![col("user")], vec![count_all()], 0, None)?
    ///     .with_state_backend(&backend)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_state_backend(mut self, backend: &StateBackend) -> Result<Self> {
        self.sessions = match backend {
            StateBackend::Memory => Sessions::default(),
            #[allow(unreachable_patterns)]
            _ => Sessions::with_store(RowLists::open(backend, "session_window", self.input_schema.clone())?),
        };
        Ok(self)
    }

    /// Holds at most about `rows` rows on the heap before moving them to the state backend
    /// (default 100,000; the heap backend holds every row anyway).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use arrow::datatypes::{DataType, Field, Schema};
    /// # use sabot::expr::{col, count_all};
    /// # use sabot::operator::SessionWindowOperator;
    /// # let schema = Arc::new(Schema::new(vec![Field::new("user", DataType::Utf8, false), Field::new("ts", DataType::Int64, false)]));
    /// let op = SessionWindowOperator::try_new(30_000, "ts", schema, vec![col("user")], vec![count_all()], 0, None)?
    ///     .with_buffered_rows(10_000);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_buffered_rows(mut self, rows: usize) -> Self {
        self.sessions.limit_buffer(rows);
        self
    }

    /// The encoded keys of the rows of `batch` (`None` without keys: all rows have the empty key).
    fn key_rows(&self, batch: &RecordBatch) -> Result<Option<Rows>> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let arrays = self.keys.iter().map(|k| k.evaluate(batch)).collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        Ok(Some(converter.convert_columns(&arrays)?))
    }

    /// Adds the rows of `batch` to the sessions of their keys; with `check_late`, rows that
    /// are late go to the late-data output instead.
    fn add_rows(&mut self, batch: RecordBatch, check_late: bool) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = event_times(&batch, &self.time_column)?;
        let key_rows = self.key_rows(&batch)?;
        let mut keys: Vec<&[u8]> = match &key_rows {
            Some(rows) => rows.iter().map(|r| r.data()).collect(),
            None => vec![&[][..]; batch.num_rows()],
        };
        let mut times = times.values().to_vec();
        let mut batch = batch;
        if check_late {
            // Late: the session the row would be part of can no longer change (as Flink
            // decides for merging windows). Its own window [t, t + gap) expired, and it
            // overlaps no kept session of its key (every kept session can still change).
            let (gap, lateness, watermark) = (self.gap, self.lateness, self.watermark);
            let late: BooleanArray = keys
                .iter()
                .zip(&times)
                .map(|(key, &t)| {
                    Some(
                        t.saturating_add(gap).saturating_add(lateness) <= watermark
                            && !self.sessions.overlaps(key, t, gap),
                    )
                })
                .collect();
            if late.true_count() > 0 {
                batch = divert_late_rows(batch, &late, self.late.as_ref())?;
                let on_time: Vec<usize> = (0..keys.len()).filter(|&i| !late.value(i)).collect();
                keys = on_time.iter().map(|&i| keys[i]).collect();
                times = on_time.iter().map(|&i| times[i]).collect();
            }
        }
        self.sessions.insert(batch, &keys, &times, self.gap, self.lateness)
    }

    /// Emits the changed sessions the watermark completed, then drops those that can no
    /// longer change.
    fn advance(&mut self, out: &mut Output) -> Result<()> {
        self.fire_due(out)?;
        self.sessions.expire(self.watermark, self.lateness)
    }

    /// Emits the sessions that changed since they last fired and end by the watermark.
    fn fire_due(&mut self, out: &mut Output) -> Result<()> {
        let due = self.sessions.due(self.watermark);
        if !due.is_empty() {
            let (rows, starts, ends) = self.sessions.gather(&due, &self.input_schema)?;
            let aggregation = WindowAggregation {
                input_schema: &self.input_schema,
                output_schema: &self.output_schema,
                keys: &self.keys,
                aggregates: &self.aggregates,
            };
            aggregation.emit_many(rows, starts, ends, out)?;
        }
        Ok(())
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> &str {
        "session_window"
    }

    /// Late rows within the allowed lateness that change a session the watermark already
    /// passed make it fire again at once, as Flink's event-time trigger does.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.add_rows(batch, true)?;
        self.fire_due(out)
    }

    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if watermark.0 <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark.0;
        self.advance(out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = i64::MAX;
        self.advance(out)
    }

    /// Saves the rows of the sessions that can still change (Arrow IPC, in arrival order),
    /// the watermark, and the row counts of the sessions that fired and did not change since
    /// (so that only changed ones fire again). With a state backend: a checkpoint of the
    /// stored rows, the sessions and the watermark.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        if let Some(sessions) = self.sessions.snapshot_stored(snapshot)? {
            return snapshot.put_value("session_stored", &StoredSessionState { watermark: self.watermark, sessions });
        }
        let (pending, emitted) = self.sessions.saved(&self.input_schema)?;
        snapshot.put_batches("pending", &self.input_schema, &pending)?;
        snapshot.put_value("session", &SessionState { watermark: self.watermark, emitted })
    }

    fn follows_key_groups(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Drops the sessions of released key groups; adds those of acquired ones that the
    /// exchange routes here from the other worker's snapshots.
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        if !handover.released.is_empty() {
            self.sessions.retain_keys(&|key| !handover.releases(key))?;
        }
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        super::merge_acquired(handover, &name, &types, |snapshot, keep| self.merge_snapshot(snapshot, keep).map(drop))
    }

    /// Keeps the sessions of every old instance whose keys the hash exchange now routes to
    /// this instance; the watermark is the lowest of the old ones'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        let saved = super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep))?;
        self.watermark = saved.into_iter().flatten().min().unwrap_or(i64::MIN);
        Ok(())
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.sessions = self.sessions.emptied()?;
        if let Some(watermark) = self.merge_snapshot(restored, &|_| true)? {
            self.watermark = watermark;
        }
        Ok(())
    }
}

impl SessionWindowOperator {
    /// Adds the sessions whose keys `keep` accepts from a snapshot of an instance of this
    /// operator: their rows, and which of them fired. Returns the snapshot's watermark.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<Option<i64>> {
        if let Some(state) = snapshot.value::<StoredSessionState>("session_stored")? {
            self.sessions.merge_stored(snapshot, state.sessions, self.lateness, keep)?;
            return Ok(Some(state.watermark));
        }
        let Some(state) = snapshot.value::<SessionState>("session")? else { return Ok(None) };
        if self.sessions.is_stored() {
            return Err(SabotError::State {
                state: "session_window".into(),
                message: "the checkpoint holds state of the memory state backend; restore it with that backend".into(),
            });
        }
        for batch in snapshot.batches("pending")? {
            let kept = super::filter_rows_by_key(&batch, &self.keys, keep)?;
            self.add_rows(kept, false)?;
        }
        self.sessions.mark_emitted(state.emitted.into_iter().filter(|(key, _, _)| keep(key)).collect());
        Ok(Some(state.watermark))
    }
}

/// What a session window saves besides its rows.
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionState {
    watermark: i64,
    emitted: Emitted,
}

/// What a session window with a state backend saves besides the backend's checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSessionState {
    watermark: i64,
    sessions: Vec<SavedSession>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::expr::{col, count_all};
    use crate::testing::OperatorHarness;

    /// Sessions whose rows moved to RocksDB leave nothing behind once they expired, partly
    /// stored rows and merged sessions included.
    #[cfg(feature = "rocksdb")]
    #[test]
    fn expired_sessions_leave_no_rows_in_the_store() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let rocksdb = StateBackend::RocksDb { path: dir.path().join("rocksdb") };
        let batch = |rows: &[(&str, i64)]| {
            let keys = StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
            let ts = Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
            RecordBatch::try_new(schema.clone(), vec![Arc::new(keys), Arc::new(ts)]).unwrap()
        };
        let run = |backend: &StateBackend| {
            let op =
                SessionWindowOperator::try_new(10, "ts", schema.clone(), vec![col("k")], vec![count_all()], 5, None)
                    .unwrap()
                    .with_state_backend(backend)
                    .unwrap()
                    .with_buffered_rows(3);
            let mut h = OperatorHarness::new(op);
            h.process(batch(&[("a", 0), ("a", 4), ("b", 1), ("a", 30), ("b", 2)])).unwrap();
            h.process(batch(&[("a", 12), ("c", 7)])).unwrap();
            h.watermark(20).unwrap();
            // Bridges a's [0, 22) and [30, 40) within the lateness.
            h.process(batch(&[("a", 21), ("b", 40)])).unwrap();
            let stored = h.operator_mut().sessions.stored_entries().unwrap();
            h.watermark(100).unwrap();
            assert_eq!(h.operator_mut().sessions.stored_entries().unwrap(), 0, "every session expired");
            (h.take_output(), stored)
        };
        let (on_heap, _) = run(&StateBackend::Memory);
        let (stored, entries) = run(&rocksdb);
        assert!(entries > 0, "rows moved to RocksDB");
        assert_eq!(stored, on_heap);
    }

    /// A key whose session never ends holds one row of every batch; once the other keys'
    /// sessions expired, the batches are compacted to the rows sessions still hold.
    #[test]
    fn a_long_session_does_not_keep_every_batch() {
        // With RocksDB the rows move to the store instead of being compacted on the heap.
        crate::state::on_each_backend(long_session_does_not_keep_every_batch_on);
    }

    fn long_session_does_not_keep_every_batch_on(backend: &StateBackend) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
        ]));
        let op = SessionWindowOperator::try_new(50, "ts", schema.clone(), vec![col("k")], vec![count_all()], 0, None)
            .unwrap()
            .with_state_backend(backend)
            .unwrap();
        let mut h = OperatorHarness::new(op);
        for round in 0..40i64 {
            // "busy" every round (one endless session), 4,999 one-off keys that expire.
            let keys: Vec<String> =
                std::iter::once("busy".to_string()).chain((0..4_999).map(|i| format!("k{round}-{i}"))).collect();
            let ts = Int64Array::from(vec![round * 10; keys.len()]);
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(keys)), Arc::new(ts)]).unwrap();
            h.process(batch).unwrap();
            h.watermark(round * 10 - 1).unwrap();
        }
        let sessions = &h.operator_mut().sessions;
        assert!(sessions.held < 8 * 5_000, "{} rows held: about six rounds of sessions are open", sessions.held);
        assert!(
            sessions.retained <= 2 * sessions.held + 65_536,
            "{backend:?}: {} rows retained for {} held",
            sessions.retained,
            sessions.held
        );
        h.close().unwrap();
        let busy: i64 = h
            .take_output()
            .iter()
            .flat_map(|b| {
                let keys = b.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone();
                let counts = b.column_by_name("count").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
                (0..b.num_rows()).filter(move |&i| keys.value(i) == "busy").map(move |i| counts.value(i))
            })
            .sum();
        assert_eq!(busy, 40, "{backend:?}: the long session kept all its rows through compactions");
    }
}
