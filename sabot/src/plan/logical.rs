//! The logical plan tree.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::expr::{AggExpr, Expr};
use crate::io::Source;
use crate::window::{LateData, WatermarkStrategy, WindowSpec};
use crate::{Result, SabotError};

/// Makes the operator of a keyed process function for one partition, from its operator id
/// and the state backend.
pub type ProcessFactory =
    Arc<dyn Fn(String, &crate::state::StateBackend) -> Result<Box<dyn crate::operator::Operator>> + Send + Sync>;

/// A user function from one batch to another, used by typed `map`, `flat_map` and closure filters.
pub type BatchFn = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync>;

/// The kind of a join. Nulls in key columns never match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinType {
    /// Rows with a match on both sides.
    Inner,
    /// Every left row; right columns null where there is no match.
    Left,
    /// Every right row; left columns null where there is no match.
    Right,
    /// Every row of both sides.
    Full,
    /// Left rows that have a match (left columns only, each left row at most once).
    Semi,
    /// Left rows that have no match (left columns only).
    Anti,
}

/// One key of a sort.
///
/// ```
/// use sabot::expr::col;
/// use sabot::plan::SortKey;
/// let k = SortKey::desc(col("size")).nulls_first();
/// assert_eq!(k.to_string(), "size DESC NULLS FIRST");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// The value sorted on.
    pub expr: Expr,
    /// Smallest first when true.
    pub ascending: bool,
    /// Nulls before all values when true.
    pub nulls_first: bool,
}

impl SortKey {
    /// Ascending, nulls last.
    pub fn asc(expr: Expr) -> SortKey {
        SortKey { expr, ascending: true, nulls_first: false }
    }
    /// Descending, nulls last.
    pub fn desc(expr: Expr) -> SortKey {
        SortKey { expr, ascending: false, nulls_first: false }
    }
    /// Puts nulls before all values.
    pub fn nulls_first(mut self) -> SortKey {
        self.nulls_first = true;
        self
    }
    /// Puts nulls after all values.
    pub fn nulls_last(mut self) -> SortKey {
        self.nulls_first = false;
        self
    }
}

impl From<Expr> for SortKey {
    fn from(expr: Expr) -> Self {
        SortKey::asc(expr)
    }
}

impl From<&str> for SortKey {
    fn from(name: &str) -> Self {
        SortKey::asc(crate::expr::col(name))
    }
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} NULLS {}",
            self.expr,
            if self.ascending { "ASC" } else { "DESC" },
            if self.nulls_first { "FIRST" } else { "LAST" }
        )
    }
}

