//! [`TransactionalFileSink`]: exactly-once files through checkpoints, like Flink's `FileSink`.
//!
//! The writer appends rows to a hidden in-progress file; at each checkpoint barrier it closes
//! and syncs that file and renames it to a *pending* name that records the checkpoint; once
//! the checkpoint is complete, [`Sink::commit`] renames the pending files to their final,
//! visible names. After a crash the restored checkpoint's files are committed again (a file
//! already published is skipped) and [`Sink::abort_uncommitted`] deletes what later
//! checkpoints had prepared, whose rows the restarted pipeline writes again.
//!
//! Layout of the directory:
//!
//! - `part-<checkpoint>-<writer>.<ext>`: published files. The checkpoint number is zero-padded
//!   to 20 digits (the last file of a bounded run has number `u64::MAX`), so reading the files
//!   in name order gives the rows in output order.
//! - `.pending/part-<checkpoint>-<writer>.<ext>`: prepared for a checkpoint, not yet published.
//! - `.pending/part-<epoch>-<writer>.<ext>.inprogress`: being written (`epoch` is the
//!   checkpoint it will most likely be prepared for).
//!
//! `<writer>` identifies one opened writer (its start time in hex nanoseconds and a random
//! number). A directory holds the output of one pipeline: two pipelines writing the same
//! directory would delete each other's pending files on recovery.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::io::csv::arrow_message;
use crate::io::{Committable, Sink, SinkWriter};
use crate::{Result, SabotError};

/// The subdirectory of pending and in-progress files.
const PENDING_DIR: &str = ".pending";
/// The suffix of files being written.
const IN_PROGRESS: &str = ".inprogress";
/// The number of digits of the checkpoint number in file names.
const DIGITS: usize = 20;

/// The file format of a [`TransactionalFileSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    JsonLines,
    Parquet,
}

impl FileFormat {
    fn extension(self) -> &'static str {
        match self {
            FileFormat::JsonLines => "jsonl",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// What a sink shares with the writer it opened.
#[derive(Debug, Default)]
struct Shared {
    /// The checkpoint the first file of the next writer will be prepared for (naming only).
    next_epoch: u64,
    /// Pending files the current writer prepared and no commit has published yet, in order.
    uncommitted: Vec<String>,
}

/// The committable of one checkpoint: the names of its pending files.
#[derive(Debug, Serialize, Deserialize)]
struct PendingFiles {
    files: Vec<String>,
}

/// Writes a result as files in a directory, exactly once with checkpoints (two-phase commit,
/// like Flink's `FileSink`): rows become visible only when the checkpoint after them is
/// complete, and a pipeline that restarts from a checkpoint neither loses nor repeats rows in
/// the published files.
///
/// - At a checkpoint barrier ([`SinkWriter::prepare_commit`]) the current file is closed,
///   synced and renamed to a pending name; its name is the committable. No rows since the
///   last barrier: no file.
/// - [`Sink::commit`] renames pending files to their final names in the directory and syncs
///   the directory; committing a file already published changes nothing.
/// - [`Sink::abort_uncommitted`] deletes the pending files of checkpoints after the restored
///   one, and every in-progress file.
/// - [`SinkWriter::finish`] (the end of a bounded run) publishes everything still pending.
///
/// Published files are named `part-<checkpoint>-<writer>.<ext>` with zero-padded numbers: in
/// name order they hold the rows in output order. Hidden `.pending/` holds the rest (see the
/// [module documentation](self)). Without checkpoints, a run publishes one file when it
/// finishes, and a failed run publishes nothing.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use sabot::io::{Sink, SinkWriter};
/// use sabot::io::transactional_file::TransactionalFileSink;
///
/// let dir = std::env::temp_dir().join(format!("sabot-doc-txn-files-{}", std::process::id()));
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])?;
///
/// let sink = TransactionalFileSink::json_lines(&dir);
/// sink.abort_uncommitted(None)?; // a fresh start: nothing restored
/// let mut writer = sink.open(schema)?;
/// writer.write(&batch)?;
/// let committable = writer.prepare_commit(1)?.expect("rows were written");
/// let visible = || -> Vec<String> {
///     let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap()
///         .map(|e| e.unwrap().file_name().into_string().unwrap())
///         .filter(|n| !n.starts_with('.'))
///         .collect();
///     names.sort();
///     names
/// };
/// assert!(visible().is_empty()); // prepared: durable, not yet visible
/// sink.commit(1, &[committable])?;
/// let names = visible();
/// assert_eq!(names.len(), 1);
/// assert!(names[0].starts_with("part-00000000000000000001-") && names[0].ends_with(".jsonl"));
/// assert_eq!(std::fs::read_to_string(dir.join(&names[0]))?, "{\"x\":1}\n{\"x\":2}\n");
/// writer.finish()?; // nothing written since the barrier: no more files
/// assert_eq!(visible(), names);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TransactionalFileSink {
    dir: PathBuf,
    format: FileFormat,
    shared: Arc<Mutex<Shared>>,
}

