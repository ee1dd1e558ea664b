//! Avro in the Confluent wire format.
//!
//! Every message is a magic byte `0x00`, the writer schema's id in the schema registry
//! (4 bytes, big-endian) and the record in Avro binary encoding. Decoding resolves each writer
//! schema (fetched once by id) against one reader schema, so messages written with older or
//! newer compatible versions of a subject all become rows of the same Arrow schema. The Avro
//! work itself is done by `arrow-avro`; this module adds the registry, per-message rejection
//! and one-message-per-row encoding.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::{can_cast_types, cast, concat_batches};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_avro::reader::{Decoder as AvroReader, ReaderBuilder};
use arrow_avro::schema::{
    AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy, SCHEMA_METADATA_KEY, SchemaStore,
};
use arrow_avro::writer::format::AvroSoeFormat;
use arrow_avro::writer::{Encoder as AvroWriter, WriterBuilder};

use super::{Decoded, Decoder, Encoded, Encoder, Format, Rejected};
use crate::kafka::registry::SchemaRegistry;
use crate::{Result, SabotError};

/// The first byte of a Confluent-framed message.
const MAGIC: u8 = 0;
/// Magic byte and schema id.
const HEADER_LEN: usize = 5;
/// Rows per Arrow batch inside the Avro decoder (a poll batch larger than this is decoded into
/// several, then concatenated).
const DECODE_BATCH_ROWS: usize = 8192;
/// How long a decoder believes the registry that a schema id does not exist before asking again
/// (so a topic full of messages with a bad id does not send a request per poll).
const MISSING_ID_RETRY: Duration = Duration::from_secs(60);

/// Avro messages in the Confluent wire format, with their schemas in a schema registry.
///
/// A source reads with the subject's latest schema ([`AvroFormat::with_registry`]): messages
/// written with any registered schema that resolves to it (added fields with defaults, removed
/// fields, promoted numbers) decode into rows of [`Format::schema`]. A sink writes the Arrow
/// schema converted to Avro, registered under the subject when its encoder opens
/// ([`AvroFormat::new`]); each row becomes one message.
///
/// A message that is not Confluent framed, names a schema id the registry does not have, has a
/// writer schema that cannot be read as the reader schema, or does not decode, is rejected on
/// its own (the rest of the poll batch decodes); an unreachable registry is an error.
///
/// ```no_run
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use sabot::kafka::format::{AvroFormat, Format};
/// use sabot::kafka::registry::SchemaRegistry;
///
/// let registry = SchemaRegistry::new("http://localhost:8081");
/// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
///
/// // A sink: registers the schema under the subject and frames every row with its id.
/// let sink_format = AvroFormat::new(registry.clone(), schema.clone(), "orders-value")?;
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])?;
/// let messages = sink_format.encoder(schema.clone())?.encode(&batch)?;
/// assert_eq!(messages.len(), 2);
///
/// // A source: reads with the subject's latest schema.
/// let source_format = AvroFormat::with_registry(registry, "orders-value")?;
/// let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
/// let decoded = source_format.decoder()?.decode(&payloads)?;
/// assert_eq!(decoded.batch.num_rows(), 2);
/// # Ok::<(), sabot::SabotError>(())
/// ```
#[derive(Clone)]
pub struct AvroFormat {
    registry: SchemaRegistry,
    subject: String,
    /// The schema of decoded rows.
    schema: SchemaRef,
    /// The Avro schema every writer schema is resolved against.
    reader: AvroSchema,
    /// The reader schema's id when it came from the registry.
    reader_id: Option<u32>,
}

impl AvroFormat {
    /// A format reading with the latest schema of `subject` (fetched now); rows have that
    /// schema converted to Arrow. Its encoders write with that same schema when given batches of
    /// [`Format::schema`], and register the batches' schema otherwise.
    ///
    /// ```no_run
    /// use sabot::kafka::format::{AvroFormat, Format};
    /// use sabot::kafka::registry::SchemaRegistry;
    ///
    /// let format = AvroFormat::with_registry(SchemaRegistry::new("http://localhost:8081"), "orders-value")?;
    /// assert_eq!(format.name(), "avro");
    /// assert!(!format.schema().fields().is_empty());
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_registry(registry: SchemaRegistry, subject: impl Into<String>) -> Result<AvroFormat> {
        let subject = subject.into();
        let (id, json) = registry.latest(&subject)?;
        let reader = AvroSchema::new(json);
        let schema = resolved_schema(&reader, id, &reader).map_err(|e| {
            SabotError::plan(format!(
                "schema registry {}: subject '{subject}', schema id {id}: cannot read this Avro schema as Arrow: {e}",
                registry.shown_url()
            ))
        })?;
        tracing::debug!(subject = %subject, id, "Avro format reads with the subject's latest schema");
        Ok(AvroFormat { registry, subject, schema, reader, reader_id: Some(id) })
    }

