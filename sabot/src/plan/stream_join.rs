//! Streaming joins in the logical plan: [`StreamJoinKind`] and [`LogicalPlan::StreamJoin`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::{JoinType, LogicalPlan};
use crate::operator::JoinOutput;
use crate::window::WindowSpec;
use crate::{Result, SabotError};

/// What a streaming join of two inputs matches, beyond equal keys.
///
/// Event times are in milliseconds and come from each side's event-time column
/// (`Int64` ms or `Timestamp(ms)`).
///
/// ```
/// use sabot::plan::StreamJoinKind;
/// let kind = StreamJoinKind::Interval { left_time: "ts".into(), right_time: "ts".into(), lower: -5, upper: 10 };
/// assert_eq!(kind.to_string(), "interval [l.ts - 5ms, l.ts + 10ms] time=ts/ts");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamJoinKind {
    /// Flink's interval join (inner): left row `l` joins every right row `r` with
    /// `l.ts + lower <= r.ts <= l.ts + upper`.
    Interval {
        /// The left event-time column.
        left_time: String,
        /// The right event-time column.
        right_time: String,
        /// Lower bound (ms, may be negative) of `r.ts - l.ts`.
        lower: i64,
        /// Upper bound (ms) of `r.ts - l.ts`.
        upper: i64,
    },
    /// Windowed join (inner): rows of both sides in the same event-time window (tumbling or
    /// sliding) join when the window fires; the output carries `window_start`/`window_end`.
    Window {
        /// The left event-time column.
        left_time: String,
        /// The right event-time column.
        right_time: String,
        /// The windows (tumbling or sliding).
        spec: WindowSpec,
    },
    /// As-of join (left outer): each left row joins the latest right row with
    /// `r.ts <= l.ts` (and `l.ts - r.ts <= tolerance`), once the watermark passes `l.ts`.
    AsOf {
        /// The left event-time column.
        left_time: String,
        /// The right event-time column.
        right_time: String,
        /// The largest `l.ts - r.ts` (ms) that still matches; `None`: any.
        tolerance: Option<i64>,
    },
    /// Stream–table (enrichment) join: the right side is a changelog of which the latest row
    /// per key is kept; each left row joins the table as it is when the row arrives.
    Table {
        /// [`JoinType::Inner`] or [`JoinType::Left`].
        join_type: JoinType,
    },
}

impl StreamJoinKind {
    /// The join type the output schema follows (inner joins keep right columns' nullability).
    pub fn join_type(&self) -> JoinType {
        match self {
            StreamJoinKind::Interval { .. } | StreamJoinKind::Window { .. } => JoinType::Inner,
            StreamJoinKind::AsOf { .. } => JoinType::Left,
            StreamJoinKind::Table { join_type } => *join_type,
        }
    }

    /// The event-time columns `(left, right)`, for joins on event time.
    pub fn time_columns(&self) -> Option<(&str, &str)> {
        match self {
            StreamJoinKind::Interval { left_time, right_time, .. }
            | StreamJoinKind::Window { left_time, right_time, .. }
            | StreamJoinKind::AsOf { left_time, right_time, .. } => Some((left_time, right_time)),
            StreamJoinKind::Table { .. } => None,
        }
    }

    /// The operator's short name (`interval_join`, `window_join`, `asof_join`, `table_join`).
    pub fn operator_name(&self) -> &'static str {
        match self {
            StreamJoinKind::Interval { .. } => "interval_join",
            StreamJoinKind::Window { .. } => "window_join",
            StreamJoinKind::AsOf { .. } => "asof_join",
            StreamJoinKind::Table { .. } => "table_join",
        }
    }
}

