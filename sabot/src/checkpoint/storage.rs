//! The checkpoint directory: one sub-directory per checkpoint, completed by its metadata.
//!
//! ```text
//! <dir>/chk-00000001763800001000/
//!     _metadata.json            written last (temp file, fsync, rename): the checkpoint is
//!                               complete exactly when this file exists
//!     <operator uid>/p<partition>/...   each operator instance's state
//! ```
//!
//! The metadata lists every file with its size and CRC-32, the sources' positions and the
//! sink's committables. A checkpoint without metadata (the worker died while writing it) or
//! whose files do not match (a disk error, a truncated copy) is skipped with a warning, and
//! the one before it is used.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::snapshot::SnapshotFile;
use crate::{Result, SabotError};

/// The name of a checkpoint's metadata file.
pub const METADATA_FILE: &str = "_metadata.json";

/// The file that marks a checkpoint whose sink commit went through.
pub(crate) const COMMITTED_MARKER: &str = "_COMMITTED";

/// Whether the sink's commit of the checkpoint in `dir` is known to have gone through.
pub(crate) fn is_marked_committed(dir: &Path) -> bool {
    dir.join(COMMITTED_MARKER).exists()
}
const FORMAT_VERSION: u32 = 1;

/// What a completed checkpoint records besides the operators' files.
///
/// ```
/// use sabot::checkpoint::CheckpointMetadata;
/// let meta = CheckpointMetadata::new(42, 4);
/// assert_eq!(meta.id, 42);
/// assert!(!meta.savepoint);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The layout's version.
    pub format_version: u32,
    /// The checkpoint's id (its barrier's id).
    pub id: u64,
    /// True for a savepoint (a copy made on request that retention never deletes).
    pub savepoint: bool,
    /// When it completed, in ms since the Unix epoch.
    pub created_ms: u64,
    /// The pipeline's parallelism when it was taken.
    pub parallelism: usize,
    /// Per source (by its stable id): where to resume reading, as the source described it.
    pub sources: BTreeMap<String, serde_json::Value>,
    /// What the sink prepared before the barrier and publishes once the checkpoint is
    /// complete (hex-encoded; see [`Sink::commit`](crate::io::Sink::commit)).
    pub committables: Vec<String>,
    /// Every state file, relative to the checkpoint's directory.
    pub files: Vec<SnapshotFile>,
    /// The sink's commit is the pipeline's commit point (a Kafka transaction carrying the
    /// consumed offsets): the checkpoint counts once the commit marker is written next to
    /// its metadata (see [`Sink::takes_consumed_offsets`](crate::io::Sink::takes_consumed_offsets)).
    #[serde(default)]
    pub transactional: bool,
}

impl CheckpointMetadata {
    /// Empty metadata for checkpoint `id`.
    pub fn new(id: u64, parallelism: usize) -> Self {
        CheckpointMetadata {
            format_version: FORMAT_VERSION,
            id,
            savepoint: false,
            created_ms: now_ms(),
            parallelism,
            sources: BTreeMap::new(),
            committables: vec![],
            files: vec![],
            transactional: false,
        }
    }

    /// Whether the checkpoint in `dir`, with this metadata, counts: its sink's commit is not
    /// the pipeline's commit point, or it went through (the commit marker is there).
    pub(crate) fn is_committed(&self, dir: &Path) -> bool {
        !self.transactional || is_marked_committed(dir)
    }

    /// The committables, decoded.
    pub fn committables(&self) -> Result<Vec<Vec<u8>>> {
        self.committables.iter().map(|h| from_hex(h).ok_or_else(|| SabotError::plan("bad committable"))).collect()
    }

