//! Arrow IPC files: [`IpcSource`] (memory-mapped, zero-copy) and [`IpcSink`].
//!
//! The IPC *file* format (`ARROW1` magic, with a footer indexing the record batches) is read
//! by memory-mapping the file and decoding each batch with Arrow's `FileDecoder` directly over
//! the mapping: the arrays point into the mapped pages (nothing is copied unless a buffer is
//! misaligned or compressed), and opening a file only reads its footer and the message headers.
//! Each record batch is a morsel.
//!
//! The IPC *stream* format is also accepted: it has no index, so it is decoded (still
//! zero-copy) when the source is opened, and each batch is a morsel.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileDecoder, StreamDecoder, read_footer_length};
use arrow::ipc::{Block, MetadataVersion};
use arrow::record_batch::RecordBatch;

use crate::io::csv::{PendingFile, arrow_message, map_file};
use crate::io::memory::project_schema;
use crate::io::{BatchIter, Scan, ScanRequest, Sink, SinkWriter, Source};
use crate::{Result, SabotError};

const MAGIC: &[u8; 6] = b"ARROW1";
const CONTINUATION: [u8; 4] = [0xFF; 4];

enum Layout {
    /// The file format: the footer's blocks, decoded on demand.
    File { version: MetadataVersion, dictionaries: Vec<Block>, batches: Vec<Block> },
    /// The stream format: batches decoded when opening.
    Stream { batches: Vec<RecordBatch> },
}

/// An Arrow IPC file (file or stream format), memory-mapped.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use sabot::io::{Sink, Source, ScanRequest};
/// use sabot::io::ipc::{IpcSink, IpcSource};
///
/// let path = std::env::temp_dir().join(format!("sabot-doc-ipc-{}.arrow", std::process::id()));
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
/// let mut writer = IpcSink::new(&path).open(schema).unwrap();
/// writer.write(&batch).unwrap();
/// writer.write(&batch).unwrap();
/// writer.finish().unwrap();
///
/// let source = IpcSource::new(&path).unwrap();
/// assert_eq!(source.num_rows(), Some(6));
/// let scan = source.scan(&ScanRequest { batch_size: 1024, ..Default::default() }).unwrap();
/// assert_eq!(scan.morsel_count(), 2);
/// assert_eq!(scan.read_morsel(1).unwrap().next().unwrap().unwrap(), batch);
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct IpcSource {
    path: PathBuf,
    buffer: Buffer,
    schema: SchemaRef,
    layout: Arc<Layout>,
    num_rows: usize,
}

fn format_err(path: &Path, location: Option<String>, message: impl Into<String>) -> SabotError {
    SabotError::format(path, location, message)
}

/// Runs an Arrow decoding step, turning both errors and panics (on corrupt input) into a
/// [`SabotError::Format`].
fn guarded<T>(path: &Path, location: &str, f: impl FnOnce() -> std::result::Result<T, ArrowError>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format_err(path, Some(location.to_string()), arrow_message(&e))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "corrupt data".into());
            Err(format_err(path, Some(location.to_string()), format!("corrupt IPC data: {what}")))
        }
    }
}

/// The flatbuffer message of a block, after checking that the block and every buffer it
/// references lie inside the file.
fn checked_message<'a>(path: &Path, data: &'a [u8], block: &Block, what: &str) -> Result<arrow::ipc::Message<'a>> {
    let location = Some(what.to_string());
    let offset = usize::try_from(block.offset()).ok();
    let meta = usize::try_from(block.metaDataLength()).ok();
    let body = usize::try_from(block.bodyLength()).ok();
    let (Some(offset), Some(meta), Some(body)) = (offset, meta, body) else {
        return Err(format_err(path, location, "negative offset or length in the footer"));
    };
    let end = offset.checked_add(meta).and_then(|x| x.checked_add(body));
    if end.is_none_or(|end| end > data.len()) || meta < 8 {
        return Err(format_err(
            path,
            location,
            format!(
                "block at offset {offset} ({} bytes) extends beyond the end of the file ({} bytes): the file is truncated or corrupt",
                meta.saturating_add(body),
                data.len()
            ),
        ));
    }
    let header = &data[offset..offset + meta];
    let skip = if header[..4] == CONTINUATION { 8 } else { 4 };
    let message = arrow::ipc::root_as_message(&header[skip..])
        .map_err(|e| format_err(path, location.clone(), format!("invalid message header: {e}")))?;
    let buffers = match message.header_type() {
        arrow::ipc::MessageHeader::RecordBatch => message.header_as_record_batch().and_then(|b| b.buffers()),
        arrow::ipc::MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data()).and_then(|b| b.buffers())
        }
        _ => None,
    };
    for b in buffers.iter().flatten() {
        let ok = usize::try_from(b.offset())
            .ok()
            .zip(usize::try_from(b.length()).ok())
            .and_then(|(o, l)| o.checked_add(l))
            .is_some_and(|e| e <= body);
        if !ok {
            return Err(format_err(path, location, "a buffer lies outside its message body: the file is corrupt"));
        }
    }
    Ok(message)
}

