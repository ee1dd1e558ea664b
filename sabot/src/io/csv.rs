//! CSV files: [`CsvSource`] (parallel, memory-mapped, with precise errors and a rejects mode)
//! and [`CsvSink`].
//!
//! # How a CSV scan works
//!
//! The file is memory-mapped and cut into byte ranges of about 8 MiB, each starting at the
//! beginning of a line (the first byte after a `\n`); these ranges are the morsels. Every
//! morsel is parsed straight from the mapping by Arrow's CSV decoder into batches, so the
//! data is never copied into an intermediate buffer.
//!
//! Cutting at newlines assumes that quoted values contain no newline. If they may, call
//! [`CsvSource::newlines_in_values`]: the file is then read as a single morsel (correct, but
//! not parallel).
//!
//! # Errors and rejects
//!
//! A row with the wrong number of fields or a value that does not parse as its column's
//! type is a [`SabotError::Format`] naming the file, the line (1-based, counting the header)
//! and the column, e.g. `data.csv: line 17, column 'amount': cannot parse 'abc' as Int64`.
//! Line numbers are computed only when an error occurs, so they cost nothing otherwise.
//!
//! With [`CsvSource::rejects`], such rows are instead appended to a rejects file (a CSV file
//! with the columns `line,reason,record`) and reading goes on. Rows are validated for the
//! columns the query reads (a value in a column that no query reads is not parsed).

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::RecordBatch;
use arrow::csv::reader::Format;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use bytes::Bytes;

use crate::io::memory::project_schema;
use crate::io::{BatchIter, Scan, ScanRequest, Sink, SinkWriter, Source};
use crate::{Result, SabotError};

/// Default morsel size of text scans, in bytes.
pub(crate) const DEFAULT_MORSEL_BYTES: usize = 8 << 20;
/// Default number of rows per batch when the request does not say.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 8192;

// ---------------------------------------------------------------------------------------------
// Shared file helpers (also used by the Parquet, IPC and JSON modules)
// ---------------------------------------------------------------------------------------------

/// Memory-maps `path` read-only (an empty file maps to empty bytes).
///
/// The mapping stays valid while any clone of the returned `Bytes` (or any Arrow buffer made
/// from it) is alive. Like every memory-mapped reader, it assumes the file is not modified
/// while it is being read.
pub(crate) fn map_file(path: &Path) -> Result<Bytes> {
    let file = File::open(path).map_err(|e| SabotError::io(path, e))?;
    let meta = file.metadata().map_err(|e| SabotError::io(path, e))?;
    if meta.is_dir() {
        return Err(SabotError::io(path, std::io::Error::other("is a directory")));
    }
    if meta.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only; modifying the file while it is mapped is documented as
    // unsupported (as for every mmap-based reader).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| SabotError::io(path, e))?;
    #[cfg(unix)]
    {
        let _ = map.advise(memmap2::Advice::WillNeed);
    }
    Ok(Bytes::from_owner(map))
}

/// A file being written under a temporary name, renamed to its final name by [`Self::commit`]
/// and deleted if dropped before that.
pub(crate) struct PendingFile {
    path: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl PendingFile {
    /// Creates the temporary file next to `path`.
    pub(crate) fn create(path: &Path) -> Result<(File, PendingFile)> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.sabot-{}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(|e| SabotError::io(path, e))?;
        Ok((file, PendingFile { path: path.to_path_buf(), tmp, committed: false }))
    }

