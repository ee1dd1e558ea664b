//! JSON messages: one JSON object per message, decoded with Arrow's JSON decoder.

use std::fmt;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::reader::{Decoder as ArrowJsonDecoder, ReaderBuilder};
use arrow::json::writer::LineDelimitedWriter;

use super::{Decoded, Decoder, Encoded, Encoder, Format, Rejected};
use crate::{Record, Result};

/// One JSON object per message, read into rows of a schema (fields missing from a message
/// are null; a value of the wrong type, or a missing non-nullable field, rejects the message).
///
/// ```
/// use sabot::kafka::format::{Format, JsonFormat};
/// use arrow::datatypes::{DataType, Field, Schema};
///
/// let format = JsonFormat::new(Schema::new(vec![
///     Field::new("account", DataType::Utf8, false),
///     Field::new("amount", DataType::Float64, true),
/// ]).into());
/// let decoded = format.decoder()?.decode(&[br#"{"account": "A1", "amount": 9.5}"#.as_slice()])?;
/// assert_eq!(decoded.batch.num_rows(), 1);
/// let messages = format.encoder(format.schema())?.encode(&decoded.batch)?;
/// assert_eq!(messages[0].payload, br#"{"account":"A1","amount":9.5}"#);
/// # Ok::<(), sabot::SabotError>(())
/// ```
#[derive(Clone)]
pub struct JsonFormat {
    schema: SchemaRef,
}

impl JsonFormat {
    /// Messages holding objects with the fields of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        JsonFormat { schema }
    }

    /// Messages holding objects with the fields of the record type `T`.
    ///
    /// ```
    /// use sabot::kafka::format::{Format, JsonFormat};
    ///
    /// #[derive(sabot::Record, Debug, PartialEq)]
    /// struct Payment { account: String, amount: f64 }
    ///
    /// let format = JsonFormat::for_record::<Payment>();
    /// assert_eq!(format.schema().field(1).name(), "amount");
    /// ```
    pub fn for_record<T: Record>() -> Self {
        JsonFormat { schema: T::schema() }
    }
}

impl fmt::Debug for JsonFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<_> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        f.debug_struct("JsonFormat").field("fields", &fields).finish()
    }
}

impl Format for JsonFormat {
    fn name(&self) -> &'static str {
        "json"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn decoder(&self) -> Result<Box<dyn Decoder>> {
        Ok(Box::new(JsonMessageDecoder { schema: self.schema.clone(), buffer: Vec::new() }))
    }

    fn encoder(&self, _schema: SchemaRef) -> Result<Box<dyn Encoder>> {
        Ok(Box::new(JsonMessageEncoder { buffer: Vec::new() }))
    }
}

struct JsonMessageDecoder {
    schema: SchemaRef,
    buffer: Vec<u8>,
}

impl JsonMessageDecoder {
    fn arrow_decoder(&self, batch_size: usize) -> Result<ArrowJsonDecoder> {
        Ok(ReaderBuilder::new(self.schema.clone()).with_batch_size(batch_size.max(1)).build_decoder()?)
    }

    /// Decodes all payloads at once: the fast path when every message is good.
    fn decode_all(&mut self, payloads: &[&[u8]]) -> Option<RecordBatch> {
        self.buffer.clear();
        for payload in payloads {
            // A message must hold exactly one object: a second one, or nothing, fails the
            // row count check below and sends the batch to the slow path.
            self.buffer.extend_from_slice(payload);
            self.buffer.push(b'\n');
        }
        let mut decoder = self.arrow_decoder(payloads.len()).ok()?;
        let consumed = decoder.decode(&self.buffer).ok()?;
        if consumed != self.buffer.len() {
            return None;
        }
        let batch = decoder.flush().ok()??;
        (batch.num_rows() == payloads.len()).then_some(batch)
    }

