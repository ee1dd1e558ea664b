//! Windowed stream–stream join: rows of both sides in the same event-time window.

use std::collections::BTreeSet;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};

use super::join_buffer::JoinBuffers;
use super::join_state::{JoinKeys, JoinOutput, JoinProgress, Picks, Side, time_column, times_of};
use super::{Output, TwoInputOperator, Watermark};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::plan::{StreamJoinKind, stream_join_output};
use crate::state::StateBackend;
use crate::window::WindowSpec;
use crate::{Result, SabotError};

/// A windowed inner join of two streams: every pair of a left and a right row with equal keys
/// whose event times fall in the same window (tumbling or sliding, aligned on the epoch) is
/// emitted when the watermark reaches the window's end, with the window's `window_start` and
/// `window_end` appended (in the left event-time column's type). With sliding windows a pair
/// is emitted once per window holding both rows.
///
/// Rows are buffered per pane (`gcd(size, slide)` ms) by key; a pane is dropped once the
/// last window holding it has fired, which bounds the state by event time. Rows whose every
/// window has already fired are late and dropped ([`WindowJoinOperator::late_rows`]).
/// Buffered rows live on the heap by default;
/// [`with_state_backend`](Self::with_state_backend) keeps them in RocksDB instead.
///
/// The forwarded watermark is `window size - 1` behind the input's, so that the left
/// event-time column stays a valid event time downstream: windows that fire later only hold
/// rows newer than that.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::operator::WindowJoinOperator;
/// use sabot::testing::TwoInputHarness;
/// use sabot::window::WindowSpec;
///
/// let batch = |k: i64, ts: i64| RecordBatch::try_from_iter([
///     ("k", Arc::new(Int64Array::from(vec![k])) as _),
///     ("ts", Arc::new(Int64Array::from(vec![ts])) as _),
/// ]).unwrap();
/// let schema = batch(0, 0).schema();
/// let spec = WindowSpec::tumbling(Duration::from_millis(10));
/// let op = WindowJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", spec)?;
/// let mut h = TwoInputHarness::new(op);
/// h.process_left(batch(1, 3))?;
/// h.process_right(batch(1, 7))?;  // same window [0, 10)
/// h.process_right(batch(1, 12))?; // window [10, 20): no left row there
/// assert_eq!(h.output_rows(), 0, "nothing before the window ends");
/// h.watermark(10)?;
/// assert_eq!(h.output_rows(), 1);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct WindowJoinOperator {
    keys: JoinKeys,
    output: JoinOutput,
    time_type: DataType,
    size: i64,
    slide: i64,
    pane: i64,
    buffers: JoinBuffers,
    watermark: i64,
    forwarded: Option<i64>,
    late_rows: usize,
}

impl WindowJoinOperator {
    /// Joins rows of `left_schema` and `right_schema` whose `left_keys` equal their
    /// `right_keys` and whose event times (`left_time`, `right_time`) are in one window of `spec`.
    pub fn try_new(
        left_schema: SchemaRef,
        right_schema: SchemaRef,
        left_keys: &[&str],
        right_keys: &[&str],
        left_time: &str,
        right_time: &str,
        spec: WindowSpec,
    ) -> Result<Self> {
        let kind =
            StreamJoinKind::Window { left_time: left_time.to_string(), right_time: right_time.to_string(), spec };
        let output = stream_join_output(&left_schema, &right_schema, left_keys, right_keys, &kind)?;
        let (Some(size), Some(slide), Some(pane)) = (spec.size(), spec.slide(), spec.pane_size()) else {
            return Err(SabotError::plan(format!("window_join: {spec} is not an aligned time window")));
        };
        let time_type = left_schema
            .field_with_name(left_time)
            .map_err(|_| SabotError::column_not_found(&left_schema, left_time))?
            .data_type()
            .clone();
        let buffers = JoinBuffers::new(&output, left_time, right_time, pane)?;
        Ok(WindowJoinOperator {
            keys: JoinKeys::try_new(&left_schema, &right_schema, left_keys, right_keys)?,
            output,
            time_type,
            size,
            slide,
            pane,
            buffers,
            watermark: i64::MIN,
            forwarded: None,
            late_rows: 0,
        })
    }

