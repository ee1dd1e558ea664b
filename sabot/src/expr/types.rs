//! Type inference and coercion for expressions.

use arrow::datatypes::{DataType, Schema, TimeUnit};

use super::{BinaryOp, Expr};
use crate::{Result, SabotError};

/// The common type two operands are converted to before a comparison or an arithmetic kernel.
///
/// Numbers widen (any float makes `Float64`, signed and unsigned integers meet in `Int64`),
/// strings of different encodings meet in the wider encoding, and `Null` takes the other type.
pub(crate) fn common_type(left: &DataType, right: &DataType) -> Option<DataType> {
    use DataType::*;
    if left == right {
        return Some(left.clone());
    }
    match (left, right) {
        (Null, other) | (other, Null) => Some(other.clone()),
        (Dictionary(_, value), other) | (other, Dictionary(_, value)) => common_type(value, other),
        (l, r) if l.is_numeric() && r.is_numeric() => Some(numeric_common(l, r)),
        (Utf8, LargeUtf8) | (LargeUtf8, Utf8) => Some(LargeUtf8),
        (Utf8View, Utf8 | LargeUtf8) | (Utf8 | LargeUtf8, Utf8View) => Some(Utf8View),
        (Timestamp(unit, tz), other) | (other, Timestamp(unit, tz))
            if other.is_integer() || matches!(other, Utf8 | LargeUtf8 | Utf8View) =>
        {
            Some(Timestamp(*unit, tz.clone()))
        }
        (Date32, Utf8) | (Utf8, Date32) => Some(Date32),
        _ => None,
    }
}

fn numeric_common(l: &DataType, r: &DataType) -> DataType {
    use DataType::*;
    if l.is_floating() || r.is_floating() {
        return if matches!((l, r), (Float32 | Float16, Float32 | Float16)) { Float32 } else { Float64 };
    }
    let width = |t: &DataType| t.primitive_width().unwrap_or(8);
    let signed = |t: &DataType| t.is_signed_integer();
    match (signed(l), signed(r)) {
        (true, true) | (false, false) => {
            if width(l) >= width(r) {
                l.clone()
            } else {
                r.clone()
            }
        }
        _ => Int64,
    }
}

/// The result type of `left op right` once both are coerced to their common type.
pub(crate) fn binary_type(left: &DataType, op: BinaryOp, right: &DataType) -> Result<DataType> {
    if matches!(op, BinaryOp::And | BinaryOp::Or) {
        for t in [left, right] {
            if !matches!(t, DataType::Boolean | DataType::Null) {
                return Err(SabotError::plan(format!("{op:?} needs boolean operands, found {t}")));
            }
        }
        return Ok(DataType::Boolean);
    }
    let common = common_type(left, right)
        .ok_or_else(|| SabotError::plan(format!("cannot apply '{}' to {left} and {right}", op_symbol(op))))?;
    if op.is_comparison() {
        return Ok(DataType::Boolean);
    }
    match &common {
        t if t.is_numeric() => Ok(common),
        DataType::Timestamp(_, _) if matches!(op, BinaryOp::Minus) && left == right => {
            Ok(DataType::Duration(TimeUnit::Millisecond))
        }
        DataType::Timestamp(_, _) if matches!(op, BinaryOp::Plus | BinaryOp::Minus) => Ok(common),
        DataType::Null => Ok(DataType::Null),
        other => Err(SabotError::plan(format!("cannot apply '{}' to {other}", op_symbol(op)))),
    }
}

fn op_symbol(op: BinaryOp) -> String {
    Expr::Binary { left: Box::new(Expr::Column("a".into())), op, right: Box::new(Expr::Column("b".into())) }
        .to_string()
        .trim_start_matches("a ")
        .trim_end_matches(" b")
        .to_string()
}

