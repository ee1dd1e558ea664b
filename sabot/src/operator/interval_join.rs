//! Interval join: rows of two streams with equal keys and close event times.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::join_buffer::{JoinBuffers, Probe};
use super::join_state::{JoinKeys, JoinOutput, JoinProgress, Picks, Side, times_of};
use super::{Output, TwoInputOperator, Watermark};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::plan::StreamJoinKind;
use crate::plan::stream_join_output;
use crate::state::StateBackend;

/// Flink's interval join (inner): a left row `l` joins every right row `r` with the same key
/// and `l.ts + lower <= r.ts <= l.ts + upper` (bounds in ms; `lower` may be negative).
///
/// A pair is emitted as soon as its second row arrives. Both sides are buffered by key in
/// event-time buckets, and the watermark bounds them: a left row is dropped once no future
/// right row can match it (`l.ts + upper < watermark`), a right row once no future left row
/// can (`r.ts - lower < watermark`). Rows behind the watermark on arrival are late and
/// dropped (counted by [`IntervalJoinOperator::late_rows`]).
///
/// Buffered rows live on the heap by default;
/// [`with_state_backend`](Self::with_state_backend) keeps them in RocksDB instead.
///
/// The output has every left column, then the right columns (right keys named like their left
/// key are dropped, other clashing names get the suffix `_right`). The forwarded watermark is
/// held back by `upper`, so that the left event-time column stays a valid event time
/// downstream: a right row arriving at watermark `w` may still join a left row as old as
/// `w - upper`.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::operator::IntervalJoinOperator;
/// use sabot::testing::TwoInputHarness;
///
/// let batch = |k: i64, ts: i64| RecordBatch::try_from_iter([
///     ("k", Arc::new(Int64Array::from(vec![k])) as _),
///     ("ts", Arc::new(Int64Array::from(vec![ts])) as _),
/// ]).unwrap();
/// let schema = batch(0, 0).schema();
/// // Right rows from 5 ms before to 10 ms after each left row.
/// let op = IntervalJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", -5, 10)?;
/// let mut h = TwoInputHarness::new(op);
/// h.process_left(batch(1, 100))?;
/// h.process_right(batch(1, 108))?; // within [95, 110]: joins
/// h.process_right(batch(1, 120))?; // outside: no output
/// assert_eq!(h.output_rows(), 1);
/// h.watermark(200)?;
/// assert_eq!(h.operator_mut().buffered_rows(), 0, "the watermark dropped both sides' rows");
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct IntervalJoinOperator {
    keys: JoinKeys,
    output: JoinOutput,
    lower: i64,
    upper: i64,
    buffers: JoinBuffers,
    watermark: i64,
    forwarded: Option<i64>,
    late_rows: usize,
}

