//! The RocksDB backend: one RocksDB instance per worker directory, one column family per
//! state (`{operator}/{state}`), batched writes behind a small write-back table.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock, Weak};

use hashbrown::hash_table::{Entry, HashTable};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DBCompressionType, DBWithThreadMode,
    Direction, IteratorMode, MultiThreaded, Options, ReadOptions, SingleThreaded, WriteBatch, WriteOptions,
};

use super::clock::StateClock;
use super::codec::{self, HEADER};
use crate::{Result, SabotError};

type Db = DBWithThreadMode<MultiThreaded>;

/// Block cache shared by all column families of an instance: with index and filter blocks
/// charged to it, it bounds the memory RocksDB uses for reads.
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// Memtable budget of an instance, over all its column families.
const DB_WRITE_BUFFER_BYTES: usize = 64 << 20;
/// Memtable size per column family: small memtables keep the skip list shallow and
/// cache-resident (older versions are then served from L0 files through bloom filters).
const CF_WRITE_BUFFER_BYTES: usize = 4 << 20;
/// Default number of distinct pending writes before a batch is written.
const DEFAULT_BATCH_SIZE: usize = 16 * 1024;
/// The write-back cache holds up to this many batches' worth of entries (256K entries, a few
/// tens of MB): a working set of that many keys is read from RocksDB once.
const CACHE_BATCHES: usize = 16;

/// Most bytes of keys and values the write-back cache of one store holds: operators that
/// keep long values (lists of rows) must not keep copies of all of them in memory.
const CACHE_BYTES: usize = 64 << 20;
/// Entries per batch when copying or deleting in bulk.
const BULK_BATCH: usize = 64 * 1024;

/// The instances open in this process, by canonical path.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<RocksDbInstance>>>> = LazyLock::new(Default::default);

fn rocks_error(state: &str, err: rocksdb::Error) -> SabotError {
    SabotError::State { state: state.to_string(), message: format!("rocksdb: {}", err.into_string()) }
}

/// A worker's RocksDB instance, shared by the state stores of all operators of that worker
/// (one column family per state, named `{operator}/{state}`). Opened once per path: opening
/// the same path again while it is open returns the same instance; it closes when the last
/// store using it is dropped.
///
/// ```no_run
/// use sabot::state::{KeyedStateStore, RocksDbInstance, StateBackend};
/// let backend = StateBackend::RocksDb { path: "/tmp/sabot-worker-0".into() };
/// let _a = KeyedStateStore::open(&backend, "join")?;
/// let _b = KeyedStateStore::open(&backend, "window")?;
/// let instance = RocksDbInstance::open("/tmp/sabot-worker-0")?; // the same instance
/// println!("{:?}", instance.column_families());
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct RocksDbInstance {
    /// Declared first: dropped (closed) before the options below.
    db: Db,
    path: PathBuf,
    cache: Cache,
    /// Column families and the clock their TTL compaction filter reads.
    cfs: Mutex<HashMap<String, ColumnFamilyState>>,
    /// Options of dropped column families, kept until the database closes (see below).
    retired: Mutex<Vec<Options>>,
    /// Operators with a store open on this instance.
    operators: Mutex<HashSet<String>>,
}

/// What the instance keeps per column family.
struct ColumnFamilyState {
    /// The clock the column family's TTL compaction filter reads.
    clock: Arc<RwLock<StateClock>>,
    /// The options a column family was created with own its compaction filter, which RocksDB
    /// keeps using by raw pointer: they must outlive the database (rust-rocksdb's `create_cf`
    /// does not keep them; those passed to `open_cf_descriptors` are kept by the database).
    _options: Option<Options>,
}

fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
    opts.set_keep_log_file_num(4);
    opts
}

