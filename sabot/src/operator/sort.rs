//! Orders rows by sort keys, optionally keeping only the first `fetch` (top-k).

use arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::{Operator, Output};
use crate::Result;
use crate::plan::SortKey;

/// Buffers its input and emits it sorted when the input ends. With `fetch`, memory stays
/// bounded: the buffer is cut back to the best `fetch` rows whenever it grows past a threshold.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::expr::col;
/// use sabot::operator::{Operator, Output, SortOperator};
/// use sabot::plan::SortKey;
/// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![3, 1, 2])) as _)]).unwrap();
/// let mut op = SortOperator::new(batch.schema(), vec![SortKey::desc(col("x"))], Some(2));
/// let mut out = Output::default();
/// op.process_batch(batch, &mut out).unwrap();
/// op.on_close(&mut out).unwrap();
/// ```
#[derive(Debug)]
pub struct SortOperator {
    schema: SchemaRef,
    keys: Vec<SortKey>,
    fetch: Option<usize>,
    buffered: Vec<RecordBatch>,
    buffered_rows: usize,
}

impl SortOperator {
    /// A sort of batches of `schema` on `keys`, keeping the first `fetch` rows if given.
    pub fn new(schema: SchemaRef, keys: Vec<SortKey>, fetch: Option<usize>) -> Self {
        SortOperator { schema, keys, fetch, buffered: vec![], buffered_rows: 0 }
    }

    fn sort_buffer(&mut self) -> Result<Option<RecordBatch>> {
        if self.buffered.is_empty() {
            return Ok(None);
        }
        let batch = concat_batches(&self.schema, &self.buffered)?;
        self.buffered.clear();
        let columns = self
            .keys
            .iter()
            .map(|k| {
                Ok(SortColumn {
                    values: k.expr.evaluate(&batch)?,
                    options: Some(SortOptions { descending: !k.ascending, nulls_first: k.nulls_first }),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let indices = lexsort_to_indices(&columns, self.fetch)?;
        let sorted = take_record_batch(&batch, &indices)?;
        self.buffered_rows = sorted.num_rows();
        Ok(Some(sorted))
    }
}

impl Operator for SortOperator {
    fn name(&self) -> &str {
        "sort"
    }

    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        self.buffered_rows += batch.num_rows();
        self.buffered.push(batch);
        if let Some(k) = self.fetch
            && self.buffered_rows > (4 * k).max(1 << 16)
            && let Some(best) = self.sort_buffer()?
        {
            self.buffered.push(best);
        }
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        if let Some(sorted) = self.sort_buffer()? {
            // Downstream operators prefer morsel-sized batches.
            let chunk = 64 * 1024;
            let mut offset = 0;
            while offset < sorted.num_rows() {
                let len = chunk.min(sorted.num_rows() - offset);
                out.emit(sorted.slice(offset, len));
                offset += len;
            }
        }
        Ok(())
    }
}