impl TransactionalFileSink {
    fn new(dir: PathBuf, format: FileFormat) -> Self {
        TransactionalFileSink {
            dir,
            format,
            shared: Arc::new(Mutex::new(Shared { next_epoch: 1, uncommitted: vec![] })),
        }
    }

    /// Newline-delimited JSON files (`.jsonl`, one object per row, null fields omitted, as
    /// [`JsonLinesSink`](crate::io::json::JsonLinesSink) writes them) in `dir`, which is
    /// created when the sink is opened.
    ///
    /// ```
    /// use sabot::io::Sink;
    /// use sabot::io::transactional_file::TransactionalFileSink;
    /// let sink = TransactionalFileSink::json_lines("out/alerts");
    /// assert_eq!(sink.describe(), "transactional json-lines files: out/alerts");
    /// ```
    pub fn json_lines(dir: impl Into<PathBuf>) -> Self {
        TransactionalFileSink::new(dir.into(), FileFormat::JsonLines)
    }

    /// Parquet files (`.parquet`, Snappy, row groups of up to 1 Mi rows / 128 MiB, as
    /// [`ParquetSink`](crate::io::parquet::ParquetSink) writes them by default) in `dir`, which
    /// is created when the sink is opened. Each file holds the rows of one checkpoint interval.
    ///
    /// ```
    /// use sabot::io::Sink;
    /// use sabot::io::transactional_file::TransactionalFileSink;
    /// let sink = TransactionalFileSink::parquet("out/trades");
    /// assert_eq!(sink.describe(), "transactional parquet files: out/trades");
    /// ```
    pub fn parquet(dir: impl Into<PathBuf>) -> Self {
        TransactionalFileSink::new(dir.into(), FileFormat::Parquet)
    }

    /// The directory the files are published in.
    ///
    /// ```
    /// use sabot::io::transactional_file::TransactionalFileSink;
    /// let sink = TransactionalFileSink::parquet("out/trades");
    /// assert_eq!(sink.dir(), std::path::Path::new("out/trades"));
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn pending_dir(&self) -> PathBuf {
        self.dir.join(PENDING_DIR)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The state stays consistent even if a holder panicked: every update is a single step.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Syncs a directory, so that the renames and deletions in it survive a power loss.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| SabotError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The checkpoint number in a file name written by this sink (`part-<n>-...`).
fn checkpoint_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("part-")?.get(..DIGITS)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a file name this sink could have written (no path separators).
fn is_part_name(name: &str) -> bool {
    checkpoint_of(name).is_some() && !name.contains(['/', '\\']) && !name.ends_with(IN_PROGRESS)
}

/// Moves every named pending file of `pending_dir` to `dir`, skipping files already there.
/// Returns whether anything moved.
fn publish(dir: &Path, pending_dir: &Path, checkpoint: u64, names: &[String]) -> Result<bool> {
    let mut moved = false;
    for name in names {
        let pending = pending_dir.join(name);
        let visible = dir.join(name);
        match std::fs::rename(&pending, &visible) {
            Ok(()) => moved = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Committed before (a commit repeated on recovery): nothing to do.
                if !visible.exists() {
                    return Err(SabotError::io(
                        &pending,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!(
                                "pending file of checkpoint {checkpoint} is missing and was never published to {}",
                                visible.display()
                            ),
                        ),
                    ));
                }
            }
            Err(e) => return Err(SabotError::io(&pending, e)),
        }
    }
    if moved {
        sync_dir(dir)?;
        sync_dir(pending_dir)?;
    }
    Ok(moved)
}