/// A node of a logical plan. Children are shared (`Arc`), so plans are cheap to clone and extend.
#[derive(Clone)]
pub enum LogicalPlan {
    /// Reads a source, possibly only some columns, possibly skipping data that fails `filters`.
    Scan {
        /// The table.
        source: Arc<dyn Source>,
        /// Indices of the source columns read; `None` reads all.
        projection: Option<Vec<usize>>,
        /// Conjuncts the source may use to skip data (the plan still filters above).
        filters: Vec<Expr>,
        /// The output schema (after projection).
        schema: SchemaRef,
    },
    /// Keeps the rows for which `predicate` is true.
    Filter {
        /// The input.
        input: Arc<LogicalPlan>,
        /// A boolean expression.
        predicate: Expr,
    },
    /// Computes one output column per expression.
    Project {
        /// The input.
        input: Arc<LogicalPlan>,
        /// The output columns, in order.
        exprs: Vec<Expr>,
        /// The output schema.
        schema: SchemaRef,
    },
    /// Applies a user function to every batch.
    MapBatches {
        /// The input.
        input: Arc<LogicalPlan>,
        /// Shown in plans (`map`, `flat_map`, `filter_rows`…).
        name: String,
        /// The function.
        func: BatchFn,
        /// The output schema the function promises.
        schema: SchemaRef,
    },
    /// Skips `skip` rows, then keeps at most `fetch` rows.
    Limit {
        /// The input.
        input: Arc<LogicalPlan>,
        /// Rows skipped first.
        skip: usize,
        /// Rows kept after that; `None` keeps all.
        fetch: Option<usize>,
    },
    /// Orders the rows; with `fetch`, keeps only the first `fetch` (top-k).
    Sort {
        /// The input.
        input: Arc<LogicalPlan>,
        /// Sort keys, most significant first.
        keys: Vec<SortKey>,
        /// Top-k bound.
        fetch: Option<usize>,
    },
    /// Groups rows by `group_by` and computes `aggregates` per group (one row if no keys).
    Aggregate {
        /// The input.
        input: Arc<LogicalPlan>,
        /// Group keys.
        group_by: Vec<Expr>,
        /// Aggregates.
        aggregates: Vec<AggExpr>,
        /// Keys then aggregates.
        schema: SchemaRef,
    },
    /// Equi-join on pairs of columns.
    Join {
        /// Left input.
        left: Arc<LogicalPlan>,
        /// Right input.
        right: Arc<LogicalPlan>,
        /// `(left column, right column)` pairs that must be equal.
        on: Vec<(String, String)>,
        /// The join kind.
        join_type: JoinType,
        /// Left columns, then right columns (see [`join_schema`]).
        schema: SchemaRef,
    },
    /// Derives watermarks from an event-time column (rows pass unchanged).
    Watermark {
        /// The input.
        input: Arc<LogicalPlan>,
        /// The event-time column (`Timestamp(ms)` or `Int64` ms).
        time_column: String,
        /// How watermarks follow event times.
        strategy: WatermarkStrategy,
    },
    /// Aggregates rows per key and window.
    Window {
        /// The input.
        input: Arc<LogicalPlan>,
        /// Partitioning keys (rows of one key meet in one partition).
        keys: Vec<Expr>,
        /// The event-time column, for time windows.
        time_column: Option<String>,
        /// The window assigner.
        spec: WindowSpec,
        /// Aggregates per window.
        aggregates: Vec<AggExpr>,
        /// How long (ms) after firing a window still accepts late rows.
        allowed_lateness: i64,
        /// Where rows later than that go.
        late_data: Option<LateData>,
        /// Keys, `window_start`, `window_end`, aggregates.
        schema: SchemaRef,
    },
    /// Runs a keyed process function (state and timers per key).
    KeyedProcess {
        /// The input.
        input: Arc<LogicalPlan>,
        /// Partitioning keys; state and timers are scoped to them.
        keys: Vec<Expr>,
        /// The function's name (its operator id, with the partition number appended).
        name: String,
        /// Makes one operator per partition.
        factory: ProcessFactory,
        /// The output record's schema.
        schema: SchemaRef,
    },
    /// A streaming join of two inputs on equal keys: interval, window, as-of or table join
    /// (see [`super::StreamJoinKind`]); built with [`LogicalPlan::stream_join`].
    StreamJoin {
        /// Left input.
        left: Arc<LogicalPlan>,
        /// Right input.
        right: Arc<LogicalPlan>,
        /// Left key columns.
        left_keys: Vec<String>,
        /// Right key columns, pairwise equal to the left ones.
        right_keys: Vec<String>,
        /// What else matches, and how.
        kind: super::StreamJoinKind,
        /// Left columns, then right columns (see [`join_schema`]), then window bounds.
        schema: SchemaRef,
    },
    /// The rows of all inputs, which share one schema.
    Union {
        /// The inputs.
        inputs: Vec<Arc<LogicalPlan>>,
        /// The common schema.
        schema: SchemaRef,
    },
}

impl LogicalPlan {
    /// The output schema of this node.
    pub fn schema(&self) -> SchemaRef {
        match self {
            LogicalPlan::Scan { schema, .. }
            | LogicalPlan::Project { schema, .. }
            | LogicalPlan::MapBatches { schema, .. }
            | LogicalPlan::Aggregate { schema, .. }
            | LogicalPlan::Join { schema, .. }
            | LogicalPlan::Window { schema, .. }
            | LogicalPlan::KeyedProcess { schema, .. }
            | LogicalPlan::StreamJoin { schema, .. }
            | LogicalPlan::Union { schema, .. } => schema.clone(),
            LogicalPlan::Filter { input, .. }
            | LogicalPlan::Limit { input, .. }
            | LogicalPlan::Sort { input, .. }
            | LogicalPlan::Watermark { input, .. } => input.schema(),
        }
    }

