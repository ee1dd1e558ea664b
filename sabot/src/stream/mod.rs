//! The `Stream` API: a lazy, typed pipeline over Arrow batches.
//!
//! A [`Stream`] is a logical plan plus execution settings. Builder methods check the plan as
//! it grows (unknown columns and type errors are reported at the step that causes them), and
//! nothing runs until a sink or [`Stream::collect`].

mod build;
mod file_sink;
mod joins;
mod sinks;
mod sources;
mod typed;
mod windowed;
pub(crate) use windowed::event_time_column;

use std::marker::PhantomData;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::exec::ExecConfig;
use crate::expr::Expr;
use crate::plan::LogicalPlan;

pub use build::GroupedStream;
pub use windowed::{GlobalWindowedStream, KeyedStream, WindowedStream};

/// The record type of a stream whose schema is only known at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Untyped;

/// A lazy pipeline producing rows of `T` (a [`crate::Record`] type), or rows of a schema
/// known at run time ([`Untyped`], the default).
///
/// ```
/// use sabot::prelude::*;
///
/// #[derive(Record, Debug, Clone, PartialEq)]
/// struct Trade { id: i64, price: f64 }
///
/// let trades = vec![Trade { id: 1, price: 99.5 }, Trade { id: 2, price: 101.0 }];
/// let expensive: Vec<Trade> = Stream::from_records(trades)
///     .filter(Trade::cols().price.gt(100.0))?
///     .collect_records()?;
/// assert_eq!(expensive, vec![Trade { id: 2, price: 101.0 }]);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct Stream<T = Untyped> {
    plan: Arc<LogicalPlan>,
    config: ExecConfig,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Stream { plan: self.plan.clone(), config: self.config.clone(), _record: PhantomData }
    }
}

impl<T> std::fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream\n{}", self.plan.display_indent())
    }
}

impl<T> Stream<T> {
    pub(crate) fn from_plan(plan: LogicalPlan, config: ExecConfig) -> Stream<T> {
        Stream { plan: Arc::new(plan), config, _record: PhantomData }
    }

    fn derive<U>(&self, plan: LogicalPlan) -> Stream<U> {
        Stream::from_plan(plan, self.config.clone())
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// The logical plan as built (before optimization).
    pub fn logical_plan(&self) -> &Arc<LogicalPlan> {
        &self.plan
    }

    /// The execution settings.
    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    /// Replaces the execution settings.
    pub fn with_config(mut self, config: ExecConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the number of parallel partitions.
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.config = self.config.with_parallelism(parallelism);
        self
    }

    /// Checkpoints the running pipeline and restores its last checkpoint on start (see
    /// [`crate::checkpoint`]); with a two-phase sink, every result is delivered exactly once
    /// across crashes and restarts.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// use sabot::checkpoint::CheckpointConfig;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("x", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as _)]).unwrap();
    /// let dir = tempfile::tempdir()?;
    /// let stream = Stream::from_batches(vec![batch])?.with_checkpointing(CheckpointConfig::new(dir.path()));
    /// assert!(stream.config().checkpointing.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_checkpointing(mut self, checkpointing: crate::checkpoint::CheckpointConfig) -> Self {
        self.config = self.config.with_checkpointing(checkpointing);
        self
    }
}

/// Converts column names and expressions into expressions: `"price"` means `col("price")`.
///
/// ```
/// use sabot::expr::{col, lit};
/// use sabot::stream::IntoExpr;
/// assert_eq!("price".into_expr(), col("price"));
/// assert_eq!((col("a") + lit(1)).into_expr().to_string(), "a + 1");
/// ```
pub trait IntoExpr {
    /// The expression.
    fn into_expr(self) -> Expr;
}

impl<E: Into<Expr>> IntoExpr for E {
    fn into_expr(self) -> Expr {
        self.into()
    }
}

impl IntoExpr for &str {
    fn into_expr(self) -> Expr {
        crate::expr::col(self)
    }
}

impl IntoExpr for &String {
    fn into_expr(self) -> Expr {
        crate::expr::col(self.as_str())
    }
}