impl IpcSource {
    /// Memory-maps an Arrow IPC file (file or stream format) and reads its schema and index.
    ///
    /// A missing file is a [`SabotError::Io`]; a truncated or corrupt file is a
    /// [`SabotError::Format`] naming it.
    ///
    /// ```
    /// use sabot::io::ipc::IpcSource;
    /// let err = IpcSource::new("/nonexistent/data.arrow").unwrap_err();
    /// assert!(err.to_string().starts_with("/nonexistent/data.arrow"));
    /// ```
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = map_file(path)?;
        let buffer = Buffer::from(bytes);
        if buffer.len() >= MAGIC.len() && &buffer[..MAGIC.len()] == MAGIC {
            Self::open_file(path, buffer)
        } else {
            Self::open_stream(path, buffer)
        }
    }

    fn open_file(path: &Path, buffer: Buffer) -> Result<Self> {
        let data = buffer.as_slice();
        let len = data.len();
        if len < 18 || &data[len - 6..] != MAGIC {
            return Err(format_err(
                path,
                Some("footer".into()),
                "the file starts like an Arrow IPC file but does not end with the ARROW1 magic: it is truncated or corrupt",
            ));
        }
        let footer_len = read_footer_length(data[len - 10..].try_into().unwrap())
            .map_err(|e| format_err(path, Some("footer".into()), arrow_message(&e)))?;
        if footer_len > len - 18 {
            return Err(format_err(
                path,
                Some("footer".into()),
                format!("footer length {footer_len} exceeds the file size {len}"),
            ));
        }
        let footer = arrow::ipc::root_as_footer(&data[len - 10 - footer_len..len - 10])
            .map_err(|e| format_err(path, Some("footer".into()), format!("invalid footer: {e}")))?;
        let ipc_schema =
            footer.schema().ok_or_else(|| format_err(path, Some("footer".into()), "the footer has no schema"))?;
        let schema = guarded(path, "footer", || arrow::ipc::convert::try_fb_to_schema(ipc_schema))?;
        let schema = Arc::new(schema);
        let version = footer.version();
        let dictionaries: Vec<Block> = footer.dictionaries().map(|d| d.iter().copied().collect()).unwrap_or_default();
        let batches: Vec<Block> = footer.recordBatches().map(|d| d.iter().copied().collect()).unwrap_or_default();
        let mut num_rows = 0usize;
        for (i, block) in dictionaries.iter().enumerate() {
            checked_message(path, data, block, &format!("dictionary batch {i}"))?;
        }
        for (i, block) in batches.iter().enumerate() {
            let message = checked_message(path, data, block, &format!("record batch {i}"))?;
            let rows = message.header_as_record_batch().map(|b| b.length()).ok_or_else(|| {
                format_err(path, Some(format!("record batch {i}")), "the block is not a record batch")
            })?;
            num_rows += usize::try_from(rows).unwrap_or(0);
        }
        let layout = Layout::File { version, dictionaries, batches };
        Ok(IpcSource { path: path.to_path_buf(), buffer, schema, layout: Arc::new(layout), num_rows })
    }

    fn open_stream(path: &Path, buffer: Buffer) -> Result<Self> {
        let mut decoder = StreamDecoder::new();
        let mut rest = buffer.clone();
        let mut batches = Vec::new();
        let total = buffer.len();
        loop {
            let offset = total - rest.len();
            let location = format!("byte {offset}");
            let step = guarded(path, &location, || decoder.decode(&mut rest))?;
            match step {
                Some(batch) => batches.push(batch),
                None if rest.is_empty() => break,
                None => {}
            }
        }
        guarded(path, &format!("byte {total}"), || decoder.finish()).map_err(|e| match e {
            SabotError::Format { path, location, message } => SabotError::Format {
                path,
                location,
                message: format!("{message} (not an Arrow IPC file or stream, or truncated)"),
            },
            other => other,
        })?;
        let schema = decoder
            .schema()
            .ok_or_else(|| format_err(path, None, "not an Arrow IPC file or stream: no schema message"))?;
        let num_rows = batches.iter().map(|b| b.num_rows()).sum();
        Ok(IpcSource {
            path: path.to_path_buf(),
            buffer,
            schema,
            layout: Arc::new(Layout::Stream { batches }),
            num_rows,
        })
    }

    /// The number of record batches (morsels).
    ///
    /// ```no_run
    /// use sabot::io::ipc::IpcSource;
    /// println!("{}", IpcSource::new("data.arrow")?.num_batches());
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn num_batches(&self) -> usize {
        match self.layout.as_ref() {
            Layout::File { batches, .. } => batches.len(),
            Layout::Stream { batches } => batches.len(),
        }
    }
}

impl fmt::Debug for IpcSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcSource")
            .field("path", &self.path)
            .field("batches", &self.num_batches())
            .field("num_rows", &self.num_rows)
            .finish()
    }
}

