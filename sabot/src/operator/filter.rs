//! Keeps the rows for which a predicate holds.

use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;

use super::{Operator, Output};
use crate::Result;
use crate::expr::Expr;

/// Evaluates a boolean expression and keeps the rows where it is true (null counts as false).
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::expr::{col, lit};
/// use sabot::operator::{FilterOperator, Operator, Output};
/// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 5, 9])) as _)]).unwrap();
/// let mut op = FilterOperator::new(col("x").gt(lit(4)));
/// let mut out = Output::default();
/// op.process_batch(batch, &mut out).unwrap();
/// ```
#[derive(Debug)]
pub struct FilterOperator {
    predicate: Expr,
}

impl FilterOperator {
    /// A filter on `predicate`.
    pub fn new(predicate: Expr) -> Self {
        FilterOperator { predicate }
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> &str {
        "filter"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let mask = self.predicate.evaluate_predicate(&batch)?;
        match mask.true_count() {
            0 => {}
            n if n == batch.num_rows() => out.emit(batch),
            _ => out.emit(filter_record_batch(&batch, &mask)?),
        }
        Ok(())
    }
}
