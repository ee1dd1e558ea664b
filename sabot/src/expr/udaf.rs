//! User-defined aggregate functions: incremental `add`, `merge` and `finish` over a typed
//! state, usable wherever the built-in aggregates are (`group_by().agg(..)`, every window).

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, BinaryBuilder};
use arrow::datatypes::DataType;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{AggExpr, AggFunc, Expr};
use crate::record::RecordField;
use crate::{Result, SabotError};

/// An aggregate written by the user: a state per group (or window), updated row by row and
/// merged across partitions and window panes, then finished into one value.
///
/// States cross threads and panes in their serialized form (postcard), so they derive
/// `Serialize` and `Deserialize`.
///
/// ```
/// use sabot::prelude::*;
/// use sabot::expr::{AggregateFunction, udaf};
///
/// /// The geometric mean of positive values.
/// struct GeoMean;
///
/// #[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
/// struct LogSum { sum: f64, n: u64 }
///
/// impl AggregateFunction for GeoMean {
///     type Input = f64;
///     type State = LogSum;
///     type Output = f64;
///     fn add(&self, state: &mut LogSum, value: f64) {
///         state.sum += value.ln();
///         state.n += 1;
///     }
///     fn merge(&self, state: &mut LogSum, other: LogSum) {
///         state.sum += other.sum;
///         state.n += other.n;
///     }
///     fn finish(&self, state: &LogSum) -> f64 {
///         (state.sum / state.n as f64).exp()
///     }
/// }
///
/// # let batch = arrow::array::RecordBatch::try_from_iter([
/// #     ("k", std::sync::Arc::new(arrow::array::StringArray::from(vec!["a", "a", "b"])) as _),
/// #     ("x", std::sync::Arc::new(arrow::array::Float64Array::from(vec![2.0, 8.0, 5.0])) as _),
/// # ])?;
/// let geo_mean = udaf("geo_mean", GeoMean);
/// let out = Stream::from_batches(vec![batch])?
///     .group_by(["k"])
///     .agg([geo_mean.call(col("x")).alias("g")])?
///     .sort([SortKey::asc(col("k"))])?
///     .collect_batch()?;
/// let g = out.column(1).as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
/// assert!((g.value(0) - 4.0).abs() < 1e-9 && (g.value(1) - 5.0).abs() < 1e-9);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait AggregateFunction: Send + Sync + 'static {
    /// The type of the input values (nulls are skipped).
    type Input: RecordField;
    /// The state of one group.
    type State: Default + Clone + Send + Serialize + DeserializeOwned + 'static;
    /// The type of the result.
    type Output: RecordField;

    /// Adds one non-null input value to a state.
    fn add(&self, state: &mut Self::State, value: <Self::Input as RecordField>::View<'_>);
    /// Merges another state (of other rows) into `state`.
    fn merge(&self, state: &mut Self::State, other: Self::State);
    /// The result of a state.
    fn finish(&self, state: &Self::State) -> Self::Output;
}

/// A user-defined aggregate without its types, as plans hold it.
pub(crate) trait ErasedAggregate: Send + Sync {
    fn input_type(&self) -> DataType;
    fn output_type(&self) -> DataType;
    fn accumulator(&self) -> Box<dyn crate::operator::AggregateAccumulator>;
}

/// A named user-defined aggregate; [`Udaf::call`] applies it to an expression.
#[derive(Clone)]
pub struct Udaf {
    name: Arc<str>,
    function: Arc<dyn ErasedAggregate>,
}

impl Udaf {
    /// The aggregate over `input`, for `agg([..])` or a window's `aggregate([..])`.
    pub fn call(&self, input: Expr) -> AggExpr {
        AggExpr { func: AggFunc::Udaf, input, alias: None, udaf: Some(self.clone()) }
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn input_type(&self) -> DataType {
        self.function.input_type()
    }

    pub(crate) fn output_type(&self) -> DataType {
        self.function.output_type()
    }

    pub(crate) fn accumulator(&self) -> Box<dyn crate::operator::AggregateAccumulator> {
        self.function.accumulator()
    }
}

impl fmt::Debug for Udaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Udaf").field("name", &self.name).finish()
    }
}

impl PartialEq for Udaf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.function, &other.function)
    }
}

/// Registers `function` under `name`.
pub fn udaf<F: AggregateFunction>(name: &str, function: F) -> Udaf {
    Udaf { name: name.into(), function: Arc::new(Typed(Arc::new(function))) }
}

struct Typed<F>(Arc<F>);

impl<F: AggregateFunction> ErasedAggregate for Typed<F> {
    fn input_type(&self) -> DataType {
        F::Input::data_type()
    }

    fn output_type(&self) -> DataType {
        F::Output::data_type()
    }

    fn accumulator(&self) -> Box<dyn crate::operator::AggregateAccumulator> {
        Box::new(TypedAccumulator { function: self.0.clone(), states: Vec::new() })
    }
}

/// The per-group states of one user-defined aggregate.
struct TypedAccumulator<F: AggregateFunction> {
    function: Arc<F>,
    states: Vec<F::State>,
}

impl<F: AggregateFunction> crate::operator::AggregateAccumulator for TypedAccumulator<F> {
    fn resize(&mut self, groups: usize) {
        if self.states.len() < groups {
            self.states.resize_with(groups, F::State::default);
        }
    }

    fn update(&mut self, values: &ArrayRef, ids: &[u32], groups: usize) -> Result<()> {
        self.resize(groups);
        let array = F::Input::downcast("udaf input", values.as_ref())?;
        for (row, &group) in ids.iter().enumerate() {
            if values.is_valid(row) {
                self.function.add(&mut self.states[group as usize], F::Input::view_value(&array, row));
            }
        }
        Ok(())
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32], groups: usize) -> Result<()> {
        self.resize(groups);
        let states_array = states[0]
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| SabotError::Execution("a user-defined aggregate's state is not binary".into()))?;
        for (row, &group) in ids.iter().enumerate() {
            if states_array.is_null(row) {
                continue;
            }
            let other: F::State = postcard::from_bytes(states_array.value(row))
                .map_err(|e| SabotError::Execution(format!("cannot read a user-defined aggregate's state: {e}")))?;
            self.function.merge(&mut self.states[group as usize], other);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        let mut builder = BinaryBuilder::new();
        for state in &self.states {
            let bytes = postcard::to_allocvec(state)
                .map_err(|e| SabotError::Execution(format!("cannot write a user-defined aggregate's state: {e}")))?;
            builder.append_value(bytes);
        }
        self.states.clear();
        Ok(vec![Arc::new(builder.finish())])
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let outputs: Vec<F::Output> = self.states.iter().map(|s| self.function.finish(s)).collect();
        self.states.clear();
        Ok(F::Output::from_values(outputs.iter()))
    }
}