    /// The total size of the state files, in bytes.
    pub fn state_size(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A checkpoint directory on the local filesystem.
///
/// ```
/// use sabot::checkpoint::{CheckpointMetadata, CheckpointStorage};
/// let dir = tempfile::tempdir()?;
/// let storage = CheckpointStorage::open(dir.path(), 2)?;
/// for id in [1, 2, 3] {
///     std::fs::create_dir_all(storage.checkpoint_dir(id))?;
///     storage.complete(&CheckpointMetadata::new(id, 1))?;
/// }
/// let (_, latest) = storage.latest()?.expect("a checkpoint");
/// assert_eq!(latest.id, 3);
/// assert_eq!(storage.completed()?.len(), 2); // retention keeps the last 2
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    root: PathBuf,
    retain: usize,
    /// In a store shared by workers: its root. Retention then keeps a checkpoint that is the
    /// newest holder of a key group's state, however old.
    shared_root: Option<PathBuf>,
}

impl CheckpointStorage {
    /// Opens (and creates) the checkpoint directory `root`, keeping the last `retain`
    /// completed checkpoints (at least 1).
    pub fn open(root: impl Into<PathBuf>, retain: usize) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| SabotError::io(&root, e))?;
        Ok(CheckpointStorage { root, retain: retain.max(1), shared_root: None })
    }

    /// Opens this worker's directory `root` in a store shared by workers under `shared_root`.
    pub(crate) fn open_shared(root: impl Into<PathBuf>, retain: usize, shared_root: PathBuf) -> Result<Self> {
        Ok(CheckpointStorage { shared_root: Some(shared_root), ..Self::open(root, retain)? })
    }

    /// The checkpoint directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where checkpoint `id` lives.
    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("chk-{id:020}"))
    }

    /// Marks checkpoint `meta.id` complete by writing its metadata atomically, then applies
    /// retention: older checkpoints beyond the last `retain`, and unfinished ones older than
    /// this one, are deleted.
    pub fn complete(&self, meta: &CheckpointMetadata) -> Result<()> {
        let dir = self.checkpoint_dir(meta.id);
        write_metadata(&dir, meta)?;
        self.apply_retention(meta.id);
        Ok(())
    }

    fn apply_retention(&self, latest: u64) {
        let Ok(all) = self.list() else { return };
        let completed: Vec<u64> = all.iter().filter(|(_, done)| *done).map(|(id, _)| *id).collect();
        let keep_from = completed.iter().rev().nth(self.retain - 1).copied().unwrap_or(0);
        for (id, done) in all {
            let stale = if done { id < keep_from } else { id < latest };
            if stale {
                let dir = self.checkpoint_dir(id);
                if done && self.shared_root.as_ref().is_some_and(|root| super::key_groups::pinned(root, &dir)) {
                    tracing::debug!(checkpoint = id, "kept: it holds the newest state of a key group");
                    continue;
                }
                match fs::remove_dir_all(&dir) {
                    Ok(()) => tracing::debug!(checkpoint = id, "removed old checkpoint"),
                    Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove old checkpoint"),
                }
            }
        }
    }

    /// Every checkpoint directory, `(id, has metadata)`, oldest first.
    fn list(&self) -> Result<Vec<(u64, bool)>> {
        let mut out = vec![];
        for entry in fs::read_dir(&self.root).map_err(|e| SabotError::io(&self.root, e))? {
            let entry = entry.map_err(|e| SabotError::io(&self.root, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((id, entry.path().join(METADATA_FILE).exists()));
        }
        out.sort();
        Ok(out)
    }

    /// The ids of the completed checkpoints (with metadata, not yet verified), oldest first.
    pub fn completed(&self) -> Result<Vec<u64>> {
        Ok(self.list()?.into_iter().filter(|(_, done)| *done).map(|(id, _)| id).collect())
    }

    /// The newest checkpoint whose files all match their checksums, with its metadata.
    /// Checkpoints that fail verification are skipped with a warning.
    pub fn latest(&self) -> Result<Option<(PathBuf, CheckpointMetadata)>> {
        self.latest_before(u64::MAX)
    }

    /// As [`latest`](Self::latest), among the checkpoints older than `id`.
    pub fn latest_before(&self, id: u64) -> Result<Option<(PathBuf, CheckpointMetadata)>> {
        for id in self.completed()?.into_iter().rev().filter(|&c| c < id) {
            let dir = self.checkpoint_dir(id);
            match verify(&dir) {
                Ok(meta) => return Ok(Some((dir, meta))),
                Err(e) => tracing::warn!(checkpoint = id, error = %e, "skipping a corrupt checkpoint"),
            }
        }
        Ok(None)
    }

    /// Records that the sink's commit of checkpoint `id` went through (see
    /// [`Sink::takes_consumed_offsets`](crate::io::Sink::takes_consumed_offsets)). Not
    /// synced: a marker lost in a crash only makes recovery ask the broker.
    pub(crate) fn mark_committed(&self, id: u64) -> Result<()> {
        let path = self.checkpoint_dir(id).join(COMMITTED_MARKER);
        fs::write(&path, b"").map_err(|e| SabotError::io(&path, e))
    }

    /// Deletes checkpoint `id`, whose output was aborted: it must never be restored.
    pub(crate) fn discard(&self, id: u64) -> Result<()> {
        let dir = self.checkpoint_dir(id);
        // The metadata goes first: a crash halfway leaves an unfinished checkpoint, not a
        // restorable one.
        let metadata = dir.join(METADATA_FILE);
        fs::remove_file(&metadata).map_err(|e| SabotError::io(&metadata, e))?;
        fs::remove_dir_all(&dir).map_err(|e| SabotError::io(&dir, e))
    }

    /// Copies the newest valid checkpoint to `target` as a savepoint; returns its metadata.
    pub fn savepoint(&self, target: impl AsRef<Path>) -> Result<CheckpointMetadata> {
        let (dir, _) = self.latest()?.ok_or_else(|| SabotError::checkpoint(&self.root, "no complete checkpoint"))?;
        copy_savepoint(&dir, target.as_ref())
    }
}

/// Copies the checkpoint in `from` to the new directory `to`, marked as a savepoint.
pub fn copy_savepoint(from: &Path, to: &Path) -> Result<CheckpointMetadata> {
    let mut meta = verify(from)?;
    if to.exists() && fs::read_dir(to).map_err(|e| SabotError::io(to, e))?.next().is_some() {
        return Err(SabotError::checkpoint(to, "the savepoint directory exists and is not empty"));
    }
    for file in &meta.files {
        let (src, dst) = (from.join(&file.path), to.join(&file.path));
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| SabotError::io(parent, e))?;
        }
        fs::copy(&src, &dst).map_err(|e| SabotError::io(&dst, e))?;
    }
    meta.savepoint = true;
    write_metadata(to, &meta)?;
    verify(to)
}

