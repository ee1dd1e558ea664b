//! Built-in scalar functions: math and strings.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::compute::kernels::{substring, zip::zip};
use arrow::compute::{cast, is_not_null};
use arrow::datatypes::{DataType, Float64Type};
use arrow::error::ArrowError;

use super::Expr;
use super::types::common_type;
use crate::{Result, SabotError};

/// A built-in scalar function; build calls with the methods on [`Expr`] (`col("x").sqrt()`).
///
/// ```
/// use sabot::expr::{col, lit};
/// assert_eq!(col("name").upper().to_string(), "upper(name)");
/// assert_eq!(col("x").round(2).to_string(), "round(x, 2)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarFunction {
    /// Absolute value (keeps the input type).
    Abs,
    /// Square root (`Float64`; NaN for negative input).
    Sqrt,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Ln,
    /// Base-10 logarithm.
    Log10,
    /// `x^y`.
    Power,
    /// Rounds to the given number of decimal places (half away from zero).
    Round,
    /// Largest integer not above.
    Floor,
    /// Smallest integer not below.
    Ceil,
    /// Upper-case string.
    Upper,
    /// Lower-case string.
    Lower,
    /// String length in characters.
    Length,
    /// String without leading and trailing whitespace.
    Trim,
    /// `substring(s, start, len)`, 1-based start as in SQL.
    Substring,
    /// String concatenation; a null argument makes the result null.
    Concat,
    /// Whether a string starts with a prefix.
    StartsWith,
    /// Whether a string ends with a suffix.
    EndsWith,
    /// Whether a string contains a substring.
    Contains,
    /// The first non-null argument.
    Coalesce,
}

impl fmt::Display for ScalarFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ScalarFunction::Abs => "abs",
            ScalarFunction::Sqrt => "sqrt",
            ScalarFunction::Exp => "exp",
            ScalarFunction::Ln => "ln",
            ScalarFunction::Log10 => "log10",
            ScalarFunction::Power => "power",
            ScalarFunction::Round => "round",
            ScalarFunction::Floor => "floor",
            ScalarFunction::Ceil => "ceil",
            ScalarFunction::Upper => "upper",
            ScalarFunction::Lower => "lower",
            ScalarFunction::Length => "length",
            ScalarFunction::Trim => "trim",
            ScalarFunction::Substring => "substring",
            ScalarFunction::Concat => "concat",
            ScalarFunction::StartsWith => "starts_with",
            ScalarFunction::EndsWith => "ends_with",
            ScalarFunction::Contains => "contains",
            ScalarFunction::Coalesce => "coalesce",
        };
        f.write_str(name)
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