    /// The direct children of this node.
    pub fn inputs(&self) -> Vec<&Arc<LogicalPlan>> {
        match self {
            LogicalPlan::Scan { .. } => vec![],
            LogicalPlan::Filter { input, .. }
            | LogicalPlan::Project { input, .. }
            | LogicalPlan::MapBatches { input, .. }
            | LogicalPlan::Limit { input, .. }
            | LogicalPlan::Sort { input, .. }
            | LogicalPlan::Watermark { input, .. }
            | LogicalPlan::Window { input, .. }
            | LogicalPlan::KeyedProcess { input, .. }
            | LogicalPlan::Aggregate { input, .. } => vec![input],
            LogicalPlan::Join { left, right, .. } | LogicalPlan::StreamJoin { left, right, .. } => vec![left, right],
            LogicalPlan::Union { inputs, .. } => inputs.iter().collect(),
        }
    }

    /// This node with its children replaced (same order as [`LogicalPlan::inputs`]).
    pub fn with_new_inputs(&self, mut new: Vec<Arc<LogicalPlan>>) -> LogicalPlan {
        let mut next = || new.remove(0);
        match self {
            LogicalPlan::Scan { .. } => self.clone(),
            LogicalPlan::Filter { predicate, .. } => {
                LogicalPlan::Filter { input: next(), predicate: predicate.clone() }
            }
            LogicalPlan::Project { exprs, schema, .. } => {
                LogicalPlan::Project { input: next(), exprs: exprs.clone(), schema: schema.clone() }
            }
            LogicalPlan::MapBatches { name, func, schema, .. } => LogicalPlan::MapBatches {
                input: next(),
                name: name.clone(),
                func: func.clone(),
                schema: schema.clone(),
            },
            LogicalPlan::Limit { skip, fetch, .. } => LogicalPlan::Limit { input: next(), skip: *skip, fetch: *fetch },
            LogicalPlan::Sort { keys, fetch, .. } => {
                LogicalPlan::Sort { input: next(), keys: keys.clone(), fetch: *fetch }
            }
            LogicalPlan::Aggregate { group_by, aggregates, schema, .. } => LogicalPlan::Aggregate {
                input: next(),
                group_by: group_by.clone(),
                aggregates: aggregates.clone(),
                schema: schema.clone(),
            },
            LogicalPlan::Join { on, join_type, schema, .. } => {
                let left = next();
                LogicalPlan::Join { left, right: next(), on: on.clone(), join_type: *join_type, schema: schema.clone() }
            }
            LogicalPlan::Watermark { time_column, strategy, .. } => {
                LogicalPlan::Watermark { input: next(), time_column: time_column.clone(), strategy: strategy.clone() }
            }
            LogicalPlan::Window {
                keys, time_column, spec, aggregates, allowed_lateness, late_data, schema, ..
            } => LogicalPlan::Window {
                input: next(),
                keys: keys.clone(),
                time_column: time_column.clone(),
                spec: *spec,
                aggregates: aggregates.clone(),
                allowed_lateness: *allowed_lateness,
                late_data: late_data.clone(),
                schema: schema.clone(),
            },
            LogicalPlan::KeyedProcess { keys, name, factory, schema, .. } => LogicalPlan::KeyedProcess {
                input: next(),
                keys: keys.clone(),
                name: name.clone(),
                factory: factory.clone(),
                schema: schema.clone(),
            },
            LogicalPlan::Union { schema, .. } => LogicalPlan::Union { inputs: new, schema: schema.clone() },
            LogicalPlan::StreamJoin { left_keys, right_keys, kind, schema, .. } => {
                let left = next();
                LogicalPlan::StreamJoin {
                    left,
                    right: next(),
                    left_keys: left_keys.clone(),
                    right_keys: right_keys.clone(),
                    kind: kind.clone(),
                    schema: schema.clone(),
                }
            }
        }
    }

    /// A scan of every column of `source`.
    pub fn scan(source: Arc<dyn Source>) -> LogicalPlan {
        let schema = source.schema();
        LogicalPlan::Scan { source, projection: None, filters: vec![], schema }
    }

