//! [`KeyedStateStore`]: the keyed state of one operator instance, on a [`StateBackend`].

use std::any::TypeId;
use std::fs;
use std::hash::{BuildHasher, Hash};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::FixedState;

use super::StateValue;
use super::clock::StateClock;
use super::descriptor::{ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor};
use super::handles::{ListState, MapState, ReducingState, StateId, ValueState};
use super::memory::{ErasedTable, KeyCheck, KeyFilter, MapTable, MemTable, ValueTable};
#[cfg(feature = "rocksdb")]
use super::rocks::{RocksDbInstance, RocksTables};
use crate::{Result, SabotError};

/// The file that marks a directory as a memory-backend snapshot.
const MEMORY_SNAPSHOT_MARKER: &str = "SABOT_MEMORY_STATE";

/// Where keyed state lives. One [`KeyedStateStore`] is opened per operator instance from it.
///
/// ```
/// use sabot::state::{KeyedStateStore, StateBackend};
/// let store = KeyedStateStore::open(&StateBackend::default(), "counter").unwrap();
/// assert_eq!(store.backend_name(), "memory");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateBackend {
    /// Typed hash maps on the heap: the fastest, bounded by RAM, lost on exit unless
    /// snapshotted.
    #[default]
    Memory,
    /// RocksDB in `path`: state larger than RAM. Every store opened on the same path shares
    /// one RocksDB instance (one per worker), with one column family per state named
    /// `{operator}/{state}`.
    ///
    /// ```no_run
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// let backend = StateBackend::RocksDb { path: "/var/lib/sabot/worker-0".into() };
    /// let store = KeyedStateStore::open(&backend, "counter").unwrap();
    /// assert_eq!(store.backend_name(), "rocksdb");
    /// ```
    #[cfg(feature = "rocksdb")]
    RocksDb {
        /// The worker's RocksDB directory (created when missing).
        path: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StateKind {
    Value,
    List,
    Map,
    Reducing,
}

/// What the store knows of a registered state.
pub(super) struct StateMeta {
    /// `{operator}/{state}`: the RocksDB column family, and the name in errors.
    pub(super) full_name: String,
    name: String,
    kind: StateKind,
    type_id: TypeId,
    pub(super) ttl_ms: Option<u64>,
}

/// The tables of the backend in use.
pub(super) enum Backend {
    Memory(Vec<Box<dyn ErasedTable>>),
    #[cfg(feature = "rocksdb")]
    RocksDb(Box<RocksTables>),
}

/// Everything a state access needs, borrowed disjointly from the store.
pub(super) struct Access<'a> {
    pub(super) key: &'a [u8],
    pub(super) hash: u64,
    /// The clock's time if the state has a TTL, else 0 (nothing expires).
    pub(super) now: u64,
    /// When a value written now expires.
    pub(super) expires_at: u64,
    pub(super) idx: usize,
    pub(super) state: &'a str,
    pub(super) backend: &'a mut Backend,
    /// Hashes RocksDB map-entry keys.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(super) hasher: &'a FixedState,
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// The keyed state of one operator instance (one worker partition), in the manner of Flink's
/// keyed state backend.
///
/// Operators register states with descriptors and get small `Copy`/`Clone` handles
/// ([`ValueState`], [`ListState`], [`MapState`], [`ReducingState`]); a handle reads and
/// writes through `&mut KeyedStateStore`, either for the current key set with
/// [`set_current_key`](Self::set_current_key) (hashed once, then shared by every state
/// touched for that key) or for an explicit key (the `*_for` methods, for batch-at-a-time
/// operators). Keys are the encoded key columns, as bytes.
///
/// ```
/// use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
///
/// let mut store = KeyedStateStore::open(&StateBackend::Memory, "word_count")?;
/// let count = store.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
/// for word in ["a", "b", "a"] {
///     store.set_current_key(word.as_bytes());
///     let n = count.value(&mut store)?.unwrap_or(0);
///     count.update(&mut store, n + 1)?;
/// }
/// assert_eq!(count.value_for(&mut store, b"a")?, Some(2));
/// assert_eq!(count.value_for(&mut store, b"b")?, Some(1));
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct KeyedStateStore {
    id: u64,
    operator: String,
    clock: StateClock,
    key: Vec<u8>,
    key_hash: u64,
    key_set: bool,
    hasher: FixedState,
    states: Vec<StateMeta>,
    backend: Backend,
    /// A memory snapshot whose state files are loaded as the states register.
    restore_dir: Option<PathBuf>,
    /// Restored states never registered again, carried over by snapshots: (state, file bytes).
    carried: Vec<(String, Vec<u8>)>,
    /// Restoring with another parallelism: every old instance's snapshot, of which this
    /// instance keeps the keys `key_filter` accepts.
    rescale_dirs: Vec<SnapshotSource>,
    key_filter: KeyFilter,
    /// Opened by [`open_transient`](Self::open_transient): deleted from the backend on drop.
    transient: bool,
}

/// A snapshot of a keyed state store to take keys from: its directory, and the operator id
/// of the instance that took it (RocksDB column families are named after it).
#[derive(Debug, Clone)]
pub(crate) struct SnapshotSource {
    pub(crate) dir: PathBuf,
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) operator: String,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(SabotError::State {
            state: name.to_string(),
            message: format!("invalid {what} name: must be non-empty, not '.' or '..', without '/', '\\' or NUL"),
        });
    }
    Ok(())
}

