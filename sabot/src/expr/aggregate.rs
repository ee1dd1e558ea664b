//! Aggregate expressions: `sum(col("x")).alias("total")`.

use std::fmt;

use arrow::datatypes::{DataType, Field, Schema};

use super::Expr;
use crate::{Result, SabotError};

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    /// Number of rows, nulls included.
    CountAll,
    /// Number of non-null values.
    Count,
    /// Sum of non-null values (`Int64` for integers, `UInt64` for unsigned, `Float64` for floats).
    Sum,
    /// Mean of non-null values as `Float64`.
    Avg,
    /// Smallest non-null value.
    Min,
    /// Largest non-null value.
    Max,
    /// Number of distinct non-null values.
    CountDistinct,
    /// The first value in input order (may be null).
    First,
    /// The last value in input order (may be null).
    Last,
    /// A user-defined aggregate (see [`AggExpr::udaf`]).
    Udaf,
}

impl fmt::Display for AggFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AggFunc::CountAll | AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Avg => "avg",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::CountDistinct => "count_distinct",
            AggFunc::First => "first",
            AggFunc::Udaf => "udaf",
            AggFunc::Last => "last",
        })
    }
}

/// An aggregate over an input expression, with an output name.
///
/// ```
/// use sabot::expr::{col, sum};
/// let total = sum(col("amount")).alias("total");
/// assert_eq!(total.to_string(), "sum(amount) AS total");
/// assert_eq!(total.output_name(), "total");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AggExpr {
    /// The function.
    pub func: AggFunc,
    /// Its input (for [`AggFunc::CountAll`], a literal).
    pub input: Expr,
    /// The output column name; defaults to `func(input)`.
    pub alias: Option<String>,
    /// The function, for [`AggFunc::Udaf`].
    pub udaf: Option<super::udaf::Udaf>,
}

impl AggExpr {
    /// Names the output column.
    pub fn alias(mut self, name: impl Into<String>) -> AggExpr {
        self.alias = Some(name.into());
        self
    }

    /// The output column's name.
    pub fn output_name(&self) -> String {
        match &self.alias {
            Some(a) => a.clone(),
            None if self.func == AggFunc::CountAll => "count".to_string(),
            None => format!("{}({})", self.function_name(), self.input),
        }
    }

    /// The function's name (`sum`, or a user-defined aggregate's name).
    pub fn function_name(&self) -> String {
        match &self.udaf {
            Some(udaf) => udaf.name().to_string(),
            None => self.func.to_string(),
        }
    }

    /// The output field over an input of `schema`.
    pub fn to_field(&self, schema: &Schema) -> Result<Field> {
        let input = self.input.data_type(schema)?;
        let (data_type, nullable) = match self.func {
            AggFunc::CountAll | AggFunc::Count | AggFunc::CountDistinct => (DataType::Int64, false),
            AggFunc::Sum => {
                let t = match &input {
                    t if t.is_signed_integer() => DataType::Int64,
                    t if t.is_unsigned_integer() => DataType::UInt64,
                    t if t.is_floating() => DataType::Float64,
                    t => return Err(SabotError::plan(format!("sum needs numbers, {} is {t}", self.input))),
                };
                (t, true)
            }
            AggFunc::Avg => {
                if !input.is_numeric() {
                    return Err(SabotError::plan(format!("avg needs numbers, {} is {input}", self.input)));
                }
                (DataType::Float64, true)
            }
            AggFunc::Min | AggFunc::Max | AggFunc::First | AggFunc::Last => (input, true),
            AggFunc::Udaf => {
                let udaf = self
                    .udaf
                    .as_ref()
                    .ok_or_else(|| SabotError::plan("a user-defined aggregate without its function"))?;
                if input != udaf.input_type() {
                    return Err(SabotError::plan(format!(
                        "{} takes {}, {} is {input}",
                        udaf.name(),
                        udaf.input_type(),
                        self.input
                    )));
                }
                (udaf.output_type(), false)
            }
        };
        Ok(Field::new(self.output_name(), data_type, nullable))
    }
}

impl fmt::Display for AggExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.func {
            AggFunc::CountAll => f.write_str("count(*)")?,
            _ => write!(f, "{}({})", self.function_name(), self.input)?,
        }
        if let Some(a) = &self.alias {
            write!(f, " AS {a}")?;
        }
        Ok(())
    }
}

fn agg(func: AggFunc, input: Expr) -> AggExpr {
    AggExpr { func, input, alias: None, udaf: None }
}

/// `count(*)`: the number of rows.
///
/// ```
/// assert_eq!(sabot::expr::count_all().output_name(), "count");
/// ```
pub fn count_all() -> AggExpr {
    agg(AggFunc::CountAll, super::lit(1i64))
}
/// `count(e)`: the number of non-null values.
///
/// ```
/// assert_eq!(sabot::expr::count(sabot::expr::col("x")).to_string(), "count(x)");
/// ```
pub fn count(e: Expr) -> AggExpr {
    agg(AggFunc::Count, e)
}
/// `sum(e)`
///
/// ```
/// assert_eq!(sabot::expr::sum(sabot::expr::col("x")).to_string(), "sum(x)");
/// ```
pub fn sum(e: Expr) -> AggExpr {
    agg(AggFunc::Sum, e)
}
/// `avg(e)`
///
/// ```
/// assert_eq!(sabot::expr::avg(sabot::expr::col("x")).to_string(), "avg(x)");
/// ```
pub fn avg(e: Expr) -> AggExpr {
    agg(AggFunc::Avg, e)
}
/// `min(e)`
///
/// ```
/// assert_eq!(sabot::expr::min(sabot::expr::col("x")).to_string(), "min(x)");
/// ```
pub fn min(e: Expr) -> AggExpr {
    agg(AggFunc::Min, e)
}
/// `max(e)`
///
/// ```
/// assert_eq!(sabot::expr::max(sabot::expr::col("x")).to_string(), "max(x)");
/// ```
pub fn max(e: Expr) -> AggExpr {
    agg(AggFunc::Max, e)
}
/// `count_distinct(e)`
///
/// ```
/// assert_eq!(sabot::expr::count_distinct(sabot::expr::col("x")).to_string(), "count_distinct(x)");
/// ```
pub fn count_distinct(e: Expr) -> AggExpr {
    agg(AggFunc::CountDistinct, e)
}
/// `first(e)`: the first value in input order.
///
/// ```
/// assert_eq!(sabot::expr::first(sabot::expr::col("x")).to_string(), "first(x)");
/// ```
pub fn first(e: Expr) -> AggExpr {
    agg(AggFunc::First, e)
}
/// `last(e)`: the last value in input order.
///
/// ```
/// assert_eq!(sabot::expr::last(sabot::expr::col("x")).to_string(), "last(x)");
/// ```
pub fn last(e: Expr) -> AggExpr {
    agg(AggFunc::Last, e)
}
