//! A mirror of the checkpoint directory in an object store (feature `object-store`).
//!
//! The layout is the local one under a prefix:
//!
//! ```text
//! <prefix>/chk-00000001763800001000/
//!     <operator uid>/p<partition>/...   every state file the metadata lists
//!     _metadata.json                    uploaded last: the remote checkpoint is complete
//!                                       exactly when this object exists
//! ```
//!
//! Retention keeps the newest `retain` complete remote checkpoints; an older one loses its
//! metadata first, so a checkpoint half deleted (the worker died while deleting it) is
//! incomplete and never restored. A download is verified like a local checkpoint (every
//! file's size and CRC-32): a corrupt remote checkpoint is skipped and the one before it used.
//!
//! The `object_store` API is async; [`RemoteCheckpoints`] runs it on a current-thread Tokio
//! runtime of its own and offers blocking calls, made from the checkpoint coordinator's
//! uploader thread and on start.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::storage::{CheckpointMetadata, METADATA_FILE, verify};
use crate::{Result, SabotError};

/// Files larger than this are uploaded in parts of this size (S3 wants parts of at least 5 MiB).
const PART_SIZE: usize = 8 << 20;

/// Where a pipeline mirrors its checkpoints: an object store and a prefix in it (see
/// [`CheckpointConfig::with_object_store`](super::CheckpointConfig::with_object_store)).
///
/// Two `RemoteConfig`s are equal when their prefixes are and their stores display the same
/// (`InMemory`, `LocalFileSystem(file:///...)`, `AmazonS3(bucket)`...): stores cannot be
/// compared otherwise.
///
/// ```
/// use std::sync::Arc;
/// use object_store::memory::InMemory;
/// use sabot::checkpoint::RemoteConfig;
///
/// let remote = RemoteConfig::new(Arc::new(InMemory::new()), "jobs/clicks");
/// assert_eq!(remote.prefix.as_ref(), "jobs/clicks");
/// ```
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// Where the checkpoints go in it (`<prefix>/chk-<id>/...`).
    pub prefix: ObjectPath,
}

impl RemoteConfig {
    /// Checkpoints under `prefix` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<ObjectPath>) -> Self {
        RemoteConfig { store, prefix: prefix.into() }
    }
}

impl PartialEq for RemoteConfig {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && self.store.to_string() == other.store.to_string()
    }
}

impl Eq for RemoteConfig {}

/// The checkpoints under a prefix of an object store, with blocking calls to upload a local
/// checkpoint and to download the newest valid one.
///
/// ```
/// use std::sync::Arc;
/// use object_store::memory::InMemory;
/// use sabot::checkpoint::{CheckpointMetadata, CheckpointStorage, RemoteCheckpoints};
///
/// let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
/// let local = CheckpointStorage::open(a.path(), 3)?;
/// std::fs::create_dir_all(local.checkpoint_dir(7))?;
/// local.complete(&CheckpointMetadata::new(7, 1))?;
///
/// let remote = RemoteCheckpoints::new(Arc::new(InMemory::new()), "app", 3)?;
/// remote.upload(&local.checkpoint_dir(7), 7)?;
/// assert_eq!(remote.completed()?, vec![7]);
/// let (dir, meta) = remote.download_latest(b.path())?.expect("a remote checkpoint");
/// assert_eq!((dir, meta.id), (b.path().join("chk-00000000000000000007"), 7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RemoteCheckpoints {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    retain: usize,
    runtime: tokio::runtime::Runtime,
}

/// One remote checkpoint's objects, found by listing.
#[derive(Debug, Default)]
struct Listed {
    complete: bool,
    objects: Vec<ObjectPath>,
}