impl ScalarFunction {
    /// The result type for arguments of `args` types, or a plan error for wrong arguments.
    pub fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        use ScalarFunction::*;
        let arity = |n: usize| -> Result<()> {
            if args.len() == n {
                Ok(())
            } else {
                Err(SabotError::plan(format!("{self} takes {n} argument(s), got {}", args.len())))
            }
        };
        let numeric = |t: &DataType| -> Result<()> {
            if t.is_numeric() || *t == DataType::Null {
                Ok(())
            } else {
                Err(SabotError::plan(format!("{self} needs a number, found {t}")))
            }
        };
        let string = |t: &DataType| -> Result<()> {
            if is_string(t) { Ok(()) } else { Err(SabotError::plan(format!("{self} needs a string, found {t}"))) }
        };
        match self {
            Abs => {
                arity(1)?;
                numeric(&args[0])?;
                Ok(args[0].clone())
            }
            Sqrt | Exp | Ln | Log10 | Floor | Ceil => {
                arity(1)?;
                numeric(&args[0])?;
                Ok(DataType::Float64)
            }
            Power | Round => {
                arity(2)?;
                numeric(&args[0])?;
                numeric(&args[1])?;
                Ok(DataType::Float64)
            }
            Upper | Lower | Trim => {
                arity(1)?;
                string(&args[0])?;
                Ok(DataType::Utf8)
            }
            Length => {
                arity(1)?;
                string(&args[0])?;
                Ok(DataType::Int64)
            }
            Substring => {
                arity(3)?;
                string(&args[0])?;
                numeric(&args[1])?;
                numeric(&args[2])?;
                Ok(DataType::Utf8)
            }
            Concat => {
                if args.is_empty() {
                    return Err(SabotError::plan("concat takes at least one argument"));
                }
                args.iter().try_for_each(string)?;
                Ok(DataType::Utf8)
            }
            StartsWith | EndsWith | Contains => {
                arity(2)?;
                string(&args[0])?;
                string(&args[1])?;
                Ok(DataType::Boolean)
            }
            Coalesce => args
                .iter()
                .try_fold(DataType::Null, |acc, t| common_type(&acc, t))
                .filter(|_| !args.is_empty())
                .ok_or_else(|| SabotError::plan(format!("coalesce arguments have incompatible types {args:?}"))),
        }
    }

    /// Whether the function can return null for non-null arguments.
    pub fn may_introduce_nulls(&self) -> bool {
        false
    }

    /// Applies the function to argument arrays of equal length.
    pub fn invoke(&self, args: &[ArrayRef]) -> std::result::Result<ArrayRef, ArrowError> {
        use ScalarFunction::*;
        let f64_unary = |f: fn(f64) -> f64| -> std::result::Result<ArrayRef, ArrowError> {
            let input = cast(&args[0], &DataType::Float64)?;
            Ok(Arc::new(input.as_primitive::<Float64Type>().unary::<_, Float64Type>(f)))
        };
        match self {
            Abs => match args[0].data_type() {
                t if t.is_unsigned_integer() => Ok(args[0].clone()),
                DataType::Float64 | DataType::Float32 => {
                    let input = cast(&args[0], &DataType::Float64)?;
                    let out = input.as_primitive::<Float64Type>().unary::<_, Float64Type>(f64::abs);
                    cast(&out, args[0].data_type())
                }
                t => {
                    let input = cast(&args[0], &DataType::Int64)?;
                    let out: Int64Array = input
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .try_unary(|v| v.checked_abs().ok_or(ArrowError::ArithmeticOverflow(format!("abs({v})"))))?;
                    cast(&out, t)
                }
            },
            Sqrt => f64_unary(f64::sqrt),
            Exp => f64_unary(f64::exp),
            Ln => f64_unary(f64::ln),
            Log10 => f64_unary(f64::log10),
            Floor => f64_unary(f64::floor),
            Ceil => f64_unary(f64::ceil),
            Power | Round => {
                let base = cast(&args[0], &DataType::Float64)?;
                let exp = cast(&args[1], &DataType::Float64)?;
                let (base, exp) = (base.as_primitive::<Float64Type>(), exp.as_primitive::<Float64Type>());
                let out: Float64Array = if *self == Power {
                    arrow::compute::binary(base, exp, f64::powf)?
                } else {
                    arrow::compute::binary(base, exp, |v, digits| {
                        let scale = 10f64.powi(digits as i32);
                        (v * scale).round() / scale
                    })?
                };
                Ok(Arc::new(out))
            }
            Upper | Lower | Trim => {
                let input = cast(&args[0], &DataType::Utf8)?;
                let strings = input.as_string::<i32>();
                let out: StringArray = match self {
                    Upper => strings.iter().map(|s| s.map(str::to_uppercase)).collect(),
                    Lower => strings.iter().map(|s| s.map(str::to_lowercase)).collect(),
                    _ => strings.iter().map(|s| s.map(str::trim)).collect(),
                };
                Ok(Arc::new(out))
            }
            Length => {
                let input = cast(&args[0], &DataType::Utf8)?;
                let chars: Int64Array =
                    input.as_string::<i32>().iter().map(|s| s.map(|s| s.chars().count() as i64)).collect();
                Ok(Arc::new(chars))
            }
            Substring => {
                let input = cast(&args[0], &DataType::Utf8)?;
                let start = cast(&args[1], &DataType::Int64)?;
                let len = cast(&args[2], &DataType::Int64)?;
                let (start, len) = (
                    start.as_primitive::<arrow::datatypes::Int64Type>(),
                    len.as_primitive::<arrow::datatypes::Int64Type>(),
                );
                if start.null_count() == 0 && len.null_count() == 0 && !start.is_empty() {
                    let (s0, l0) = (start.value(0), len.value(0));
                    let uniform = start.values().iter().all(|&s| s == s0) && len.values().iter().all(|&l| l == l0);
                    if uniform && s0 >= 1 && l0 >= 0 {
                        return substring::substring_by_char(input.as_string::<i32>(), s0 - 1, Some(l0 as u64))
                            .map(|a| Arc::new(a) as ArrayRef);
                    }
                }
                let strings = input.as_string::<i32>();
                let out: StringArray = (0..strings.len())
                    .map(|i| {
                        if strings.is_null(i) || start.is_null(i) || len.is_null(i) {
                            return None;
                        }
                        let skip = (start.value(i) - 1).max(0) as usize;
                        let take = len.value(i).max(0) as usize;
                        Some(strings.value(i).chars().skip(skip).take(take).collect::<String>())
                    })
                    .collect();
                Ok(Arc::new(out))
            }
            Concat => {
                let mut acc = cast(&args[0], &DataType::Utf8)?;
                for next in &args[1..] {
                    let next = cast(next, &DataType::Utf8)?;
                    acc = Arc::new(arrow::compute::kernels::concat_elements::concat_elements_utf8(
                        acc.as_string::<i32>(),
                        next.as_string::<i32>(),
                    )?);
                }
                Ok(acc)
            }
            StartsWith | EndsWith | Contains => {
                let haystack = cast(&args[0], &DataType::Utf8)?;
                let needle = cast(&args[1], &DataType::Utf8)?;
                let out: BooleanArray = match self {
                    StartsWith => arrow::compute::kernels::comparison::starts_with(&haystack, &needle)?,
                    EndsWith => arrow::compute::kernels::comparison::ends_with(&haystack, &needle)?,
                    _ => arrow::compute::kernels::comparison::contains(&haystack, &needle)?,
                };
                Ok(Arc::new(out))
            }
            Coalesce => {
                let target = args
                    .iter()
                    .try_fold(DataType::Null, |acc, a| common_type(&acc, a.data_type()))
                    .ok_or_else(|| ArrowError::InvalidArgumentError("coalesce: incompatible types".into()))?;
                let mut result = cast(&args[args.len() - 1], &target)?;
                for arg in args[..args.len() - 1].iter().rev() {
                    let arg = cast(arg, &target)?;
                    result = zip(&is_not_null(&arg)?, &arg, &result)?;
                }
                Ok(result)
            }
        }
    }
}

