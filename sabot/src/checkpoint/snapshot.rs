//! What an operator hands to a checkpoint, and what it gets back on recovery.

use std::fs;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, SabotError};

/// The state of one operator instance at a checkpoint barrier.
///
/// An operator fills it in [`Operator::snapshot_state`](crate::operator::Operator::snapshot_state)
/// while the barrier waits: named byte blobs, values (postcard), batches (Arrow IPC), or a
/// directory it materializes itself (a RocksDB checkpoint of hard links). Only that copy is
/// synchronous: the checkpoint writes the blobs and their checksums to disk in the background
/// while the pipeline goes on.
///
/// ```
/// use sabot::checkpoint::{RestoredState, StateSnapshot};
/// let dir = tempfile::tempdir()?;
/// let mut snapshot = StateSnapshot::new(7, dir.path().join("counter/p0"));
/// snapshot.put_value("count", &42u64)?;
/// snapshot.write()?;
///
/// let restored = RestoredState::new(7, dir.path().join("counter/p0"));
/// assert_eq!(restored.value::<u64>("count")?, Some(42));
/// assert_eq!(restored.value::<u64>("missing")?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StateSnapshot {
    checkpoint: u64,
    dir: PathBuf,
    blobs: Vec<(String, Vec<u8>)>,
    directories: Vec<String>,
}

/// Checks that `name` is a relative path of plain segments (no `..`, no absolute path).
fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && !name.starts_with('/')
        && name.split('/').all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains(['\\', '\0']));
    if valid {
        Ok(())
    } else {
        Err(SabotError::State {
            state: name.to_string(),
            message: "invalid snapshot entry name: use relative paths of plain segments".into(),
        })
    }
}

impl StateSnapshot {
    /// A snapshot for checkpoint `checkpoint` whose files go to `dir`.
    pub fn new(checkpoint: u64, dir: impl Into<PathBuf>) -> Self {
        StateSnapshot { checkpoint, dir: dir.into(), blobs: vec![], directories: vec![] }
    }

    /// The checkpoint's id.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint
    }

    /// Adds a named blob of bytes.
    pub fn put(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        check_name(name)?;
        self.blobs.push((name.to_string(), bytes));
        Ok(())
    }

    /// Adds a serde value, encoded with postcard.
    pub fn put_value<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let bytes = postcard::to_stdvec(value)
            .map_err(|e| SabotError::State { state: name.to_string(), message: format!("encode snapshot: {e}") })?;
        self.put(name, bytes)
    }

    /// Adds batches as one Arrow IPC stream (columnar state: buffered rows, partial aggregates).
    pub fn put_batches(&mut self, name: &str, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
        let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
        self.put(name, writer.into_inner()?)
    }

    /// A path, which does not exist yet, where the operator writes a directory of its own
    /// right now (for instance a RocksDB checkpoint). Its files are checksummed with the rest.
    pub fn directory(&mut self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| SabotError::io(parent, e))?;
        }
        self.directories.push(name.to_string());
        Ok(path)
    }

    /// True when nothing was added (a stateless operator).
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.directories.is_empty()
    }

    /// The directory of this snapshot.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the blobs to their files; returns every file of the snapshot (blobs and
    /// directories) with its size and CRC-32, paths relative to the snapshot's directory.
    pub fn write(self) -> Result<Vec<SnapshotFile>> {
        let mut files = vec![];
        fs::create_dir_all(&self.dir).map_err(|e| SabotError::io(&self.dir, e))?;
        for (name, bytes) in &self.blobs {
            let path = self.dir.join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| SabotError::io(parent, e))?;
            }
            fs::write(&path, bytes).map_err(|e| SabotError::io(&path, e))?;
            files.push(SnapshotFile { path: name.clone(), len: bytes.len() as u64, crc32: crc32fast::hash(bytes) });
        }
        for name in &self.directories {
            let root = self.dir.join(name);
            if root.exists() {
                for file in list_files(&root)? {
                    let relative = file.strip_prefix(&self.dir).expect("under the snapshot dir");
                    files.push(SnapshotFile::read(&file, relative)?);
                }
            }
        }
        Ok(files)
    }
}