/// The file of a store shared by workers that names the savepoint it was seeded from.
const SEEDED_FROM: &str = "_savepoint";

/// Whether any worker directory under `root` holds a checkpoint directory.
fn holds_checkpoints(root: &Path) -> bool {
    let is_checkpoint = |e: &fs::DirEntry| e.file_name().to_str().is_some_and(|n| n.starts_with("chk-"));
    fs::read_dir(root).is_ok_and(|workers| {
        workers.flatten().any(|w| fs::read_dir(w.path()).is_ok_and(|d| d.flatten().any(|e| is_checkpoint(&e))))
    })
}

/// Copies the savepoint of a store shared by workers (one directory per worker, see
/// [`savepoint_of_shared_store`]) into the empty store under `root`, once, so that every
/// worker of the restored app finds its key groups there: the first worker to start seeds
/// it, the others see the same savepoint recorded and go on. A store that holds checkpoints
/// of its own, or was seeded from another savepoint, is an error.
pub(crate) fn seed_shared_store(root: &Path, savepoint: &Path) -> Result<()> {
    fs::create_dir_all(root).map_err(|e| SabotError::io(root, e))?;
    let wanted = savepoint.display().to_string();
    let marker = root.join(SEEDED_FROM);
    let recorded = match fs::read_to_string(&marker) {
        Ok(recorded) => Some(recorded),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(SabotError::io(&marker, e)),
    };
    match recorded {
        Some(recorded) if recorded == wanted => {}
        Some(recorded) => {
            return Err(SabotError::checkpoint(root, format!("it was seeded from savepoint {recorded}, not {wanted}")));
        }
        None if holds_checkpoints(root) => {
            return Err(SabotError::checkpoint(
                root,
                "a savepoint of several workers is restored into an empty checkpoint directory; this one holds \
                 checkpoints",
            ));
        }
        None => {
            // Written aside, then linked into place: the marker appears with its content, and
            // only one worker's link succeeds.
            let staged = root.join(format!("{SEEDED_FROM}.{}-{}", std::process::id(), unique_suffix()));
            fs::write(&staged, wanted.as_bytes()).map_err(|e| SabotError::io(&staged, e))?;
            let linked = fs::hard_link(&staged, &marker);
            let _ = fs::remove_file(&staged);
            match linked {
                Ok(()) => {}
                // Another worker is seeding the store: it must be from the same savepoint.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return seed_shared_store(root, savepoint),
                Err(e) => return Err(SabotError::io(&marker, e)),
            }
        }
    }
    let workers = fs::read_dir(savepoint).map_err(|e| SabotError::io(savepoint, e))?;
    for worker in workers.flatten().filter(|w| w.path().is_dir()) {
        let target = root.join(worker.file_name());
        if fs::read_dir(&target).is_ok_and(|mut d| d.next().is_some()) {
            continue;
        }
        // Copied aside, then renamed into place: a worker never sees half a copy.
        let staging = root.join(format!(
            ".seeding-{}-{}-{}",
            worker.file_name().to_string_lossy(),
            std::process::id(),
            unique_suffix()
        ));
        for checkpoint in fs::read_dir(worker.path()).map_err(|e| SabotError::io(worker.path(), e))?.flatten() {
            copy_savepoint(&checkpoint.path(), &staging.join(checkpoint.file_name()))?;
        }
        if fs::rename(&staging, &target).is_err() {
            // Another worker seeded it meanwhile.
            let _ = fs::remove_dir_all(&staging);
        }
    }
    Ok(())
}