impl KeyedStateStore {
    /// Opens the state store of operator `operator` on `backend`. With RocksDB, the worker's
    /// instance at the backend's path is opened (or shared, if another store has it open) and
    /// the states this operator wrote before are there again.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// let store = KeyedStateStore::open(&StateBackend::Memory, "sessions").unwrap();
    /// assert_eq!(store.operator(), "sessions");
    /// ```
    ///
    /// Operator ids starting with `transient.` are reserved (operators' own stores, which a
    /// RocksDB instance drops when it opens).
    pub fn open(backend: &StateBackend, operator: &str) -> Result<Self> {
        if operator.starts_with(TRANSIENT_PREFIX) {
            return Err(SabotError::State {
                state: operator.to_string(),
                message: format!("operator ids starting with '{TRANSIENT_PREFIX}' are reserved"),
            });
        }
        Self::open_any(backend, operator)
    }

    /// [`open`](Self::open) without the reserved-name check.
    pub(crate) fn open_any(backend: &StateBackend, operator: &str) -> Result<Self> {
        check_name("operator", operator)?;
        let backend = match backend {
            StateBackend::Memory => Backend::Memory(Vec::new()),
            #[cfg(feature = "rocksdb")]
            StateBackend::RocksDb { path } => {
                Backend::RocksDb(Box::new(RocksTables::new(RocksDbInstance::open(path)?, operator)?))
            }
        };
        tracing::debug!(operator, "opened keyed state store");
        Ok(KeyedStateStore {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            operator: operator.to_string(),
            clock: StateClock::System,
            key: Vec::with_capacity(64),
            key_hash: 0,
            key_set: false,
            hasher: FixedState::with_seed(0x5ab0_7a7e),
            states: Vec::new(),
            backend,
            restore_dir: None,
            carried: Vec::new(),
            rescale_dirs: Vec::new(),
            key_filter: None,
            transient: false,
        })
    }

    /// Opens a store that holds state only while the operator instance runs, for operators
    /// that restore from their snapshots alone (window panes, join tables): named
    /// `transient.{kind}-{n}` (unique in the process, so instances never share column
    /// families), empty on open, and deleted from the backend when dropped. A crashed
    /// process cannot delete its transient stores: the next process to open the RocksDB
    /// instance drops them all. [`operator`](Self::operator) gives the name, which snapshots
    /// record for restores to copy from.
    pub(crate) fn open_transient(backend: &StateBackend, kind: &str) -> Result<Self> {
        static NEXT_TRANSIENT: AtomicU64 = AtomicU64::new(1);
        let operator = format!("{TRANSIENT_PREFIX}{kind}-{}", NEXT_TRANSIENT.fetch_add(1, Ordering::Relaxed));
        let mut store = Self::open_any(backend, &operator)?;
        #[cfg(feature = "rocksdb")]
        if let Backend::RocksDb(tables) = &mut store.backend {
            tables.drop_all()?;
        }
        store.transient = true;
        Ok(store)
    }