/// A file of a checkpoint with its size and checksum.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotFile {
    /// The path, relative to the directory it was listed from.
    pub path: String,
    /// Its size in bytes.
    pub len: u64,
    /// Its CRC-32 (IEEE).
    pub crc32: u32,
}

impl SnapshotFile {
    /// Records `file` under the name `relative`, for a checkpoint being written: a RocksDB
    /// table file whose checksum an earlier checkpoint computed is not read again.
    pub(crate) fn read(file: &Path, relative: &Path) -> Result<Self> {
        let immutable = immutable_file_id(file)?;
        if let Some((id, len)) = &immutable
            && let Some(&crc32) = IMMUTABLE_CRCS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id)
        {
            return Ok(SnapshotFile { path: relative_name(file, relative)?, len: *len, crc32 });
        }
        let read = Self::read_fresh(file, relative)?;
        if let Some((id, _)) = immutable {
            let mut known = IMMUTABLE_CRCS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if known.len() >= MAX_KNOWN_CRCS {
                known.clear();
            }
            known.insert(id, read.crc32);
        }
        Ok(read)
    }

    /// Reads `file` whole and records it under the name `relative` (verifying a checkpoint).
    pub(crate) fn read_fresh(file: &Path, relative: &Path) -> Result<Self> {
        let mut hasher = crc32fast::Hasher::new();
        let mut reader = fs::File::open(file).map_err(|e| SabotError::io(file, e))?;
        let len = std::io::copy(&mut reader, &mut HashWriter(&mut hasher)).map_err(|e| SabotError::io(file, e))?;
        Ok(SnapshotFile { path: relative_name(file, relative)?, len, crc32: hasher.finalize() })
    }
}

/// `relative` as a checkpoint records it (UTF-8, `/`-separated).
fn relative_name(file: &Path, relative: &Path) -> Result<String> {
    let path = relative.to_str().ok_or_else(|| SabotError::checkpoint(file, "file name is not UTF-8"))?;
    Ok(path.replace('\\', "/"))
}

/// Checksums of immutable files already read, by file identity: RocksDB checkpoints hard-link
/// the same table files again and again, so each checkpoint reads only the files that are new
/// since the last one (incremental, as the checkpoints themselves are).
static IMMUTABLE_CRCS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<FileId, u32>>> =
    std::sync::LazyLock::new(Default::default);

/// Checksums remembered at most (then forgotten all at once).
const MAX_KNOWN_CRCS: usize = 1 << 20;

/// Device, inode, length and modification time (s, ns): the same file, unchanged.
type FileId = (u64, u64, u64, i64, i64);

/// The identity of `file` and its length if it is a RocksDB table file, which RocksDB never
/// changes once written (hard links of it share the identity); `None` for other files.
fn immutable_file_id(file: &Path) -> Result<Option<(FileId, u64)>> {
    if file.extension().is_none_or(|e| e != "sst" && e != "blob") {
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(file).map_err(|e| SabotError::io(file, e))?;
        let id = (meta.dev(), meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec());
        Ok(Some((id, meta.len())))
    }
    #[cfg(not(unix))]
    Ok(None)
}

struct HashWriter<'a>(&'a mut crc32fast::Hasher);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every regular file under `root`, recursively, in a stable order.
pub(crate) fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| SabotError::io(&dir, e))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| SabotError::io(&dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let kind = entry.file_type().map_err(|e| SabotError::io(entry.path(), e))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The state an operator instance saved at the checkpoint being restored.
///
/// ```
/// use sabot::checkpoint::{RestoredState, StateSnapshot};
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// let dir = tempfile::tempdir()?;
/// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)])?;
/// let mut snapshot = StateSnapshot::new(1, dir.path());
/// snapshot.put_batches("buffered", &batch.schema(), &[batch.clone()])?;
/// snapshot.write()?;
/// assert_eq!(RestoredState::new(1, dir.path()).batches("buffered")?, vec![batch]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RestoredState {
    checkpoint: u64,
    dir: PathBuf,
    rescale: Option<Rescale>,
}

/// The checkpoint was taken with another parallelism: keyed operators split the state of
/// every old instance by key, as the hash exchange in front of them now routes keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescale {
    /// The parallelism when the checkpoint was taken.
    pub from: usize,
    /// The parallelism now.
    pub to: usize,
    /// This instance's partition (in `0..to`).
    pub partition: usize,
    /// Every old instance's saved state (one directory each).
    pub snapshots: Vec<PathBuf>,
}