fn cf_options(cache: &Cache, clock: Arc<RwLock<StateClock>>) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    // Partitioned index and filters: a point read loads one small partition, not the whole
    // filter and index of a file. Uniformly spread updates make compactions rewrite most
    // files, and loading every new file's full filter on its first read dominated reads.
    table.set_partition_filters(true);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_metadata_block_size(4096);
    table.set_pin_top_level_index_and_filter(true);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_write_buffer_size(CF_WRITE_BUFFER_BYTES);
    opts.set_memtable_prefix_bloom_ratio(0.1);
    opts.set_memtable_whole_key_filtering(true);
    // TTL: every stored value starts with its expiry; compactions drop the expired ones.
    opts.set_compaction_filter("sabot_state_ttl", move |_level: u32, _key: &[u8], value: &[u8]| {
        let now = clock.read().unwrap_or_else(PoisonError::into_inner).now_ms();
        if codec::expires_at(value) <= now { Decision::Remove } else { Decision::Keep }
    });
    opts
}

impl RocksDbInstance {
    /// Opens (creating it if needed) the RocksDB instance in `path`, or returns the one this
    /// process already has open there.
    ///
    /// ```no_run
    /// use sabot::state::RocksDbInstance;
    /// let instance = RocksDbInstance::open("/tmp/sabot-worker-0")?;
    /// assert!(instance.path().is_absolute());
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Self>> {
        let path = path.as_ref();
        std::fs::create_dir_all(path).map_err(|e| SabotError::io(path, e))?;
        let path = std::fs::canonicalize(path).map_err(|e| SabotError::io(path, e))?;
        let shown = path.display().to_string();
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(instance) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(instance);
        }
        open.retain(|_, instance| instance.strong_count() > 0);

        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let db_opts = db_options();
        let existing = if path.join("CURRENT").exists() {
            Db::list_cf(&db_opts, &path).map_err(|e| rocks_error(&shown, e))?
        } else {
            vec![]
        };
        let mut cfs = HashMap::new();
        let mut descriptors = Vec::new();
        for name in existing.into_iter().filter(|name| name != "default") {
            let clock = Arc::new(RwLock::new(StateClock::System));
            descriptors.push(ColumnFamilyDescriptor::new(name.clone(), cf_options(&cache, clock.clone())));
            cfs.insert(name, ColumnFamilyState { clock, _options: None });
        }
        let db = Db::open_cf_descriptors(&db_opts, &path, descriptors).map_err(|e| rocks_error(&shown, e))?;
        // Transient stores of an earlier process that died before dropping them: nothing in
        // this process uses them yet (the instance was not open), and restores never read them.
        let leftovers: Vec<String> =
            cfs.keys().filter(|name| name.starts_with(super::store::TRANSIENT_PREFIX)).cloned().collect();
        for name in &leftovers {
            db.drop_cf(name).map_err(|e| rocks_error(name, e))?;
            cfs.remove(name);
        }
        if !leftovers.is_empty() {
            tracing::info!(path = %shown, dropped = leftovers.len(), "dropped transient state left by an earlier run");
        }
        tracing::info!(path = %shown, column_families = cfs.len(), "opened RocksDB state instance");
        let instance = Arc::new(RocksDbInstance {
            db,
            path: path.clone(),
            cache,
            cfs: Mutex::new(cfs),
            retired: Mutex::new(Vec::new()),
            operators: Mutex::new(HashSet::new()),
        });
        open.insert(path, Arc::downgrade(&instance));
        Ok(instance)
    }

    /// The instance's directory (canonical).
    ///
    /// ```no_run
    /// use sabot::state::RocksDbInstance;
    /// let instance = RocksDbInstance::open("/tmp/sabot-worker-0")?;
    /// println!("{}", instance.path().display());
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the instance's state column families (`{operator}/{state}`), sorted.
    ///
    /// ```no_run
    /// use sabot::state::RocksDbInstance;
    /// let instance = RocksDbInstance::open("/tmp/sabot-worker-0")?;
    /// for cf in instance.column_families() {
    ///     println!("{cf}");
    /// }
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn column_families(&self) -> Vec<String> {
        let mut names: Vec<String> = self.cfs.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        names.sort();
        names
    }

    fn cf(&self, name: &str) -> Result<Arc<BoundColumnFamily<'_>>> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| SabotError::State { state: name.to_string(), message: "column family is not open".into() })
    }

    /// Creates column family `name` if missing; either way its TTL filter reads `clock`.
    fn ensure_cf(&self, name: &str, clock: StateClock) -> Result<()> {
        let mut cfs = self.cfs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cf) = cfs.get(name) {
            *cf.clock.write().unwrap_or_else(PoisonError::into_inner) = clock;
            return Ok(());
        }
        let cell = Arc::new(RwLock::new(clock));
        let options = cf_options(&self.cache, cell.clone());
        self.db.create_cf(name, &options).map_err(|e| rocks_error(name, e))?;
        tracing::debug!(column_family = name, "created state column family");
        cfs.insert(name.to_string(), ColumnFamilyState { clock: cell, _options: Some(options) });
        Ok(())
    }

    fn drop_cf(&self, name: &str) -> Result<()> {
        let mut cfs = self.cfs.lock().unwrap_or_else(PoisonError::into_inner);
        self.db.drop_cf(name).map_err(|e| rocks_error(name, e))?;
        if let Some(ColumnFamilyState { _options: Some(options), .. }) = cfs.remove(name) {
            self.retired.lock().unwrap_or_else(PoisonError::into_inner).push(options);
        }
        Ok(())
    }
}

