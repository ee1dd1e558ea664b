//! Streaming joins: interval, window, as-of and stream–table joins of two streams.

use std::time::Duration;

use super::windowed::event_time_column;
use super::{Stream, Untyped};
use crate::plan::{JoinType, LogicalPlan, StreamJoinKind};
use crate::window::WindowSpec;
use crate::{Result, SabotError};

fn millis(d: Duration) -> i64 {
    d.as_millis().try_into().unwrap_or(i64::MAX)
}

fn names<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Vec<String> {
    keys.into_iter().map(|k| k.as_ref().to_string()).collect()
}

/// The event-time column declared on one side of a join, or a plan error naming the side.
fn event_time(plan: &LogicalPlan, side: &str, join: &str) -> Result<String> {
    event_time_column(plan).ok_or_else(|| {
        SabotError::plan(format!(
            "{join}: the {side} side has no event-time column: call with_watermarks(..) on the {side} stream first"
        ))
    })
}

impl<T> Stream<T> {
    fn stream_join<U>(
        &self,
        right: &Stream<U>,
        left_keys: Vec<String>,
        right_keys: Vec<String>,
        kind: StreamJoinKind,
    ) -> Result<Stream<Untyped>> {
        let plan = LogicalPlan::stream_join(self.plan.clone(), right.plan.clone(), left_keys, right_keys, kind)?;
        Ok(self.derive(plan))
    }

    fn time_columns<U>(&self, right: &Stream<U>, join: &str) -> Result<(String, String)> {
        Ok((event_time(&self.plan, "left", join)?, event_time(&right.plan, "right", join)?))
    }

