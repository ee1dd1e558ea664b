//! Computes output columns from expressions.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::{Operator, Output};
use crate::Result;
use crate::expr::Expr;

/// Evaluates one expression per output column.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use sabot::expr::{col, lit};
/// use sabot::operator::{Operator, Output, ProjectOperator};
/// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
/// let schema = Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, false)]));
/// let mut op = ProjectOperator::new(vec![(col("x") + lit(1i64)).alias("y")], schema);
/// op.process_batch(batch, &mut Output::default()).unwrap();
/// ```
#[derive(Debug)]
pub struct ProjectOperator {
    exprs: Vec<Expr>,
    schema: SchemaRef,
}

impl ProjectOperator {
    /// A projection producing `schema` from `exprs` (one per field).
    pub fn new(exprs: Vec<Expr>, schema: SchemaRef) -> Self {
        ProjectOperator { exprs, schema }
    }
}

impl Operator for ProjectOperator {
    fn name(&self) -> &str {
        "project"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let columns = self.exprs.iter().map(|e| e.evaluate(&batch)).collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.emit(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?);
        Ok(())
    }
}