impl Sink for TransactionalFileSink {
    fn describe(&self) -> String {
        let format = match self.format {
            FileFormat::JsonLines => "json-lines",
            FileFormat::Parquet => "parquet",
        };
        format!("transactional {format} files: {}", self.dir.display())
    }

    fn open(&self, schema: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        let pending_dir = self.pending_dir();
        std::fs::create_dir_all(&pending_dir).map_err(|e| SabotError::io(&pending_dir, e))?;
        let epoch = {
            let mut shared = self.shared();
            shared.uncommitted.clear();
            shared.next_epoch
        };
        Ok(Box::new(TransactionalFileWriter {
            dir: self.dir.clone(),
            pending_dir,
            format: self.format,
            schema,
            writer_id: writer_id(),
            epoch,
            current: None,
            shared: self.shared.clone(),
        }))
    }

    fn commit(&self, checkpoint: u64, committables: &[Committable]) -> Result<()> {
        let pending_dir = self.pending_dir();
        for committable in committables {
            let files: PendingFiles = serde_json::from_slice(committable).map_err(|e| {
                SabotError::format(&pending_dir, Some(format!("committable of checkpoint {checkpoint}")), e.to_string())
            })?;
            if let Some(bad) = files.files.iter().find(|name| !is_part_name(name)) {
                return Err(SabotError::format(
                    &pending_dir,
                    Some(format!("committable of checkpoint {checkpoint}")),
                    format!("'{bad}' is not a file name this sink writes"),
                ));
            }
            publish(&self.dir, &pending_dir, checkpoint, &files.files)?;
            self.shared().uncommitted.retain(|name| !files.files.contains(name));
        }
        Ok(())
    }

    /// Deletes the pending files of checkpoints after `restored` (all pending files if
    /// `None`) and every in-progress file: a file being written is never part of a
    /// committable, so after a restart it is garbage whatever its number. Pending files of
    /// `restored` and earlier checkpoints are left (the driver has just committed them).
    fn abort_uncommitted(&self, restored: Option<u64>) -> Result<()> {
        {
            let mut shared = self.shared();
            shared.next_epoch = restored.map_or(1, |id| id.saturating_add(1));
            shared.uncommitted.clear();
        }
        let pending_dir = self.pending_dir();
        let entries = match std::fs::read_dir(&pending_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SabotError::io(&pending_dir, e)),
        };
        let mut deleted = false;
        for entry in entries {
            let entry = entry.map_err(|e| SabotError::io(&pending_dir, e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let Some(checkpoint) = checkpoint_of(&name) else { continue };
            let discard = name.ends_with(IN_PROGRESS) || restored.is_none_or(|id| checkpoint > id);
            if discard {
                let path = entry.path();
                match std::fs::remove_file(&path) {
                    Ok(()) => deleted = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SabotError::io(&path, e)),
                }
            }
        }
        if deleted {
            sync_dir(&pending_dir)?;
        }
        Ok(())
    }
}

/// A name for one opened writer: its start time (hex nanoseconds, so writers of later runs
/// sort later) and a random number.
fn writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(OPENED.fetch_add(1, Ordering::Relaxed));
    format!("{nanos:016x}{:08x}", hasher.finish() as u32)
}

/// The encoder of an in-progress file.
enum Encoder {
    JsonLines(arrow::json::LineDelimitedWriter<BufWriter<File>>),
    Parquet(Box<ArrowWriter<File>>),
}

/// The file being written.
struct InProgress {
    path: PathBuf,
    encoder: Encoder,
}