impl RemoteCheckpoints {
    /// The checkpoints under `prefix` in `store`, keeping the newest `retain` (at least 1).
    /// Fails only when the runtime for the store's calls cannot be started.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<ObjectPath>, retain: usize) -> Result<Self> {
        let prefix = prefix.into();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            SabotError::checkpoint(prefix.as_ref(), format!("cannot start the object store's runtime: {e}"))
        })?;
        Ok(RemoteCheckpoints { store, prefix, retain: retain.max(1), runtime })
    }

    /// The mirror `remote` describes, keeping the newest `retain` checkpoints.
    pub fn from_config(remote: &RemoteConfig, retain: usize) -> Result<Self> {
        Self::new(remote.store.clone(), remote.prefix.clone(), retain)
    }

    /// The prefix the checkpoints are under.
    pub fn prefix(&self) -> &ObjectPath {
        &self.prefix
    }

    /// Where checkpoint `id` lives in the store: `<prefix>/chk-<id:020>`.
    pub fn checkpoint_prefix(&self, id: u64) -> ObjectPath {
        self.prefix.clone().join(format!("chk-{id:020}"))
    }

    /// The object of the file `relative` (to the checkpoint's directory, `/`-separated) of
    /// checkpoint `id`.
    fn object(&self, id: u64, relative: &str) -> ObjectPath {
        relative.split('/').filter(|p| !p.is_empty()).fold(self.checkpoint_prefix(id), |path, part| path.join(part))
    }

    fn store_error(&self, location: &ObjectPath, e: object_store::Error) -> SabotError {
        SabotError::checkpoint(location.as_ref(), format!("object store {}: {e}", self.store))
    }

    /// Runs `future` to completion on the mirror's runtime. Called from inside another Tokio
    /// runtime (where blocking on a runtime is not allowed), it runs on a scoped thread.
    fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(self.runtime.block_on(future));
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.runtime.block_on(future))
                .join()
                .map_err(|_| SabotError::Execution("an object store call panicked".into()))
        })
    }

    /// Every checkpoint under the prefix with its objects, by id.
    fn list(&self) -> Result<BTreeMap<u64, Listed>> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let objects = self
            .block_on(self.store.list(prefix).try_collect::<Vec<_>>())?
            .map_err(|e| self.store_error(&self.prefix, e))?;
        let mut out: BTreeMap<u64, Listed> = BTreeMap::new();
        for object in objects {
            let Some(mut parts) = object.location.prefix_match(&self.prefix) else { continue };
            let Some(id) = parts.next().and_then(|p| p.as_ref().strip_prefix("chk-").and_then(|n| n.parse().ok()))
            else {
                continue;
            };
            let rest: Vec<_> = parts.collect();
            let listed = out.entry(id).or_default();
            listed.complete |= rest.len() == 1 && rest[0].as_ref() == METADATA_FILE;
            listed.objects.push(object.location);
        }
        Ok(out)
    }

    /// The ids of the complete remote checkpoints (with metadata, not verified), oldest first.
    pub fn completed(&self) -> Result<Vec<u64>> {
        Ok(self.list()?.into_iter().filter(|(_, l)| l.complete).map(|(id, _)| id).collect())
    }

    /// Uploads the completed local checkpoint `id` in `local_checkpoint_dir`: first every
    /// state file its metadata lists (the checkpoint is verified first: a corrupt one is not
    /// uploaded), then its metadata, which makes it complete in the store. Then applies
    /// retention: complete remote checkpoints beyond the newest `retain`, and incomplete ones
    /// older than `id` (failed uploads), are deleted.
    ///
    /// Errors name the local checkpoint or the object that failed; what was uploaded of a
    /// failed checkpoint stays incomplete and is deleted by a later upload's retention.
    pub fn upload(&self, local_checkpoint_dir: &Path, id: u64) -> Result<()> {
        let meta = verify(local_checkpoint_dir)?;
        if meta.id != id {
            return Err(SabotError::checkpoint(
                local_checkpoint_dir,
                format!("its metadata names checkpoint {}, not {id}", meta.id),
            ));
        }
        for file in &meta.files {
            self.put_file(&local_checkpoint_dir.join(&file.path), &self.object(id, &file.path))?;
        }
        // Last: the checkpoint is complete once its metadata is there.
        self.put_file(&local_checkpoint_dir.join(METADATA_FILE), &self.object(id, METADATA_FILE))?;
        tracing::debug!(checkpoint = id, prefix = %self.prefix, files = meta.files.len(), "checkpoint uploaded");
        if let Err(e) = self.apply_retention(id) {
            tracing::warn!(error = %e, "cannot apply retention to the remote checkpoints");
        }
        Ok(())
    }

    /// Uploads one local file: in one request, or in parts when it is large.
    fn put_file(&self, local: &Path, location: &ObjectPath) -> Result<()> {
        let mut file = fs::File::open(local).map_err(|e| SabotError::io(local, e))?;
        let len = file.metadata().map_err(|e| SabotError::io(local, e))?.len();
        if len <= PART_SIZE as u64 {
            let mut body = Vec::with_capacity(len as usize);
            file.read_to_end(&mut body).map_err(|e| SabotError::io(local, e))?;
            self.block_on(self.store.put(location, PutPayload::from(body)))?
                .map_err(|e| self.store_error(location, e))?;
            return Ok(());
        }
        let mut upload =
            self.block_on(self.store.put_multipart(location))?.map_err(|e| self.store_error(location, e))?;
        let parts = (|| -> Result<()> {
            loop {
                let mut part = Vec::with_capacity(PART_SIZE);
                (&mut file).take(PART_SIZE as u64).read_to_end(&mut part).map_err(|e| SabotError::io(local, e))?;
                if part.is_empty() {
                    return Ok(());
                }
                self.block_on(upload.put_part(PutPayload::from(part)))?.map_err(|e| self.store_error(location, e))?;
            }
        })();
        let result = match parts {
            Ok(()) => self.block_on(upload.complete())?.map(drop).map_err(|e| self.store_error(location, e)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = self.block_on(upload.abort());
        }
        result
    }

    /// Deletes remote checkpoints beyond the newest `retain` complete ones, and incomplete
    /// ones older than `latest`. A checkpoint's metadata is deleted first.
    fn apply_retention(&self, latest: u64) -> Result<()> {
        let listed = self.list()?;
        let completed: Vec<u64> = listed.iter().filter(|(_, l)| l.complete).map(|(id, _)| *id).collect();
        let keep_from = completed.iter().rev().nth(self.retain - 1).copied().unwrap_or(0);
        for (id, mut checkpoint) in listed {
            let stale = if checkpoint.complete { id < keep_from } else { id < latest };
            if !stale {
                continue;
            }
            checkpoint.objects.sort_by_key(|o| o.filename() != Some(METADATA_FILE));
            for object in &checkpoint.objects {
                match self.block_on(self.store.delete(object))? {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.store_error(object, e)),
                }
            }
            tracing::debug!(checkpoint = id, prefix = %self.prefix, "removed old remote checkpoint");
        }
        Ok(())
    }

    /// Downloads the newest valid remote checkpoint into `<local_root>/chk-<id:020>/` (a
    /// local directory of that name is replaced) and returns where it is with its metadata,
    /// or `None` if the store has no valid checkpoint. The files come first and the metadata
    /// last, so an interrupted download is not a complete local checkpoint; the copy is then
    /// verified like a local checkpoint. A checkpoint that cannot be downloaded or does not
    /// verify is skipped with a warning and the one before it tried.
    ///
    /// Fails when the store cannot be listed (a restore would otherwise start empty).
    pub fn download_latest(&self, local_root: &Path) -> Result<Option<(PathBuf, CheckpointMetadata)>> {
        for id in self.completed()?.into_iter().rev() {
            let target = local_root.join(format!("chk-{id:020}"));
            match self.download(id, &target) {
                Ok(meta) => return Ok(Some((target, meta))),
                Err(e) => {
                    tracing::warn!(checkpoint = id, prefix = %self.prefix, error = %e, "skipping a remote checkpoint");
                    if let Err(e) = fs::remove_dir_all(&target)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(dir = %target.display(), error = %e, "cannot remove a failed download");
                    }
                }
            }
        }
        Ok(None)
    }

    /// Downloads checkpoint `id` into `target` and verifies it.
    fn download(&self, id: u64, target: &Path) -> Result<CheckpointMetadata> {
        match fs::remove_dir_all(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SabotError::io(target, e)),
        }
        fs::create_dir_all(target).map_err(|e| SabotError::io(target, e))?;
        let meta_object = self.object(id, METADATA_FILE);
        let body = self
            .block_on(async { self.store.get(&meta_object).await?.bytes().await })?
            .map_err(|e| self.store_error(&meta_object, e))?;
        let meta: CheckpointMetadata = serde_json::from_slice(&body)
            .map_err(|e| SabotError::checkpoint(meta_object.as_ref(), format!("unreadable metadata: {e}")))?;
        if meta.id != id {
            return Err(SabotError::checkpoint(
                meta_object.as_ref(),
                format!("the metadata names checkpoint {}", meta.id),
            ));
        }
        for file in &meta.files {
            let relative = Path::new(&file.path);
            if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(SabotError::checkpoint(
                    meta_object.as_ref(),
                    format!("state file {} is not inside the checkpoint", file.path),
                ));
            }
            self.get_file(&self.object(id, &file.path), &target.join(relative))?;
        }
        // Last, atomically: the local copy is complete once its metadata is there.
        let tmp = target.join(format!("{METADATA_FILE}.tmp"));
        fs::write(&tmp, &body).map_err(|e| SabotError::io(&tmp, e))?;
        let path = target.join(METADATA_FILE);
        fs::rename(&tmp, &path).map_err(|e| SabotError::io(&path, e))?;
        verify(target)
    }

    /// Downloads one object into the local file `local`, chunk by chunk.
    fn get_file(&self, location: &ObjectPath, local: &Path) -> Result<()> {
        if let Some(parent) = local.parent() {
            fs::create_dir_all(parent).map_err(|e| SabotError::io(parent, e))?;
        }
        let mut file = fs::File::create(local).map_err(|e| SabotError::io(local, e))?;
        self.block_on(async {
            let mut chunks = self.store.get(location).await.map_err(|e| self.store_error(location, e))?.into_stream();
            while let Some(chunk) = chunks.try_next().await.map_err(|e| self.store_error(location, e))? {
                file.write_all(&chunk).map_err(|e| SabotError::io(local, e))?;
            }
            Ok(())
        })?
    }
}

