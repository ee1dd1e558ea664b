//! Skips and keeps a number of rows.

use arrow::record_batch::RecordBatch;

use super::{Operator, Output};
use crate::Result;

/// Skips `skip` rows, then passes at most `fetch` rows and reports itself finished.
///
/// ```
/// use sabot::operator::{LimitOperator, Operator};
/// let op = LimitOperator::new(0, Some(0));
/// assert!(op.is_finished());
/// ```
#[derive(Debug)]
pub struct LimitOperator {
    to_skip: usize,
    remaining: Option<usize>,
}

impl LimitOperator {
    /// A limit that skips `skip` rows then keeps `fetch` (all when `None`).
    pub fn new(skip: usize, fetch: Option<usize>) -> Self {
        LimitOperator { to_skip: skip, remaining: fetch }
    }
}

impl Operator for LimitOperator {
    fn name(&self) -> &str {
        "limit"
    }

    fn process_batch(&mut self, mut batch: RecordBatch, out: &mut Output) -> Result<()> {
        if self.to_skip > 0 {
            let skipped = self.to_skip.min(batch.num_rows());
            self.to_skip -= skipped;
            batch = batch.slice(skipped, batch.num_rows() - skipped);
        }
        if let Some(remaining) = self.remaining.as_mut() {
            let kept = (*remaining).min(batch.num_rows());
            *remaining -= kept;
            batch = batch.slice(0, kept);
        }
        out.emit(batch);
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.remaining == Some(0)
    }
}