impl RestoredState {
    /// The state saved for checkpoint `checkpoint` in `dir`.
    pub fn new(checkpoint: u64, dir: impl Into<PathBuf>) -> Self {
        RestoredState { checkpoint, dir: dir.into(), rescale: None }
    }

    /// State saved with another parallelism (see [`Rescale`]); `dir` is this partition's old
    /// directory, which may not exist.
    pub fn rescaled(checkpoint: u64, dir: impl Into<PathBuf>, rescale: Rescale) -> Self {
        RestoredState { checkpoint, dir: dir.into(), rescale: Some(rescale) }
    }

    /// Set when the checkpoint was taken with another parallelism.
    pub fn rescale(&self) -> Option<&Rescale> {
        self.rescale.as_ref()
    }

    /// The checkpoint's id.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint
    }

    /// The directory of the saved state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blob `name`, if the operator saved one.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_name(name)?;
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SabotError::io(path, e)),
        }
    }

    /// The value `name` saved with [`StateSnapshot::put_value`].
    pub fn value<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let Some(bytes) = self.get(name)? else { return Ok(None) };
        postcard::from_bytes(&bytes).map(Some).map_err(|e| SabotError::State {
            state: self.dir.join(name).display().to_string(),
            message: format!("decode snapshot: {e}"),
        })
    }

    /// The batches `name` saved with [`StateSnapshot::put_batches`] (none if it was not saved).
    pub fn batches(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let Some(bytes) = self.get(name)? else { return Ok(vec![]) };
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// The directory `name` saved with [`StateSnapshot::directory`], if it exists.
    pub fn directory(&self, name: &str) -> Result<Option<PathBuf>> {
        check_name(name)?;
        let path = self.dir.join(name);
        Ok(path.is_dir().then_some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_stay_inside_the_snapshot() {
        let mut snapshot = StateSnapshot::new(1, "/tmp/unused");
        for bad in ["", "/abs", "../up", "a//b", "a/./b", "a/.."] {
            assert!(snapshot.put(bad, vec![]).is_err(), "{bad}");
        }
        assert!(snapshot.put("keyed/count.state", vec![1]).is_ok());
    }

    #[test]
    fn written_files_carry_sizes_and_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let mut snapshot = StateSnapshot::new(3, dir.path().join("op"));
        snapshot.put("a", b"hello".to_vec()).unwrap();
        let sub = snapshot.directory("db").unwrap();
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("x.sst"), b"abc").unwrap();
        let files = snapshot.write().unwrap();
        assert_eq!(
            files,
            vec![
                SnapshotFile { path: "a".into(), len: 5, crc32: crc32fast::hash(b"hello") },
                SnapshotFile { path: "db/x.sst".into(), len: 3, crc32: crc32fast::hash(b"abc") },
            ]
        );
    }

    /// A table file linked into the next checkpoint keeps its checksum without being read;
    /// a rewritten one is read again, and verification always reads.
    #[cfg(unix)]
    #[test]
    fn table_files_are_checksummed_once_per_content() {
        let dir = tempfile::tempdir().unwrap();
        let (first, linked) = (dir.path().join("000007.sst"), dir.path().join("000007-linked.sst"));
        fs::write(&first, b"table").unwrap();
        fs::hard_link(&first, &linked).unwrap();
        let read = |file: &Path| SnapshotFile::read(file, Path::new("t.sst")).unwrap().crc32;
        assert_eq!(read(&first), crc32fast::hash(b"table"));
        assert_eq!(read(&linked), crc32fast::hash(b"table"), "a hard link is the same file");
        // Same length, new content (RocksDB never does this; a damaged copy might).
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&first, b"TABLE").unwrap();
        assert_eq!(read(&first), crc32fast::hash(b"TABLE"), "a changed file is read again");
        let fresh = SnapshotFile::read_fresh(&linked, Path::new("t.sst")).unwrap();
        assert_eq!(fresh.crc32, crc32fast::hash(b"TABLE"), "verification reads the file");
    }
}
