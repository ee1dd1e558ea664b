//! Applies a user function to every batch.

use arrow::record_batch::RecordBatch;

use super::{Operator, Output};
use crate::plan::BatchFn;
use crate::{Result, SabotError};

/// Runs a user closure on each batch (typed `map`, `flat_map`, closure filters, `inspect`).
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::operator::{MapBatchesOperator, Operator, Output};
/// let mut op = MapBatchesOperator::new("identity", Arc::new(|b| Ok(b)));
/// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
/// op.process_batch(batch, &mut Output::default()).unwrap();
/// ```
pub struct MapBatchesOperator {
    name: String,
    func: BatchFn,
}

impl MapBatchesOperator {
    /// Wraps `func`, shown as `name`.
    pub fn new(name: impl Into<String>, func: BatchFn) -> Self {
        MapBatchesOperator { name: name.into(), func }
    }
}

impl Operator for MapBatchesOperator {
    fn name(&self) -> &str {
        &self.name
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let result = (self.func)(batch).map_err(|e| match e {
            SabotError::User { .. } => e,
            other => SabotError::User { operator: self.name.clone(), message: other.to_string() },
        })?;
        out.emit(result);
        Ok(())
    }
}