    /// The final path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Closes `file` (already flushed) and moves it to the final path.
    pub(crate) fn commit(mut self, file: File) -> Result<()> {
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| SabotError::io(&self.path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Byte ranges of `data[start..]`, each about `target` bytes, each starting at a line start.
pub(crate) fn split_at_lines(data: &[u8], start: usize, target: usize) -> Vec<(usize, usize)> {
    let end = data.len();
    let target = target.max(1);
    let mut ranges = Vec::new();
    let mut pos = start;
    while pos < end {
        let mut next = pos.saturating_add(target);
        if next >= end {
            next = end;
        } else {
            // First line start at or after `next`: just after the first newline at `next - 1` or later.
            next = match memchr::memchr(b'\n', &data[next - 1..]) {
                Some(i) => next - 1 + i + 1,
                None => end,
            };
        }
        ranges.push((pos, next));
        pos = next;
    }
    ranges
}

/// Counts `\n` bytes.
fn count_newlines(data: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', data).count()
}

/// Maps byte offsets of a file to 1-based line numbers, counting newlines incrementally.
struct LineCursor {
    offset: usize,
    line: usize,
}

impl LineCursor {
    fn new() -> Self {
        LineCursor { offset: 0, line: 1 }
    }

    fn line_at(&mut self, data: &[u8], offset: usize) -> usize {
        if offset < self.offset {
            *self = LineCursor::new();
        }
        self.line += count_newlines(&data[self.offset..offset]);
        self.offset = offset;
        self.line
    }
}

/// Quotes a field for a CSV file if needed.
fn csv_field(out: &mut Vec<u8>, value: &[u8]) {
    if value.iter().any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.push(b'"');
        for &b in value {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(value);
    }
}

/// Shortens a value for an error message.
fn shorten(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        value.to_string()
    } else {
        let s: String = value.chars().take(MAX).collect();
        format!("{s}…")
    }
}

/// Strips Arrow's error-kind prefixes ("Parser error: ", "Csv error: "...) from a message.
pub(crate) fn arrow_message(err: &ArrowError) -> String {
    match err {
        ArrowError::ParseError(m)
        | ArrowError::CsvError(m)
        | ArrowError::JsonError(m)
        | ArrowError::CastError(m)
        | ArrowError::SchemaError(m)
        | ArrowError::InvalidArgumentError(m)
        | ArrowError::IpcError(m)
        | ArrowError::ComputeError(m) => m.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The text-scan engine shared by CSV and JSON lines
// ---------------------------------------------------------------------------------------------

/// What is wrong with one record.
pub(crate) struct Problem {
    /// The column at fault, when known.
    pub(crate) column: Option<String>,
    /// What is wrong.
    pub(crate) message: String,
}

/// A push decoder of records into batches (Arrow's CSV and JSON decoders).
pub(crate) trait RowDecoder: Send {
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, ArrowError>;
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, ArrowError>;
    fn is_full(&self) -> bool;
}

/// A line-oriented text format.
pub(crate) trait TextFormat: Send + Sync + 'static {
    type Decoder: RowDecoder;
    /// A decoder yielding batches of at most `batch_size` rows of [`Self::output_schema`].
    fn decoder(&self, batch_size: usize) -> std::result::Result<Self::Decoder, ArrowError>;
    /// The schema of the decoded batches.
    fn output_schema(&self) -> &SchemaRef;
    /// The end of the record starting at `start`: `(content_end, next_record_start)`.
    fn record_end(&self, data: &[u8], start: usize, end: usize) -> (usize, usize);
    /// Whether the record content is a blank line (skipped by the decoder).
    fn is_blank(&self, content: &[u8]) -> bool;
    /// Cheap checks done before decoding a suspicious record (field count...).
    fn precheck(&self, content: &[u8]) -> Option<Problem>;
    /// Explains why `record` (content and terminator) failed to decode with `error`.
    fn diagnose(&self, record: &[u8], error: &ArrowError) -> Problem;
    /// A hint appended to problems in files split at newlines (if any).
    fn hint(&self, _content: &[u8], _problem: &Problem) -> Option<&'static str> {
        None
    }
}

/// The rejects file of a scan.
pub(crate) struct RejectsFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl RejectsFile {
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let mut file = File::create(path).map_err(|e| SabotError::io(path, e))?;
        file.write_all(b"line,reason,record\n").map_err(|e| SabotError::io(path, e))?;
        Ok(RejectsFile { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    fn append(&self, chunk: &[u8]) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(chunk).map_err(|e| SabotError::io(&self.path, e))
    }
}

/// A planned scan of a memory-mapped text file.
pub(crate) struct TextScan<F: TextFormat> {
    pub(crate) path: PathBuf,
    pub(crate) data: Bytes,
    pub(crate) ranges: Vec<(usize, usize)>,
    pub(crate) format: Arc<F>,
    pub(crate) batch_size: usize,
    pub(crate) rejects: Option<Arc<RejectsFile>>,
}

/// What a morsel iterator shares with its scan.
struct MorselContext<F> {
    path: PathBuf,
    data: Bytes,
    format: Arc<F>,
    batch_size: usize,
    rejects: Option<Arc<RejectsFile>>,
}

impl<F: TextFormat> Scan for TextScan<F> {
    fn schema(&self) -> SchemaRef {
        self.format.output_schema().clone()
    }

    fn morsel_count(&self) -> usize {
        self.ranges.len()
    }

    fn read_morsel(&self, index: usize) -> Result<BatchIter<'static>> {
        let &(start, end) = self.ranges.get(index).ok_or_else(|| {
            SabotError::Execution(format!("morsel {index} out of range (the scan has {} morsels)", self.ranges.len()))
        })?;
        Ok(Box::new(TextMorsel {
            scan: MorselContext {
                path: self.path.clone(),
                data: self.data.clone(),
                format: self.format.clone(),
                batch_size: self.batch_size,
                rejects: self.rejects.clone(),
            },
            pos: start,
            end,
            decoder: None,
            lines: LineCursor::new(),
            pending: VecDeque::new(),
            done: false,
        }))
    }
}

struct TextMorsel<F: TextFormat> {
    scan: MorselContext<F>,
    pos: usize,
    end: usize,
    decoder: Option<F::Decoder>,
    lines: LineCursor,
    pending: VecDeque<RecordBatch>,
    done: bool,
}

/// A record of the slow path: byte offsets of its start, content end and next record.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    content_end: usize,
    next: usize,
}

impl<F: TextFormat> TextMorsel<F> {
    /// Decodes the next batch quickly; on any error returns the offset where that batch began.
    fn fast(&mut self) -> std::result::Result<Option<RecordBatch>, usize> {
        let data = &self.scan.data[..];
        let batch_start = self.pos;
        let decoder = match &mut self.decoder {
            Some(d) => d,
            None => match self.scan.format.decoder(self.scan.batch_size) {
                Ok(d) => self.decoder.insert(d),
                Err(_) => return Err(batch_start),
            },
        };
        loop {
            match decoder.decode(&data[self.pos..self.end]) {
                Ok(n) => {
                    self.pos += n;
                    if n == 0 || decoder.is_full() {
                        break;
                    }
                }
                Err(_) => return Err(batch_start),
            }
        }
        match decoder.flush() {
            // A decoder that stops before the end without a batch would end the morsel early:
            // let the slow path (which always makes progress) handle those bytes.
            Ok(None) if self.pos < self.end => Err(batch_start),
            Ok(batch) => Ok(batch),
            Err(_) => Err(batch_start),
        }
    }