    /// A format for rows of `schema`: encoders register `schema` converted to Avro under
    /// `subject` when they open (the registry keeps one id per distinct schema), and decoders
    /// read any registered writer schema that resolves to it. Errors if the schema has a type
    /// Avro cannot hold. An Avro schema in the schema's metadata under `avro.schema` is used
    /// as is.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::kafka::format::AvroFormat;
    /// use sabot::kafka::registry::SchemaRegistry;
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("id", DataType::Int64, false),
    ///     Field::new("note", DataType::Utf8, true),
    /// ]));
    /// let format = AvroFormat::new(SchemaRegistry::new("http://localhost:8081"), schema, "orders-value")?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn new(registry: SchemaRegistry, schema: SchemaRef, subject: impl Into<String>) -> Result<AvroFormat> {
        let subject = subject.into();
        let unusable = |message: String| SabotError::plan(format!("Avro format for subject '{subject}': {message}"));
        let reader = AvroSchema::try_from(schema.as_ref())
            .map_err(|e| unusable(format!("cannot convert the Arrow schema to Avro: {e}")))?;
        let decoded = resolved_schema(&reader, 0, &reader)
            .map_err(|e| unusable(format!("cannot read the Avro schema {} back: {e}", reader.json_string)))?;
        if decoded.fields().len() != schema.fields().len() {
            return Err(unusable(format!(
                "the Avro schema has {} fields, the Arrow schema {}",
                decoded.fields().len(),
                schema.fields().len()
            )));
        }
        for (avro, arrow) in decoded.fields().iter().zip(schema.fields()) {
            if avro.name() != arrow.name() || !can_cast_types(avro.data_type(), arrow.data_type()) {
                return Err(unusable(format!(
                    "column '{}' ({}) is read from Avro as '{}' ({}), which cannot become it",
                    arrow.name(),
                    arrow.data_type(),
                    avro.name(),
                    avro.data_type()
                )));
            }
        }
        Ok(AvroFormat { registry, subject, schema, reader, reader_id: None })
    }
}

impl fmt::Debug for AvroFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvroFormat")
            .field("registry", &self.registry)
            .field("subject", &self.subject)
            .field("reader_schema_id", &self.reader_id)
            .field("columns", &self.schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>())
            .finish()
    }
}

impl Format for AvroFormat {
    fn name(&self) -> &'static str {
        "avro"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn decoder(&self) -> Result<Box<dyn Decoder>> {
        Ok(Box::new(AvroDecoder {
            format: self.clone(),
            store: SchemaStore::new_with_type(FingerprintAlgorithm::Id),
            unusable: HashMap::new(),
            missing: HashMap::new(),
            reader: None,
        }))
    }

    fn encoder(&self, schema: SchemaRef) -> Result<Box<dyn Encoder>> {
        let subject = &self.subject;
        let (json, known_id) = match (schema.metadata().get(SCHEMA_METADATA_KEY), self.reader_id) {
            (Some(json), _) => (json.clone(), None),
            (None, Some(id)) if same_columns(&schema, &self.schema) => (self.reader.json_string.clone(), Some(id)),
            (None, _) => {
                let avro = AvroSchema::try_from(schema.as_ref()).map_err(|e| {
                    SabotError::plan(format!(
                        "Avro encoder for subject '{subject}': cannot convert the Arrow schema to Avro: {e}"
                    ))
                })?;
                (avro.json_string, None)
            }
        };
        let id = match known_id {
            Some(id) => id,
            None => self.registry.register(subject, &json)?,
        };
        let mut metadata = schema.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_string(), json);
        let writer_schema = Schema::new_with_metadata(schema.fields().clone(), metadata);
        let writer = WriterBuilder::new(writer_schema.clone())
            .with_fingerprint_strategy(FingerprintStrategy::Id(id))
            .build_encoder::<AvroSoeFormat>()
            .map_err(|e| {
                SabotError::plan(format!(
                    "Avro encoder for subject '{subject}', schema id {id}: cannot write this Arrow schema: {e}"
                ))
            })?;
        Ok(Box::new(AvroEncoder { writer, schema: Arc::new(writer_schema), id, subject: subject.clone() }))
    }
}