    /// Deletes every state of this store from its backend (RocksDB: drops the operator's
    /// column families).
    fn discard(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Memory(tables) => {
                for table in tables {
                    table.retain_keys(&|_| false);
                }
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => tables.discard()?,
        }
        Ok(())
    }

    /// Opens the store of `operator` on `backend` with the state saved by
    /// [`snapshot`](Self::snapshot) in `dir`, replacing what the operator had in the backend.
    ///
    /// Memory: each state is loaded from its file when it is registered again (states never
    /// registered again are carried over to later snapshots). RocksDB: the operator's column
    /// families are replaced by copies of those in the checkpoint. A snapshot restores into
    /// the kind of backend that took it.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// let dir = tempfile::tempdir()?;
    /// let snap = dir.path().join("chk-1");
    /// let desc = ValueStateDescriptor::<String>::new("last");
    ///
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let last = store.value_state(&desc)?;
    /// last.update_for(&mut store, b"k", "hello".to_string())?;
    /// store.snapshot(&snap)?;
    ///
    /// let mut restored = KeyedStateStore::restore(&StateBackend::Memory, "op", &snap)?;
    /// let last = restored.value_state(&desc)?;
    /// assert_eq!(last.value_for(&mut restored, b"k")?.as_deref(), Some("hello"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn restore(backend: &StateBackend, operator: &str, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut store = Self::open(backend, operator)?;
        let marker = dir.join(MEMORY_SNAPSHOT_MARKER);
        match &mut store.backend {
            Backend::Memory(_) => {
                let owner = fs::read_to_string(&marker).map_err(|e| SabotError::io(&marker, e))?;
                if owner.trim_end() != operator {
                    return Err(SabotError::State {
                        state: dir.display().to_string(),
                        message: format!("snapshot belongs to operator '{}', not '{operator}'", owner.trim_end()),
                    });
                }
                store.restore_dir = Some(dir.to_path_buf());
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => {
                if marker.exists() {
                    return Err(SabotError::State {
                        state: dir.display().to_string(),
                        message: "a memory-backend snapshot cannot be restored into RocksDB".into(),
                    });
                }
                tables.restore_from_checkpoint(dir)?;
            }
        }
        tracing::info!(operator, dir = %dir.display(), "restored keyed state");
        Ok(store)
    }

    /// Opens the store of `operator` with the keys `keep` accepts from the snapshots in
    /// `dirs`, taken by the instances of a run with another parallelism (memory: loaded as
    /// the states register; RocksDB: copied in by [`finish_restore`](Self::finish_restore)).
    /// States that are not registered again are not carried over.
    pub(crate) fn restore_rescaled(
        backend: &StateBackend,
        operator: &str,
        sources: Vec<SnapshotSource>,
        keep: super::memory::KeyPredicate,
    ) -> Result<Self> {
        let mut store = Self::open(backend, operator)?;
        // RocksDB: the operator's column families start empty and the kept keys are copied
        // in from every old instance's checkpoint once the states are registered.
        #[cfg(feature = "rocksdb")]
        if let Backend::RocksDb(tables) = &mut store.backend {
            tables.drop_all()?;
        }
        tracing::info!(operator, snapshots = sources.len(), "restoring keyed state with another parallelism");
        store.rescale_dirs = sources;
        store.key_filter = Some(keep);
        Ok(store)
    }