    /// Re-reads up to one batch of records from `batch_start` record by record (bisecting), to
    /// find the bad ones; they become an error or go to the rejects file.
    fn slow(&mut self, batch_start: usize) -> Result<()> {
        let data = self.scan.data.clone();
        let data = &data[..];
        let format = self.scan.format.clone();
        let format = format.as_ref();
        let batch_size = self.scan.batch_size;
        self.decoder = None;

        let mut runs: Vec<Vec<Span>> = vec![Vec::new()];
        let mut problems: Vec<(Span, Problem)> = Vec::new();
        let mut pos = batch_start;
        let mut count = 0;
        while pos < self.end && count < batch_size {
            let (content_end, next) = format.record_end(data, pos, self.end);
            let span = Span { start: pos, content_end, next };
            let content = &data[pos..content_end];
            pos = next;
            if format.is_blank(content) {
                continue;
            }
            count += 1;
            match format.precheck(content) {
                Some(problem) => {
                    problems.push((span, problem));
                    runs.push(Vec::new());
                }
                None => runs.last_mut().unwrap().push(span),
            }
        }
        self.pos = pos;

        let mut pieces = Vec::new();
        for run in runs.iter().filter(|r| !r.is_empty()) {
            self.bisect(run, &mut pieces, &mut problems);
        }
        problems.sort_by_key(|(span, _)| span.start);

        if !problems.is_empty() {
            match &self.scan.rejects {
                None => {
                    let (span, problem) = &problems[0];
                    let line = self.lines.line_at(data, span.start);
                    let mut message = problem.message.clone();
                    if let Some(hint) = format.hint(&data[span.start..span.content_end], problem) {
                        message.push_str(hint);
                    }
                    return Err(SabotError::format(&self.scan.path, Some(location(line, problem)), message));
                }
                Some(rejects) => {
                    let mut chunk = Vec::new();
                    for (span, problem) in &problems {
                        let line = self.lines.line_at(data, span.start);
                        chunk.extend_from_slice(line.to_string().as_bytes());
                        chunk.push(b',');
                        let reason = match &problem.column {
                            Some(c) => format!("column '{c}': {}", problem.message),
                            None => problem.message.clone(),
                        };
                        csv_field(&mut chunk, reason.as_bytes());
                        chunk.push(b',');
                        csv_field(&mut chunk, &data[span.start..span.content_end]);
                        chunk.push(b'\n');
                    }
                    rejects.append(&chunk)?;
                }
            }
        }
        match pieces.len() {
            0 => {}
            1 => self.pending.extend(pieces),
            _ => {
                let batch = arrow::compute::concat_batches(format.output_schema(), &pieces)?;
                self.pending.push_back(batch);
            }
        }
        Ok(())
    }

