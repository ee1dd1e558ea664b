//! Column-at-a-time evaluation with Arrow's compute kernels.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Datum, Scalar, new_null_array};
use arrow::compute::kernels::{boolean, cmp, numeric, zip::zip};
use arrow::compute::{CastOptions, cast_with_options, prep_null_mask_filter};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::types::common_type;
use super::{BinaryOp, Expr};
use crate::{Result, SabotError};

/// The value of an expression over a batch: a whole column, or one value for every row.
#[derive(Debug, Clone)]
pub enum ColumnarValue {
    /// One value per row.
    Array(ArrayRef),
    /// The same value for every row (a literal, or an expression over literals only).
    Scalar(ArrayRef),
}

impl ColumnarValue {
    /// The value as an array of `len` rows.
    pub fn into_array(self, len: usize) -> Result<ArrayRef> {
        match self {
            ColumnarValue::Array(a) => Ok(a),
            ColumnarValue::Scalar(s) => {
                if s.is_null(0) {
                    return Ok(new_null_array(s.data_type(), len));
                }
                let indices = arrow::array::UInt32Array::from(vec![0u32; len]);
                Ok(arrow::compute::take(&s, &indices, None)?)
            }
        }
    }

    fn data_type(&self) -> &DataType {
        match self {
            ColumnarValue::Array(a) | ColumnarValue::Scalar(a) => a.data_type(),
        }
    }

    fn datum(&self) -> Box<dyn Datum + '_> {
        match self {
            ColumnarValue::Array(a) => Box::new(a),
            ColumnarValue::Scalar(s) => Box::new(Scalar::new(s)),
        }
    }

    fn cast(self, to: &DataType) -> std::result::Result<ColumnarValue, ArrowError> {
        if self.data_type() == to {
            return Ok(self);
        }
        let options = CastOptions { safe: false, ..Default::default() };
        Ok(match self {
            ColumnarValue::Array(a) => ColumnarValue::Array(cast_with_options(&a, to, &options)?),
            ColumnarValue::Scalar(s) => ColumnarValue::Scalar(cast_with_options(&s, to, &options)?),
        })
    }

    fn map(
        self,
        f: impl FnOnce(&ArrayRef) -> std::result::Result<ArrayRef, ArrowError>,
    ) -> std::result::Result<ColumnarValue, ArrowError> {
        Ok(match self {
            ColumnarValue::Array(a) => ColumnarValue::Array(f(&a)?),
            ColumnarValue::Scalar(s) => ColumnarValue::Scalar(f(&s)?),
        })
    }
}

