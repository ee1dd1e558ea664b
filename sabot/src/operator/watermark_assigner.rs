//! Assigns watermarks from an event-time column.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};

use super::{Operator, Output, Watermark};
use crate::window::{WatermarkGenerator, WatermarkStrategy};
use crate::{Result, SabotError};

/// The event times of `column` in `batch`, in milliseconds (`Timestamp(ms)` or `Int64`).
pub(crate) fn event_times(batch: &RecordBatch, column: &str) -> Result<arrow::array::Int64Array> {
    let index =
        batch.schema_ref().index_of(column).map_err(|_| SabotError::column_not_found(batch.schema_ref(), column))?;
    let array = batch.column(index);
    let times = match array.data_type() {
        DataType::Int64 => array.as_primitive::<Int64Type>().clone(),
        DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _) => {
            arrow::compute::cast(array, &DataType::Int64)?.as_primitive::<Int64Type>().clone()
        }
        other => {
            return Err(SabotError::TypeMismatch {
                column: column.to_string(),
                expected: DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                found: other.clone(),
            });
        }
    };
    if let Some(row) = (0..times.len()).find(|&i| times.is_null(i)) {
        return Err(SabotError::UnexpectedNull { column: column.to_string(), row });
    }
    Ok(times)
}

/// Watches the event-time column and emits watermarks after the batches that advance them;
/// at the end of a bounded input it emits the final watermark (`i64::MAX`), which fires
/// every pending window.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::operator::{Operator, Output, WatermarkAssigner};
/// use sabot::window::WatermarkStrategy;
/// let mut op = WatermarkAssigner::new("ts", &WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(10)));
/// let batch = RecordBatch::try_from_iter([("ts", Arc::new(Int64Array::from(vec![100, 130, 120])) as _)]).unwrap();
/// op.process_batch(batch, &mut Output::default()).unwrap();
/// ```
pub struct WatermarkAssigner {
    column: String,
    generator: Box<dyn WatermarkGenerator>,
}

impl WatermarkAssigner {
    /// An assigner reading event times from `column`.
    pub fn new(column: &str, strategy: &WatermarkStrategy) -> Self {
        WatermarkAssigner { column: column.to_string(), generator: strategy.create() }
    }
}

impl Operator for WatermarkAssigner {
    fn name(&self) -> &str {
        "watermark_assigner"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let times = event_times(&batch, &self.column)?;
        let max = arrow::compute::max(&times);
        out.emit(batch);
        if let Some(w) = max.and_then(|m| self.generator.on_batch(m)) {
            out.emit_watermark(Watermark(w));
        }
        Ok(())
    }

    /// Upstream watermarks are replaced by the ones this assigner derives.
    fn handle_watermark(&mut self, _watermark: Watermark, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        out.emit_watermark(Watermark(i64::MAX));
        Ok(())
    }
}