/// A number no other call in this process returns, for names of staged files.
fn unique_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Copies every complete checkpoint of every worker of the store shared under `root` into
/// `target`, one directory per worker as in the store, marked as savepoints: the key-group
/// holders are among them. Returns the ids of the checkpoints copied.
pub(crate) fn savepoint_of_shared_store(root: &Path, target: &Path) -> Result<Vec<u64>> {
    let mut copied = vec![];
    let mut workers: Vec<PathBuf> =
        fs::read_dir(root).map_err(|e| SabotError::io(root, e))?.flatten().map(|e| e.path()).collect();
    workers.sort();
    for worker in workers.iter().filter(|w| w.is_dir()) {
        let storage = CheckpointStorage::open(worker, usize::MAX)?;
        let name = worker.file_name().expect("a worker directory");
        for id in storage.completed()? {
            let dir = storage.checkpoint_dir(id);
            if verify(&dir).is_err() {
                continue;
            }
            copy_savepoint(&dir, &target.join(name).join(dir.file_name().expect("a checkpoint directory")))?;
            copied.push(id);
        }
    }
    if copied.is_empty() {
        return Err(SabotError::checkpoint(root, "no complete checkpoint of any worker"));
    }
    Ok(copied)
}

/// Whether `dir` is the root of a store shared by workers (it holds worker directories,
/// not checkpoints).
pub(crate) fn is_shared_store(dir: &Path) -> bool {
    let is_checkpoint = |e: &fs::DirEntry| e.file_name().to_str().is_some_and(|n| n.starts_with("chk-"));
    fs::read_dir(dir).is_ok_and(|d| !d.flatten().any(|e| is_checkpoint(&e))) && holds_checkpoints(dir)
}