impl Expr {
    /// Evaluates the expression over every row of `batch` into an array.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{AsArray, Int64Array, RecordBatch};
    /// use arrow::datatypes::Float64Type;
    /// use sabot::expr::{col, lit};
    /// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
    /// let out = (col("x") * lit(0.5)).evaluate(&batch).unwrap();
    /// assert_eq!(out.as_primitive::<Float64Type>().values(), &[0.5, 1.0]);
    /// ```
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        self.evaluate_columnar(batch)?.into_array(batch.num_rows())
    }

    /// Evaluates a predicate into a selection mask: nulls count as false.
    pub fn evaluate_predicate(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let array = self.evaluate(batch)?;
        let mask = array.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
            SabotError::plan(format!("filter predicate {self} is {}, not boolean", array.data_type()))
        })?;
        Ok(if mask.null_count() > 0 { prep_null_mask_filter(mask) } else { mask.clone() })
    }

    /// Evaluates the expression, keeping constant results as scalars.
    pub fn evaluate_columnar(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let eval_err = |source: ArrowError| SabotError::Eval { expr: self.to_string(), source };
        Ok(match self {
            Expr::Column(name) => match batch.schema_ref().index_of(name) {
                Ok(index) => ColumnarValue::Array(batch.column(index).clone()),
                Err(_) => return Err(missing_column(batch, name)),
            },
            Expr::Literal(v) => ColumnarValue::Scalar(v.to_array(1)),
            Expr::Alias(e, _) => e.evaluate_columnar(batch)?,
            Expr::Binary { left, op, right } => {
                let l = left.evaluate_columnar(batch)?;
                let r = right.evaluate_columnar(batch)?;
                eval_binary(l, *op, r, literal_side(left, right)).map_err(eval_err)?
            }
            Expr::Not(e) => e
                .evaluate_columnar(batch)?
                .map(|a| Ok(Arc::new(boolean::not(as_bool(a)?)?) as ArrayRef))
                .map_err(eval_err)?,
            Expr::Negative(e) => e.evaluate_columnar(batch)?.map(|a| numeric::neg(a)).map_err(eval_err)?,
            Expr::IsNull(e) => e
                .evaluate_columnar(batch)?
                .map(|a| Ok(Arc::new(arrow::compute::is_null(a)?) as ArrayRef))
                .map_err(eval_err)?,
            Expr::IsNotNull(e) => e
                .evaluate_columnar(batch)?
                .map(|a| Ok(Arc::new(arrow::compute::is_not_null(a)?) as ArrayRef))
                .map_err(eval_err)?,
            Expr::Cast { expr, to } => expr.evaluate_columnar(batch)?.cast(to).map_err(eval_err)?,
            Expr::Case { branches, otherwise } => self.eval_case(batch, branches, otherwise.as_deref())?,
            Expr::Function { func, args } => {
                let values = args.iter().map(|a| a.evaluate_columnar(batch)).collect::<Result<Vec<_>>>()?;
                let all_scalar = values.iter().all(|v| matches!(v, ColumnarValue::Scalar(_)));
                let len = if all_scalar { 1 } else { batch.num_rows() };
                let arrays = values.into_iter().map(|v| v.into_array(len)).collect::<Result<Vec<_>>>()?;
                let out = func.invoke(&arrays).map_err(eval_err)?;
                if all_scalar { ColumnarValue::Scalar(out) } else { ColumnarValue::Array(out) }
            }
            Expr::ScalarUdf { udf, args } => {
                let values = args.iter().map(|a| a.evaluate_columnar(batch)).collect::<Result<Vec<_>>>()?;
                let all_scalar = values.iter().all(|v| matches!(v, ColumnarValue::Scalar(_)));
                let len = if all_scalar { 1 } else { batch.num_rows() };
                let mut arrays = vec![];
                for (v, t) in values.into_iter().zip(udf.arg_types()) {
                    arrays.push(v.cast(&t).map_err(eval_err)?.into_array(len)?);
                }
                let out = udf.invoke(&arrays).map_err(eval_err)?;
                if all_scalar { ColumnarValue::Scalar(out) } else { ColumnarValue::Array(out) }
            }
        })
    }

    fn eval_case(
        &self,
        batch: &RecordBatch,
        branches: &[(Expr, Expr)],
        otherwise: Option<&Expr>,
    ) -> Result<ColumnarValue> {
        let eval_err = |source: ArrowError| SabotError::Eval { expr: self.to_string(), source };
        let out_type = self.data_type(batch.schema_ref())?;
        let rows = batch.num_rows();
        let mut result = match otherwise {
            Some(o) => o.evaluate_columnar(batch)?.cast(&out_type).map_err(eval_err)?.into_array(rows)?,
            None => new_null_array(&out_type, rows),
        };
        // Later branches are applied first so that earlier ones win.
        for (cond, value) in branches.iter().rev() {
            let mask = cond.evaluate_predicate(batch)?;
            let value = value.evaluate_columnar(batch)?.cast(&out_type).map_err(eval_err)?;
            result = zip(&mask, &*value.datum(), &result).map_err(eval_err)?;
        }
        Ok(ColumnarValue::Array(result))
    }
}

/// Which operand is a literal, so that coercion converts the literal rather than the column.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum LiteralSide {
    Left,
    Right,
    Neither,
}

pub(crate) fn literal_side(left: &Expr, right: &Expr) -> LiteralSide {
    match (left, right) {
        (Expr::Literal(_), Expr::Literal(_)) => LiteralSide::Neither,
        (Expr::Literal(_), _) => LiteralSide::Left,
        (_, Expr::Literal(_)) => LiteralSide::Right,
        _ => LiteralSide::Neither,
    }
}

fn as_bool(a: &ArrayRef) -> std::result::Result<&BooleanArray, ArrowError> {
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| ArrowError::InvalidArgumentError(format!("expected boolean, found {}", a.data_type())))
}

