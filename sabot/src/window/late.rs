//! The late-data side output.

use std::sync::{Arc, Mutex};

use arrow::array::BooleanArray;
use arrow::compute::{filter_record_batch, not};
use arrow::record_batch::RecordBatch;

use crate::Result;

/// Receives the rows that arrive after their windows closed (beyond the allowed lateness),
/// so they are never silently dropped. Cloning shares the same buffer.
///
/// ```
/// use sabot::window::LateData;
/// let late = LateData::new();
/// assert_eq!(late.rows(), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct LateData {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl LateData {
    /// An empty side output.
    pub fn new() -> Self {
        LateData::default()
    }

    pub(crate) fn push(&self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.lock().expect("late data lock").push(batch);
        }
    }

    /// Removes and returns the late rows received so far.
    pub fn take(&self) -> Vec<RecordBatch> {
        std::mem::take(&mut *self.batches.lock().expect("late data lock"))
    }

    /// The number of late rows received so far.
    pub fn rows(&self) -> usize {
        self.batches.lock().expect("late data lock").iter().map(|b| b.num_rows()).sum()
    }
}

/// Moves the rows of `batch` flagged in `late` to the side output (or logs that they are
/// dropped when there is none) and returns the others.
pub(crate) fn divert_late_rows(
    batch: RecordBatch,
    late: &BooleanArray,
    side: Option<&LateData>,
) -> Result<RecordBatch> {
    if late.true_count() == 0 {
        return Ok(batch);
    }
    let late_rows = filter_record_batch(&batch, late)?;
    match side {
        Some(side) => side.push(late_rows),
        None => tracing::warn!(rows = late_rows.num_rows(), "late rows dropped (no late-data output)"),
    }
    Ok(filter_record_batch(&batch, &not(late)?)?)
}