impl std::fmt::Debug for RocksDbInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbInstance").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A stored entry: full key, stored value (expiry header included).
pub(super) type RawEntry = (Box<[u8]>, Box<[u8]>);

/// A cached entry: the full stored value, or `None` for absent. Dirty entries are writes not
/// yet in RocksDB; clean ones mirror RocksDB and are dropped when the cache is full.
struct Pending {
    hash: u64,
    key: Box<[u8]>,
    value: Option<Vec<u8>>,
    dirty: bool,
}

impl Pending {
    /// The bytes of its key and value.
    fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// The stored value's payload (after the expiry header).
#[inline]
pub(super) fn payload(stored: &[u8]) -> &[u8] {
    stored.get(HEADER..).unwrap_or_default()
}

/// One operator's states on a shared instance.
pub(super) struct RocksTables {
    instance: Arc<RocksDbInstance>,
    operator: String,
    /// Column family per state index.
    cfs: Vec<String>,
    /// The write-back cache per state index: pending writes plus recently read or written
    /// entries; reads look here first.
    pending: Vec<HashTable<Pending>>,
    /// Dirty entries (writes not yet in RocksDB).
    pending_len: usize,
    /// All cached entries, dirty or clean.
    cached: usize,
    /// Bytes of the keys and values of all cached entries.
    cached_bytes: usize,
    batch_size: usize,
    cache_capacity: usize,
    scratch: Vec<u8>,
    read_opts: ReadOptions,
    write_opts: WriteOptions,
}

impl RocksTables {
    pub(super) fn new(instance: Arc<RocksDbInstance>, operator: &str) -> Result<Self> {
        if !instance.operators.lock().unwrap_or_else(PoisonError::into_inner).insert(operator.to_string()) {
            return Err(SabotError::State {
                state: operator.to_string(),
                message: format!("operator already has a state store open on {}", instance.path.display()),
            });
        }
        let mut write_opts = WriteOptions::default();
        // Durability comes from flush() and checkpoints, not from a write-ahead log.
        write_opts.disable_wal(true);
        Ok(RocksTables {
            instance,
            operator: operator.to_string(),
            cfs: Vec::new(),
            pending: Vec::new(),
            pending_len: 0,
            cached: 0,
            cached_bytes: 0,
            batch_size: DEFAULT_BATCH_SIZE,
            cache_capacity: CACHE_BATCHES * DEFAULT_BATCH_SIZE,
            scratch: Vec::new(),
            read_opts: ReadOptions::default(),
            write_opts,
        })
    }

    pub(super) fn set_batch_size(&mut self, entries: usize) {
        self.batch_size = entries.max(1);
        self.cache_capacity = CACHE_BATCHES * self.batch_size;
    }

    pub(super) fn set_clock(&self, clock: &StateClock) {
        let cfs = self.instance.cfs.lock().unwrap_or_else(PoisonError::into_inner);
        for name in &self.cfs {
            if let Some(cf) = cfs.get(name) {
                *cf.clock.write().unwrap_or_else(PoisonError::into_inner) = clock.clone();
            }
        }
    }

    pub(super) fn add_state(&mut self, full_name: &str, clock: &StateClock) -> Result<()> {
        self.instance.ensure_cf(full_name, clock.clone())?;
        self.cfs.push(full_name.to_string());
        self.pending.push(HashTable::new());
        Ok(())
    }