    /// Decodes consecutive records `run`; on failure splits it in halves until single bad
    /// records are isolated and diagnosed.
    fn bisect(&self, run: &[Span], pieces: &mut Vec<RecordBatch>, problems: &mut Vec<(Span, Problem)>) {
        let data = &self.scan.data[..];
        let bytes = &data[run[0].start..run[run.len() - 1].next];
        match decode_all(self.scan.format.as_ref(), bytes, run.len()) {
            Ok(batches) => pieces.extend(batches),
            Err(error) if run.len() == 1 => {
                let span = run[0];
                problems.push((span, self.scan.format.diagnose(&data[span.start..span.next], &error)));
            }
            Err(_) => {
                let mid = run.len() / 2;
                self.bisect(&run[..mid], pieces, problems);
                self.bisect(&run[mid..], pieces, problems);
            }
        }
    }
}

fn location(line: usize, problem: &Problem) -> String {
    match &problem.column {
        Some(c) => format!("line {line}, column '{c}'"),
        None => format!("line {line}"),
    }
}

/// Decodes all records of `bytes` (ending at a record boundary or the end of the file).
fn decode_all<F: TextFormat>(
    format: &F,
    bytes: &[u8],
    rows: usize,
) -> std::result::Result<Vec<RecordBatch>, ArrowError> {
    let mut decoder = format.decoder(rows.max(1))?;
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let n = decoder.decode(&bytes[pos..])?;
        pos += n;
        if n == 0 || decoder.is_full() {
            if let Some(batch) = decoder.flush()? {
                out.push(batch);
            }
            if n == 0 {
                return Ok(out);
            }
        }
    }
}