impl fmt::Display for StreamJoinKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = |v: i64| if v < 0 { format!("- {}ms", v.unsigned_abs()) } else { format!("+ {v}ms") };
        match self {
            StreamJoinKind::Interval { left_time, right_time, lower, upper } => {
                write!(f, "interval [l.ts {}, l.ts {}] time={left_time}/{right_time}", offset(*lower), offset(*upper))
            }
            StreamJoinKind::Window { left_time, right_time, spec } => {
                write!(f, "window {spec} time={left_time}/{right_time}")
            }
            StreamJoinKind::AsOf { left_time, right_time, tolerance } => {
                write!(f, "asof r.ts <= l.ts")?;
                if let Some(t) = tolerance {
                    write!(f, " tolerance={t}ms")?;
                }
                write!(f, " time={left_time}/{right_time}")
            }
            StreamJoinKind::Table { join_type } => write!(f, "table {join_type:?} (latest right row per key)"),
        }
    }
}

/// Checks that `column` is an event-time column (`Int64` ms or `Timestamp(ms)`) of `side`.
fn check_time_column(schema: &Schema, column: &str, side: &str, join: &str) -> Result<DataType> {
    let field = schema.field_with_name(column).map_err(|_| {
        SabotError::plan(format!("{join}: the {side} side's event-time column '{column}' does not exist"))
    })?;
    match field.data_type() {
        t @ (DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _)) => Ok(t.clone()),
        other => Err(SabotError::plan(format!(
            "{join}: the {side} side's event-time column '{column}' has type {other}, expected Int64 (ms) or Timestamp(ms)"
        ))),
    }
}

/// The output of a stream join of `kind`, checked: keys exist and compare, event-time columns
/// exist and hold milliseconds, bounds are ordered, windows are aligned time windows.
pub(crate) fn stream_join_output(
    left: &Arc<Schema>,
    right: &Arc<Schema>,
    left_keys: &[&str],
    right_keys: &[&str],
    kind: &StreamJoinKind,
) -> Result<JoinOutput> {
    let join = kind.operator_name();
    // Keys are checked (existence, comparable types) here, with the side named.
    crate::operator::JoinKeys::try_new(left, right, left_keys, right_keys)?;
    let mut extra = vec![];
    if let Some((lt, rt)) = kind.time_columns() {
        let time_type = check_time_column(left, lt, "left", join)?;
        check_time_column(right, rt, "right", join)?;
        match kind {
            StreamJoinKind::Interval { lower, upper, .. } if lower > upper => {
                return Err(SabotError::plan(format!(
                    "{join}: the lower bound ({lower}ms) is above the upper bound ({upper}ms)"
                )));
            }
            StreamJoinKind::Window { spec, .. } => {
                if !matches!(spec, WindowSpec::Tumbling { .. } | WindowSpec::Sliding { .. }) {
                    return Err(SabotError::plan(format!(
                        "{join}: {spec} windows are not supported, use tumbling or sliding windows"
                    )));
                }
                extra.push(Field::new("window_start", time_type.clone(), false));
                extra.push(Field::new("window_end", time_type, false));
            }
            StreamJoinKind::AsOf { tolerance: Some(t), .. } if *t < 0 => {
                return Err(SabotError::plan(format!("{join}: the tolerance ({t}ms) is negative")));
            }
            _ => {}
        }
    }
    if let StreamJoinKind::Table { join_type } = kind
        && !matches!(join_type, JoinType::Inner | JoinType::Left)
    {
        return Err(SabotError::plan(format!("{join}: {join_type:?} joins are not supported, use Inner or Left")));
    }
    JoinOutput::new(left.clone(), right.clone(), left_keys, right_keys, kind.join_type(), extra)
}