impl Source for IpcSource {
    fn name(&self) -> &'static str {
        "ipc"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        format!("ipc: {}", self.path.display())
    }

    fn num_rows(&self) -> Option<usize> {
        Some(self.num_rows)
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        let output = project_schema(&self.schema, request.projection.as_deref())?;
        let decoder = match self.layout.as_ref() {
            Layout::File { version, dictionaries, .. } => {
                let mut decoder = FileDecoder::new(self.schema.clone(), *version);
                if let Some(p) = &request.projection {
                    decoder = decoder.with_projection(p.clone());
                }
                for (i, block) in dictionaries.iter().enumerate() {
                    let len = block.metaDataLength() as usize + block.bodyLength() as usize;
                    let data = self.buffer.slice_with_length(block.offset() as usize, len);
                    guarded(&self.path, &format!("dictionary batch {i}"), || decoder.read_dictionary(block, &data))?;
                }
                Some(decoder)
            }
            Layout::Stream { .. } => None,
        };
        Ok(Arc::new(IpcScan {
            path: self.path.clone(),
            buffer: self.buffer.clone(),
            layout: self.layout.clone(),
            decoder,
            output,
            projection: request.projection.clone(),
            batch_size: request.batch_size,
        }))
    }
}

struct IpcScan {
    path: PathBuf,
    buffer: Buffer,
    layout: Arc<Layout>,
    decoder: Option<FileDecoder>,
    output: SchemaRef,
    projection: Option<Vec<usize>>,
    batch_size: usize,
}

impl Scan for IpcScan {
    fn schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn morsel_count(&self) -> usize {
        match self.layout.as_ref() {
            Layout::File { batches, .. } => batches.len(),
            Layout::Stream { batches } => batches.len(),
        }
    }

    fn read_morsel(&self, index: usize) -> Result<BatchIter<'static>> {
        let count = self.morsel_count();
        if index >= count {
            return Err(SabotError::Execution(format!("morsel {index} out of range (the scan has {count} morsels)")));
        }
        let batch = match (self.layout.as_ref(), &self.decoder) {
            (Layout::File { batches, .. }, Some(decoder)) => {
                let block = &batches[index];
                let len = block.metaDataLength() as usize + block.bodyLength() as usize;
                let data = self.buffer.slice_with_length(block.offset() as usize, len);
                let location = format!("record batch {index}");
                let batch = guarded(&self.path, &location, || decoder.read_record_batch(block, &data))?
                    .ok_or_else(|| format_err(&self.path, Some(location), "empty message"))?;
                RecordBatch::try_new(self.output.clone(), batch.columns().to_vec())?
            }
            (Layout::Stream { batches }, _) => {
                let batch = &batches[index];
                match &self.projection {
                    Some(p) => batch.project(p)?,
                    None => batch.clone(),
                }
            }
            (Layout::File { .. }, None) => unreachable!("file scans always have a decoder"),
        };
        let rows = batch.num_rows();
        let size = if self.batch_size == 0 { rows.max(1) } else { self.batch_size };
        if rows <= size {
            return Ok(Box::new(std::iter::once(Ok(batch))));
        }
        Ok(Box::new((0..rows.div_ceil(size)).map(move |i| Ok(batch.slice(i * size, size.min(rows - i * size))))))
    }
}

/// Writes a result to an Arrow IPC file (file format), streaming.
///
/// The file is written under a temporary name and renamed when the writer finishes.
///
/// ```
/// use sabot::io::ipc::IpcSink;
/// let sink = IpcSink::new("out.arrow");
/// ```
#[derive(Debug, Clone)]
pub struct IpcSink {
    path: PathBuf,
}

impl IpcSink {
    /// A sink writing an IPC file at `path`.
    ///
    /// ```
    /// use sabot::io::Sink;
    /// use sabot::io::ipc::IpcSink;
    /// assert!(IpcSink::new("out.arrow").describe().contains("out.arrow"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        IpcSink { path: path.into() }
    }
}

impl Sink for IpcSink {
    fn describe(&self) -> String {
        format!("ipc: {}", self.path.display())
    }

    fn open(&self, schema: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        let (file, pending) = PendingFile::create(&self.path)?;
        let writer = arrow::ipc::writer::FileWriter::try_new(BufWriter::with_capacity(1 << 20, file), &schema)
            .map_err(|e| write_error(&self.path, e))?;
        Ok(Box::new(IpcSinkWriter { writer, pending }))
    }
}

fn write_error(path: &Path, e: ArrowError) -> SabotError {
    match e {
        ArrowError::IoError(_, io) => SabotError::io(path, io),
        other => SabotError::format(path, None, arrow_message(&other)),
    }
}

struct IpcSinkWriter {
    writer: arrow::ipc::writer::FileWriter<BufWriter<File>>,
    pending: PendingFile,
}

impl SinkWriter for IpcSinkWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|e| write_error(self.pending.path(), e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let IpcSinkWriter { mut writer, pending } = *self;
        writer.finish().map_err(|e| write_error(pending.path(), e))?;
        let out = writer.into_inner().map_err(|e| write_error(pending.path(), e))?;
        let file = out.into_inner().map_err(|e| SabotError::io(pending.path(), e.into_error()))?;
        pending.commit(file)
    }
}
