//! Event time, keyed streams and windows.

use std::sync::Arc;
use std::time::Duration;

use super::{IntoExpr, Stream, Untyped};
use crate::expr::{AggExpr, Expr};
use crate::operator::{GlobalWindowOperator, KeyedProcessFunction, KeyedProcessOperator};
use crate::plan::{LogicalPlan, ProcessFactory};
use crate::window::{LateData, Trigger, WatermarkStrategy, WindowSpec};
use crate::{Result, SabotError};

impl<T> Stream<T> {
    /// Declares `column` (`Timestamp(ms)` or `Int64` milliseconds) as the event time and derives
    /// watermarks from it with `strategy`. Windows downstream use this column.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::prelude::*;
    /// use sabot::window::{WatermarkStrategy, WindowSpec};
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("ts", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1_000, 61_000, 2_000])) as _), ("v", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as _)]).unwrap();
    /// let per_minute = Stream::from_batches(vec![batch])?
    ///     .with_watermarks("ts", WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)))?
    ///     .window_all(WindowSpec::tumbling(Duration::from_secs(60)))
    ///     .aggregate([sum(col("v")).alias("total")])?;
    /// assert_eq!(per_minute.count()?, 2);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_watermarks(&self, column: &str, strategy: WatermarkStrategy) -> Result<Stream<T>> {
        let schema = self.schema();
        let field = schema.field_with_name(column).map_err(|_| SabotError::column_not_found(&schema, column))?;
        if !matches!(
            field.data_type(),
            arrow::datatypes::DataType::Int64
                | arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _)
        ) {
            return Err(SabotError::TypeMismatch {
                column: column.to_string(),
                expected: arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                found: field.data_type().clone(),
            });
        }
        Ok(self.derive(LogicalPlan::Watermark { input: self.plan.clone(), time_column: column.to_string(), strategy }))
    }

    /// Partitions the stream by key: rows of one key are processed by one parallel instance, in
    /// order. Keyed streams are windowed ([`KeyedStream::window`]).
    pub fn key_by<E: IntoExpr>(&self, keys: impl IntoIterator<Item = E>) -> KeyedStream {
        KeyedStream {
            input: self.derive(self.plan.as_ref().clone()),
            keys: keys.into_iter().map(IntoExpr::into_expr).collect(),
        }
    }

    /// Windows over the whole stream (one parallel instance).
    pub fn window_all(&self, spec: WindowSpec) -> WindowedStream {
        self.key_by(Vec::<Expr>::new()).window(spec)
    }
}

/// The event-time column declared upstream by [`Stream::with_watermarks`] or by a source
/// that emits its own watermarks (Kafka, per partition), if still present.
pub(crate) fn event_time_column(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::Watermark { time_column, .. } => Some(time_column.clone()),
        LogicalPlan::Scan { source, schema, .. } => {
            source.event_time_column().filter(|column| schema.field_with_name(column).is_ok())
        }
        LogicalPlan::Aggregate { .. } | LogicalPlan::Window { .. } => None,
        other => {
            let found = other.inputs().first().and_then(|i| event_time_column(i))?;
            other.schema().field_with_name(&found).is_ok().then_some(found)
        }
    }
}

/// A stream partitioned by key.
pub struct KeyedStream {
    input: Stream<Untyped>,
    keys: Vec<Expr>,
}

impl KeyedStream {
    /// One window per key that never ends by itself: `trigger` decides when it emits its
    /// aggregates (Flink's `GlobalWindows` with a trigger). Built-in triggers:
    /// [`CountTrigger`](crate::window::CountTrigger),
    /// [`EventTimeTrigger`](crate::window::EventTimeTrigger),
    /// [`ProcessingTimeTrigger`](crate::window::ProcessingTimeTrigger),
    /// [`PurgingTrigger`](crate::window::PurgingTrigger); or implement [`Trigger`].
    ///
    /// ```
    /// use sabot::prelude::*;
    /// use sabot::window::CountTrigger;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([
    /// #     ("user", std::sync::Arc::new(arrow::array::StringArray::from(vec!["a", "a", "a", "b"])) as _),
    /// #     ("amount", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3, 4])) as _),
    /// # ])?;
    /// let every_two = Stream::from_batches(vec![batch])?
    ///     .key_by(["user"])
    ///     .global_window(CountTrigger(2))
    ///     .aggregate([sum(col("amount"))])?;
    /// assert_eq!(every_two.count()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn global_window(self, trigger: impl Trigger) -> GlobalWindowedStream {
        GlobalWindowedStream { input: self.input, keys: self.keys, trigger: Arc::new(trigger) }
    }

    /// Groups each key's rows into windows.
    pub fn window(self, spec: WindowSpec) -> WindowedStream {
        WindowedStream { input: self.input, keys: self.keys, spec, lateness: 0, late: None, time_column: None }
    }

    /// The partitioning keys.
    pub fn keys(&self) -> &[Expr] {
        &self.keys
    }

    /// Runs a [`KeyedProcessFunction`] per row, with keyed state (in the configured
    /// [`crate::state::StateBackend`]) and timers; `make` builds one instance per partition.
    /// The input must have the columns of `F::In`.
    pub fn process<F: KeyedProcessFunction>(
        self,
        make: impl Fn() -> F + Send + Sync + 'static,
    ) -> Result<Stream<F::Out>> {
        let typed = self.input.typed::<F::In>()?;
        let name = std::any::type_name::<F>().rsplit("::").next().unwrap_or("process").to_string();
        let keys = self.keys.clone();
        let factory: ProcessFactory = Arc::new(move |operator_id, backend| {
            Ok(Box::new(KeyedProcessOperator::new(operator_id, make(), keys.clone(), backend.clone())))
        });
        let plan = LogicalPlan::KeyedProcess {
            input: typed.plan.clone(),
            keys: self.keys,
            name,
            factory,
            schema: <F::Out as crate::Record>::schema(),
        };
        Ok(self.input.derive(plan))
    }
}