impl<F: TextFormat> Iterator for TextMorsel<F> {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some(Ok(batch));
            }
            if self.done {
                return None;
            }
            match self.fast() {
                Ok(Some(batch)) => return Some(Ok(batch)),
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(batch_start) => {
                    if let Err(e) = self.slow(batch_start) {
                        self.done = true;
                        return Some(Err(e));
                    }
                    if self.pos >= self.end && self.pending.is_empty() {
                        self.done = true;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSV records
// ---------------------------------------------------------------------------------------------

/// Scans one CSV record from `start` (quote-aware, like the csv-core parser): returns
/// `(content_end, next_start)` and, if asked, the byte ranges of the fields.
fn scan_csv_record(
    data: &[u8],
    start: usize,
    end: usize,
    delimiter: u8,
    quote: u8,
    mut fields: Option<&mut Vec<(usize, usize)>>,
) -> (usize, usize) {
    let mut i = start;
    let mut field_start = start;
    let mut in_quotes = false;
    let mut at_field_start = true;
    while i < end {
        let b = data[i];
        if in_quotes {
            if b == quote {
                if i + 1 < end && data[i + 1] == quote {
                    i += 2;
                    continue;
                }
                in_quotes = false;
            }
            i += 1;
            continue;
        }
        if b == quote && at_field_start {
            in_quotes = true;
            at_field_start = false;
            i += 1;
            continue;
        }
        at_field_start = false;
        if b == delimiter {
            if let Some(f) = fields.as_deref_mut() {
                f.push((field_start, i));
            }
            field_start = i + 1;
            at_field_start = true;
        } else if b == b'\n' {
            let content_end = if i > start && data[i - 1] == b'\r' { i - 1 } else { i };
            if let Some(f) = fields.as_deref_mut() {
                f.push((field_start, content_end.max(field_start)));
            }
            return (content_end, i + 1);
        }
        i += 1;
    }
    let content_end = if end > start && data[end - 1] == b'\r' && !in_quotes { end - 1 } else { end };
    if let Some(f) = fields {
        f.push((field_start, content_end.max(field_start)));
    }
    (content_end, end)
}

/// The text of a raw CSV field, unquoted.
fn unquote(raw: &[u8], quote: u8) -> String {
    let s = String::from_utf8_lossy(raw);
    let q = quote as char;
    if raw.len() >= 2 && raw[0] == quote && raw[raw.len() - 1] == quote {
        s[1..s.len() - 1].replace(&format!("{q}{q}"), &q.to_string())
    } else {
        s.into_owned()
    }
}

struct CsvFormat {
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    output: SchemaRef,
    delimiter: u8,
    quote: u8,
    split: bool,
}

struct CsvDecoder(arrow::csv::reader::Decoder);

impl RowDecoder for CsvDecoder {
    fn decode(&mut self, buf: &[u8]) -> std::result::Result<usize, ArrowError> {
        self.0.decode(buf)
    }
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, ArrowError> {
        self.0.flush()
    }
    fn is_full(&self) -> bool {
        self.0.capacity() == 0
    }
}

impl CsvFormat {
    fn builder(&self, batch_size: usize) -> arrow::csv::ReaderBuilder {
        arrow::csv::ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote)
            .with_batch_size(batch_size)
    }
}

impl TextFormat for CsvFormat {
    type Decoder = CsvDecoder;

    fn decoder(&self, batch_size: usize) -> std::result::Result<CsvDecoder, ArrowError> {
        let mut builder = self.builder(batch_size);
        if let Some(p) = &self.projection {
            builder = builder.with_projection(p.clone());
        }
        Ok(CsvDecoder(builder.build_decoder()))
    }

    fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    fn record_end(&self, data: &[u8], start: usize, end: usize) -> (usize, usize) {
        scan_csv_record(data, start, end, self.delimiter, self.quote, None)
    }

    fn is_blank(&self, content: &[u8]) -> bool {
        content.is_empty()
    }

    fn precheck(&self, content: &[u8]) -> Option<Problem> {
        if let Err(e) = std::str::from_utf8(content) {
            return Some(Problem {
                column: None,
                message: format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            });
        }
        let mut fields = Vec::new();
        scan_csv_record(content, 0, content.len(), self.delimiter, self.quote, Some(&mut fields));
        let expected = self.schema.fields().len();
        (fields.len() != expected)
            .then(|| Problem { column: None, message: format!("expected {expected} fields, found {}", fields.len()) })
    }

    fn diagnose(&self, record: &[u8], error: &ArrowError) -> Problem {
        let mut fields = Vec::new();
        scan_csv_record(record, 0, record.len(), self.delimiter, self.quote, Some(&mut fields));
        let columns: Vec<usize> = match &self.projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        for c in columns {
            let mut decoder = self.builder(1).with_projection(vec![c]).build_decoder();
            let failed =
                decoder.decode(record).and_then(|_| decoder.decode(&[])).and_then(|_| decoder.flush()).is_err();
            if failed {
                let field = self.schema.field(c);
                let value = fields.get(c).map(|&(s, e)| unquote(&record[s..e], self.quote)).unwrap_or_default();
                return Problem {
                    column: Some(field.name().clone()),
                    message: format!("cannot parse '{}' as {}", shorten(&value), field.data_type()),
                };
            }
        }
        Problem { column: None, message: arrow_message(error) }
    }

    fn hint(&self, content: &[u8], problem: &Problem) -> Option<&'static str> {
        (self.split && problem.column.is_none() && content.contains(&self.quote))
            .then_some(" (if quoted values contain newlines, read the file with .newlines_in_values(true))")
    }
}

// ---------------------------------------------------------------------------------------------
// CsvSource
// ---------------------------------------------------------------------------------------------

/// A CSV file, read in parallel from a memory mapping (see the [module documentation](self)).
///
/// ```
/// use sabot::io::{Source, ScanRequest};
/// use sabot::io::csv::CsvSource;
///
/// let path = std::env::temp_dir().join(format!("sabot-doc-csv-{}.csv", std::process::id()));
/// std::fs::write(&path, "id,amount\n1,2.5\n2,7.0\n").unwrap();
/// let source = CsvSource::new(&path);
/// assert_eq!(source.try_schema().unwrap().field(1).name(), "amount");
/// let scan = source.scan(&ScanRequest { batch_size: 1024, ..Default::default() }).unwrap();
/// let rows: usize = (0..scan.morsel_count())
///     .flat_map(|m| scan.read_morsel(m).unwrap())
///     .map(|b| b.unwrap().num_rows())
///     .sum();
/// assert_eq!(rows, 2);
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct CsvSource {
    path: PathBuf,
    has_header: bool,
    delimiter: u8,
    quote: u8,
    newlines_in_values: bool,
    infer_rows: usize,
    morsel_bytes: usize,
    schema: Option<SchemaRef>,
    rejects: Option<PathBuf>,
    inferred: OnceLock<SchemaRef>,
}

impl Clone for CsvSource {
    fn clone(&self) -> Self {
        CsvSource {
            path: self.path.clone(),
            has_header: self.has_header,
            delimiter: self.delimiter,
            quote: self.quote,
            newlines_in_values: self.newlines_in_values,
            infer_rows: self.infer_rows,
            morsel_bytes: self.morsel_bytes,
            schema: self.schema.clone(),
            rejects: self.rejects.clone(),
            inferred: self.inferred.clone(),
        }
    }
}

impl CsvSource {
    /// A CSV file with a header row, `,` as delimiter and `"` as quote; the schema is inferred
    /// from the first 1000 rows unless given with [`Self::schema`].
    ///
    /// The file is opened lazily; use [`Self::try_schema`] to check it early.
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let source = CsvSource::new("trades.csv").delimiter(b';').has_header(false);
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvSource {
            path: path.into(),
            has_header: true,
            delimiter: b',',
            quote: b'"',
            newlines_in_values: false,
            infer_rows: 1000,
            morsel_bytes: DEFAULT_MORSEL_BYTES,
            schema: None,
            rejects: None,
            inferred: OnceLock::new(),
        }
    }

    fn changed(mut self) -> Self {
        self.inferred = OnceLock::new();
        self
    }

    /// Whether the first line is a header (default `true`). Without a header, inferred columns
    /// are named `column_1`, `column_2`...
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let source = CsvSource::new("raw.csv").has_header(false);
    /// ```
    pub fn has_header(mut self, has_header: bool) -> Self {
        self.has_header = has_header;
        self.changed()
    }

    /// The field delimiter (default `b','`).
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let source = CsvSource::new("data.tsv").delimiter(b'\t');
    /// ```
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self.changed()
    }

    /// The quote character (default `b'"'`).
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let source = CsvSource::new("data.csv").quote(b'\'');
    /// ```
    pub fn quote(mut self, quote: u8) -> Self {
        self.quote = quote;
        self.changed()
    }

    /// The schema of the file (skips inference). With a header, the header row is skipped
    /// and its names are not checked.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::io::Source;
    /// use sabot::io::csv::CsvSource;
    /// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    /// let source = CsvSource::new("ids.csv").with_schema(schema.clone());
    /// assert_eq!(Source::schema(&source), schema);
    /// ```
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self.changed()
    }

    /// How many rows schema inference reads (default 1000).
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let source = CsvSource::new("data.csv").infer_rows(10_000);
    /// ```
    pub fn infer_rows(mut self, rows: usize) -> Self {
        self.infer_rows = rows.max(1);
        self.changed()
    }

    /// Sends bad rows (wrong number of fields, unparsable values) to a CSV file at `path`
    /// with the columns `line,reason,record` instead of failing. The file is created (or
    /// truncated) when a scan is planned; rows of different morsels may appear in any order.
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let source = CsvSource::new("data.csv").rejects("data.rejects.csv");
    /// ```
    pub fn rejects(mut self, path: impl Into<PathBuf>) -> Self {
        self.rejects = Some(path.into());
        self
    }

    /// Whether quoted values may contain newlines (default `false`). When `true`, the file
    /// is not split at newlines but read as a single morsel.
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let source = CsvSource::new("notes.csv").newlines_in_values(true);
    /// ```
    pub fn newlines_in_values(mut self, newlines_in_values: bool) -> Self {
        self.newlines_in_values = newlines_in_values;
        self
    }

    /// The approximate size of a morsel in bytes (default 8 MiB).
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let source = CsvSource::new("big.csv").morsel_bytes(16 << 20);
    /// ```
    pub fn morsel_bytes(mut self, bytes: usize) -> Self {
        self.morsel_bytes = bytes.max(1);
        self
    }

    /// The schema, inferring it if needed; unlike [`Source::schema`], reports a missing or
    /// unreadable file as an error.
    ///
    /// ```
    /// use sabot::io::csv::CsvSource;
    /// let err = CsvSource::new("/nonexistent/x.csv").try_schema().unwrap_err();
    /// assert!(err.to_string().starts_with("/nonexistent/x.csv"));
    /// ```
    pub fn try_schema(&self) -> Result<SchemaRef> {
        if let Some(schema) = &self.schema {
            return Ok(schema.clone());
        }
        if let Some(schema) = self.inferred.get() {
            return Ok(schema.clone());
        }
        let data = map_file(&self.path)?;
        let schema = self.infer(&data)?;
        Ok(self.inferred.get_or_init(|| schema).clone())
    }

    fn infer(&self, data: &[u8]) -> Result<SchemaRef> {
        let body = &data[bom_len(data)..];
        let format = Format::default()
            .with_header(self.has_header)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote)
            .with_truncated_rows(true);
        let (schema, _) = format.infer_schema(Cursor::new(body), Some(self.infer_rows)).map_err(|e| {
            SabotError::format(&self.path, None, format!("cannot infer the schema: {}", arrow_message(&e)))
        })?;
        Ok(Arc::new(schema))
    }

    /// The offset of the first data record (after a BOM and the header).
    fn data_start(&self, data: &[u8]) -> usize {
        let mut pos = bom_len(data);
        if self.has_header {
            // Skip blank lines, then the header record.
            while pos < data.len() {
                let (content_end, next) = scan_csv_record(data, pos, data.len(), self.delimiter, self.quote, None);
                let blank = content_end == pos;
                pos = next;
                if !blank {
                    break;
                }
            }
        }
        pos
    }
}