fn json_error(path: &Path, e: ArrowError) -> SabotError {
    match e {
        ArrowError::IoError(_, io) => SabotError::io(path, io),
        other => SabotError::format(path, None, arrow_message(&other)),
    }
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> SabotError {
    match e {
        parquet::errors::ParquetError::External(e) => match e.downcast::<std::io::Error>() {
            Ok(io) => SabotError::io(path, *io),
            Err(e) => SabotError::format(path, None, e.to_string()),
        },
        other => SabotError::format(path, None, other.to_string()),
    }
}

impl InProgress {
    fn create(path: PathBuf, format: FileFormat, schema: &SchemaRef) -> Result<Self> {
        let file = File::create(&path).map_err(|e| SabotError::io(&path, e))?;
        let encoder = match format {
            FileFormat::JsonLines => {
                Encoder::JsonLines(arrow::json::LineDelimitedWriter::new(BufWriter::with_capacity(1 << 20, file)))
            }
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(1024 * 1024))
                    .set_max_row_group_bytes(Some(128 << 20))
                    .build();
                let writer =
                    ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| parquet_error(&path, e))?;
                Encoder::Parquet(Box::new(writer))
            }
        };
        Ok(InProgress { path, encoder })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.encoder {
            Encoder::JsonLines(w) => w.write(batch).map_err(|e| json_error(&self.path, e)),
            Encoder::Parquet(w) => w.write(batch).map_err(|e| parquet_error(&self.path, e)),
        }
    }

    /// Completes the file (a Parquet footer), syncs it to disk and closes it.
    fn close(self) -> Result<PathBuf> {
        let InProgress { path, encoder } = self;
        let file = match encoder {
            Encoder::JsonLines(mut w) => {
                w.finish().map_err(|e| json_error(&path, e))?;
                w.into_inner().into_inner().map_err(|e| SabotError::io(&path, e.into_error()))?
            }
            Encoder::Parquet(w) => w.into_inner().map_err(|e| parquet_error(&path, e))?,
        };
        file.sync_all().map_err(|e| SabotError::io(&path, e))?;
        Ok(path)
    }
}

struct TransactionalFileWriter {
    dir: PathBuf,
    pending_dir: PathBuf,
    format: FileFormat,
    schema: SchemaRef,
    writer_id: String,
    /// The checkpoint the current file will most likely be prepared for.
    epoch: u64,
    current: Option<InProgress>,
    shared: Arc<Mutex<Shared>>,
}

impl TransactionalFileWriter {
    fn file_name(&self, checkpoint: u64) -> String {
        format!("part-{checkpoint:0DIGITS$}-{}.{}", self.writer_id, self.format.extension())
    }
}

impl SinkWriter for TransactionalFileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.current.is_none() {
            let path = self.pending_dir.join(format!("{}{IN_PROGRESS}", self.file_name(self.epoch)));
            self.current = Some(InProgress::create(path, self.format, &self.schema)?);
        }
        self.current.as_mut().expect("opened above").write(batch)
    }

    fn prepare_commit(&mut self, checkpoint: u64) -> Result<Option<Committable>> {
        self.epoch = checkpoint.saturating_add(1);
        let Some(current) = self.current.take() else { return Ok(None) };
        let written = current.close()?;
        let name = self.file_name(checkpoint);
        let pending = self.pending_dir.join(&name);
        if pending.exists() {
            return Err(SabotError::io(
                &pending,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("checkpoint {checkpoint} was prepared twice"),
                ),
            ));
        }
        std::fs::rename(&written, &pending).map_err(|e| SabotError::io(&written, e))?;
        sync_dir(&self.pending_dir)?;
        lock(&self.shared).uncommitted.push(name.clone());
        let committable = serde_json::to_vec(&PendingFiles { files: vec![name] })
            .map_err(|e| SabotError::format(&pending, None, format!("cannot encode the committable: {e}")))?;
        Ok(Some(committable))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.prepare_commit(u64::MAX)?;
        let names = std::mem::take(&mut lock(&self.shared).uncommitted);
        publish(&self.dir, &self.pending_dir, u64::MAX, &names)?;
        Ok(())
    }
}