    /// Decodes the live value of `key` in state `idx` with `decode` (given the payload);
    /// an expired value reads as absent and is deleted.
    #[inline]
    pub(super) fn read<R>(
        &mut self,
        idx: usize,
        key: &[u8],
        hash: u64,
        now: u64,
        decode: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        if let Some(p) = self.pending[idx].find(hash, |p| p.hash == hash && *p.key == *key) {
            let Some(stored) = &p.value else { return Ok(None) };
            if codec::expires_at(stored) > now {
                return decode(payload(stored)).map(Some);
            }
        } else {
            if self.cached >= self.cache_capacity || self.cached_bytes >= CACHE_BYTES {
                self.evict_clean();
            }
            let name = &self.cfs[idx];
            let cf = self.instance.cf(name)?;
            let found =
                self.instance.db.get_pinned_cf_opt(&cf, key, &self.read_opts).map_err(|e| rocks_error(name, e))?;
            let live = found.as_ref().is_some_and(|stored| codec::expires_at(stored) > now);
            if found.is_none() || live {
                // Cache what RocksDB said (value or absence), clean.
                let value = found.as_deref().map(<[u8]>::to_vec);
                self.cached_bytes += key.len() + value.as_ref().map_or(0, Vec::len);
                self.pending[idx]
                    .insert_unique(hash, Pending { hash, key: key.into(), value, dirty: false }, |p| p.hash);
                self.cached += 1;
            }
            match found {
                None => return Ok(None),
                Some(stored) if live => return decode(payload(&stored)).map(Some),
                Some(_) => {}
            }
        }
        self.delete(idx, key, hash)?;
        Ok(None)
    }

    /// Loads the stored values of `keys` (with their hashes) in state `idx` that the cache
    /// lacks with one batched read (RocksDB's MultiGet), as clean cache entries, so that the
    /// reads that follow hit memory. Expired values are left for `read` to delete.
    pub(super) fn prefetch(&mut self, idx: usize, keys: &[(&[u8], u64)], now: u64) -> Result<()> {
        let table = &self.pending[idx];
        let mut misses: Vec<(&[u8], u64)> = keys
            .iter()
            .filter(|(key, hash)| table.find(*hash, |p| p.hash == *hash && *p.key == **key).is_none())
            .copied()
            .collect();
        if misses.is_empty() {
            return Ok(());
        }
        misses.sort_unstable_by(|a, b| a.0.cmp(b.0));
        misses.dedup_by(|a, b| a.0 == b.0);
        if self.cached + misses.len() > self.cache_capacity || self.cached_bytes >= CACHE_BYTES {
            self.evict_clean();
        }
        let name = &self.cfs[idx];
        let cf = self.instance.cf(name)?;
        let found =
            self.instance.db.batched_multi_get_cf_opt(&cf, misses.iter().map(|(key, _)| *key), true, &self.read_opts);
        for ((key, hash), found) in misses.into_iter().zip(found) {
            let value = found.map_err(|e| rocks_error(name, e))?.map(|stored| stored.to_vec());
            if value.as_ref().is_some_and(|stored| codec::expires_at(stored) <= now) {
                continue;
            }
            self.cached_bytes += key.len() + value.as_ref().map_or(0, Vec::len);
            self.pending[idx].insert_unique(hash, Pending { hash, key: key.into(), value, dirty: false }, |p| p.hash);
            self.cached += 1;
        }
        Ok(())
    }