    /// Uses `clock` for TTL from now on (tests pass a [`ManualClock`](super::ManualClock)).
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, ManualClock, StateBackend};
    /// let clock = ManualClock::new(1_000);
    /// let store = KeyedStateStore::open(&StateBackend::Memory, "op").unwrap().with_clock(clock.clone());
    /// assert_eq!(store.clock().now_ms(), 1_000);
    /// ```
    pub fn with_clock(mut self, clock: impl Into<StateClock>) -> Self {
        self.clock = clock.into();
        #[cfg(feature = "rocksdb")]
        if let Backend::RocksDb(tables) = &self.backend {
            tables.set_clock(&self.clock);
        }
        self
    }

    /// RocksDB: how many distinct pending writes are buffered (and served to reads) before
    /// they are written as one batch (default 16,384); the write-back cache holds up to four
    /// times as many entries. The memory backend ignores it.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// let store = KeyedStateStore::open(&StateBackend::Memory, "op").unwrap().with_write_batch_size(1024);
    /// # let _ = store;
    /// ```
    pub fn with_write_batch_size(mut self, entries: usize) -> Self {
        #[cfg(feature = "rocksdb")]
        if let Backend::RocksDb(tables) = &mut self.backend {
            tables.set_batch_size(entries);
        }
        #[cfg(not(feature = "rocksdb"))]
        let _ = (&mut self, entries);
        self
    }

    /// The operator id this store belongs to.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// assert_eq!(KeyedStateStore::open(&StateBackend::Memory, "join").unwrap().operator(), "join");
    /// ```
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// `"memory"` or `"rocksdb"`.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// assert_eq!(KeyedStateStore::open(&StateBackend::Memory, "op").unwrap().backend_name(), "memory");
    /// ```
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Memory(_) => "memory",
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(_) => "rocksdb",
        }
    }

    /// The clock TTL is measured against.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend, StateClock};
    /// let store = KeyedStateStore::open(&StateBackend::Memory, "op").unwrap();
    /// assert!(matches!(store.clock(), StateClock::System));
    /// ```
    pub fn clock(&self) -> &StateClock {
        &self.clock
    }

    /// Makes `key` (the encoded key columns) the key that state handles read and write. The
    /// key is hashed once here; every state accessed until the next call reuses the hash.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op").unwrap();
    /// store.set_current_key(&42u64.to_le_bytes());
    /// assert_eq!(store.current_key(), Some(&42u64.to_le_bytes()[..]));
    /// ```
    #[inline]
    pub fn set_current_key(&mut self, key: &[u8]) {
        self.key.clear();
        self.key.extend_from_slice(key);
        self.key_hash = self.hasher.hash_one(key);
        self.key_set = true;
    }

    /// The current key, if one was set.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// let store = KeyedStateStore::open(&StateBackend::Memory, "op").unwrap();
    /// assert_eq!(store.current_key(), None);
    /// ```
    pub fn current_key(&self) -> Option<&[u8]> {
        self.key_set.then_some(&self.key[..])
    }

    /// Registers (or finds again) the value state described by `desc`.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let sum = store.value_state(&ValueStateDescriptor::<f64>::new("sum"))?;
    /// store.set_current_key(b"ACC_1");
    /// sum.update(&mut store, 2.5)?;
    /// assert_eq!(sum.value(&mut store)?, Some(2.5));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn value_state<T: StateValue>(&mut self, desc: &ValueStateDescriptor<T>) -> Result<ValueState<T>> {
        let id =
            self.register::<ValueTable<T>>(&desc.name, StateKind::Value, desc.ttl_ms, |dir, state, h| match dir {
                Some((paths, keep)) => Ok(Box::new(ValueTable::<T>::load(&paths, state, h, keep)?)),
                None => Ok(Box::new(ValueTable::<T>(MemTable::default()))),
            })?;
        Ok(ValueState::new(id))
    }

    /// Registers (or finds again) the list state described by `desc`.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let seen = store.list_state(&ListStateDescriptor::<u32>::new("seen"))?;
    /// store.set_current_key(b"k");
    /// seen.add(&mut store, 7)?;
    /// assert_eq!(seen.get(&mut store)?, vec![7]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn list_state<T: StateValue>(&mut self, desc: &ListStateDescriptor<T>) -> Result<ListState<T>> {
        let id =
            self.register::<ValueTable<Vec<T>>>(&desc.name, StateKind::List, desc.ttl_ms, |dir, state, h| match dir {
                Some((paths, keep)) => Ok(Box::new(ValueTable::<Vec<T>>::load(&paths, state, h, keep)?)),
                None => Ok(Box::new(ValueTable::<Vec<T>>(MemTable::default()))),
            })?;
        Ok(ListState::new(id))
    }

    /// Registers (or finds again) the map state described by `desc`.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let qty = store.map_state(&MapStateDescriptor::<String, i64>::new("qty"))?;
    /// store.set_current_key(b"acct");
    /// qty.put(&mut store, "AAPL".into(), 10)?;
    /// assert_eq!(qty.get(&mut store, &"AAPL".into())?, Some(10));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn map_state<K, V>(&mut self, desc: &MapStateDescriptor<K, V>) -> Result<MapState<K, V>>
    where
        K: StateValue + Hash + Eq,
        V: StateValue,
    {
        let id =
            self.register::<MapTable<K, V>>(&desc.name, StateKind::Map, desc.ttl_ms, |dir, state, h| match dir {
                Some((paths, keep)) => Ok(Box::new(MapTable::<K, V>::load(&paths, state, h, keep)?)),
                None => Ok(Box::new(MapTable::<K, V>(MemTable::default()))),
            })?;
        Ok(MapState::new(id))
    }

    /// Registers (or finds again) the reducing state described by `desc`.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, ReducingStateDescriptor, StateBackend};
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let max = store.reducing_state(&ReducingStateDescriptor::new("max", |a: &i32, b: &i32| *a.max(b)))?;
    /// store.set_current_key(b"k");
    /// for v in [3, 9, 4] {
    ///     max.add(&mut store, v)?;
    /// }
    /// assert_eq!(max.get(&mut store)?, Some(9));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn reducing_state<T: StateValue>(&mut self, desc: &ReducingStateDescriptor<T>) -> Result<ReducingState<T>> {
        let id =
            self.register::<ValueTable<T>>(&desc.name, StateKind::Reducing, desc.ttl_ms, |dir, state, h| match dir {
                Some((paths, keep)) => Ok(Box::new(ValueTable::<T>::load(&paths, state, h, keep)?)),
                None => Ok(Box::new(ValueTable::<T>(MemTable::default()))),
            })?;
        Ok(ReducingState::new(id, desc.reduce.clone()))
    }

    /// Registers a state; `Tag` identifies its Rust type, `make` builds its memory table
    /// (from a snapshot file when restoring).
    fn register<Tag: 'static>(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl_ms: Option<u64>,
        make: impl FnOnce(Option<(Vec<PathBuf>, KeyCheck<'_>)>, &str, &dyn Fn(&[u8]) -> u64) -> Result<Box<dyn ErasedTable>>,
    ) -> Result<StateId> {
        check_name("state", name)?;
        let full_name = format!("{}/{name}", self.operator);
        let type_id = TypeId::of::<Tag>();
        if let Some(idx) = self.states.iter().position(|s| s.name == name) {
            let meta = &self.states[idx];
            if meta.kind != kind || meta.type_id != type_id || meta.ttl_ms != ttl_ms {
                return Err(SabotError::State {
                    state: full_name,
                    message: format!(
                        "already registered as {:?} state with another type or TTL ({:?} ms); \
                         re-register it with the same descriptor",
                        meta.kind, meta.ttl_ms
                    ),
                });
            }
            return Ok(StateId { store: self.id, idx: idx as u32 });
        }
        match &mut self.backend {
            Backend::Memory(tables) => {
                let files: Vec<PathBuf> = (self.restore_dir.iter().chain(self.rescale_dirs.iter().map(|s| &s.dir)))
                    .map(|d| d.join(format!("{name}.state")))
                    .filter(|f| f.exists())
                    .collect();
                let keep = self.key_filter.as_deref().map(|keep| keep as &dyn Fn(&[u8]) -> bool);
                let restored = (!files.is_empty()).then_some((files, keep));
                let hasher = &self.hasher;
                tables.push(make(restored, &full_name, &|key| hasher.hash_one(key))?);
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => tables.add_state(&full_name, &self.clock)?,
        }
        tracing::debug!(state = %full_name, ?kind, ?ttl_ms, "registered keyed state");
        self.states.push(StateMeta { full_name, name: name.to_string(), kind, type_id, ttl_ms });
        Ok(StateId { store: self.id, idx: (self.states.len() - 1) as u32 })
    }

    /// See [`ValueState::prefetch_for`].
    #[cfg_attr(not(feature = "rocksdb"), allow(unused_variables))]
    pub(super) fn prefetch<'k>(&mut self, id: StateId, keys: impl IntoIterator<Item = &'k [u8]>) -> Result<()> {
        let a = self.access(id, Some(&[]))?;
        match a.backend {
            Backend::Memory(_) => Ok(()),
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => {
                let (idx, now, hasher) = (a.idx, a.now, a.hasher);
                let keys: Vec<(&[u8], u64)> = keys.into_iter().map(|key| (key, hasher.hash_one(key))).collect();
                tables.prefetch(idx, &keys, now)
            }
        }
    }

    /// Borrows what an access to state `id` for `key` (the current key when `None`) needs.
    #[inline(always)]
    pub(super) fn access<'a>(&'a mut self, id: StateId, key: Option<&'a [u8]>) -> Result<Access<'a>> {
        if id.store != self.id {
            return Err(SabotError::State {
                state: self.operator.clone(),
                message: "state handle used with a store other than the one that registered it".into(),
            });
        }
        let idx = id.idx as usize;
        let meta = &self.states[idx];
        let (key, hash) = match key {
            Some(key) => (key, self.hasher.hash_one(key)),
            None if self.key_set => (&self.key[..], self.key_hash),
            None => {
                return Err(SabotError::State {
                    state: meta.full_name.clone(),
                    message: "no current key: call set_current_key first".into(),
                });
            }
        };
        let (now, expires_at) = match meta.ttl_ms {
            Some(ttl) => {
                let now = self.clock.now_ms();
                (now, now.saturating_add(ttl))
            }
            None => (0, u64::MAX),
        };
        Ok(Access {
            key,
            hash,
            now,
            expires_at,
            idx,
            state: &meta.full_name,
            backend: &mut self.backend,
            hasher: &self.hasher,
        })
    }

    /// Removes every expired value of this operator's states now; returns how many were
    /// removed. (Reads never see expired values either way; on RocksDB, compactions also drop
    /// them in the background.)
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::state::{KeyedStateStore, ManualClock, StateBackend, ValueStateDescriptor};
    /// let clock = ManualClock::new(0);
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?.with_clock(clock.clone());
    /// let v = store.value_state(&ValueStateDescriptor::<u8>::new("v").with_ttl(Duration::from_secs(1)))?;
    /// v.update_for(&mut store, b"k", 1)?;
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(store.purge_expired()?, 1);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn purge_expired(&mut self) -> Result<usize> {
        let now = self.clock.now_ms();
        let removed = match &mut self.backend {
            Backend::Memory(tables) => tables
                .iter_mut()
                .zip(&self.states)
                .filter(|(_, meta)| meta.ttl_ms.is_some())
                .map(|(table, _)| table.purge(now))
                .sum(),
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => {
                let with_ttl: Vec<usize> =
                    (0..self.states.len()).filter(|&i| self.states[i].ttl_ms.is_some()).collect();
                tables.purge(&with_ttl, now)?
            }
        };
        tracing::debug!(operator = %self.operator, removed, "purged expired state");
        Ok(removed)
    }

    /// How many values this operator's states physically hold, expired-but-not-yet-removed
    /// ones included (map entries count one by one). A full scan on RocksDB.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let v = store.value_state(&ValueStateDescriptor::<u8>::new("v"))?;
    /// v.update_for(&mut store, b"a", 1)?;
    /// v.update_for(&mut store, b"b", 2)?;
    /// assert_eq!(store.stored_entries()?, 2);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn stored_entries(&mut self) -> Result<usize> {
        match &mut self.backend {
            Backend::Memory(tables) => Ok(tables.iter().map(|t| t.stored_entries()).sum()),
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => tables.stored_entries(),
        }
    }

    /// Makes every write so far durable: RocksDB writes the pending batch and flushes this
    /// operator's memtables to SST files (the write-ahead log is off: durability comes from
    /// `flush` and snapshots). A no-op on the memory backend.
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op").unwrap();
    /// store.flush().unwrap();
    /// ```
    pub fn flush(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Memory(_) => Ok(()),
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => tables.flush(),
        }
    }

    /// RocksDB: compacts this operator's column families now, which drops expired values
    /// through the TTL compaction filter. Memory: the same as [`purge_expired`](Self::purge_expired).
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op").unwrap();
    /// store.compact().unwrap();
    /// ```
    pub fn compact(&mut self) -> Result<()> {
        match &mut self.backend {
            Backend::Memory(_) => self.purge_expired().map(drop),
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => tables.compact(),
        }
    }

    /// Saves this operator's state into the new directory `dir` (which must not exist; its
    /// parent must), for [`restore`](Self::restore). Memory: one file per state, encoded with
    /// postcard. RocksDB: a checkpoint of the worker's instance (hard links to the SST files,
    /// so it is cheap; it holds the other operators' column families too).
    ///
    /// ```
    /// use sabot::state::{KeyedStateStore, StateBackend};
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op").unwrap();
    /// store.snapshot(dir.path().join("chk-1")).unwrap();
    /// ```
    pub fn snapshot(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        match &mut self.backend {
            Backend::Memory(_) => {
                fs::create_dir(dir).map_err(|e| SabotError::io(dir, e))?;
                for (file, bytes) in self.memory_snapshot_files()? {
                    let path = dir.join(file);
                    let mut out = fs::File::create(&path).map_err(|e| SabotError::io(&path, e))?;
                    out.write_all(&bytes).and_then(|()| out.sync_all()).map_err(|e| SabotError::io(&path, e))?;
                }
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => tables.checkpoint(dir)?,
        }
        tracing::info!(operator = %self.operator, dir = %dir.display(), "snapshotted keyed state");
        Ok(())
    }
}