impl LogicalPlan {
    /// A streaming join, checked: keys exist on their side and compare, event-time columns
    /// exist, the kind's parameters are valid.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{Int64Array, RecordBatch};
    /// use sabot::Stream;
    /// use sabot::plan::{LogicalPlan, StreamJoinKind};
    /// let batch = RecordBatch::try_from_iter([
    ///     ("k", Arc::new(Int64Array::from(vec![1])) as _),
    ///     ("ts", Arc::new(Int64Array::from(vec![5])) as _),
    /// ]).unwrap();
    /// let side = Stream::from_batches(vec![batch])?.logical_plan().clone();
    /// let kind = StreamJoinKind::AsOf { left_time: "ts".into(), right_time: "ts".into(), tolerance: None };
    /// let join = LogicalPlan::stream_join(side.clone(), side, vec!["k".into()], vec!["k".into()], kind)?;
    /// let names: Vec<String> = join.schema().fields().iter().map(|f| f.name().clone()).collect();
    /// assert_eq!(names, ["k", "ts", "ts_right"]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn stream_join(
        left: Arc<LogicalPlan>,
        right: Arc<LogicalPlan>,
        left_keys: Vec<String>,
        right_keys: Vec<String>,
        kind: StreamJoinKind,
    ) -> Result<LogicalPlan> {
        let lk: Vec<&str> = left_keys.iter().map(String::as_str).collect();
        let rk: Vec<&str> = right_keys.iter().map(String::as_str).collect();
        let schema = stream_join_output(&left.schema(), &right.schema(), &lk, &rk, &kind)?.schema();
        Ok(LogicalPlan::StreamJoin { left, right, left_keys, right_keys, kind, schema })
    }
}

/// The one-line description of a stream join, as shown by `explain()`.
pub(crate) fn describe(left_keys: &[String], right_keys: &[String], kind: &StreamJoinKind) -> String {
    let keys: Vec<String> = left_keys.iter().zip(right_keys).map(|(l, r)| format!("{l} = {r}")).collect();
    format!("StreamJoin: {kind} on [{}]", keys.join(", "))
}

/// For projection pushdown: the columns each input of the stream join `plan` must produce
/// so that the join still outputs the `required` columns (keys and event times always).
pub(crate) fn stream_join_input_columns(
    plan: &LogicalPlan,
    required: &BTreeSet<String>,
) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let LogicalPlan::StreamJoin { left, right, left_keys, right_keys, kind, schema } = plan else {
        return None;
    };
    let (ls, rs) = (left.schema(), right.schema());
    let mut left_needed: BTreeSet<String> = left_keys.iter().cloned().collect();
    let mut right_needed: BTreeSet<String> = right_keys.iter().cloned().collect();
    if let Some((lt, rt)) = kind.time_columns() {
        left_needed.insert(lt.to_string());
        right_needed.insert(rt.to_string());
    }
    let on: Vec<(String, String)> = left_keys.iter().cloned().zip(right_keys.iter().cloned()).collect();
    let (left_cols, right_cols) = super::join_output_columns(&ls, &rs, &on, kind.join_type());
    for (i, field) in schema.fields().iter().enumerate() {
        if !required.contains(field.name()) {
            continue;
        }
        if let Some(&c) = left_cols.get(i) {
            left_needed.insert(ls.field(c).name().clone());
        } else if let Some(&c) = right_cols.get(i - left_cols.len()) {
            right_needed.insert(rs.field(c).name().clone());
        }
    }
    Some((left_needed, right_needed))
}

/// The stream join `plan` over new inputs, its schema recomputed; `None` when a `required`
/// output column would change name or type (a `_right` suffix depends on which columns exist).
pub(crate) fn rebuild_stream_join(
    plan: &LogicalPlan,
    left: Arc<LogicalPlan>,
    right: Arc<LogicalPlan>,
    required: &BTreeSet<String>,
) -> Result<Option<Arc<LogicalPlan>>> {
    let LogicalPlan::StreamJoin { left_keys, right_keys, kind, schema, .. } = plan else {
        return Ok(None);
    };
    let rebuilt = LogicalPlan::stream_join(left, right, left_keys.clone(), right_keys.clone(), kind.clone())?;
    let new_schema = rebuilt.schema();
    let stable = schema
        .fields()
        .iter()
        .filter(|f| required.contains(f.name()))
        .all(|f| new_schema.field_with_name(f.name()).is_ok_and(|n| n.data_type() == f.data_type()));
    Ok(stable.then(|| Arc::new(rebuilt)))
}