impl Expr {
    fn call(func: ScalarFunction, args: Vec<Expr>) -> Expr {
        Expr::Function { func, args }
    }
    /// `abs(self)`
    pub fn abs(self) -> Expr {
        Expr::call(ScalarFunction::Abs, vec![self])
    }
    /// `sqrt(self)`
    pub fn sqrt(self) -> Expr {
        Expr::call(ScalarFunction::Sqrt, vec![self])
    }
    /// `exp(self)`
    pub fn exp(self) -> Expr {
        Expr::call(ScalarFunction::Exp, vec![self])
    }
    /// `ln(self)`
    pub fn ln(self) -> Expr {
        Expr::call(ScalarFunction::Ln, vec![self])
    }
    /// `log10(self)`
    pub fn log10(self) -> Expr {
        Expr::call(ScalarFunction::Log10, vec![self])
    }
    /// `power(self, exponent)`
    pub fn pow(self, exponent: Expr) -> Expr {
        Expr::call(ScalarFunction::Power, vec![self, exponent])
    }
    /// `round(self, digits)`
    pub fn round(self, digits: i32) -> Expr {
        Expr::call(ScalarFunction::Round, vec![self, super::lit(digits)])
    }
    /// `floor(self)`
    pub fn floor(self) -> Expr {
        Expr::call(ScalarFunction::Floor, vec![self])
    }
    /// `ceil(self)`
    pub fn ceil(self) -> Expr {
        Expr::call(ScalarFunction::Ceil, vec![self])
    }
    /// `upper(self)`
    pub fn upper(self) -> Expr {
        Expr::call(ScalarFunction::Upper, vec![self])
    }
    /// `lower(self)`
    pub fn lower(self) -> Expr {
        Expr::call(ScalarFunction::Lower, vec![self])
    }
    /// `length(self)` in characters.
    pub fn length(self) -> Expr {
        Expr::call(ScalarFunction::Length, vec![self])
    }
    /// `trim(self)`
    pub fn trim(self) -> Expr {
        Expr::call(ScalarFunction::Trim, vec![self])
    }
    /// `substring(self, start, len)` with a 1-based `start`.
    pub fn substring(self, start: i64, len: i64) -> Expr {
        Expr::call(ScalarFunction::Substring, vec![self, super::lit(start), super::lit(len)])
    }
    /// `starts_with(self, prefix)`
    pub fn starts_with(self, prefix: Expr) -> Expr {
        Expr::call(ScalarFunction::StartsWith, vec![self, prefix])
    }
    /// `ends_with(self, suffix)`
    pub fn ends_with(self, suffix: Expr) -> Expr {
        Expr::call(ScalarFunction::EndsWith, vec![self, suffix])
    }
    /// `contains(self, needle)`
    pub fn contains(self, needle: Expr) -> Expr {
        Expr::call(ScalarFunction::Contains, vec![self, needle])
    }
}

/// `concat(a, b, ...)` of strings.
///
/// ```
/// use sabot::expr::{col, concat, lit};
/// assert_eq!(concat([col("a"), lit("-"), col("b")]).to_string(), "concat(a, '-', b)");
/// ```
pub fn concat(args: impl IntoIterator<Item = Expr>) -> Expr {
    Expr::call(ScalarFunction::Concat, args.into_iter().collect())
}

/// `coalesce(a, b, ...)`: the first non-null argument.
///
/// ```
/// use sabot::expr::{coalesce, col, lit};
/// assert_eq!(coalesce([col("a"), lit(0)]).to_string(), "coalesce(a, 0)");
/// ```
pub fn coalesce(args: impl IntoIterator<Item = Expr>) -> Expr {
    Expr::call(ScalarFunction::Coalesce, args.into_iter().collect())
}
