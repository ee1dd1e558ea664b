//! The late-data side output.

use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;

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