impl KeyedStateStore {
    /// The files of a memory-backend snapshot, as (file name, bytes): one per state (those
    /// restored but not registered again carried over unchanged), then the owner marker.
    fn memory_snapshot_files(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        let tables = match &self.backend {
            Backend::Memory(tables) => tables,
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(_) => return Ok(vec![]),
        };
        let mut files = vec![];
        for (table, meta) in tables.iter().zip(&self.states) {
            files.push((format!("{}.state", meta.name), table.snapshot_bytes(&meta.full_name)?));
        }
        for (state, bytes) in self.carried_over()? {
            files.push((format!("{state}.state"), bytes));
        }
        files.push((MEMORY_SNAPSHOT_MARKER.to_string(), format!("{}\n", self.operator).into_bytes()));
        Ok(files)
    }

    /// Reads the restored states that were not registered again, so that snapshots carry
    /// them over; the restored directory is not needed afterwards (retention may delete it).
    fn carried_over(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        #[cfg(feature = "rocksdb")]
        if matches!(self.backend, Backend::RocksDb(_))
            && let Some(keep) = self.key_filter.take()
        {
            let dirs = std::mem::take(&mut self.rescale_dirs);
            self.import_keys(&dirs, &*keep)?;
        }
        if !self.rescale_dirs.is_empty() {
            // Unregistered states cannot be split by key without their types: they are dropped.
            tracing::warn!(operator = %self.operator, "states not registered again are dropped when rescaling");
            self.rescale_dirs.clear();
        }
        if let Some(from) = self.restore_dir.take() {
            for entry in fs::read_dir(&from).map_err(|e| SabotError::io(&from, e))? {
                let entry = entry.map_err(|e| SabotError::io(&from, e))?;
                let file = entry.file_name();
                let Some(state) = file.to_str().and_then(|f| f.strip_suffix(".state")) else { continue };
                if !self.states.iter().any(|s| s.name == state) {
                    let bytes = fs::read(entry.path()).map_err(|e| SabotError::io(entry.path(), e))?;
                    self.carried.push((state.to_string(), bytes));
                }
            }
        }
        Ok(self.carried.clone())
    }