#[cfg(test)]
mod tests {
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    use super::*;
    use crate::checkpoint::{CheckpointStorage, SnapshotFile, StateSnapshot};

    /// Completes local checkpoint `id` with one state file holding `value`.
    fn checkpoint(storage: &CheckpointStorage, id: u64, value: &[u8]) -> CheckpointMetadata {
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
        verify(&dir).unwrap()
    }

    fn local_store(dir: &Path) -> Arc<dyn ObjectStore> {
        Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap())
    }

    #[test]
    fn an_uploaded_checkpoint_downloads_into_an_empty_directory() {
        let (local, remote_dir, restore) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let storage = CheckpointStorage::open(local.path(), 3).unwrap();
        let meta = checkpoint(&storage, 42, b"forty-two");
        let remote = RemoteCheckpoints::new(local_store(remote_dir.path()), "jobs/count", 3).unwrap();
        remote.upload(&storage.checkpoint_dir(42), 42).unwrap();
        assert!(remote_dir.path().join("jobs/count/chk-00000000000000000042/op/p0/state").is_file());

        let target = restore.path().join("chk");
        let (dir, downloaded) = remote.download_latest(&target).unwrap().expect("the uploaded checkpoint");
        assert_eq!(dir, target.join("chk-00000000000000000042"));
        assert_eq!(downloaded, meta, "same id, files, sources and committables");
        assert_eq!(fs::read(dir.join("op/p0/state")).unwrap(), b"forty-two");
        let (found, again) = CheckpointStorage::open(&target, 3).unwrap().latest().unwrap().expect("valid locally");
        assert_eq!((found, again), (dir, meta));
    }

    #[test]
    fn a_checkpoint_without_remote_metadata_is_incomplete() {
        let (local, restore) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let storage = CheckpointStorage::open(local.path(), 3).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let remote = RemoteCheckpoints::new(store.clone(), "", 3).unwrap();
        checkpoint(&storage, 1, b"one");
        checkpoint(&storage, 2, b"two");
        remote.upload(&storage.checkpoint_dir(1), 1).unwrap();
        remote.upload(&storage.checkpoint_dir(2), 2).unwrap();
        assert_eq!(remote.completed().unwrap(), vec![1, 2]);

        // The newest lost its metadata (an upload that died before it): the previous one.
        let meta2 = remote.object(2, METADATA_FILE);
        remote.block_on(store.delete(&meta2)).unwrap().unwrap();
        assert_eq!(remote.completed().unwrap(), vec![1]);
        let (dir, meta) = remote.download_latest(restore.path()).unwrap().unwrap();
        assert_eq!((dir, meta.id), (restore.path().join("chk-00000000000000000001"), 1));
        assert!(!restore.path().join("chk-00000000000000000002").exists());

        remote.block_on(store.delete(&remote.object(1, METADATA_FILE))).unwrap().unwrap();
        let empty = tempfile::tempdir().unwrap();
        assert!(remote.download_latest(empty.path()).unwrap().is_none());
        assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0, "nothing downloaded");
    }

    #[test]
    fn a_corrupt_remote_checkpoint_is_skipped() {
        let (local, remote_dir, restore) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let storage = CheckpointStorage::open(local.path(), 3).unwrap();
        let store = local_store(remote_dir.path());
        let remote = RemoteCheckpoints::new(store.clone(), "chk", 3).unwrap();
        for (id, value) in [(10, &b"first"[..]), (20, b"second")] {
            checkpoint(&storage, id, value);
            remote.upload(&storage.checkpoint_dir(id), id).unwrap();
        }
        // Same size, another checksum.
        let object = remote.object(20, "op/p0/state");
        remote.block_on(store.put(&object, PutPayload::from_static(b"secont"))).unwrap().unwrap();

        let (dir, meta) = remote.download_latest(restore.path()).unwrap().expect("the previous checkpoint");
        assert_eq!((dir, meta.id), (restore.path().join("chk-00000000000000000010"), 10));
        assert_eq!(fs::read(restore.path().join("chk-00000000000000000010/op/p0/state")).unwrap(), b"first");
        assert!(!restore.path().join("chk-00000000000000000020").exists(), "the corrupt copy is removed");

        // A missing state file is skipped as well.
        remote.block_on(store.delete(&remote.object(10, "op/p0/state"))).unwrap().unwrap();
        assert!(remote.download_latest(restore.path()).unwrap().is_none());
    }

    #[test]
    fn remote_retention_keeps_the_newest_n() {
        let local = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(local.path(), 10).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let remote = RemoteCheckpoints::new(store.clone(), "app", 2).unwrap();
        // An upload that failed before its metadata, older than the next one: removed too.
        checkpoint(&storage, 1, b"a");
        remote.block_on(store.put(&remote.object(1, "op/p0/state"), PutPayload::from_static(b"a"))).unwrap().unwrap();
        for id in 2..=5 {
            checkpoint(&storage, id, format!("state {id}").as_bytes());
            remote.upload(&storage.checkpoint_dir(id), id).unwrap();
        }
        assert_eq!(remote.completed().unwrap(), vec![4, 5]);
        let listed = remote.list().unwrap();
        assert_eq!(listed.keys().copied().collect::<Vec<_>>(), vec![4, 5], "no object of older checkpoints left");
        assert!(listed.values().all(|l| l.objects.len() == 2), "{listed:?}");
    }

    #[test]
    fn a_corrupt_local_checkpoint_is_not_uploaded() {
        let local = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(local.path(), 3).unwrap();
        let remote = RemoteCheckpoints::new(Arc::new(InMemory::new()), "app", 3).unwrap();
        checkpoint(&storage, 3, b"state");
        fs::write(storage.checkpoint_dir(3).join("op/p0/state"), b"stale").unwrap();
        assert!(matches!(remote.upload(&storage.checkpoint_dir(3), 3), Err(SabotError::Checkpoint { .. })));
        assert!(matches!(remote.upload(&storage.checkpoint_dir(4), 4), Err(SabotError::Io { .. })));
        assert!(remote.list().unwrap().is_empty());
    }

    #[test]
    fn large_files_are_uploaded_in_parts() {
        let (local, remote_dir, restore) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let storage = CheckpointStorage::open(local.path(), 3).unwrap();
        let big: Vec<u8> = (0..PART_SIZE * 2 + 123).map(|i| (i % 251) as u8).collect();
        let meta = checkpoint(&storage, 9, &big);
        let remote = RemoteCheckpoints::new(local_store(remote_dir.path()), "big", 3).unwrap();
        remote.upload(&storage.checkpoint_dir(9), 9).unwrap();
        let (dir, downloaded) = remote.download_latest(restore.path()).unwrap().unwrap();
        assert_eq!(downloaded, meta);
        assert_eq!(fs::read(dir.join("op/p0/state")).unwrap(), big);
    }

    #[test]
    fn calls_work_inside_a_tokio_runtime() {
        let remote = RemoteCheckpoints::new(Arc::new(InMemory::new()), "app", 3).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(runtime.block_on(async { remote.completed().unwrap() }), Vec::<u64>::new());
    }
}
