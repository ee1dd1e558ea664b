//! Message formats: how the bytes of one Kafka message become rows, and rows become messages.
//!
//! A [`Format`] is a description (a schema, a registry address…) shared by every parallel
//! instance of a source or sink; each instance opens its own [`Decoder`] or [`Encoder`], which
//! may keep caches (schemas fetched from a registry, reusable buffers) without locking.
//!
//! Decoding is per poll batch: a decoder gets the payloads of many messages at once, so JSON
//! or Avro can be decoded into Arrow columns in one pass, and reports each payload it cannot
//! read instead of failing the batch, so the source can send exactly those messages to the
//! dead-letter topic and go on.

mod avro;
mod ipc;
mod json;
mod raw;

use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::Result;

pub use avro::*;
pub use ipc::IpcFormat;
pub use json::JsonFormat;
pub use raw::RawFormat;

/// A payload that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the payload in the slice given to [`Decoder::decode`].
    pub index: usize,
    /// Why it was rejected (names the field or byte position when the format can).
    pub reason: String,
}

/// The result of decoding a slice of payloads.
#[derive(Debug)]
pub struct Decoded {
    /// The rows of the accepted payloads, in payload order.
    pub batch: RecordBatch,
    /// How many rows each accepted payload produced, in payload order (one per payload for
    /// row formats; a whole batch for Arrow IPC).
    pub rows_per_payload: Vec<usize>,
    /// The payloads that were not decoded, in payload order.
    pub rejected: Vec<Rejected>,
}

/// Turns message payloads into Arrow rows; one per source instance.
pub trait Decoder: Send {
    /// Decodes `payloads` (one per Kafka message) into rows of [`Format::schema`].
    /// A payload that cannot be read is reported in [`Decoded::rejected`]; an `Err` means the
    /// decoder itself failed (e.g. the schema registry is unreachable) and stops the stream.
    fn decode(&mut self, payloads: &[&[u8]]) -> Result<Decoded>;
}

/// One encoded message and the rows of the batch it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The message payload.
    pub payload: Vec<u8>,
    /// The first row it holds: sinks take the message key from this row.
    pub first_row: usize,
    /// How many rows it holds (1 for row formats).
    pub rows: usize,
}

impl Encoded {
    /// A message holding one row.
    pub fn row(payload: Vec<u8>, row: usize) -> Self {
        Encoded { payload, first_row: row, rows: 1 }
    }
}

/// Turns Arrow rows into message payloads; one per sink instance.
pub trait Encoder: Send {
    /// Encodes `batch` into messages, in row order.
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Encoded>>;
}

/// A message format, usable by sources (decode) and sinks (encode).
///
/// ```
/// use sabot::kafka::format::{Format, JsonFormat};
/// use arrow::datatypes::{DataType, Field, Schema};
///
/// let format = JsonFormat::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]).into());
/// let mut decoder = format.decoder()?;
/// let decoded = decoder.decode(&[br#"{"id": 1}"#.as_slice(), b"not json", br#"{"id": 3}"#])?;
/// assert_eq!(decoded.batch.num_rows(), 2);
/// assert_eq!(decoded.rejected[0].index, 1);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub trait Format: Send + Sync + fmt::Debug {
    /// The format's name for plans and logs, e.g. `"json"`.
    fn name(&self) -> &'static str;
    /// The schema of decoded rows.
    fn schema(&self) -> SchemaRef;
    /// Opens a decoder (for a source instance).
    fn decoder(&self) -> Result<Box<dyn Decoder>>;
    /// Opens an encoder for batches of `schema` (for a sink instance).
    fn encoder(&self, schema: SchemaRef) -> Result<Box<dyn Encoder>>;
}