    /// Interval join (Flink's, inner): each left row joins every right row with equal keys
    /// whose event time is within `[l.ts + lower_ms, l.ts + upper_ms]` (bounds may be negative).
    /// Both sides need an event-time column ([`Stream::with_watermarks`]). Pairs are emitted as
    /// soon as both rows arrived; buffered rows are dropped once the watermark passes them.
    /// The output has every left column, then the right columns (a right key named like its
    /// left key is dropped; other clashing names get the suffix `_right`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::prelude::*;
    /// # use std::sync::Arc; use arrow::array::*;
    /// # let clicks = RecordBatch::try_from_iter([("user", Arc::new(Int64Array::from(vec![1, 2])) as _), ("ts", Arc::new(Int64Array::from(vec![1_000, 2_000])) as _)]).unwrap();
    /// # let views = RecordBatch::try_from_iter([("user", Arc::new(Int64Array::from(vec![1, 2])) as _), ("ts", Arc::new(Int64Array::from(vec![500, 9_000])) as _)]).unwrap();
    /// let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1));
    /// let clicks = Stream::from_batches(vec![clicks])?.with_watermarks("ts", strategy.clone())?;
    /// let views = Stream::from_batches(vec![views])?.with_watermarks("ts", strategy)?;
    /// // Views from one second before to one second after each click.
    /// let joined = clicks.interval_join(&views, ["user"], ["user"], -1_000, 1_000)?;
    /// assert_eq!(joined.count()?, 1);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn interval_join<U, L: AsRef<str>, R: AsRef<str>>(
        &self,
        right: &Stream<U>,
        left_keys: impl IntoIterator<Item = L>,
        right_keys: impl IntoIterator<Item = R>,
        lower_ms: i64,
        upper_ms: i64,
    ) -> Result<Stream<Untyped>> {
        let (left_time, right_time) = self.time_columns(right, "interval_join")?;
        let kind = StreamJoinKind::Interval { left_time, right_time, lower: lower_ms, upper: upper_ms };
        self.stream_join(right, names(left_keys), names(right_keys), kind)
    }

    /// Window join (inner): rows of both sides with equal keys in the same event-time window
    /// (`spec`: tumbling or sliding) join when the window fires (the watermark reaches its
    /// end). The output has the joined columns (as for [`Stream::interval_join`]) then
    /// `window_start` and `window_end`. Both sides need an event-time column.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::prelude::*;
    /// # use std::sync::Arc; use arrow::array::*;
    /// # let a = RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(vec![1, 1])) as _), ("ts", Arc::new(Int64Array::from(vec![1_000, 70_000])) as _)]).unwrap();
    /// # let b = RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(vec![1])) as _), ("ts", Arc::new(Int64Array::from(vec![59_000])) as _)]).unwrap();
    /// let strategy = WatermarkStrategy::monotonous();
    /// let left = Stream::from_batches(vec![a])?.with_watermarks("ts", strategy.clone())?;
    /// let right = Stream::from_batches(vec![b])?.with_watermarks("ts", strategy)?;
    /// let joined = left.window_join(&right, ["k"], ["k"], WindowSpec::tumbling(Duration::from_secs(60)))?;
    /// assert_eq!(joined.count()?, 1, "only the rows of the first minute meet");
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn window_join<U, L: AsRef<str>, R: AsRef<str>>(
        &self,
        right: &Stream<U>,
        left_keys: impl IntoIterator<Item = L>,
        right_keys: impl IntoIterator<Item = R>,
        spec: WindowSpec,
    ) -> Result<Stream<Untyped>> {
        let (left_time, right_time) = self.time_columns(right, "window_join")?;
        let kind = StreamJoinKind::Window { left_time, right_time, spec };
        self.stream_join(right, names(left_keys), names(right_keys), kind)
    }

    /// As-of join (left outer): each left row joins the latest right row with equal keys and
    /// `r.ts <= l.ts`, if `l.ts - r.ts <= tolerance` (`None`: any distance); otherwise the
    /// right columns are null. A left row is emitted once the watermark passes its time, so
    /// right rows that arrive later with earlier times are respected. Both sides need an
    /// event-time column.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::prelude::*;
    /// # use std::sync::Arc; use arrow::array::*;
    /// # let trades = RecordBatch::try_from_iter([("sym", Arc::new(StringArray::from(vec!["A", "A"])) as _), ("ts", Arc::new(Int64Array::from(vec![1_000, 5_000])) as _)]).unwrap();
    /// # let quotes = RecordBatch::try_from_iter([("sym", Arc::new(StringArray::from(vec!["A", "A"])) as _), ("ts", Arc::new(Int64Array::from(vec![900, 1_500])) as _), ("bid", Arc::new(Float64Array::from(vec![10.0, 11.0])) as _)]).unwrap();
    /// let strategy = WatermarkStrategy::monotonous();
    /// let trades = Stream::from_batches(vec![trades])?.with_watermarks("ts", strategy.clone())?;
    /// let quotes = Stream::from_batches(vec![quotes])?.with_watermarks("ts", strategy)?;
    /// let joined = trades.asof_join(&quotes, ["sym"], ["sym"], Duration::from_secs(1))?.collect_batch()?;
    /// // The trade at 1 s takes the quote at 0.9 s; the one at 5 s has none within 1 s.
    /// assert_eq!(joined.column_by_name("bid").unwrap().null_count(), 1);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn asof_join<U, L: AsRef<str>, R: AsRef<str>>(
        &self,
        right: &Stream<U>,
        left_keys: impl IntoIterator<Item = L>,
        right_keys: impl IntoIterator<Item = R>,
        tolerance: impl Into<Option<Duration>>,
    ) -> Result<Stream<Untyped>> {
        let (left_time, right_time) = self.time_columns(right, "asof_join")?;
        let kind = StreamJoinKind::AsOf { left_time, right_time, tolerance: tolerance.into().map(millis) };
        self.stream_join(right, names(left_keys), names(right_keys), kind)
    }

    /// Stream–table (enrichment) join: `table` is a changelog of which the latest row per key
    /// is kept; each row of this stream joins the table as it is when the row arrives
    /// ([`JoinType::Inner`] keeps only rows with a table row, [`JoinType::Left`] keeps every
    /// row with nulls where the key is absent). No event time is needed; this stream's
    /// watermarks pass through. A bounded table (a file or in-memory source) is loaded
    /// completely before the first row is joined.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// # use std::sync::Arc; use arrow::array::*;
    /// # let orders = RecordBatch::try_from_iter([("user", Arc::new(Int64Array::from(vec![1, 2, 1])) as _)]).unwrap();
    /// # let users = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1, 1])) as _), ("name", Arc::new(StringArray::from(vec!["ann", "anna"])) as _)]).unwrap();
    /// let orders = Stream::from_batches(vec![orders])?;
    /// let users = Stream::from_batches(vec![users])?;
    /// let enriched = orders.table_join(&users, ["user"], ["id"], JoinType::Inner)?.collect_batch()?;
    /// assert_eq!(enriched.num_rows(), 2, "user 2 is not in the table");
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn table_join<U, L: AsRef<str>, R: AsRef<str>>(
        &self,
        table: &Stream<U>,
        left_keys: impl IntoIterator<Item = L>,
        right_keys: impl IntoIterator<Item = R>,
        join_type: JoinType,
    ) -> Result<Stream<Untyped>> {
        self.stream_join(table, names(left_keys), names(right_keys), StreamJoinKind::Table { join_type })
    }
}