impl Drop for TransactionalFileWriter {
    /// A writer dropped without [`SinkWriter::finish`] (a failed run) deletes its in-progress
    /// file; pending files stay for the next run's recovery to commit or abort.
    fn drop(&mut self) {
        if let Some(current) = self.current.take() {
            let path = current.path.clone();
            drop(current);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }

    fn batch(values: &[i64]) -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    /// The visible files of `dir`, in name order.
    fn visible(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// The files of `dir/.pending`, in name order.
    fn pending(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(PENDING_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The `x` values of the published JSON-lines files, concatenated in name order.
    fn json_rows(dir: &Path) -> Vec<i64> {
        visible(dir)
            .iter()
            .flat_map(|name| {
                std::fs::read_to_string(dir.join(name))
                    .unwrap()
                    .lines()
                    .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["x"].as_i64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn rows_are_invisible_until_commit_and_commit_twice_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = TransactionalFileSink::json_lines(tmp.path());
        sink.abort_uncommitted(None).unwrap();
        let mut writer = sink.open(schema()).unwrap();
        writer.write(&batch(&[1, 2])).unwrap();
        assert!(visible(tmp.path()).is_empty());
        let c1 = writer.prepare_commit(1).unwrap().unwrap();
        assert!(visible(tmp.path()).is_empty());
        assert_eq!(pending(tmp.path()).len(), 1);
        // Nothing written since the barrier: no committable, no file.
        assert!(writer.prepare_commit(2).unwrap().is_none());
        assert_eq!(pending(tmp.path()).len(), 1);
        writer.write(&batch(&[3])).unwrap();
        sink.commit(1, std::slice::from_ref(&c1)).unwrap();
        assert_eq!(json_rows(tmp.path()), vec![1, 2]);
        sink.commit(1, std::slice::from_ref(&c1)).unwrap();
        assert_eq!(json_rows(tmp.path()), vec![1, 2]);
        assert_eq!(visible(tmp.path()).len(), 1);
        let c3 = writer.prepare_commit(3).unwrap().unwrap();
        sink.commit(3, std::slice::from_ref(&c3)).unwrap();
        // A recovery commits the restored checkpoint's committables again: a no-op.
        sink.commit(3, &[c1, c3]).unwrap();
        assert_eq!(json_rows(tmp.path()), vec![1, 2, 3]);
        writer.finish().unwrap();
        assert_eq!(json_rows(tmp.path()), vec![1, 2, 3]);
        assert_eq!(visible(tmp.path()).len(), 2);
        assert!(pending(tmp.path()).is_empty());
    }

    #[test]
    fn a_commit_whose_pending_file_is_gone_and_never_published_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = TransactionalFileSink::json_lines(tmp.path());
        let mut writer = sink.open(schema()).unwrap();
        writer.write(&batch(&[1])).unwrap();
        let c1 = writer.prepare_commit(1).unwrap().unwrap();
        let name = pending(tmp.path()).remove(0);
        std::fs::remove_file(tmp.path().join(PENDING_DIR).join(&name)).unwrap();
        let err = sink.commit(1, &[c1]).unwrap_err();
        assert!(matches!(err, SabotError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&name) && err.to_string().contains("checkpoint 1"), "{err}");
        let err = sink.commit(1, &[b"not json".to_vec()]).unwrap_err();
        assert!(err.to_string().contains("committable of checkpoint 1"), "{err}");
        let err = sink.commit(1, &[br#"{"files":["../escape"]}"#.to_vec()]).unwrap_err();
        assert!(err.to_string().contains("not a file name"), "{err}");
    }

    #[test]
    fn abort_removes_only_the_files_of_later_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = TransactionalFileSink::json_lines(tmp.path());
        let mut writer = sink.open(schema()).unwrap();
        for checkpoint in 1..=3 {
            writer.write(&batch(&[checkpoint as i64])).unwrap();
            writer.prepare_commit(checkpoint).unwrap().unwrap();
        }
        writer.write(&batch(&[4])).unwrap();
        std::mem::forget(writer); // a crash: the in-progress file stays
        let before = pending(tmp.path());
        assert_eq!(before.len(), 4);
        assert!(before[3].starts_with("part-00000000000000000004-") && before[3].ends_with(".jsonl.inprogress"));
        sink.abort_uncommitted(Some(2)).unwrap();
        assert_eq!(pending(tmp.path()), before[..2].to_vec());
        sink.abort_uncommitted(None).unwrap();
        assert!(pending(tmp.path()).is_empty());
        assert!(visible(tmp.path()).is_empty());
    }

    #[test]
    fn recovery_after_a_crash_keeps_exactly_the_rows_up_to_the_restored_barrier() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = TransactionalFileSink::json_lines(tmp.path());
        sink.abort_uncommitted(None).unwrap();
        let mut writer = sink.open(schema()).unwrap();
        writer.write(&batch(&[1, 2])).unwrap();
        let c1 = writer.prepare_commit(1).unwrap().unwrap();
        sink.commit(1, &[c1]).unwrap();
        writer.write(&batch(&[3])).unwrap();
        // Checkpoint 2 is prepared and its metadata written, then the worker dies before commit.
        let c2 = writer.prepare_commit(2).unwrap().unwrap();
        writer.write(&batch(&[4])).unwrap();
        writer.prepare_commit(3).unwrap().unwrap(); // checkpoint 3 never completes
        writer.write(&batch(&[5])).unwrap();
        std::mem::forget(writer);
        assert_eq!(json_rows(tmp.path()), vec![1, 2]);

        // A new process restores checkpoint 2.
        let sink = TransactionalFileSink::json_lines(tmp.path());
        sink.commit(2, &[c2]).unwrap();
        sink.abort_uncommitted(Some(2)).unwrap();
        assert_eq!(json_rows(tmp.path()), vec![1, 2, 3]);
        assert!(pending(tmp.path()).is_empty());
        // The source replays what came after barrier 2.
        let mut writer = sink.open(schema()).unwrap();
        writer.write(&batch(&[4])).unwrap();
        assert!(pending(tmp.path())[0].starts_with("part-00000000000000000003-"));
        let c3 = writer.prepare_commit(3).unwrap().unwrap();
        sink.commit(3, &[c3]).unwrap();
        writer.write(&batch(&[5, 6])).unwrap();
        writer.finish().unwrap();
        assert_eq!(json_rows(tmp.path()), vec![1, 2, 3, 4, 5, 6]);
        let names = visible(tmp.path());
        assert_eq!(names.len(), 4);
        assert!(names[3].starts_with(&format!("part-{}-", u64::MAX)));
    }

    #[test]
    fn finish_publishes_files_of_checkpoints_that_never_completed() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = TransactionalFileSink::json_lines(tmp.path());
        let mut writer = sink.open(schema()).unwrap();
        writer.write(&batch(&[1])).unwrap();
        writer.prepare_commit(1).unwrap().unwrap(); // failed: its committable is never committed
        writer.write(&batch(&[2])).unwrap();
        writer.finish().unwrap();
        assert_eq!(json_rows(tmp.path()), vec![1, 2]);
        assert!(pending(tmp.path()).is_empty());
    }

    #[test]
    fn a_writer_dropped_without_finish_deletes_its_in_progress_file_only() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = TransactionalFileSink::json_lines(tmp.path());
        let mut writer = sink.open(schema()).unwrap();
        writer.write(&batch(&[1])).unwrap();
        writer.prepare_commit(1).unwrap().unwrap();
        writer.write(&batch(&[2])).unwrap();
        drop(writer);
        let left = pending(tmp.path());
        assert_eq!(left.len(), 1);
        assert!(left[0].ends_with(".jsonl"));
        assert!(visible(tmp.path()).is_empty());
    }

    #[test]
    fn parquet_files_are_readable_and_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = TransactionalFileSink::parquet(tmp.path());
        sink.abort_uncommitted(None).unwrap();
        let mut writer = sink.open(schema()).unwrap();
        writer.write(&batch(&[1, 2])).unwrap();
        writer.write(&batch(&[3])).unwrap();
        let c1 = writer.prepare_commit(1).unwrap().unwrap();
        sink.commit(1, &[c1]).unwrap();
        writer.write(&batch(&[4])).unwrap();
        writer.finish().unwrap();
        let names = visible(tmp.path());
        assert_eq!(names.len(), 2);
        assert!(names.iter().all(|n| n.ends_with(".parquet")));
        let mut values = vec![];
        for name in &names {
            let file = File::open(tmp.path().join(name)).unwrap();
            for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
                values.extend(batch.unwrap().column(0).as_primitive::<Int64Type>().values().iter().copied());
            }
        }
        assert_eq!(values, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_run_without_checkpoints_publishes_one_file_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let sink = TransactionalFileSink::json_lines(&dir);
        let mut writer = sink.open(schema()).unwrap();
        writer.write(&batch(&[1])).unwrap();
        writer.write(&batch(&[])).unwrap();
        writer.write(&batch(&[2])).unwrap();
        assert!(visible(&dir).is_empty());
        writer.finish().unwrap();
        assert_eq!(visible(&dir).len(), 1);
        assert_eq!(json_rows(&dir), vec![1, 2]);
    }
}