    /// Keeps the buffered rows in `backend`: on the heap for [`StateBackend::Memory`] (the
    /// default), else in the backend's store (RocksDB: one entry per key and pane, rows in
    /// Arrow's row format), so that they can outgrow memory. Call it before the first row.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::operator::WindowJoinOperator;
    /// use sabot::state::StateBackend;
    /// use sabot::window::WindowSpec;
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("k", DataType::Int64, false),
    ///     Field::new("ts", DataType::Int64, false),
    /// ]));
    /// let spec = WindowSpec::tumbling(Duration::from_secs(60));
    /// let backend = StateBackend::RocksDb { path: "/var/lib/sabot/worker-0".into() };
    /// let op = WindowJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", spec)?
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
    /// # use std::time::Duration;
    /// # use arrow::datatypes::{DataType, Field, Schema};
    /// # use sabot::operator::WindowJoinOperator;
    /// # use sabot::window::WindowSpec;
    /// # let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("ts", DataType::Int64, false)]));
    /// let spec = WindowSpec::tumbling(Duration::from_secs(60));
    /// let op = WindowJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", spec)?
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

    /// The rows dropped because all their windows had fired when they arrived.
    pub fn late_rows(&self) -> usize {
        self.late_rows
    }

    /// The end of the last window holding time `t`.
    fn last_end(&self, t: i64) -> i64 {
        t.div_euclid(self.slide).saturating_mul(self.slide).saturating_add(self.size)
    }

    /// Starts of the windows holding the pane starting at `pane`.
    fn windows_of_pane(&self, pane: i64) -> impl Iterator<Item = i64> + use<> {
        let (size, slide, width) = (self.size, self.slide, self.pane);
        let last = pane.div_euclid(slide) * slide;
        let first = (pane + width - size).div_euclid(slide) * slide;
        let first = if first + size < pane + width { first + slide } else { first };
        (0..).map(move |i| first + i * slide).take_while(move |&s| s <= last)
    }

    fn buffer(&mut self, side: Side, batch: RecordBatch) -> Result<()> {
        let times = times_of(&batch, self.buffers.time_column(side))?;
        let keys = self.keys.encode(&batch, side)?;
        let mut keep = Vec::with_capacity(times.len());
        for (row, &t) in times.iter().enumerate() {
            if self.last_end(t) <= self.watermark {
                self.late_rows += 1;
            } else if keys.get(row).is_some() {
                keep.push(row as u32);
            }
        }
        let (store, _) = self.buffers.own_and_other(side);
        store.insert(&batch, &times, &keys, &keep)
    }

    /// Emits every pair of window `[start, start + size)`.
    fn fire(&mut self, start: i64, out: &mut Output) -> Result<()> {
        let end = start.saturating_add(self.size);
        let rights = self.buffers.right.rows_in(start, end, &|_| true)?;
        if rights.by_key.is_empty() {
            return Ok(());
        }
        let lefts = self.buffers.left.rows_in(start, end, &|key| rights.by_key.contains_key(key))?;
        // Keys in order, not in the hash maps' (randomly seeded) order: the output of a window
        // is the same in every run, with every backend, and after a restore.
        let mut keys: Vec<&[u8]> = lefts.by_key.keys().map(|k| k.as_ref()).collect();
        keys.sort_unstable();
        let (mut left_picks, mut right_picks) = (vec![], vec![]);
        for key in keys {
            for &l in &lefts.by_key[key] {
                for &r in &rights.by_key[key] {
                    left_picks.push(Some(l));
                    right_picks.push(Some(r));
                }
            }
        }
        if left_picks.is_empty() {
            return Ok(());
        }
        let rows = left_picks.len();
        let (left_sources, right_sources): (Vec<&RecordBatch>, Vec<&RecordBatch>) =
            (lefts.sources.iter().collect(), rights.sources.iter().collect());
        let bounds = vec![time_column(start, rows, &self.time_type)?, time_column(end, rows, &self.time_type)?];
        out.emit(self.output.build(
            Picks::Interleave(&left_sources, &left_picks),
            Picks::Interleave(&right_sources, &right_picks),
            bounds,
        )?);
        Ok(())
    }

