//! Raw messages: the payload as one string or binary column.

use std::sync::Arc;

use arrow::array::{Array, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Decoded, Decoder, Encoded, Encoder, Format, Rejected};
use crate::{Result, SabotError};

/// The payload as a single column named `value`: UTF-8 text ([`RawFormat::string`], where a
/// payload that is not valid UTF-8 is rejected) or bytes ([`RawFormat::bytes`]). Sinks write
/// the one column of a string or binary stream as the payload.
///
/// ```
/// use sabot::kafka::format::{Format, RawFormat};
///
/// let decoded = RawFormat::string().decoder()?.decode(&[b"hello".as_slice(), &[0xff, 0xfe]])?;
/// assert_eq!(decoded.batch.num_rows(), 1);
/// assert!(decoded.rejected[0].reason.contains("UTF-8"));
/// # Ok::<(), sabot::SabotError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RawFormat {
    utf8: bool,
}

impl RawFormat {
    /// Payloads as UTF-8 strings.
    pub fn string() -> Self {
        RawFormat { utf8: true }
    }

    /// Payloads as bytes.
    pub fn bytes() -> Self {
        RawFormat { utf8: false }
    }
}

impl Format for RawFormat {
    fn name(&self) -> &'static str {
        if self.utf8 { "string" } else { "bytes" }
    }

    fn schema(&self) -> SchemaRef {
        let data_type = if self.utf8 { DataType::Utf8 } else { DataType::Binary };
        Arc::new(Schema::new(vec![Field::new("value", data_type, false)]))
    }

    fn decoder(&self) -> Result<Box<dyn Decoder>> {
        Ok(Box::new(RawDecoder { utf8: self.utf8, schema: self.schema() }))
    }

    fn encoder(&self, schema: SchemaRef) -> Result<Box<dyn Encoder>> {
        match schema.fields().as_ref() {
            [field] if matches!(field.data_type(), DataType::Utf8 | DataType::Binary) => Ok(Box::new(RawEncoder)),
            _ => Err(SabotError::plan(format!(
                "raw messages take one Utf8 or Binary column; the stream has {schema}: select or format one column first"
            ))),
        }
    }
}

struct RawDecoder {
    utf8: bool,
    schema: SchemaRef,
}

impl Decoder for RawDecoder {
    fn decode(&mut self, payloads: &[&[u8]]) -> Result<Decoded> {
        let mut rejected = Vec::new();
        let column: Arc<dyn Array> = if self.utf8 {
            let mut values = Vec::with_capacity(payloads.len());
            for (index, payload) in payloads.iter().enumerate() {
                match std::str::from_utf8(payload) {
                    Ok(s) => values.push(s),
                    Err(e) => rejected.push(Rejected { index, reason: format!("payload is not valid UTF-8: {e}") }),
                }
            }
            Arc::new(StringArray::from(values))
        } else {
            Arc::new(BinaryArray::from(payloads.to_vec()))
        };
        let rows = column.len();
        Ok(Decoded {
            batch: RecordBatch::try_new(self.schema.clone(), vec![column])?,
            rows_per_payload: vec![1; rows],
            rejected,
        })
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Encoded>> {
        let column = batch.column(0);
        let bytes_at = |row: usize| -> Vec<u8> {
            if let Some(s) = column.as_any().downcast_ref::<StringArray>() {
                s.value(row).as_bytes().to_vec()
            } else if let Some(b) = column.as_any().downcast_ref::<BinaryArray>() {
                b.value(row).to_vec()
            } else {
                Vec::new()
            }
        };
        // A null value becomes an empty payload (Kafka tombstones need a key and are written
        // by sinks that ask for them, not by accident).
        Ok((0..batch.num_rows())
            .map(|row| Encoded::row(if column.is_null(row) { vec![] } else { bytes_at(row) }, row))
            .collect())
    }
}