/// The type both operands are converted to. A literal compared with a column takes the
/// column's type when the conversion is exact (`int_col > 3.0` stays integer only if 3.0 is
/// integral), so the column itself is never cast.
pub(crate) fn operand_type(
    l: &ColumnarValue,
    r: &ColumnarValue,
    side: LiteralSide,
) -> std::result::Result<DataType, ArrowError> {
    let (lt, rt) = (l.data_type(), r.data_type());
    let (column_type, literal) = match side {
        LiteralSide::Left => (rt, l),
        LiteralSide::Right => (lt, r),
        LiteralSide::Neither => (lt, l),
    };
    if side != LiteralSide::Neither && literal.data_type() != column_type {
        let target = match column_type {
            DataType::Dictionary(_, value) => value.as_ref(),
            other => other,
        };
        if let ColumnarValue::Scalar(s) = literal
            && let Ok(converted) = cast_with_options(s, target, &CastOptions { safe: false, ..Default::default() })
        {
            let back = arrow::compute::cast(&converted, s.data_type())?;
            let exact = back.as_ref() == s.as_ref();
            if exact && (target.is_numeric() || !s.data_type().is_numeric()) {
                return Ok(target.clone());
            }
        }
    }
    common_type(lt, rt)
        .ok_or_else(|| ArrowError::InvalidArgumentError(format!("incompatible operand types {lt} and {rt}")))
}

fn eval_binary(
    l: ColumnarValue,
    op: BinaryOp,
    r: ColumnarValue,
    side: LiteralSide,
) -> std::result::Result<ColumnarValue, ArrowError> {
    let scalar = matches!((&l, &r), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
    let wrap = |a: ArrayRef| if scalar { ColumnarValue::Scalar(a) } else { ColumnarValue::Array(a) };
    if matches!(op, BinaryOp::And | BinaryOp::Or) {
        let len = match (&l, &r) {
            (ColumnarValue::Array(a), _) | (_, ColumnarValue::Array(a)) => a.len(),
            _ => 1,
        };
        let la = l.cast(&DataType::Boolean)?;
        let ra = r.cast(&DataType::Boolean)?;
        let la = la.into_array(len).map_err(|e| ArrowError::ComputeError(e.to_string()))?;
        let ra = ra.into_array(len).map_err(|e| ArrowError::ComputeError(e.to_string()))?;
        let out = if op == BinaryOp::And {
            boolean::and_kleene(as_bool(&la)?, as_bool(&ra)?)?
        } else {
            boolean::or_kleene(as_bool(&la)?, as_bool(&ra)?)?
        };
        return Ok(wrap(Arc::new(out)));
    }
    let target = operand_type(&l, &r, side)?;
    let keep_dictionary = |v: ColumnarValue| -> std::result::Result<ColumnarValue, ArrowError> {
        match v.data_type() {
            DataType::Dictionary(_, value) if op.is_comparison() && value.as_ref() == &target => Ok(v),
            _ => v.cast(&target),
        }
    };
    let (l, r) = (keep_dictionary(l)?, keep_dictionary(r)?);
    let (ld, rd) = (l.datum(), r.datum());
    let (ld, rd) = (ld.as_ref(), rd.as_ref());
    let out: ArrayRef = match op {
        BinaryOp::Plus => numeric::add(ld, rd)?,
        BinaryOp::Minus => numeric::sub(ld, rd)?,
        BinaryOp::Multiply => numeric::mul(ld, rd)?,
        BinaryOp::Divide => numeric::div(ld, rd)?,
        BinaryOp::Modulo => numeric::rem(ld, rd)?,
        BinaryOp::Eq => Arc::new(cmp::eq(ld, rd)?),
        BinaryOp::NotEq => Arc::new(cmp::neq(ld, rd)?),
        BinaryOp::Lt => Arc::new(cmp::lt(ld, rd)?),
        BinaryOp::LtEq => Arc::new(cmp::lt_eq(ld, rd)?),
        BinaryOp::Gt => Arc::new(cmp::gt(ld, rd)?),
        BinaryOp::GtEq => Arc::new(cmp::gt_eq(ld, rd)?),
        BinaryOp::And | BinaryOp::Or => unreachable!("handled above"),
    };
    Ok(wrap(out))
}

fn missing_column(batch: &RecordBatch, name: &str) -> SabotError {
    SabotError::column_not_found(batch.schema_ref(), name)
}