fn bom_len(data: &[u8]) -> usize {
    if data.starts_with(&[0xEF, 0xBB, 0xBF]) { 3 } else { 0 }
}

impl fmt::Debug for CsvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvSource")
            .field("path", &self.path)
            .field("has_header", &self.has_header)
            .field("delimiter", &(self.delimiter as char))
            .field("rejects", &self.rejects)
            .finish()
    }
}

impl Source for CsvSource {
    fn name(&self) -> &'static str {
        "csv"
    }

    /// The schema; if it must be inferred and the file cannot be read, an empty schema (the
    /// error is reported by [`Source::scan`] and [`CsvSource::try_schema`]).
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
        format!("csv: {}", self.path.display())
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        let data = map_file(&self.path)?;
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => match self.inferred.get() {
                Some(s) => s.clone(),
                None => {
                    let s = self.infer(&data)?;
                    self.inferred.get_or_init(|| s).clone()
                }
            },
        };
        let output = project_schema(&schema, request.projection.as_deref())?;
        let start = self.data_start(&data);
        let ranges = if start >= data.len() {
            Vec::new()
        } else if self.newlines_in_values {
            vec![(start, data.len())]
        } else {
            split_at_lines(&data, start, self.morsel_bytes)
        };
        let rejects = self.rejects.as_deref().map(RejectsFile::create).transpose()?.map(Arc::new);
        Ok(Arc::new(TextScan {
            path: self.path.clone(),
            data,
            ranges,
            format: Arc::new(CsvFormat {
                schema,
                projection: request.projection.clone(),
                output,
                delimiter: self.delimiter,
                quote: self.quote,
                split: !self.newlines_in_values,
            }),
            batch_size: if request.batch_size == 0 { DEFAULT_BATCH_SIZE } else { request.batch_size },
            rejects,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// CsvSink
// ---------------------------------------------------------------------------------------------

/// Writes a result to a CSV file with a header row.
///
/// The file is written under a temporary name and renamed when the writer finishes.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, StringArray};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use sabot::io::Sink;
/// use sabot::io::csv::CsvSink;
///
/// let path = std::env::temp_dir().join(format!("sabot-doc-csv-sink-{}.csv", std::process::id()));
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("name", DataType::Utf8, true),
/// ]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![
///     Arc::new(Int64Array::from(vec![1, 2])),
///     Arc::new(StringArray::from(vec![Some("a,b"), None])),
/// ]).unwrap();
/// let mut writer = CsvSink::new(&path).open(schema).unwrap();
/// writer.write(&batch).unwrap();
/// writer.finish().unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "id,name\n1,\"a,b\"\n2,\n");
/// std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct CsvSink {
    path: PathBuf,
    header: bool,
    delimiter: u8,
}

impl CsvSink {
    /// A sink writing `path` with a header row and `,` as delimiter.
    ///
    /// ```
    /// use sabot::io::csv::CsvSink;
    /// let sink = CsvSink::new("out.csv");
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvSink { path: path.into(), header: true, delimiter: b',' }
    }

    /// Whether to write a header row (default `true`).
    ///
    /// ```
    /// use sabot::io::csv::CsvSink;
    /// let sink = CsvSink::new("out.csv").header(false);
    /// ```
    pub fn header(mut self, header: bool) -> Self {
        self.header = header;
        self
    }

    /// The field delimiter (default `b','`).
    ///
    /// ```
    /// use sabot::io::csv::CsvSink;
    /// let sink = CsvSink::new("out.tsv").delimiter(b'\t');
    /// ```
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }
}