    /// Sets the stored value of `key` in state `idx` to what `fill` writes (header included).
    #[inline]
    pub(super) fn write(
        &mut self,
        idx: usize,
        key: &[u8],
        hash: u64,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.scratch.clear();
        fill(&mut self.scratch)?;
        let value = &self.scratch;
        match self.pending[idx].entry(hash, |p| p.hash == hash && *p.key == *key, |p| p.hash) {
            Entry::Occupied(mut entry) => {
                let p = entry.get_mut();
                let old = p.value.as_ref().map_or(0, Vec::len);
                match &mut p.value {
                    Some(buf) => {
                        buf.clear();
                        buf.extend_from_slice(value);
                    }
                    slot @ None => *slot = Some(value.clone()),
                }
                self.cached_bytes = self.cached_bytes - old + value.len();
                if !p.dirty {
                    p.dirty = true;
                    self.pending_len += 1;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(Pending { hash, key: key.into(), value: Some(value.clone()), dirty: true });
                self.pending_len += 1;
                self.cached += 1;
                self.cached_bytes += key.len() + value.len();
            }
        }
        if self.pending_len >= self.batch_size || self.cached_bytes >= CACHE_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Deletes `key` from state `idx`.
    pub(super) fn delete(&mut self, idx: usize, key: &[u8], hash: u64) -> Result<()> {
        match self.pending[idx].entry(hash, |p| p.hash == hash && *p.key == *key, |p| p.hash) {
            Entry::Occupied(mut entry) => {
                let p = entry.get_mut();
                self.cached_bytes -= p.value.take().map_or(0, |v| v.len());
                if !p.dirty {
                    p.dirty = true;
                    self.pending_len += 1;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(Pending { hash, key: key.into(), value: None, dirty: true });
                self.pending_len += 1;
                self.cached += 1;
                self.cached_bytes += key.len();
            }
        }
        if self.pending_len >= self.batch_size {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Writes every pending write to RocksDB as one batch.
    pub(super) fn write_batch(&mut self) -> Result<()> {
        if self.pending_len == 0 {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (table, name) in self.pending.iter().zip(&self.cfs) {
            if table.is_empty() {
                continue;
            }
            let cf = self.instance.cf(name)?;
            for p in table.iter().filter(|p| p.dirty) {
                match &p.value {
                    Some(value) => batch.put_cf(&cf, &p.key, value),
                    None => batch.delete_cf(&cf, &p.key),
                }
            }
        }
        self.instance.db.write_opt(batch, &self.write_opts).map_err(|e| rocks_error(&self.operator, e))?;
        for table in &mut self.pending {
            table.iter_mut().for_each(|p| p.dirty = false);
        }
        self.pending_len = 0;
        if self.cached > self.cache_capacity || self.cached_bytes >= CACHE_BYTES {
            self.evict_clean();
        }
        Ok(())
    }

    /// Drops every clean cache entry (dirty ones stay until written).
    fn evict_clean(&mut self) {
        for table in &mut self.pending {
            table.retain(|p| p.dirty);
        }
        self.cached = self.pending_len;
        self.cached_bytes = self.pending.iter().flat_map(|t| t.iter()).map(Pending::bytes).sum();
    }

    /// Forgets the cached entries of state `idx` after RocksDB was changed directly. Only
    /// called right after `write_batch`, so nothing dirty is lost.
    fn invalidate(&mut self, idx: usize) {
        debug_assert_eq!(self.pending_len, 0);
        self.cached -= self.pending[idx].len();
        self.cached_bytes -= self.pending[idx].iter().map(Pending::bytes).sum::<usize>();
        self.pending[idx].clear();
    }

    /// Visits every stored entry of state `idx` whose key starts with `prefix`, in key order,
    /// until `visit` returns false. Pending writes are written first.
    fn scan(&mut self, idx: usize, prefix: &[u8], visit: impl FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        self.scan_from(idx, prefix, prefix, visit)
    }

    /// [`scan`](Self::scan) starting at the first key at or after `from` (which sorts at or
    /// after `prefix`).
    fn scan_from(
        &mut self,
        idx: usize,
        prefix: &[u8],
        from: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.write_batch()?;
        let name = &self.cfs[idx];
        let cf = self.instance.cf(name)?;
        let mode = if from.is_empty() { IteratorMode::Start } else { IteratorMode::From(from, Direction::Forward) };
        for item in self.instance.db.iterator_cf(&cf, mode) {
            let (key, value) = item.map_err(|e| rocks_error(name, e))?;
            if !key.starts_with(prefix) || !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    /// Deletes `keys` from state `idx` directly in RocksDB (dropping its cached entries).
    fn delete_keys(&mut self, idx: usize, keys: &[Box<[u8]>]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write_batch()?;
        self.invalidate(idx);
        let name = &self.cfs[idx];
        let cf = self.instance.cf(name)?;
        for chunk in keys.chunks(BULK_BATCH) {
            let mut batch = WriteBatch::default();
            for key in chunk {
                batch.delete_cf(&cf, key);
            }
            self.instance.db.write_opt(batch, &self.write_opts).map_err(|e| rocks_error(name, e))?;
        }
        Ok(())
    }

    /// The live entries (full key, stored value) of state `idx` under `prefix`; expired ones
    /// found on the way are deleted.
    pub(super) fn scan_prefix(&mut self, idx: usize, prefix: &[u8], now: u64) -> Result<Vec<RawEntry>> {
        let mut live = Vec::new();
        let mut expired = Vec::new();
        self.scan(idx, prefix, |key, value| {
            if codec::expires_at(value) > now {
                live.push((key.into(), value.into()));
            } else {
                expired.push(key.into());
            }
            true
        })?;
        self.delete_keys(idx, &expired)?;
        Ok(live)
    }

    /// Up to `limit` live entries of state `idx` under `prefix` whose keys sort after `after`
    /// (from the first with `None`), in key order.
    pub(super) fn scan_page(
        &mut self,
        idx: usize,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        now: u64,
    ) -> Result<Vec<RawEntry>> {
        let mut page = Vec::new();
        self.scan_from(idx, prefix, after.unwrap_or(prefix), |key, value| {
            if after.is_some_and(|after| key <= after) {
                return true;
            }
            if codec::expires_at(value) > now {
                page.push((key.into(), value.into()));
            }
            page.len() < limit
        })?;
        Ok(page)
    }

    /// The keys of the live entries of state `idx` in `[from, bound)`, in key order. The
    /// iterator is bounded above, so it does not wade through deleted keys past `bound`.
    pub(super) fn keys_between(&mut self, idx: usize, from: &[u8], bound: &[u8], now: u64) -> Result<Vec<Box<[u8]>>> {
        self.write_batch()?;
        let name = &self.cfs[idx];
        let cf = self.instance.cf(name)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(bound.to_vec());
        let mut keys = Vec::new();
        for item in self.instance.db.iterator_cf_opt(&cf, opts, IteratorMode::From(from, Direction::Forward)) {
            let (key, value) = item.map_err(|e| rocks_error(name, e))?;
            if codec::expires_at(&value) > now {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Deletes every entry of state `idx` under `prefix`.
    pub(super) fn delete_prefix(&mut self, idx: usize, prefix: &[u8]) -> Result<()> {
        let mut keys = Vec::new();
        self.scan(idx, prefix, |key, _| {
            keys.push(key.into());
            true
        })?;
        self.delete_keys(idx, &keys)
    }

    /// Deletes the expired entries of the states `idxs`; returns how many.
    pub(super) fn purge(&mut self, idxs: &[usize], now: u64) -> Result<usize> {
        let mut removed = 0;
        for &idx in idxs {
            let mut expired = Vec::new();
            self.scan(idx, &[], |key, value| {
                if codec::expires_at(value) <= now {
                    expired.push(key.into());
                }
                true
            })?;
            self.delete_keys(idx, &expired)?;
            removed += expired.len();
        }
        Ok(removed)
    }

    /// Entries physically stored in this operator's column families.
    pub(super) fn stored_entries(&mut self) -> Result<usize> {
        let mut count = 0;
        for idx in 0..self.cfs.len() {
            self.scan(idx, &[], |_, _| {
                count += 1;
                true
            })?;
        }
        Ok(count)
    }

    /// Writes pending writes and flushes this operator's memtables to SST files.
    pub(super) fn flush(&mut self) -> Result<()> {
        self.write_batch()?;
        for name in &self.cfs {
            let cf = self.instance.cf(name)?;
            self.instance.db.flush_cf(&cf).map_err(|e| rocks_error(name, e))?;
        }
        Ok(())
    }

    /// Flushes, then compacts this operator's column families (running the TTL filter).
    pub(super) fn compact(&mut self) -> Result<()> {
        self.flush()?;
        for name in &self.cfs {
            let cf = self.instance.cf(name)?;
            self.instance.db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// A RocksDB checkpoint of the whole instance in `dir` (hard links where possible).
    pub(super) fn checkpoint(&mut self, dir: &Path) -> Result<()> {
        self.write_batch()?;
        let shown = dir.display().to_string();
        let checkpoint = Checkpoint::new(&self.instance.db).map_err(|e| rocks_error(&shown, e))?;
        checkpoint.create_checkpoint(dir).map_err(|e| rocks_error(&shown, e))
    }

    /// Deletes the entries of state `idx` whose stored key `keep` rejects; returns how many.
    pub(super) fn retain_keys(&mut self, idx: usize, keep: &dyn Fn(&[u8]) -> bool) -> Result<usize> {
        let mut gone = Vec::new();
        self.scan(idx, &[], |key, _| {
            if !keep(key) {
                gone.push(key.into());
            }
            true
        })?;
        self.delete_keys(idx, &gone)?;
        Ok(gone.len())
    }

    /// Copies the entries of state `idx` whose stored key `keep` accepts from the RocksDB
    /// checkpoint in `dir` (a key group handed over by another worker).
    /// `from` names the column family in the checkpoint (the old instance's, for this state).
    pub(super) fn import_keys(
        &mut self,
        dir: &Path,
        from: &str,
        idx: usize,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<()> {
        self.write_batch()?;
        self.invalidate(idx);
        let shown = dir.display().to_string();
        let opts = Options::default();
        let names = DBWithThreadMode::<SingleThreaded>::list_cf(&opts, dir).map_err(|e| rocks_error(&shown, e))?;
        let name = self.cfs[idx].clone();
        if !names.iter().any(|n| n == from) {
            return Ok(()); // the state did not exist when the checkpoint was taken
        }
        let snapshot = DBWithThreadMode::<SingleThreaded>::open_cf_for_read_only(&opts, dir, &names, false)
            .map_err(|e| rocks_error(&shown, e))?;
        let from = snapshot.cf_handle(from).expect("listed column family");
        let to = self.instance.cf(&name)?;
        let mut batch = WriteBatch::default();
        for item in snapshot.iterator_cf(from, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| rocks_error(&name, e))?;
            if !keep(&key) {
                continue;
            }
            batch.put_cf(&to, key, value);
            if batch.len() >= BULK_BATCH {
                let full = std::mem::take(&mut batch);
                self.instance.db.write_opt(full, &self.write_opts).map_err(|e| rocks_error(&name, e))?;
            }
        }
        self.instance.db.write_opt(batch, &self.write_opts).map_err(|e| rocks_error(&name, e))
    }

    /// Forgets every pending write and drops this operator's column families: the state is
    /// not needed any more (it lives on in checkpoints only).
    pub(super) fn discard(&mut self) -> Result<()> {
        self.pending.iter_mut().for_each(HashTable::clear);
        (self.pending_len, self.cached, self.cached_bytes) = (0, 0, 0);
        self.drop_all()
    }

    /// Drops this operator's column families (before any state is registered).
    pub(super) fn drop_all(&mut self) -> Result<()> {
        let prefix = format!("{}/", self.operator);
        for name in self.instance.column_families().into_iter().filter(|n| n.starts_with(&prefix)) {
            self.instance.drop_cf(&name)?;
        }
        Ok(())
    }

    /// Replaces this operator's column families by copies of those in the checkpoint `dir`.
    /// Called before any state is registered.
    pub(super) fn restore_from_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let shown = dir.display().to_string();
        let opts = Options::default();
        let names = DBWithThreadMode::<SingleThreaded>::list_cf(&opts, dir).map_err(|e| rocks_error(&shown, e))?;
        let snapshot = DBWithThreadMode::<SingleThreaded>::open_cf_for_read_only(&opts, dir, &names, false)
            .map_err(|e| rocks_error(&shown, e))?;
        self.drop_all()?;
        let prefix = format!("{}/", self.operator);
        let mut copied = 0usize;
        for name in names.iter().filter(|n| n.starts_with(&prefix)) {
            self.instance.ensure_cf(name, StateClock::System)?;
            let from = snapshot.cf_handle(name).ok_or_else(|| SabotError::State {
                state: name.clone(),
                message: format!("column family missing from checkpoint {shown}"),
            })?;
            let to = self.instance.cf(name)?;
            let mut batch = WriteBatch::default();
            for item in snapshot.iterator_cf(from, IteratorMode::Start) {
                let (key, value) = item.map_err(|e| rocks_error(name, e))?;
                batch.put_cf(&to, key, value);
                copied += 1;
                if batch.len() >= BULK_BATCH {
                    let full = std::mem::take(&mut batch);
                    self.instance.db.write_opt(full, &self.write_opts).map_err(|e| rocks_error(name, e))?;
                }
            }
            self.instance.db.write_opt(batch, &self.write_opts).map_err(|e| rocks_error(name, e))?;
            self.instance.db.flush_cf(&to).map_err(|e| rocks_error(name, e))?;
        }
        tracing::debug!(operator = %self.operator, entries = copied, "copied state from checkpoint");
        Ok(())
    }
}

impl Drop for RocksTables {
    fn drop(&mut self) {
        if let Err(err) = self.write_batch() {
            tracing::warn!(operator = %self.operator, error = %err, "could not write pending state on close");
        }
        self.instance.operators.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.operator);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};

    /// Operators' transient stores (window panes, join buffers) are dropped when the operator
    /// is; a crashed process leaves them behind, and the next process to open the instance
    /// drops them, keeping every other state.
    #[test]
    fn transient_state_left_by_a_crashed_run_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let backend = StateBackend::RocksDb { path: dir.path().to_path_buf() };
        {
            // What a crashed run leaves: a transient store's column family, and durable state.
            let mut leftover = KeyedStateStore::open_any(&backend, "transient.window_aggregate-7").unwrap();
            let panes = leftover.value_state(&ValueStateDescriptor::<u8>::new("groups")).unwrap();
            panes.update_for(&mut leftover, b"k", 1).unwrap();
            leftover.flush().unwrap();
            let mut durable = KeyedStateStore::open(&backend, "counter").unwrap();
            let count = durable.value_state(&ValueStateDescriptor::<u8>::new("count")).unwrap();
            count.update_for(&mut durable, b"k", 2).unwrap();
            durable.flush().unwrap();
            let instance = RocksDbInstance::open(dir.path()).unwrap();
            assert_eq!(instance.column_families(), ["counter/count", "transient.window_aggregate-7/groups"]);
        }
        // Every handle is gone: the next open is a new instance, as after a restart.
        let instance = RocksDbInstance::open(dir.path()).unwrap();
        assert_eq!(instance.column_families(), ["counter/count"]);
        let mut durable = KeyedStateStore::open(&backend, "counter").unwrap();
        let count = durable.value_state(&ValueStateDescriptor::<u8>::new("count")).unwrap();
        assert_eq!(count.value_for(&mut durable, b"k").unwrap(), Some(2));
    }

    /// Long values (lists of rows) do not pile up in the write-back cache: its bytes stay
    /// bounded however many are written and read, and every value reads back.
    #[test]
    fn the_write_back_cache_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(dir.path()).unwrap();
        let mut tables = RocksTables::new(instance, "lists").unwrap();
        tables.add_state("lists/rows", &StateClock::System).unwrap();
        let idx = 0;
        let value = |i: u64| {
            let mut stored = vec![];
            codec::start(&mut stored, u64::MAX);
            stored.resize(HEADER + (1 << 20), i as u8);
            stored
        };
        let hash = |key: &[u8]| key.iter().fold(7u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        for i in 0..200u64 {
            let key = i.to_be_bytes();
            tables
                .write(idx, &key, hash(&key), |buf| {
                    buf.extend_from_slice(&value(i));
                    Ok(())
                })
                .unwrap();
            assert!(tables.cached_bytes <= CACHE_BYTES + (2 << 20), "{} bytes cached", tables.cached_bytes);
        }
        for i in 0..200u64 {
            let key = i.to_be_bytes();
            let read = tables.read(idx, &key, hash(&key), 0, |bytes| Ok(bytes.to_vec())).unwrap();
            assert_eq!(read.as_deref(), Some(&value(i)[HEADER..]), "value {i}");
            assert!(tables.cached_bytes <= CACHE_BYTES + (2 << 20), "{} bytes cached", tables.cached_bytes);
        }
    }
}