/// Reads the metadata in `dir` and checks every file it lists (size and CRC-32).
pub fn verify(dir: &Path) -> Result<CheckpointMetadata> {
    let path = dir.join(METADATA_FILE);
    let text = fs::read(&path).map_err(|e| SabotError::io(&path, e))?;
    let meta: CheckpointMetadata =
        serde_json::from_slice(&text).map_err(|e| SabotError::checkpoint(dir, format!("unreadable metadata: {e}")))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(SabotError::checkpoint(dir, format!("unknown format version {}", meta.format_version)));
    }
    for file in &meta.files {
        let full = dir.join(&file.path);
        let found = SnapshotFile::read_fresh(&full, Path::new(&file.path))
            .map_err(|e| SabotError::checkpoint(dir, format!("missing state file {}: {e}", file.path)))?;
        if found.len != file.len || found.crc32 != file.crc32 {
            return Err(SabotError::checkpoint(
                dir,
                format!("state file {} does not match its checksum (corrupt or truncated)", file.path),
            ));
        }
    }
    Ok(meta)
}

/// Writes `meta` into `dir` atomically: a temporary file, synced, then renamed.
fn write_metadata(dir: &Path, meta: &CheckpointMetadata) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| SabotError::io(dir, e))?;
    let tmp = dir.join(format!("{METADATA_FILE}.tmp"));
    let body = serde_json::to_vec_pretty(meta).map_err(|e| SabotError::checkpoint(dir, e.to_string()))?;
    let mut file = fs::File::create(&tmp).map_err(|e| SabotError::io(&tmp, e))?;
    file.write_all(&body).and_then(|()| file.sync_all()).map_err(|e| SabotError::io(&tmp, e))?;
    let path = dir.join(METADATA_FILE);
    fs::rename(&tmp, &path).map_err(|e| SabotError::io(&path, e))?;
    // The rename itself must survive a crash.
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::StateSnapshot;

    fn checkpoint(storage: &CheckpointStorage, id: u64, value: &[u8]) {
        let dir = storage.checkpoint_dir(id);
        let mut snapshot = StateSnapshot::new(id, dir.join("op/p0"));
        snapshot.put("state", value.to_vec()).unwrap();
        let mut meta = CheckpointMetadata::new(id, 1);
        meta.files = snapshot
            .write()
            .unwrap()
            .into_iter()
            .map(|f| SnapshotFile { path: format!("op/p0/{}", f.path), ..f })
            .collect();
        storage.complete(&meta).unwrap();
    }

    #[test]
    fn a_corrupt_checkpoint_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(dir.path(), 3).unwrap();
        checkpoint(&storage, 10, b"first");
        checkpoint(&storage, 20, b"second");
        assert_eq!(storage.latest().unwrap().unwrap().1.id, 20);
        // Flip a byte of the newest state file: same size, other checksum.
        fs::write(storage.checkpoint_dir(20).join("op/p0/state"), b"secont").unwrap();
        assert_eq!(storage.latest().unwrap().unwrap().1.id, 10);
        // A truncated file is caught as well.
        fs::write(storage.checkpoint_dir(10).join("op/p0/state"), b"fir").unwrap();
        assert!(storage.latest().unwrap().is_none());
    }

    #[test]
    fn unfinished_checkpoints_are_ignored_and_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(dir.path(), 1).unwrap();
        checkpoint(&storage, 1, b"a");
        fs::create_dir_all(storage.checkpoint_dir(2).join("op/p0")).unwrap(); // died while writing
        assert_eq!(storage.latest().unwrap().unwrap().1.id, 1);
        checkpoint(&storage, 3, b"c");
        assert_eq!(storage.list().unwrap(), vec![(3, true)]);
    }

    #[test]
    fn savepoints_are_verified_copies() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(dir.path().join("chk"), 2).unwrap();
        checkpoint(&storage, 5, b"state");
        let target = dir.path().join("sp");
        let meta = storage.savepoint(&target).unwrap();
        assert!(meta.savepoint);
        assert_eq!(fs::read(target.join("op/p0/state")).unwrap(), b"state");
        assert!(storage.savepoint(&target).is_err(), "never overwrites a savepoint");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(from_hex(&to_hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(from_hex("abc"), None);
    }
}