    /// Why `payload` is not exactly one object of the schema, if it is not.
    fn check_one(&self, payload: &[u8]) -> Result<Option<String>> {
        let mut decoder = self.arrow_decoder(2)?;
        let problem = match decoder.decode(payload).and_then(|_| decoder.decode(b"\n")).and_then(|_| decoder.flush()) {
            Err(e) => Some(e.to_string().trim_start_matches("Json error: ").to_string()),
            Ok(Some(batch)) if batch.num_rows() == 1 => None,
            Ok(Some(batch)) => Some(format!("expected one JSON object, found {}", batch.num_rows())),
            Ok(None) => Some("expected one JSON object, found none".to_string()),
        };
        Ok(problem)
    }
}

impl Decoder for JsonMessageDecoder {
    fn decode(&mut self, payloads: &[&[u8]]) -> Result<Decoded> {
        if let Some(batch) = self.decode_all(payloads) {
            return Ok(Decoded { batch, rows_per_payload: vec![1; payloads.len()], rejected: vec![] });
        }
        let mut rejected = Vec::new();
        let mut good = Vec::with_capacity(payloads.len());
        for (index, payload) in payloads.iter().enumerate() {
            match self.check_one(payload)? {
                Some(reason) => rejected.push(Rejected { index, reason }),
                None => good.push(*payload),
            }
        }
        let batch = match self.decode_all(&good) {
            Some(batch) => batch,
            None if good.is_empty() => RecordBatch::new_empty(self.schema.clone()),
            None => {
                return Err(crate::SabotError::Execution(
                    "JSON messages that decode one by one failed to decode together".into(),
                ));
            }
        };
        Ok(Decoded { batch, rows_per_payload: vec![1; good.len()], rejected })
    }
}

struct JsonMessageEncoder {
    buffer: Vec<u8>,
}

impl Encoder for JsonMessageEncoder {
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Encoded>> {
        self.buffer.clear();
        let mut writer = LineDelimitedWriter::new(&mut self.buffer);
        writer.write(batch)?;
        writer.finish()?;
        drop(writer);
        // Strings escape newlines in JSON, so every b'\n' ends a row.
        let messages = self
            .buffer
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .enumerate()
            .map(|(row, line)| Encoded::row(line.to_vec(), row))
            .collect::<Vec<_>>();
        debug_assert_eq!(messages.len(), batch.num_rows());
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn format() -> JsonFormat {
        JsonFormat::new(Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
        ])))
    }

    #[test]
    fn bad_messages_are_rejected_one_by_one_and_the_rest_decode() {
        let payloads: Vec<&[u8]> = vec![
            br#"{"id": 1, "name": "a", "amount": 1.5}"#,
            br#"{"id": "two"}"#,
            br#"{"id": 3}"#,
            b"{not json",
            br#"{"id": 5}{"id": 6}"#,
            br#"{"name": "no id"}"#,
            br#"{"id": 7, "amount": 2}"#,
        ];
        let decoded = format().decoder().unwrap().decode(&payloads).unwrap();
        let ids: Vec<_> = decoded.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec();
        assert_eq!(ids, vec![1, 3, 7]);
        let rejected: Vec<_> = decoded.rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, vec![1, 3, 4, 5]);
        assert!(decoded.rejected[0].reason.contains("id"), "{}", decoded.rejected[0].reason);
        assert!(decoded.rejected[2].reason.contains("found 2"), "{}", decoded.rejected[2].reason);
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let format = format();
        let batch = RecordBatch::try_new(
            format.schema(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("line\nbreak"), None])),
                Arc::new(Float64Array::from(vec![Some(0.25), Some(-3.0)])),
            ],
        )
        .unwrap();
        let messages = format.encoder(format.schema()).unwrap().encode(&batch).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!((messages[1].first_row, messages[1].rows), (1, 1));
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
        let decoded = format.decoder().unwrap().decode(&payloads).unwrap();
        assert_eq!(decoded.batch, batch);
    }
}