    /// A filter, checked: the predicate must be boolean over the input.
    pub fn filter(input: Arc<LogicalPlan>, predicate: Expr) -> Result<LogicalPlan> {
        let t = predicate.data_type(&input.schema())?;
        if !matches!(t, arrow::datatypes::DataType::Boolean | arrow::datatypes::DataType::Null) {
            return Err(SabotError::plan(format!("filter predicate {predicate} has type {t}, expected Boolean")));
        }
        Ok(LogicalPlan::Filter { input, predicate })
    }

    /// A projection, checked: expressions must type-check and output names must be unique.
    pub fn project(input: Arc<LogicalPlan>, exprs: Vec<Expr>) -> Result<LogicalPlan> {
        let in_schema = input.schema();
        let fields = exprs.iter().map(|e| e.to_field(&in_schema)).collect::<Result<Vec<Field>>>()?;
        check_unique(fields.iter().map(|f| f.name().as_str()))?;
        let schema = Arc::new(Schema::new_with_metadata(fields, in_schema.metadata().clone()));
        Ok(LogicalPlan::Project { input, exprs, schema })
    }

    /// An aggregation, checked.
    pub fn aggregate(input: Arc<LogicalPlan>, group_by: Vec<Expr>, aggregates: Vec<AggExpr>) -> Result<LogicalPlan> {
        let in_schema = input.schema();
        let mut fields = group_by.iter().map(|e| e.to_field(&in_schema)).collect::<Result<Vec<Field>>>()?;
        for a in &aggregates {
            fields.push(a.to_field(&in_schema)?);
        }
        check_unique(fields.iter().map(|f| f.name().as_str()))?;
        Ok(LogicalPlan::Aggregate { input, group_by, aggregates, schema: Arc::new(Schema::new(fields)) })
    }

    /// A join, checked: key columns must exist and have comparable types.
    pub fn join(
        left: Arc<LogicalPlan>,
        right: Arc<LogicalPlan>,
        on: Vec<(String, String)>,
        join_type: JoinType,
    ) -> Result<LogicalPlan> {
        if on.is_empty() {
            return Err(SabotError::plan("a join needs at least one pair of key columns"));
        }
        let (ls, rs) = (left.schema(), right.schema());
        for (l, r) in &on {
            let lt = crate::expr::col(l).data_type(&ls)?;
            let rt = crate::expr::col(r).data_type(&rs)?;
            if crate::expr::common_type(&lt, &rt).is_none() {
                return Err(SabotError::plan(format!("join keys {l} ({lt}) and {r} ({rt}) cannot be compared")));
            }
        }
        let schema = join_schema(&ls, &rs, &on, join_type);
        Ok(LogicalPlan::Join { left, right, on, join_type, schema })
    }