/// Whether two schemas have the same column names and types (metadata aside).
fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
}

/// The Arrow schema of rows written with `writer` (registered as `id`) and read as `reader`;
/// an error if arrow-avro cannot resolve one against the other.
fn resolved_schema(writer: &AvroSchema, id: u32, reader: &AvroSchema) -> std::result::Result<SchemaRef, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(id), writer.clone()).map_err(|e| e.to_string())?;
    let decoder = ReaderBuilder::new()
        .with_reader_schema(reader.clone())
        .with_writer_schema_store(store)
        .with_active_fingerprint(Fingerprint::Id(id))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    Ok(decoder.schema())
}

/// The schema id of a Confluent-framed payload, or why it is not one.
fn framed_schema_id(payload: &[u8]) -> std::result::Result<u32, String> {
    match payload {
        [] => Err("empty payload (not Confluent framed)".to_string()),
        [magic, ..] if *magic != MAGIC => {
            Err(format!("not Confluent framed: magic byte 0x{magic:02x} (expected 0x{MAGIC:02x})"))
        }
        [_, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(format!(
            "not Confluent framed: {} bytes, shorter than the {HEADER_LEN}-byte header (magic byte and schema id)",
            payload.len()
        )),
    }
}

/// How a run of payloads through the Avro decoder ended.
enum RunEnd {
    /// Every payload became one row, and the rows were flushed.
    Done,
    /// The payload at this position of the run could not be decoded (the reason); the decoder
    /// must be rebuilt and the rows before it decoded again.
    Failed { pos: usize, reason: String },
    /// Turning decoded rows into Arrow arrays failed, so the payload to blame is unknown.
    FlushFailed(String),
}

/// Decodes Confluent-framed Avro payloads; one per source instance.
///
/// Writer schemas are fetched from the registry by id the first time a payload names them and
/// kept in a `SchemaStore`, from which arrow-avro's streaming decoder is built (it is rebuilt
/// when a new writer schema arrives, or after a payload failed and left it mid-record).
struct AvroDecoder {
    format: AvroFormat,
    /// Writer schemas that resolve to the reader schema, by id.
    store: SchemaStore,
    /// Writer schemas that do not resolve (or are not Avro), with the reason.
    unusable: HashMap<u32, String>,
    /// Ids the registry said it does not have, and when it said so.
    missing: HashMap<u32, Instant>,
    /// arrow-avro's decoder over `store`, and the id whose schema it has active.
    reader: Option<(AvroReader, u32)>,
}

impl Decoder for AvroDecoder {
    fn decode(&mut self, payloads: &[&[u8]]) -> Result<Decoded> {
        let mut rejected = Vec::new();
        let mut framed = Vec::with_capacity(payloads.len());
        for (index, payload) in payloads.iter().enumerate() {
            match framed_schema_id(payload) {
                Ok(id) => framed.push((index, id)),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        for &(_, id) in &framed {
            self.learn_schema(id)?;
        }
        let mut good = Vec::with_capacity(framed.len());
        for (index, id) in framed {
            match self.unreadable_reason(id) {
                Some(reason) => rejected.push(Rejected { index, reason }),
                None => good.push((index, id)),
            }
        }
        let batches = self.decode_good(payloads, &mut good, &mut rejected)?;
        rejected.sort_by_key(|r| r.index);

        let schema = &self.format.schema;
        let batches = batches.into_iter().map(|b| conform(b, schema)).collect::<Result<Vec<_>>>()?;
        let batch = concat_batches(schema, &batches)?;
        if batch.num_rows() != good.len() {
            return Err(SabotError::Execution(format!(
                "Avro decoder for subject '{}': {} payloads were accepted but {} rows decoded",
                self.format.subject,
                good.len(),
                batch.num_rows()
            )));
        }
        Ok(Decoded { batch, rows_per_payload: vec![1; good.len()], rejected })
    }
}

impl AvroDecoder {
    /// Makes sure the schema of `id` is known: fetched, and found readable or not. Errors only
    /// when the registry cannot be asked.
    fn learn_schema(&mut self, id: u32) -> Result<()> {
        let known = self.store.lookup(&Fingerprint::Id(id)).is_some() || self.unusable.contains_key(&id);
        let recently_missing = self.missing.get(&id).is_some_and(|at| at.elapsed() < MISSING_ID_RETRY);
        if known || recently_missing {
            return Ok(());
        }
        let registry = &self.format.registry;
        let Some(json) = registry.find_schema_by_id(id)? else {
            let subject = &self.format.subject;
            let registry = registry.shown_url();
            tracing::warn!(registry, id, %subject, "messages name a schema id the registry does not have");
            self.missing.insert(id, Instant::now());
            return Ok(());
        };
        self.missing.remove(&id);
        let writer = AvroSchema::new(json);
        if let Err(e) = resolved_schema(&writer, id, &self.format.reader) {
            let subject = &self.format.subject;
            tracing::warn!(id, %subject, error = %e, "writer schema cannot be read as the reader schema");
            let reason =
                format!("schema id {id} cannot be read as the schema of subject '{}': {e}", self.format.subject);
            self.unusable.insert(id, reason);
            return Ok(());
        }
        self.store.set(Fingerprint::Id(id), writer).map_err(|e| {
            SabotError::Execution(format!("Avro decoder for subject '{}': schema id {id}: {e}", self.format.subject))
        })?;
        // The arrow-avro decoder knows only the schemas it was built with.
        self.reader = None;
        Ok(())
    }

    /// Why payloads written with schema `id` cannot be decoded, if they cannot.
    fn unreadable_reason(&self, id: u32) -> Option<String> {
        if self.store.lookup(&Fingerprint::Id(id)).is_some() {
            return None;
        }
        Some(match self.unusable.get(&id) {
            Some(reason) => reason.clone(),
            None => format!("unknown schema id {id}: the schema registry does not have it"),
        })
    }

    /// Decodes the framed payloads `good` (index, schema id) into batches. All in one pass when
    /// they all decode; when one fails, the decoder is rebuilt, the payload is rejected (and
    /// removed from `good`), the payloads before it are decoded again and decoding goes on after
    /// it — so every payload is decoded at most twice, and the output is few batches.
    fn decode_good(
        &mut self,
        payloads: &[&[u8]],
        good: &mut Vec<(usize, u32)>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        let mut start = 0;
        // When set, `good[start..end]` is known to decode (the payload after it was rejected).
        let mut known_good_end = None;
        // After a failed flush: one batch per payload, so a failure names its payload.
        let mut one_by_one = false;
        while start < good.len() {
            let end = known_good_end.unwrap_or(good.len());
            let mark = batches.len();
            match self.decode_run(payloads, &good[start..end], one_by_one, &mut batches)? {
                RunEnd::Done => {
                    start = end;
                    known_good_end = None;
                }
                RunEnd::Failed { pos, reason } => {
                    batches.truncate(mark);
                    self.reader = None;
                    let (index, _) = good.remove(start + pos);
                    tracing::debug!(index, %reason, "Avro payload rejected");
                    rejected.push(Rejected { index, reason });
                    known_good_end = Some(start + pos);
                }
                RunEnd::FlushFailed(error) => {
                    batches.truncate(mark);
                    self.reader = None;
                    tracing::debug!(%error, "Avro rows could not become Arrow arrays; decoding payload by payload");
                    one_by_one = true;
                }
            }
        }
        Ok(batches)
    }

    /// Feeds `run` to the arrow-avro decoder, checking that each payload is exactly one record.
    /// Stops at the first payload that is not.
    fn decode_run(
        &mut self,
        payloads: &[&[u8]],
        run: &[(usize, u32)],
        one_by_one: bool,
        out: &mut Vec<RecordBatch>,
    ) -> Result<RunEnd> {
        if run.is_empty() {
            return Ok(RunEnd::Done);
        }
        let (reader, active) = self.reader()?;
        for (pos, &(index, id)) in run.iter().enumerate() {
            let payload = payloads[index];
            // Flush before a payload of another writer schema, so arrow-avro switches schemas at
            // once instead of stopping mid-payload to ask for a flush.
            if reader.batch_is_full() || (*active != id && !reader.batch_is_empty()) {
                match reader.flush() {
                    Ok(batch) => out.extend(batch),
                    Err(e) => return Ok(RunEnd::FlushFailed(e.to_string())),
                }
            }
            *active = id;
            let capacity = reader.capacity();
            let result = reader.decode(payload);
            let rows = capacity.saturating_sub(reader.capacity());
            let reason = match result {
                Ok(consumed) if consumed == payload.len() && rows == 1 => None,
                Ok(_) if rows == 0 => Some(format!(
                    "truncated Avro record: the payload ({} bytes) ends inside the record (schema id {id})",
                    payload.len()
                )),
                Err(e) if rows == 0 => Some(format!("invalid Avro record for schema id {id}: {e}")),
                // A whole record and then more: arrow-avro took the rest for another message.
                Ok(_) | Err(_) => Some(format!("unexpected bytes after the end of the Avro record (schema id {id})")),
            };
            if let Some(reason) = reason {
                return Ok(RunEnd::Failed { pos, reason });
            }
            if one_by_one {
                match reader.flush() {
                    Ok(batch) => out.extend(batch),
                    Err(e) => {
                        let reason = format!("the Avro record (schema id {id}) cannot become Arrow arrays: {e}");
                        return Ok(RunEnd::Failed { pos, reason });
                    }
                }
            }
        }
        match reader.flush() {
            Ok(batch) => out.extend(batch),
            Err(e) => return Ok(RunEnd::FlushFailed(e.to_string())),
        }
        Ok(RunEnd::Done)
    }

    /// arrow-avro's decoder over every known writer schema, built if needed.
    fn reader(&mut self) -> Result<(&mut AvroReader, &mut u32)> {
        if self.reader.is_none() {
            let subject = &self.format.subject;
            let Some(Fingerprint::Id(first)) = self.store.fingerprints().first().copied() else {
                return Err(SabotError::Execution(format!(
                    "Avro decoder for subject '{subject}': no writer schema to decode with"
                )));
            };
            let reader = ReaderBuilder::new()
                .with_reader_schema(self.format.reader.clone())
                .with_writer_schema_store(self.store.clone())
                .with_active_fingerprint(Fingerprint::Id(first))
                .with_batch_size(DECODE_BATCH_ROWS)
                .build_decoder()
                .map_err(|e| SabotError::Execution(format!("Avro decoder for subject '{subject}': {e}")))?;
            self.reader = Some((reader, first));
        }
        match &mut self.reader {
            Some((reader, active)) => Ok((reader, active)),
            None => Err(SabotError::Execution("Avro decoder was not built".to_string())),
        }
    }
}

/// Gives a decoded batch the format's schema: the same columns, cast where arrow-avro reads a
/// type differently from the Arrow schema the format was made with (e.g. `Int8` is an Avro
/// `int`, read back as `Int32`).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(SabotError::Execution(format!(
            "Avro decoder: decoded {} columns, the schema has {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns =
        batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    cast(column, field.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Encodes rows as Confluent-framed Avro messages; one per sink instance.
struct AvroEncoder {
    writer: AvroWriter,
    /// The Arrow schema the writer was built for (with the Avro schema in its metadata).
    schema: SchemaRef,
    id: u32,
    subject: String,
}

impl Encoder for AvroEncoder {
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Encoded>> {
        let failed = |message: String| {
            SabotError::Execution(format!(
                "Avro encoder for subject '{}', schema id {}: {message}",
                self.subject, self.id
            ))
        };
        // arrow-avro insists on identical fields; batches may differ in metadata only.
        let rebuilt;
        let batch = if batch.schema().fields() == self.schema.fields() {
            batch
        } else {
            rebuilt = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
                .map_err(|e| failed(format!("batch does not match the encoder's schema: {e}")))?;
            &rebuilt
        };
        if let Err(e) = self.writer.encode(batch) {
            // Drop whatever rows were encoded before the failure.
            self.writer.flush();
            return Err(failed(e.to_string()));
        }
        let rows = self.writer.flush();
        if rows.len() != batch.num_rows() {
            return Err(failed(format!("{} rows became {} messages", batch.num_rows(), rows.len())));
        }
        Ok(rows.iter().enumerate().map(|(row, payload)| Encoded::row(payload.to_vec(), row)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_checked() {
        assert_eq!(framed_schema_id(&[0, 0, 0, 1, 2, 9]), Ok(258));
        assert_eq!(framed_schema_id(&[0, 0, 0, 0, 7]), Ok(7));
        assert!(framed_schema_id(b"{\"a\":1}").unwrap_err().contains("magic byte 0x7b"));
        assert!(framed_schema_id(&[0, 1]).unwrap_err().contains("2 bytes"));
        assert!(framed_schema_id(&[]).unwrap_err().contains("empty"));
    }
}
