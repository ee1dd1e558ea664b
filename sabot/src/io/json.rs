//! Newline-delimited JSON files: [`JsonLinesSource`] and [`JsonLinesSink`].
//!
//! Each line holds one JSON object; blank lines are skipped. Like CSV scans, a scan
//! memory-maps the file and cuts it into byte ranges of about 8 MiB aligned to line starts,
//! parsed in parallel with Arrow's JSON decoder straight from the mapping. A line that is not
//! valid JSON, or whose values do not fit the schema, is a [`SabotError::Format`] naming the
//! file and the line (and the field, when Arrow reports it).

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::io::csv::{
    DEFAULT_BATCH_SIZE, DEFAULT_MORSEL_BYTES, PendingFile, Problem, RowDecoder, TextFormat, TextScan, arrow_message,
    map_file, split_at_lines,
};
use crate::io::memory::project_schema;
use crate::io::{Scan, ScanRequest, Sink, SinkWriter, Source};
use crate::{Result, SabotError};

struct JsonFormat {
    output: SchemaRef,
}

struct JsonDecoder {
    decoder: arrow::json::reader::Decoder,
    batch_size: usize,
}

impl RowDecoder for JsonDecoder {
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, ArrowError> {
        self.decoder.decode(buf)
    }
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, ArrowError> {
        self.decoder.flush()
    }
    fn is_full(&self) -> bool {
        self.decoder.len() >= self.batch_size && !self.decoder.has_partial_record()
    }
}

/// The field named in an Arrow JSON error ("whilst decoding field 'x': ..."), if any.
fn error_field(message: &str) -> Option<(String, String)> {
    let marker = "whilst decoding field '";
    let start = message.find(marker)? + marker.len();
    let len = message[start..].find('\'')?;
    let field = message[start..start + len].to_string();
    let rest = message[start + len + 1..].trim_start_matches(':').trim().to_string();
    Some((field, rest))
}

impl TextFormat for JsonFormat {
    type Decoder = JsonDecoder;

    fn decoder(&self, batch_size: usize) -> std::result::Result<JsonDecoder, ArrowError> {
        let decoder =
            arrow::json::ReaderBuilder::new(self.output.clone()).with_batch_size(batch_size).build_decoder()?;
        Ok(JsonDecoder { decoder, batch_size })
    }

    fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    fn record_end(&self, data: &[u8], start: usize, end: usize) -> (usize, usize) {
        match memchr::memchr(b'\n', &data[start..end]) {
            Some(i) => {
                let nl = start + i;
                let content_end = if nl > start && data[nl - 1] == b'\r' { nl - 1 } else { nl };
                (content_end, nl + 1)
            }
            None => (end, end),
        }
    }

    fn is_blank(&self, content: &[u8]) -> bool {
        content.iter().all(u8::is_ascii_whitespace)
    }

    fn precheck(&self, _content: &[u8]) -> Option<Problem> {
        None
    }

    fn diagnose(&self, _record: &[u8], error: &ArrowError) -> Problem {
        let message = arrow_message(error);
        match error_field(&message) {
            Some((field, rest)) => Problem { column: Some(field), message: rest },
            None => Problem { column: None, message },
        }
    }
}

/// A newline-delimited JSON file (one object per line), read in parallel from a memory mapping.
///
/// ```
/// use sabot::io::{Source, ScanRequest};
/// use sabot::io::json::JsonLinesSource;
///
/// let path = std::env::temp_dir().join(format!("sabot-doc-json-{}.jsonl", std::process::id()));
/// std::fs::write(&path, "{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": null}\n").unwrap();
/// let source = JsonLinesSource::new(&path);
/// assert_eq!(source.try_schema().unwrap().field(0).name(), "id");
/// let scan = source.scan(&ScanRequest { batch_size: 1024, ..Default::default() }).unwrap();
/// let batch = scan.read_morsel(0).unwrap().next().unwrap().unwrap();
/// assert_eq!(batch.num_rows(), 2);
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct JsonLinesSource {
    path: PathBuf,
    schema: Option<SchemaRef>,
    infer_rows: usize,
    morsel_bytes: usize,
    rejects: Option<PathBuf>,
    inferred: OnceLock<SchemaRef>,
}