/// A keyed stream in global windows, waiting for its aggregates.
pub struct GlobalWindowedStream {
    input: Stream<Untyped>,
    keys: Vec<Expr>,
    trigger: Arc<dyn Trigger>,
}

impl GlobalWindowedStream {
    /// Aggregates each key's window whenever the trigger fires; the results carry
    /// `window_start` and `window_end` (ms, spanning the rows of the firing).
    pub fn aggregate(self, aggregates: impl IntoIterator<Item = AggExpr>) -> Result<Stream<Untyped>> {
        let aggregates: Vec<AggExpr> = aggregates.into_iter().collect();
        let input_schema = self.input.schema();
        let time_column = event_time_column(&self.input.plan);
        let checked = GlobalWindowOperator::try_new(
            self.trigger.clone(),
            input_schema.clone(),
            self.keys.clone(),
            aggregates.clone(),
            time_column.clone(),
        )?;
        let schema = checked.output_schema();
        let (trigger, keys) = (self.trigger.clone(), self.keys.clone());
        let output = schema.clone();
        let factory: ProcessFactory = Arc::new(move |_, backend| {
            let operator = GlobalWindowOperator::validated(
                trigger.clone(),
                input_schema.clone(),
                output.clone(),
                keys.clone(),
                aggregates.clone(),
                time_column.clone(),
            )
            .with_state_backend(backend)?;
            Ok(Box::new(operator))
        });
        let plan = LogicalPlan::KeyedProcess {
            input: self.input.plan.clone(),
            keys: self.keys,
            name: format!("global_window({:?})", self.trigger),
            factory,
            schema,
        };
        Ok(self.input.derive(plan))
    }
}

/// A keyed stream with a window assigner, waiting for its aggregates.
pub struct WindowedStream {
    input: Stream<Untyped>,
    keys: Vec<Expr>,
    spec: WindowSpec,
    lateness: i64,
    late: Option<LateData>,
    time_column: Option<String>,
}

impl WindowedStream {
    /// Keeps fired windows open for `lateness`: late rows within it update the window, which
    /// fires again with its new result.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = lateness.as_millis().try_into().unwrap_or(i64::MAX);
        self
    }

    /// Sends rows that arrive after their windows closed to `late` instead of dropping them.
    pub fn late_data(mut self, late: LateData) -> Self {
        self.late = Some(late);
        self
    }

    /// Uses `column` as event time instead of the one declared by [`Stream::with_watermarks`].
    pub fn event_time(mut self, column: &str) -> Self {
        self.time_column = Some(column.to_string());
        self
    }

    /// Computes `aggregates` per key and window. The output has the keys, `window_start`,
    /// `window_end`, then the aggregates.
    pub fn aggregate(self, aggregates: impl IntoIterator<Item = AggExpr>) -> Result<Stream<Untyped>> {
        let aggregates: Vec<AggExpr> = aggregates.into_iter().collect();
        let input = self.input.plan.clone();
        let time_column = self.time_column.or_else(|| event_time_column(&input));
        let schema = input.schema();
        let time_type = match (&time_column, self.spec.uses_event_time()) {
            (Some(column), _) => schema
                .field_with_name(column)
                .map_err(|_| SabotError::column_not_found(&schema, column))?
                .data_type()
                .clone(),
            (None, true) => {
                return Err(SabotError::plan(format!(
                    "{} windows need event time: call with_watermarks(..) or event_time(..) first",
                    self.spec
                )));
            }
            (None, false) => arrow::datatypes::DataType::Int64,
        };
        let time_type = if self.spec.uses_event_time() { time_type } else { arrow::datatypes::DataType::Int64 };
        let out = crate::operator::window_output_schema(&schema, &self.keys, &aggregates, &time_type)?;
        let plan = LogicalPlan::Window {
            input,
            keys: self.keys,
            time_column,
            spec: self.spec,
            aggregates,
            allowed_lateness: self.lateness,
            late_data: self.late,
            schema: Arc::clone(&out),
        };
        Ok(self.input.derive(plan))
    }
}