impl Expr {
    /// The type of the values this expression produces over `schema`.
    ///
    /// ```
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::expr::{col, lit};
    /// let schema = Schema::new(vec![Field::new("amount", DataType::Int64, false)]);
    /// assert_eq!((col("amount") * lit(0.1)).data_type(&schema).unwrap(), DataType::Float64);
    /// assert_eq!(col("amount").gt(lit(3)).data_type(&schema).unwrap(), DataType::Boolean);
    /// ```
    pub fn data_type(&self, schema: &Schema) -> Result<DataType> {
        Ok(match self {
            Expr::Column(name) => field(schema, name)?.data_type().clone(),
            Expr::Literal(v) => v.data_type(),
            Expr::Binary { left, op, right } => binary_type(&left.data_type(schema)?, *op, &right.data_type(schema)?)?,
            Expr::Not(e) => {
                let t = e.data_type(schema)?;
                if !matches!(t, DataType::Boolean | DataType::Null) {
                    return Err(SabotError::plan(format!("NOT needs a boolean, found {t} in {e}")));
                }
                DataType::Boolean
            }
            Expr::Negative(e) => {
                let t = e.data_type(schema)?;
                if !(t.is_numeric() || matches!(t, DataType::Duration(_) | DataType::Null)) {
                    return Err(SabotError::plan(format!("cannot negate {t} in {e}")));
                }
                t
            }
            Expr::IsNull(_) | Expr::IsNotNull(_) => DataType::Boolean,
            Expr::Cast { expr, to } => {
                let from = expr.data_type(schema)?;
                if !arrow::compute::can_cast_types(&from, to) {
                    return Err(SabotError::plan(format!("cannot cast {from} to {to} in {self}")));
                }
                to.clone()
            }
            Expr::Case { branches, otherwise } => {
                let mut result = DataType::Null;
                for (cond, value) in branches {
                    let ct = cond.data_type(schema)?;
                    if !matches!(ct, DataType::Boolean | DataType::Null) {
                        return Err(SabotError::plan(format!("CASE condition {cond} is {ct}, not boolean")));
                    }
                    result = case_type(&result, &value.data_type(schema)?, self)?;
                }
                if let Some(o) = otherwise {
                    result = case_type(&result, &o.data_type(schema)?, self)?;
                }
                result
            }
            Expr::Function { func, args } => {
                let types = args.iter().map(|a| a.data_type(schema)).collect::<Result<Vec<_>>>()?;
                func.return_type(&types)?
            }
            Expr::ScalarUdf { udf, args } => {
                let params = udf.arg_types();
                if params.len() != args.len() {
                    return Err(SabotError::plan(format!(
                        "{} takes {} argument(s), got {}",
                        udf.name(),
                        params.len(),
                        args.len()
                    )));
                }
                for (a, p) in args.iter().zip(&params) {
                    let t = a.data_type(schema)?;
                    if !arrow::compute::can_cast_types(&t, p) {
                        return Err(SabotError::plan(format!("{}: cannot pass {t} as {p}", udf.name())));
                    }
                }
                udf.return_type()
            }
            Expr::Alias(e, _) => e.data_type(schema)?,
        })
    }

    /// Whether the expression can produce nulls over `schema` (conservative: `true` when unsure).
    pub fn nullable(&self, schema: &Schema) -> Result<bool> {
        Ok(match self {
            Expr::Column(name) => field(schema, name)?.is_nullable(),
            Expr::Literal(v) => v.is_null(),
            Expr::IsNull(_) | Expr::IsNotNull(_) => false,
            Expr::Binary { left, op, right } => {
                // Integer division and casts can fail, never yield null; but x / 0.0 is a float.
                let _ = op;
                left.nullable(schema)? || right.nullable(schema)?
            }
            Expr::Not(e) | Expr::Negative(e) | Expr::Alias(e, _) => e.nullable(schema)?,
            Expr::Cast { expr, .. } => expr.nullable(schema)?,
            Expr::Case { otherwise: None, .. } => true,
            Expr::Case { branches, otherwise: Some(o) } => {
                o.nullable(schema)? || branches.iter().any(|(_, v)| v.nullable(schema).unwrap_or(true))
            }
            Expr::Function { func, args } => {
                func.may_introduce_nulls() || args.iter().any(|a| a.nullable(schema).unwrap_or(true))
            }
            Expr::ScalarUdf { args, .. } => args.iter().any(|a| a.nullable(schema).unwrap_or(true)),
        })
    }

    /// The output field of this expression over `schema`.
    pub fn to_field(&self, schema: &Schema) -> Result<arrow::datatypes::Field> {
        Ok(arrow::datatypes::Field::new(self.output_name(), self.data_type(schema)?, self.nullable(schema)?))
    }
}

fn case_type(acc: &DataType, next: &DataType, expr: &Expr) -> Result<DataType> {
    common_type(acc, next)
        .ok_or_else(|| SabotError::plan(format!("CASE branches have incompatible types {acc} and {next} in {expr}")))
}

pub(crate) fn field<'a>(schema: &'a Schema, name: &str) -> Result<&'a arrow::datatypes::Field> {
    schema.field_with_name(name).map_err(|_| SabotError::column_not_found(schema, name))
}