impl JsonLinesSource {
    /// A JSON-lines file whose schema is inferred from the first 1000 lines unless given with
    /// [`Self::schema`]. The file is opened lazily; use [`Self::try_schema`] to check it early.
    ///
    /// ```
    /// use sabot::io::json::JsonLinesSource;
    /// let source = JsonLinesSource::new("events.jsonl");
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesSource {
            path: path.into(),
            schema: None,
            infer_rows: 1000,
            morsel_bytes: DEFAULT_MORSEL_BYTES,
            rejects: None,
            inferred: OnceLock::new(),
        }
    }

    /// The schema of the records (skips inference). Fields absent from a line are null;
    /// keys not in the schema are ignored.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::io::json::JsonLinesSource;
    /// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    /// let source = JsonLinesSource::new("events.jsonl").with_schema(schema);
    /// ```
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self.inferred = OnceLock::new();
        self
    }

    /// How many lines schema inference reads (default 1000).
    ///
    /// ```
    /// use sabot::io::json::JsonLinesSource;
    /// let source = JsonLinesSource::new("events.jsonl").infer_rows(10_000);
    /// ```
    pub fn infer_rows(mut self, rows: usize) -> Self {
        self.infer_rows = rows.max(1);
        self.inferred = OnceLock::new();
        self
    }

    /// The approximate size of a morsel in bytes (default 8 MiB).
    ///
    /// ```
    /// use sabot::io::json::JsonLinesSource;
    /// let source = JsonLinesSource::new("events.jsonl").morsel_bytes(1 << 20);
    /// ```
    pub fn morsel_bytes(mut self, bytes: usize) -> Self {
        self.morsel_bytes = bytes.max(1);
        self
    }

    /// Sends bad lines to a CSV file at `path` (columns `line,reason,record`) instead of
    /// failing; see [`crate::io::csv::CsvSource::rejects`].
    ///
    /// ```
    /// use sabot::io::json::JsonLinesSource;
    /// let source = JsonLinesSource::new("events.jsonl").rejects("events.rejects.csv");
    /// ```
    pub fn rejects(mut self, path: impl Into<PathBuf>) -> Self {
        self.rejects = Some(path.into());
        self
    }

    /// The schema, inferring it if needed; reports a missing file or bad JSON as an error.
    ///
    /// ```
    /// use sabot::io::json::JsonLinesSource;
    /// let err = JsonLinesSource::new("/nonexistent/e.jsonl").try_schema().unwrap_err();
    /// assert!(err.to_string().starts_with("/nonexistent/e.jsonl"));
    /// ```
    pub fn try_schema(&self) -> Result<SchemaRef> {
        if let Some(schema) = &self.schema {
            return Ok(schema.clone());
        }
        if let Some(schema) = self.inferred.get() {
            return Ok(schema.clone());
        }
        let data = map_file(&self.path)?;
        let schema = infer(&self.path, &data, self.infer_rows)?;
        Ok(self.inferred.get_or_init(|| schema).clone())
    }
}

/// Infers the schema from the first `rows` non-blank lines; a bad line is reported by number.
fn infer(path: &Path, data: &[u8], rows: usize) -> Result<SchemaRef> {
    match arrow::json::reader::infer_json_schema(Cursor::new(data), Some(rows)) {
        Ok((schema, _)) => Ok(Arc::new(schema)),
        Err(error) => {
            // Find the offending line for a precise message.
            let mut seen = 0;
            for (i, line) in data.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Err(e) = arrow::json::reader::infer_json_schema(Cursor::new(line), Some(1)) {
                    return Err(SabotError::format(
                        path,
                        Some(format!("line {}", i + 1)),
                        format!("cannot infer the schema: {}", arrow_message(&e)),
                    ));
                }
                seen += 1;
                if seen >= rows {
                    break;
                }
            }
            Err(SabotError::format(path, None, format!("cannot infer the schema: {}", arrow_message(&error))))
        }
    }
}