impl Sink for CsvSink {
    fn describe(&self) -> String {
        format!("csv: {}", self.path.display())
    }

    fn open(&self, schema: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        let (file, pending) = PendingFile::create(&self.path)?;
        let writer = arrow::csv::WriterBuilder::new()
            .with_header(self.header)
            .with_delimiter(self.delimiter)
            .build(BufWriter::with_capacity(1 << 20, file));
        Ok(Box::new(CsvSinkWriter {
            writer,
            pending,
            schema,
            header: self.header,
            delimiter: self.delimiter,
            rows_written: false,
        }))
    }
}

struct CsvSinkWriter {
    writer: arrow::csv::Writer<BufWriter<File>>,
    pending: PendingFile,
    schema: SchemaRef,
    header: bool,
    delimiter: u8,
    rows_written: bool,
}

impl SinkWriter for CsvSinkWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows_written = true;
        self.writer.write(batch).map_err(|e| match e {
            ArrowError::IoError(_, io) => SabotError::io(self.pending.path(), io),
            other => SabotError::format(self.pending.path(), None, arrow_message(&other)),
        })
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let CsvSinkWriter { writer, pending, schema, header, delimiter, rows_written } = *self;
        let mut out = writer.into_inner();
        if header && !rows_written {
            // Arrow writes the header with the first batch; an empty result still gets one.
            let mut line = Vec::new();
            for (i, field) in schema.fields().iter().enumerate() {
                if i > 0 {
                    line.push(delimiter);
                }
                csv_field(&mut line, field.name().as_bytes());
            }
            line.push(b'\n');
            out.write_all(&line).map_err(|e| SabotError::io(pending.path(), e))?;
        }
        let file = out.into_inner().map_err(|e| SabotError::io(pending.path(), e.into_error()))?;
        pending.commit(file)
    }
}