    /// Ends a restore: every state the operator uses is registered by now, and the others
    /// are read into memory to be carried over by later snapshots.
    pub fn finish_restore(&mut self) -> Result<()> {
        self.carried_over().map(drop)
    }

    /// Drops every key that `keep` rejects, in every registered state (key groups handed
    /// over to another worker). Returns how many entries went (memory; RocksDB: keys).
    pub(crate) fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<usize> {
        match &mut self.backend {
            Backend::Memory(tables) => Ok(tables.iter_mut().map(|t| t.retain_keys(keep)).sum()),
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => {
                let mut dropped = 0;
                for (idx, meta) in self.states.iter().enumerate() {
                    let map = meta.kind == StateKind::Map;
                    dropped += tables.retain_keys(idx, &|stored: &[u8]| keep(stored_key(stored, map)))?;
                }
                Ok(dropped)
            }
        }
    }

    /// Adds the keys that `keep` accepts from the snapshots of this operator in `dirs`
    /// (taken by [`snapshot_into`](Self::snapshot_into), by any worker and parallelism), in
    /// every registered state: key groups handed over from another worker.
    pub(crate) fn import_keys(&mut self, sources: &[SnapshotSource], keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        match &mut self.backend {
            Backend::Memory(tables) => {
                let hasher = &self.hasher;
                for (table, meta) in tables.iter_mut().zip(&self.states) {
                    let files: Vec<PathBuf> = sources
                        .iter()
                        .map(|s| s.dir.join(format!("{}.state", meta.name)))
                        .filter(|f| f.exists())
                        .collect();
                    table.merge_snapshots(&files, &meta.full_name, &|key| hasher.hash_one(key), Some(keep))?;
                }
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => {
                for source in sources {
                    let dir = &source.dir;
                    if dir.join(MEMORY_SNAPSHOT_MARKER).exists() {
                        return Err(SabotError::State {
                            state: dir.display().to_string(),
                            message: "a memory-backend snapshot cannot be loaded into RocksDB".into(),
                        });
                    }
                    for (idx, meta) in self.states.iter().enumerate() {
                        let map = meta.kind == StateKind::Map;
                        // The old instance's column family of this state.
                        let from = format!("{}/{}", source.operator, meta.name);
                        tables.import_keys(dir, &from, idx, &|stored: &[u8]| keep(stored_key(stored, map)))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies this operator's state into a checkpoint's `snapshot` under the directory
    /// `name`, in the layout [`restore`](Self::restore) reads. Memory: every state is encoded
    /// in memory now and written by the checkpoint in the background. RocksDB: a RocksDB
    /// checkpoint (hard links) is created there now.
    pub fn snapshot_into(&mut self, snapshot: &mut crate::checkpoint::StateSnapshot, name: &str) -> Result<()> {
        match &mut self.backend {
            Backend::Memory(_) => {
                for (file, bytes) in self.memory_snapshot_files()? {
                    snapshot.put(&format!("{name}/{file}"), bytes)?;
                }
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(tables) => {
                let dir = snapshot.directory(name)?;
                tables.checkpoint(&dir)?;
            }
        }
        Ok(())
    }
}

/// The prefix of the operator ids of transient stores ([`KeyedStateStore::open_transient`]).
pub(crate) const TRANSIENT_PREFIX: &str = "transient.";

/// The key part of a key stored in RocksDB: map states store `len (u32 BE) | key | user key`.
#[cfg(feature = "rocksdb")]
fn stored_key(stored: &[u8], map: bool) -> &[u8] {
    if !map {
        return stored;
    }
    let len = stored.get(..4).map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
    stored.get(4..4 + len).unwrap_or_default()
}

impl Drop for KeyedStateStore {
    fn drop(&mut self) {
        if self.transient
            && let Err(err) = self.discard()
        {
            tracing::warn!(operator = %self.operator, error = %err, "could not delete a transient state store");
        }
    }
}

impl std::fmt::Debug for KeyedStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStateStore")
            .field("operator", &self.operator)
            .field("backend", &self.backend_name())
            .field("states", &self.states.iter().map(|s| &s.name).collect::<Vec<_>>())
            .finish()
    }
}