impl fmt::Debug for JsonLinesSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSource").field("path", &self.path).field("rejects", &self.rejects).finish()
    }
}

impl Source for JsonLinesSource {
    fn name(&self) -> &'static str {
        "json"
    }

    /// The schema; if it must be inferred and the file cannot be read, an empty schema (the
    /// error is reported by [`Source::scan`] and [`JsonLinesSource::try_schema`]).
    fn schema(&self) -> SchemaRef {
        match self.try_schema() {
            Ok(schema) => schema,
            Err(e) => {
                tracing::warn!("{e}");
                Arc::new(Schema::empty())
            }
        }
    }

    fn describe(&self) -> String {
        format!("json: {}", self.path.display())
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        let data = map_file(&self.path)?;
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => match self.inferred.get() {
                Some(s) => s.clone(),
                None => {
                    let s = infer(&self.path, &data, self.infer_rows)?;
                    self.inferred.get_or_init(|| s).clone()
                }
            },
        };
        let output = project_schema(&schema, request.projection.as_deref())?;
        let format = JsonFormat { output };
        // Check that Arrow can decode this schema before any morsel runs.
        format.decoder(1).map_err(|e| SabotError::format(&self.path, None, arrow_message(&e)))?;
        let start = if data.starts_with(&[0xEF, 0xBB, 0xBF]) { 3 } else { 0 };
        let ranges = split_at_lines(&data, start, self.morsel_bytes);
        let rejects = self.rejects.as_deref().map(crate::io::csv::RejectsFile::create).transpose()?.map(Arc::new);
        Ok(Arc::new(TextScan {
            path: self.path.clone(),
            data,
            ranges,
            format: Arc::new(format),
            batch_size: if request.batch_size == 0 { DEFAULT_BATCH_SIZE } else { request.batch_size },
            rejects,
        }))
    }
}

/// Writes a result as newline-delimited JSON (one object per row; null fields are omitted).
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use sabot::io::Sink;
/// use sabot::io::json::JsonLinesSink;
///
/// let path = std::env::temp_dir().join(format!("sabot-doc-json-sink-{}.jsonl", std::process::id()));
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![Some(1), None]))]).unwrap();
/// let mut writer = JsonLinesSink::new(&path).open(schema).unwrap();
/// writer.write(&batch).unwrap();
/// writer.finish().unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"x\":1}\n{}\n");
/// std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct JsonLinesSink {
    path: PathBuf,
}

impl JsonLinesSink {
    /// A sink writing `path`.
    ///
    /// ```
    /// use sabot::io::json::JsonLinesSink;
    /// let sink = JsonLinesSink::new("out.jsonl");
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesSink { path: path.into() }
    }
}

impl Sink for JsonLinesSink {
    fn describe(&self) -> String {
        format!("json: {}", self.path.display())
    }

    fn open(&self, _schema: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        let (file, pending) = PendingFile::create(&self.path)?;
        let writer = arrow::json::LineDelimitedWriter::new(BufWriter::with_capacity(1 << 20, file));
        Ok(Box::new(JsonSinkWriter { writer, pending }))
    }
}

struct JsonSinkWriter {
    writer: arrow::json::LineDelimitedWriter<BufWriter<File>>,
    pending: PendingFile,
}

fn write_error(path: &Path, e: ArrowError) -> SabotError {
    match e {
        ArrowError::IoError(_, io) => SabotError::io(path, io),
        other => SabotError::format(path, None, arrow_message(&other)),
    }
}

impl SinkWriter for JsonSinkWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|e| write_error(self.pending.path(), e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let JsonSinkWriter { mut writer, pending } = *self;
        writer.finish().map_err(|e| write_error(pending.path(), e))?;
        let file = writer.into_inner().into_inner().map_err(|e| SabotError::io(pending.path(), e.into_error()))?;
        pending.commit(file)
    }
}