    /// Fires the windows ending in `(previous, watermark]`, then drops the panes that no
    /// window still to fire holds.
    fn advance(&mut self, previous: i64, watermark: i64, out: &mut Output) -> Result<()> {
        let mut due = BTreeSet::new();
        for pane in self.buffers.left.starts() {
            for start in self.windows_of_pane(pane) {
                let end = start.saturating_add(self.size);
                if end > previous && end <= watermark {
                    due.insert(start);
                }
            }
        }
        for start in due {
            self.fire(start, out)?;
        }
        let (size, slide) = (self.size, self.slide);
        let done = |pane: i64| pane.div_euclid(slide).saturating_mul(slide).saturating_add(size) <= watermark;
        self.buffers.left.expire(&|pane, _| done(pane))?;
        self.buffers.right.expire(&|pane, _| done(pane))
    }
}

impl TwoInputOperator for WindowJoinOperator {
    fn name(&self) -> &str {
        "window_join"
    }

    fn process_left(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        self.buffer(Side::Left, batch)
    }

    fn process_right(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        self.buffer(Side::Right, batch)
    }

    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if watermark.0 <= self.watermark {
            return Ok(());
        }
        let previous = self.watermark;
        self.watermark = watermark.0;
        self.advance(previous, watermark.0, out)?;
        let held = if watermark.0 == i64::MAX { i64::MAX } else { watermark.0.saturating_sub(self.size - 1) };
        if self.forwarded.is_none_or(|f| held > f) {
            self.forwarded = Some(held);
            out.emit_watermark(Watermark(held));
        }
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        if self.watermark < i64::MAX {
            let previous = self.watermark;
            self.watermark = i64::MAX;
            self.advance(previous, i64::MAX, out)?;
        }
        Ok(())
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

impl WindowJoinOperator {
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
    use std::time::Duration;

    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::testing::TwoInputHarness;

    fn schema(ts: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("ts", ts, false)]))
    }

    #[test]
    fn window_bounds_take_the_left_time_type() {
        let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None);
        let op = WindowJoinOperator::try_new(
            schema(ts.clone()),
            schema(DataType::Int64),
            &["k"],
            &["k"],
            "ts",
            "ts",
            WindowSpec::tumbling(Duration::from_millis(10)),
        )
        .unwrap();
        let out = op.output_schema();
        assert_eq!(out.field_with_name("window_start").unwrap().data_type(), &ts);
        assert_eq!(out.field_with_name("ts_right").unwrap().data_type(), &DataType::Int64);
    }

    #[test]
    fn session_windows_are_rejected() {
        let err = WindowJoinOperator::try_new(
            schema(DataType::Int64),
            schema(DataType::Int64),
            &["k"],
            &["k"],
            "ts",
            "ts",
            WindowSpec::session(Duration::from_millis(10)),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("tumbling or sliding"), "{err}");
    }

    #[test]
    fn close_fires_the_remaining_windows() {
        let spec = WindowSpec::tumbling(Duration::from_millis(10));
        let op = WindowJoinOperator::try_new(
            schema(DataType::Int64),
            schema(DataType::Int64),
            &["k"],
            &["k"],
            "ts",
            "ts",
            spec,
        )
        .unwrap();
        let mut h = TwoInputHarness::new(op);
        let b = RecordBatch::try_new(
            schema(DataType::Int64),
            vec![Arc::new(Int64Array::from(vec![1, 1])), Arc::new(Int64Array::from(vec![31, 35]))],
        )
        .unwrap();
        h.process_left(b.clone()).unwrap();
        h.process_right(b).unwrap();
        h.close().unwrap();
        assert_eq!(h.output_rows(), 4);
        assert_eq!(h.operator().buffered_rows(), 0);
    }
}