    /// A union, checked: every input must have the same column names and types.
    pub fn union(inputs: Vec<Arc<LogicalPlan>>) -> Result<LogicalPlan> {
        let first = inputs.first().ok_or_else(|| SabotError::plan("union of no inputs"))?.schema();
        for other in &inputs[1..] {
            let s = other.schema();
            let same = s.fields().len() == first.fields().len()
                && s.fields()
                    .iter()
                    .zip(first.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same {
                return Err(SabotError::plan(format!("union inputs differ: {first:?} vs {s:?}")));
            }
        }
        let nullable_fields: Vec<Field> = first
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let nullable = inputs.iter().any(|p| p.schema().field(i).is_nullable());
                f.as_ref().clone().with_nullable(nullable)
            })
            .collect();
        Ok(LogicalPlan::Union { inputs, schema: Arc::new(Schema::new(nullable_fields)) })
    }

    /// A one-line description of this node alone, as shown by `explain()`.
    pub fn describe(&self) -> String {
        fn list<T: fmt::Display>(items: &[T]) -> String {
            items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        }
        match self {
            LogicalPlan::Scan { source, projection, filters, schema } => {
                let mut s = format!("Scan: {}", source.describe());
                if projection.is_some() {
                    let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    s += &format!(" projection=[{}]", cols.join(", "));
                }
                if !filters.is_empty() {
                    s += &format!(" filters=[{}]", list(filters));
                }
                s
            }
            LogicalPlan::Filter { predicate, .. } => format!("Filter: {predicate}"),
            LogicalPlan::Project { exprs, .. } => format!("Project: {}", list(exprs)),
            LogicalPlan::MapBatches { name, schema, .. } => {
                let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                format!("MapBatches: {name} -> [{}]", cols.join(", "))
            }
            LogicalPlan::Limit { skip, fetch, .. } => match fetch {
                Some(f) => format!("Limit: skip={skip} fetch={f}"),
                None => format!("Limit: skip={skip}"),
            },
            LogicalPlan::Sort { keys, fetch, .. } => match fetch {
                Some(f) => format!("Sort: {} fetch={f}", list(keys)),
                None => format!("Sort: {}", list(keys)),
            },
            LogicalPlan::Aggregate { group_by, aggregates, .. } => {
                format!("Aggregate: group_by=[{}] aggregates=[{}]", list(group_by), list(aggregates))
            }
            LogicalPlan::Join { on, join_type, .. } => {
                let keys: Vec<String> = on.iter().map(|(l, r)| format!("{l} = {r}")).collect();
                format!("Join: {join_type:?} on [{}]", keys.join(", "))
            }
            LogicalPlan::Union { .. } => "Union".to_string(),
            LogicalPlan::StreamJoin { left_keys, right_keys, kind, .. } => {
                super::stream_join::describe(left_keys, right_keys, kind)
            }
            LogicalPlan::KeyedProcess { keys, name, .. } => format!("KeyedProcess: {name} keys=[{}]", list(keys)),
            LogicalPlan::Watermark { time_column, strategy, .. } => format!("Watermark: {time_column} {strategy:?}"),
            LogicalPlan::Window { keys, spec, aggregates, allowed_lateness, time_column, .. } => {
                let mut s = format!("Window: {spec} keys=[{}] aggregates=[{}]", list(keys), list(aggregates));
                if let Some(t) = time_column {
                    s += &format!(" time={t}");
                }
                if *allowed_lateness > 0 {
                    s += &format!(" allowed_lateness={allowed_lateness}ms");
                }
                s
            }
        }
    }
}

impl fmt::Debug for LogicalPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display_indent())
    }
}

fn check_unique<'a>(names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(SabotError::plan(format!("duplicate output column '{n}'")));
        }
    }
    Ok(())
}

/// The output schema of a join: every left column, then the right columns except right keys
/// named like their left key; other clashing right names get the suffix `_right`. Semi and
/// anti joins output the left columns only. Columns of the side that may be missing are nullable.
pub fn join_schema(left: &Schema, right: &Schema, on: &[(String, String)], join_type: JoinType) -> SchemaRef {
    let left_nullable = matches!(join_type, JoinType::Right | JoinType::Full);
    let right_nullable = matches!(join_type, JoinType::Left | JoinType::Full);
    let mut fields: Vec<Field> = left
        .fields()
        .iter()
        .map(|f| {
            let is_key = on.iter().any(|(l, r)| l == f.name() && l == r);
            // A same-named key is filled from the right side for unmatched right rows.
            let nullable = f.is_nullable() || (left_nullable && !is_key);
            f.as_ref().clone().with_nullable(nullable)
        })
        .collect();
    if matches!(join_type, JoinType::Semi | JoinType::Anti) {
        return Arc::new(Schema::new(fields));
    }
    for f in right.fields() {
        if on.iter().any(|(l, r)| r == f.name() && l == r) {
            continue;
        }
        let mut name = f.name().clone();
        while fields.iter().any(|x| x.name() == &name) {
            name.push_str("_right");
        }
        fields.push(Field::new(name, f.data_type().clone(), f.is_nullable() || right_nullable));
    }
    Arc::new(Schema::new(fields))
}

/// The output columns of a join, as indices into the left or right input.
pub(crate) fn join_output_columns(
    left: &Schema,
    right: &Schema,
    on: &[(String, String)],
    join_type: JoinType,
) -> (Vec<usize>, Vec<usize>) {
    let left_cols = (0..left.fields().len()).collect();
    if matches!(join_type, JoinType::Semi | JoinType::Anti) {
        return (left_cols, vec![]);
    }
    let right_cols = right
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !on.iter().any(|(l, r)| r == f.name() && l == r))
        .map(|(i, _)| i)
        .collect();
    (left_cols, right_cols)
}
