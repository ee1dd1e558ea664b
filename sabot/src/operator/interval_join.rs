//! Interval join: rows of two streams with equal keys and close event times.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::join_state::{
    EncodedKeys, JoinKeys, JoinOutput, JoinProgress, Picks, RowRef, Side, TimeBuckets, restore_buffers,
    snapshot_buffers, times_of,
};
use super::{Output, TwoInputOperator, Watermark};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::plan::StreamJoinKind;
use crate::plan::stream_join_output;

/// Flink's interval join (inner): a left row `l` joins every right row `r` with the same key
/// and `l.ts + lower <= r.ts <= l.ts + upper` (bounds in ms; `lower` may be negative).
///
/// A pair is emitted as soon as its second row arrives. Both sides are buffered by key in
/// event-time buckets, and the watermark bounds them: a left row is dropped once no future
/// right row can match it (`l.ts + upper < watermark`), a right row once no future left row
/// can (`r.ts - lower < watermark`). Rows behind the watermark on arrival are late and
/// dropped (counted by [`IntervalJoinOperator::late_rows`]).
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
    left_time: String,
    right_time: String,
    lower: i64,
    upper: i64,
    left: TimeBuckets,
    right: TimeBuckets,
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
        let width = upper.saturating_sub(lower).max(10);
        Ok(IntervalJoinOperator {
            keys,
            output,
            left_time: left_time.to_string(),
            right_time: right_time.to_string(),
            lower,
            upper,
            left: TimeBuckets::new(width),
            right: TimeBuckets::new(width),
            watermark: i64::MIN,
            forwarded: None,
            late_rows: 0,
        })
    }

    /// The output schema.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.schema()
    }

    /// The rows buffered on both sides (bounded by the watermark).
    pub fn buffered_rows(&self) -> usize {
        self.left.rows() + self.right.rows()
    }

    /// The rows dropped because they arrived behind the watermark.
    pub fn late_rows(&self) -> usize {
        self.late_rows
    }

    /// Probes the other side's buffer with the arriving `batch` of `side`, emits the pairs,
    /// and buffers the rows that may still match future rows of the other side.
    fn process(&mut self, side: Side, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let column = if side == Side::Left { &self.left_time } else { &self.right_time };
        let times = times_of(&batch, column)?;
        let keys = self.keys.encode(&batch, side)?;
        let (lower, upper, watermark) = (self.lower, self.upper, self.watermark);
        let other = if side == Side::Left { &self.right } else { &self.left };
        let mut probe_rows: Vec<u32> = vec![];
        let mut matched: Vec<RowRef> = vec![];
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
            other.probe(key, low, high, |r, _| {
                probe_rows.push(row as u32);
                matched.push(r);
            });
            if useful {
                keep.push(row as u32);
            }
        }
        if !matched.is_empty() {
            let gathered = other.gather(&matched)?;
            let arriving = Picks::Take(&batch, &probe_rows);
            let buffered = gathered.picks();
            let joined = match side {
                Side::Left => self.output.build(arriving, buffered, vec![])?,
                Side::Right => self.output.build(buffered, arriving, vec![])?,
            };
            out.emit(joined);
        }
        self.store(side, &batch, &times, &keys, &keep)
    }

    fn store(
        &mut self,
        side: Side,
        batch: &RecordBatch,
        times: &[i64],
        keys: &EncodedKeys,
        rows: &[u32],
    ) -> Result<()> {
        match side {
            Side::Left => self.left.insert(batch, times, keys, rows),
            Side::Right => self.right.insert(batch, times, keys, rows),
        }
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
        self.left.expire(|_, max| max.saturating_add(upper) < w);
        self.right.expire(|_, max| max.saturating_sub(lower) < w);
        let held = if w == i64::MAX { w } else { w.saturating_sub(upper.max(0)) };
        if self.forwarded.is_none_or(|f| held > f) {
            self.forwarded = Some(held);
            out.emit_watermark(Watermark(held));
        }
        Ok(())
    }

    fn on_close(&mut self, _out: &mut Output) -> Result<()> {
        // Every pair was emitted when its second row arrived: nothing is pending.
        self.left.clear();
        self.right.clear();
        Ok(())
    }
    /// Saves both sides' buffered rows (Arrow IPC, by bucket and arrival), the watermark,
    /// the last forwarded watermark and the count of late rows.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let progress = JoinProgress { watermark: self.watermark, forwarded: self.forwarded, late_rows: self.late_rows };
        snapshot_buffers(snapshot, &self.output, &self.left, &self.right, progress)
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.restore(restored)
    }

    /// Keeps the buffered rows of every old instance whose keys the exchanges now route to
    /// this instance; the watermark is the lowest of the old ones'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.restore(restored)
    }
}

impl IntervalJoinOperator {
    /// Loads both sides' buffered rows and the progress saved in `restored` (see
    /// [`restore_buffers`]).
    fn restore(&mut self, restored: &RestoredState) -> Result<()> {
        let name = self.name().to_string();
        let left = (&mut self.left, self.left_time.as_str());
        let right = (&mut self.right, self.right_time.as_str());
        if let Some(progress) = restore_buffers(restored, &name, &self.keys, left, right)? {
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

    #[test]
    fn watermark_is_held_back_by_the_upper_bound() {
        let mut h = harness(-5, 20);
        h.watermark(100).unwrap();
        h.watermark(150).unwrap();
        h.watermark(i64::MAX).unwrap();
        assert_eq!(h.watermarks(), vec![80, 130, i64::MAX]);
    }
}