impl IntervalJoinOperator {
    /// Joins rows of `left_schema` and `right_schema` whose `left_keys` equal their
    /// `right_keys` and whose event times (`left_time`, `right_time`: `Int64` ms or
    /// `Timestamp(ms)` columns) satisfy `l.ts + lower <= r.ts <= l.ts + upper`.
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        left_schema: SchemaRef,
        right_schema: SchemaRef,
        left_keys: &[&str],
        right_keys: &[&str],
        left_time: &str,
        right_time: &str,
        lower: i64,
        upper: i64,
    ) -> Result<Self> {
        let kind = StreamJoinKind::Interval {
            left_time: left_time.to_string(),
            right_time: right_time.to_string(),
            lower,
            upper,
        };
        let output = stream_join_output(&left_schema, &right_schema, left_keys, right_keys, &kind)?;
        let keys = JoinKeys::try_new(&left_schema, &right_schema, left_keys, right_keys)?;
        // A bucket as wide as the interval: each probe reads at most two buckets.
        let buffers = JoinBuffers::new(&output, left_time, right_time, upper.saturating_sub(lower).max(10))?;
        Ok(IntervalJoinOperator {
            keys,
            output,
            lower,
            upper,
            buffers,
            watermark: i64::MIN,
            forwarded: None,
            late_rows: 0,
        })
    }

    /// Keeps the buffered rows in `backend`: on the heap for [`StateBackend::Memory`] (the
    /// default), else in the backend's store (RocksDB: one entry per key and bucket of
    /// event time, rows in Arrow's row format), so that they can outgrow memory. Call it
    /// before the first row.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::operator::IntervalJoinOperator;
    /// use sabot::state::StateBackend;
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("k", DataType::Int64, false),
    ///     Field::new("ts", DataType::Int64, false),
    /// ]));
    /// let backend = StateBackend::RocksDb { path: "/var/lib/sabot/worker-0".into() };
    /// let op = IntervalJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", -5, 10)?
    ///     .with_state_backend(&backend)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_state_backend(mut self, backend: &StateBackend) -> Result<Self> {
        self.buffers.reopen(backend, &self.output)?;
        Ok(self)
    }

    /// Holds at most about `rows` new rows per side in memory before writing them to the
    /// state backend (default 100,000; the heap backend holds every row anyway).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use arrow::datatypes::{DataType, Field, Schema};
    /// # use sabot::operator::IntervalJoinOperator;
    /// # let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("ts", DataType::Int64, false)]));
    /// let op = IntervalJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", 0, 10)?
    ///     .with_buffered_rows(10_000);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_buffered_rows(mut self, rows: usize) -> Self {
        self.buffers.limit_memory(rows);
        self
    }

    /// The output schema.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.schema()
    }

    /// The rows buffered on both sides (bounded by the watermark).
    pub fn buffered_rows(&self) -> usize {
        self.buffers.rows()
    }

    /// The rows dropped because they arrived behind the watermark.
    pub fn late_rows(&self) -> usize {
        self.late_rows
    }

    /// Probes the other side's buffer with the arriving `batch` of `side`, emits the pairs,
    /// and buffers the rows that may still match future rows of the other side.
    fn process(&mut self, side: Side, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let times = times_of(&batch, self.buffers.time_column(side))?;
        let keys = self.keys.encode(&batch, side)?;
        let (lower, upper, watermark) = (self.lower, self.upper, self.watermark);
        let mut probes = Vec::with_capacity(times.len());
        let mut keep: Vec<u32> = vec![];
        for (row, &t) in times.iter().enumerate() {
            if t < watermark {
                self.late_rows += 1;
                continue;
            }
            let Some(key) = keys.get(row) else { continue };
            // The other side's times that match `t`, and whether this row can match a future row.
            let (low, high, useful) = match side {
                Side::Left => (t.saturating_add(lower), t.saturating_add(upper), t.saturating_add(upper) >= watermark),
                Side::Right => (t.saturating_sub(upper), t.saturating_sub(lower), t.saturating_sub(lower) >= watermark),
            };
            probes.push(Probe { row: row as u32, key, low, high });
            if useful {
                keep.push(row as u32);
            }
        }
        let (own, other) = self.buffers.own_and_other(side);
        let matched = other.probe(&probes)?;
        if !matched.rows.is_empty() {
            let sources: Vec<&RecordBatch> = matched.sources.iter().collect();
            let arriving = Picks::Take(&batch, &matched.probe_rows);
            let buffered = Picks::Interleave(&sources, &matched.rows);
            let joined = match side {
                Side::Left => self.output.build(arriving, buffered, vec![])?,
                Side::Right => self.output.build(buffered, arriving, vec![])?,
            };
            out.emit(joined);
        }
        own.insert(&batch, &times, &keys, &keep)
    }
}

impl TwoInputOperator for IntervalJoinOperator {
    fn name(&self) -> &str {
        "interval_join"
    }

    fn process_left(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.process(Side::Left, batch, out)
    }

    fn process_right(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.process(Side::Right, batch, out)
    }

    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if watermark.0 <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark.0;
        let (lower, upper, w) = (self.lower, self.upper, watermark.0);
        self.buffers.left.expire(&|_, max| max.saturating_add(upper) < w)?;
        self.buffers.right.expire(&|_, max| max.saturating_sub(lower) < w)?;
        let held = if w == i64::MAX { w } else { w.saturating_sub(upper.max(0)) };
        if self.forwarded.is_none_or(|f| held > f) {
            self.forwarded = Some(held);
            out.emit_watermark(Watermark(held));
        }
        Ok(())
    }

    fn on_close(&mut self, _out: &mut Output) -> Result<()> {
        // Every pair was emitted when its second row arrived: nothing is pending.
        self.buffers.clear()
    }
    /// Saves both sides' buffered rows (heap: Arrow IPC, by bucket and arrival; RocksDB: a
    /// checkpoint of the backend), the watermark,
    /// the last forwarded watermark and the count of late rows.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let progress = JoinProgress { watermark: self.watermark, forwarded: self.forwarded, late_rows: self.late_rows };
        self.buffers.snapshot(snapshot, progress)
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.restore(restored)
    }

    /// Keeps the buffered rows of every old instance whose keys the exchanges now route to
    /// this instance; the watermark is the lowest of the old ones'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.restore(restored)
    }

    fn follows_key_groups(&self) -> bool {
        true
    }

    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        let name = self.name().to_string();
        self.buffers.hand_over(handover, &name, &self.keys)
    }
}

