//! Arrow IPC messages: one record batch (in the IPC stream format) per message.

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use super::{Decoded, Decoder, Encoded, Encoder, Format, Rejected};
use crate::Result;

/// Each message is an Arrow IPC stream holding batches of one schema: the columnar format
/// end to end, with no parsing, for pipelines whose producers and consumers both speak Arrow.
/// A message whose schema differs from the format's is rejected.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::kafka::format::{Format, IpcFormat};
///
/// let batch = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)])?;
/// let format = IpcFormat::new(batch.schema()).rows_per_message(2);
/// let messages = format.encoder(batch.schema())?.encode(&batch)?;
/// assert_eq!(messages.len(), 2);
/// let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
/// let decoded = format.decoder()?.decode(&payloads)?;
/// assert_eq!(decoded.batch, batch);
/// assert_eq!(decoded.rows_per_payload, vec![2, 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct IpcFormat {
    schema: SchemaRef,
    rows_per_message: usize,
}

impl IpcFormat {
    /// Messages holding batches of `schema`; sinks write up to 1,000 rows per message.
    pub fn new(schema: SchemaRef) -> Self {
        IpcFormat { schema, rows_per_message: 1000 }
    }

    /// The most rows a sink puts in one message.
    pub fn rows_per_message(mut self, rows: usize) -> Self {
        self.rows_per_message = rows.max(1);
        self
    }
}

impl Format for IpcFormat {
    fn name(&self) -> &'static str {
        "arrow-ipc"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn decoder(&self) -> Result<Box<dyn Decoder>> {
        Ok(Box::new(IpcDecoder { schema: self.schema.clone() }))
    }

    fn encoder(&self, _schema: SchemaRef) -> Result<Box<dyn Encoder>> {
        Ok(Box::new(IpcEncoder { rows_per_message: self.rows_per_message }))
    }
}

struct IpcDecoder {
    schema: SchemaRef,
}

impl IpcDecoder {
    fn read(&self, payload: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
        let reader = StreamReader::try_new(Cursor::new(payload), None).map_err(|e| e.to_string())?;
        let schema = reader.schema();
        if schema.fields() != self.schema.fields() {
            return Err(format!("schema {schema} differs from the expected {}", self.schema));
        }
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        // Batches keep the expected schema object (and its metadata) so they concatenate.
        batches
            .into_iter()
            .map(|b| RecordBatch::try_new(self.schema.clone(), b.columns().to_vec()).map_err(|e| e.to_string()))
            .collect()
    }
}

impl Decoder for IpcDecoder {
    fn decode(&mut self, payloads: &[&[u8]]) -> Result<Decoded> {
        let mut batches = Vec::with_capacity(payloads.len());
        let mut rows_per_payload = Vec::with_capacity(payloads.len());
        let mut rejected = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            match self.read(payload) {
                Ok(read) => {
                    rows_per_payload.push(read.iter().map(|b| b.num_rows()).sum());
                    batches.extend(read);
                }
                Err(reason) => rejected.push(Rejected { index, reason: format!("not an Arrow IPC stream: {reason}") }),
            }
        }
        let batch = match batches.len() {
            1 => batches.pop().expect("one batch"),
            _ => concat_batches(&self.schema, &batches)?,
        };
        Ok(Decoded { batch, rows_per_payload, rejected })
    }
}

struct IpcEncoder {
    rows_per_message: usize,
}

impl Encoder for IpcEncoder {
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Encoded>> {
        let mut messages = Vec::with_capacity(batch.num_rows().div_ceil(self.rows_per_message));
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = self.rows_per_message.min(batch.num_rows() - offset);
            let mut payload = Vec::new();
            let mut writer = StreamWriter::try_new(&mut payload, &batch.schema())?;
            writer.write(&batch.slice(offset, len))?;
            writer.finish()?;
            drop(writer);
            messages.push(Encoded { payload, first_row: offset, rows: len });
            offset += len;
        }
        Ok(messages)
    }
}