impl IntervalJoinOperator {
    /// Loads both sides' buffered rows and the progress saved in `restored` (see
    /// [`restore_buffers`]).
    fn restore(&mut self, restored: &RestoredState) -> Result<()> {
        let name = self.name().to_string();
        if let Some(progress) = self.buffers.restore(restored, &name, &self.keys)? {
            self.watermark = progress.watermark;
            self.forwarded = progress.forwarded;
            self.late_rows = progress.late_rows;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::testing::TwoInputHarness;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    fn rows(data: &[(Option<&str>, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(data.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(data.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(data.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    fn harness(lower: i64, upper: i64) -> TwoInputHarness<IntervalJoinOperator> {
        TwoInputHarness::new(
            IntervalJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", lower, upper).unwrap(),
        )
    }

    #[test]
    fn output_schema_drops_the_shared_key_and_suffixes_clashes() {
        let h = harness(0, 1);
        let names: Vec<String> = h.operator().output_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["k", "ts", "v", "ts_right", "v_right"]);
    }

    #[test]
    fn null_keys_never_match_and_are_not_buffered() {
        let mut h = harness(-10, 10);
        h.process_left(rows(&[(None, 5, 1), (Some("a"), 5, 2)])).unwrap();
        h.process_right(rows(&[(None, 5, 3)])).unwrap();
        assert_eq!(h.output_rows(), 0);
        assert_eq!(h.operator().buffered_rows(), 1);
    }

    /// Two instances' buffers restored into three: each keeps the rows of the keys the
    /// exchanges route to it, and together they join every key once.
    #[test]
    fn a_rescaled_join_keeps_the_rows_routed_to_each_instance() {
        crate::state::on_each_backend(rescaled_join_keeps_the_rows_routed_to_each_instance);
    }

    fn rescaled_join_keeps_the_rows_routed_to_each_instance(backend: &StateBackend) {
        let new = || {
            IntervalJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", -10, 10)
                .unwrap()
                .with_state_backend(backend)
                .unwrap()
        };
        let key_names: Vec<String> = (0..40).map(|k| format!("k{k}")).collect();
        let old: Vec<_> = (0..2)
            .map(|instance| {
                let mut h = TwoInputHarness::new(new());
                let mine: Vec<(Option<&str>, i64, i64)> =
                    key_names.iter().skip(instance).step_by(2).map(|k| (Some(k.as_str()), 100, 1)).collect();
                h.process_left(rows(&mine)).unwrap();
                h.snapshot().unwrap()
            })
            .collect();
        let dirs: Vec<_> = old.iter().map(|s| s.restored_state().dir().to_path_buf()).collect();
        let mut joined = vec![];
        for partition in 0..3 {
            let rescale = crate::checkpoint::Rescale { from: 2, to: 3, partition, snapshots: dirs.clone() };
            let restored = RestoredState::rescaled(1, &dirs[0], rescale);
            let mut op = new();
            op.restore_rescaled_state(&restored).unwrap();
            let routed_here = crate::operator::key_router_of_types(&[DataType::Utf8], 3, partition).unwrap();
            let keys = JoinKeys::try_new(&schema(), &schema(), &["k"], &["k"]).unwrap();
            let all: Vec<(Option<&str>, i64, i64)> = key_names.iter().map(|k| (Some(k.as_str()), 100, 2)).collect();
            let encoded = keys.encode(&rows(&all), Side::Left).unwrap();
            let here = (0..all.len()).filter(|&row| routed_here(encoded.get(row).unwrap())).count();
            assert_eq!(op.buffered_rows(), here, "{backend:?}, instance {partition}: only its keys' rows");
            let mut h = TwoInputHarness::new(op);
            h.process_right(rows(&all)).unwrap();
            for batch in h.take_output() {
                let k = batch.column_by_name("k").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
                joined.extend(k.iter().map(|k| k.unwrap().to_string()));
            }
        }
        joined.sort();
        let mut expected = key_names.clone();
        expected.sort();
        assert_eq!(joined, expected, "{backend:?}: every key joined once");
    }

    #[test]
    fn watermark_is_held_back_by_the_upper_bound() {
        let mut h = harness(-5, 20);
        h.watermark(100).unwrap();
        h.watermark(150).unwrap();
        h.watermark(i64::MAX).unwrap();
        assert_eq!(h.watermarks(), vec![80, 130, i64::MAX]);
    }
}
