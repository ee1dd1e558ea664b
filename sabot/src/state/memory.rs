//! The memory backend: typed hash tables, one per state, keyed by the encoded key bytes with
//! the hash computed once per `set_current_key`. Nothing is serialized on the access path;
//! the codec is only used by snapshots.

use std::any::Any;
use std::collections::HashMap;
use std::fs;
use std::hash::Hash;
use std::path::PathBuf;

use hashbrown::hash_table::{Entry, HashTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec;
use crate::{Result, SabotError};

/// The entries of one key's map in a [`MapState`](super::MapState): user key to (value, expiry).
pub(super) type MapEntries<K, V> = HashMap<K, (V, u64), foldhash::fast::RandomState>;

/// Marks the start of a memory snapshot file of one state.
const SNAPSHOT_MAGIC: &[u8; 8] = b"SABOTMS1";

/// Keys up to this many bytes live inside the slot: no pointer to chase (and no cache miss)
/// on lookups of the usual small keys.
const INLINE_KEY: usize = 22;

/// A key's bytes, inline when short.
enum SlotKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl SlotKey {
    #[inline]
    fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            SlotKey::Inline { len: key.len() as u8, bytes }
        } else {
            SlotKey::Heap(key.into())
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            SlotKey::Inline { len, bytes } => &bytes[..*len as usize],
            SlotKey::Heap(bytes) => bytes,
        }
    }
}

/// One key's value and when it expires (`u64::MAX`: never).
pub(super) struct Slot<V> {
    hash: u64,
    expires_at: u64,
    key: SlotKey,
    value: V,
}

/// One state's table.
pub(super) struct MemTable<V> {
    table: HashTable<Slot<V>>,
}

impl<V> Default for MemTable<V> {
    fn default() -> Self {
        MemTable { table: HashTable::new() }
    }
}

/// The equality test of a lookup for `key`. Short keys are compared as whole zero-padded
/// inline arrays (a few wide loads, no `memcmp` call).
#[inline]
fn matches<V>(key: &[u8], hash: u64) -> impl Fn(&Slot<V>) -> bool + '_ {
    let probe = (key.len() <= INLINE_KEY).then(|| {
        let mut bytes = [0; INLINE_KEY];
        bytes[..key.len()].copy_from_slice(key);
        (key.len() as u8, bytes)
    });
    move |slot| {
        slot.hash == hash
            && match (&slot.key, &probe) {
                (SlotKey::Inline { len, bytes }, Some((probe_len, probe_bytes))) => {
                    len == probe_len && bytes == probe_bytes
                }
                (SlotKey::Heap(stored), None) => **stored == *key,
                _ => false,
            }
    }
}

#[inline]
fn slot_hash<V>(slot: &Slot<V>) -> u64 {
    slot.hash
}

impl<V> MemTable<V> {
    /// The live value of `key`; an expired one is removed and reads as absent.
    #[inline]
    pub(super) fn get(&mut self, key: &[u8], hash: u64, now: u64) -> Option<&mut V> {
        match self.table.find_entry(hash, matches(key, hash)) {
            Ok(entry) if entry.get().expires_at <= now => {
                entry.remove();
                None
            }
            Ok(entry) => Some(&mut entry.into_mut().value),
            Err(_) => None,
        }
    }

    /// Replaces the value of `key` by `f(live value)` and sets its expiry.
    #[inline]
    pub(super) fn update_with(
        &mut self,
        key: &[u8],
        hash: u64,
        now: u64,
        expires_at: u64,
        f: impl FnOnce(Option<&V>) -> V,
    ) {
        match self.table.entry(hash, matches(key, hash), slot_hash) {
            Entry::Occupied(mut entry) => {
                let slot = entry.get_mut();
                slot.value = if slot.expires_at <= now { f(None) } else { f(Some(&slot.value)) };
                slot.expires_at = expires_at;
            }
            Entry::Vacant(entry) => {
                let value = f(None);
                entry.insert(Slot { hash, expires_at, key: SlotKey::new(key), value });
            }
        }
    }

    /// The live value of `key` for in-place modification, created with `init` when absent or
    /// expired; its expiry is set to `expires_at`.
    #[inline]
    pub(super) fn slot_for_write(
        &mut self,
        key: &[u8],
        hash: u64,
        now: u64,
        expires_at: u64,
        init: impl FnOnce() -> V,
    ) -> &mut V {
        match self.table.entry(hash, matches(key, hash), slot_hash) {
            Entry::Occupied(entry) => {
                let slot = entry.into_mut();
                if slot.expires_at <= now {
                    slot.value = init();
                }
                slot.expires_at = expires_at;
                &mut slot.value
            }
            Entry::Vacant(entry) => {
                &mut entry.insert(Slot { hash, expires_at, key: SlotKey::new(key), value: init() }).into_mut().value
            }
        }
    }

    /// Removes `key`, returning its value if it was live.
    #[inline]
    pub(super) fn remove(&mut self, key: &[u8], hash: u64, now: u64) -> Option<V> {
        match self.table.find_entry(hash, matches(key, hash)) {
            Ok(entry) => {
                let (slot, _) = entry.remove();
                (slot.expires_at > now).then_some(slot.value)
            }
            Err(_) => None,
        }
    }

    /// The table as a snapshot file's bytes (magic, then the postcard-encoded entries).
    fn encode_snapshot(&self, state: &str) -> Result<Vec<u8>>
    where
        V: Serialize,
    {
        let entries: Vec<(&[u8], u64, &V)> =
            self.table.iter().map(|slot| (slot.key.as_slice(), slot.expires_at, &slot.value)).collect();
        let out = SNAPSHOT_MAGIC.to_vec();
        postcard::to_extend(&entries, out).map_err(|e| codec::error(state, "encode snapshot", e))
    }

    /// Loads the entries of every snapshot file in `paths` whose key `keep` accepts (all
    /// of one file when restoring as before; a share of several when the parallelism changed).
    fn read_snapshots(paths: &[PathBuf], state: &str, hasher: &dyn Fn(&[u8]) -> u64, keep: KeyCheck<'_>) -> Result<Self>
    where
        V: DeserializeOwned,
    {
        let mut table = MemTable { table: HashTable::new() };
        table.merge_snapshots(paths, state, hasher, keep)?;
        Ok(table)
    }

    /// Adds the entries of the snapshot files in `paths` whose key `keep` accepts; they
    /// replace entries of the same key.
    fn merge_snapshots(
        &mut self,
        paths: &[PathBuf],
        state: &str,
        hasher: &dyn Fn(&[u8]) -> u64,
        keep: KeyCheck<'_>,
    ) -> Result<()>
    where
        V: DeserializeOwned,
    {
        for path in paths {
            let bytes = fs::read(path).map_err(|e| SabotError::io(path, e))?;
            let body = bytes
                .strip_prefix(SNAPSHOT_MAGIC.as_slice())
                .ok_or_else(|| SabotError::format(path, None, "not a Sabot memory-state snapshot"))?;
            let entries: Vec<(Vec<u8>, u64, V)> =
                postcard::from_bytes(body).map_err(|e| codec::error(state, "decode snapshot", e))?;
            self.table.reserve(entries.len(), slot_hash);
            for (key, expires_at, value) in entries {
                if keep.is_some_and(|keep| !keep(&key)) {
                    continue;
                }
                let hash = hasher(&key);
                let slot = Slot { hash, expires_at, key: SlotKey::new(&key), value };
                match self.table.entry(hash, matches(&key, hash), slot_hash) {
                    Entry::Occupied(mut entry) => *entry.get_mut() = slot,
                    Entry::Vacant(entry) => {
                        entry.insert(slot);
                    }
                }
            }
        }
        Ok(())
    }

    /// The live entries whose key starts with `prefix`, in no particular order.
    pub(super) fn entries_with_prefix(&self, prefix: &[u8], now: u64) -> Vec<(Box<[u8]>, V)>
    where
        V: Clone,
    {
        self.table
            .iter()
            .filter(|slot| slot.expires_at > now && slot.key.as_slice().starts_with(prefix))
            .map(|slot| (Box::from(slot.key.as_slice()), slot.value.clone()))
            .collect()
    }

    /// The keys of the live entries in `[from, bound)`, in no particular order.
    pub(super) fn keys_between(&self, from: &[u8], bound: &[u8], now: u64) -> Vec<Box<[u8]>> {
        self.table
            .iter()
            .filter(|slot| slot.expires_at > now && (from..bound).contains(&slot.key.as_slice()))
            .map(|slot| Box::from(slot.key.as_slice()))
            .collect()
    }

    /// Keeps only the keys `keep` accepts; returns how many were dropped.
    pub(super) fn retain_keys(&mut self, keep: &dyn Fn(&[u8]) -> bool) -> usize {
        let before = self.table.len();
        self.table.retain(|slot| keep(slot.key.as_slice()));
        before - self.table.len()
    }
}

/// Whether an instance keeps a key (its encoded key columns) of a restored snapshot.
pub(crate) type KeyPredicate = std::sync::Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Which keys of a restored snapshot an instance keeps (`None`: all of them).
pub(crate) type KeyFilter = Option<KeyPredicate>;

/// A borrowed [`KeyFilter`]: which keys of a snapshot to load (`None`: all of them).
pub(crate) type KeyCheck<'a> = Option<&'a dyn Fn(&[u8]) -> bool>;

/// What the store needs of a table without knowing its type.
pub(super) trait ErasedTable: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Removes expired values; returns how many were removed.
    fn purge(&mut self, now: u64) -> usize;
    /// Values physically held, expired or not (map entries counted one by one).
    fn stored_entries(&self) -> usize;
    /// The whole table as the bytes of a snapshot file.
    fn snapshot_bytes(&self, state: &str) -> Result<Vec<u8>>;
    /// Adds the entries of snapshot files whose key `keep` accepts (a key group handed over).
    fn merge_snapshots(
        &mut self,
        paths: &[PathBuf],
        state: &str,
        hasher: &dyn Fn(&[u8]) -> u64,
        keep: KeyCheck<'_>,
    ) -> Result<()>;
    /// Keeps only the keys `keep` accepts (key groups released); returns how many keys went.
    fn retain_keys(&mut self, keep: &dyn Fn(&[u8]) -> bool) -> usize;
}

/// The table of a value, list or reducing state.
pub(super) struct ValueTable<T>(pub(super) MemTable<T>);

impl<T: Serialize + DeserializeOwned + Send + 'static> ValueTable<T> {
    pub(super) fn load(
        paths: &[PathBuf],
        state: &str,
        hasher: &dyn Fn(&[u8]) -> u64,
        keep: KeyCheck<'_>,
    ) -> Result<Self> {
        MemTable::read_snapshots(paths, state, hasher, keep).map(ValueTable)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> ErasedTable for ValueTable<T> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn purge(&mut self, now: u64) -> usize {
        let before = self.0.table.len();
        self.0.table.retain(|slot| slot.expires_at > now);
        before - self.0.table.len()
    }

    fn stored_entries(&self) -> usize {
        self.0.table.len()
    }

    fn snapshot_bytes(&self, state: &str) -> Result<Vec<u8>> {
        self.0.encode_snapshot(state)
    }

    fn merge_snapshots(
        &mut self,
        paths: &[PathBuf],
        state: &str,
        hasher: &dyn Fn(&[u8]) -> u64,
        keep: KeyCheck<'_>,
    ) -> Result<()> {
        self.0.merge_snapshots(paths, state, hasher, keep)
    }

    fn retain_keys(&mut self, keep: &dyn Fn(&[u8]) -> bool) -> usize {
        self.0.retain_keys(keep)
    }
}

/// The table of a map state: per key, a map whose entries each carry their own expiry.
pub(super) struct MapTable<K, V>(pub(super) MemTable<MapEntries<K, V>>);

impl<K, V> MapTable<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Send + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    pub(super) fn load(
        paths: &[PathBuf],
        state: &str,
        hasher: &dyn Fn(&[u8]) -> u64,
        keep: KeyCheck<'_>,
    ) -> Result<Self> {
        MemTable::read_snapshots(paths, state, hasher, keep).map(MapTable)
    }
}

impl<K, V> ErasedTable for MapTable<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Send + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn purge(&mut self, now: u64) -> usize {
        let mut removed = 0;
        self.0.table.retain(|slot| {
            let before = slot.value.len();
            slot.value.retain(|_, (_, expires_at)| *expires_at > now);
            removed += before - slot.value.len();
            !slot.value.is_empty()
        });
        removed
    }

    fn stored_entries(&self) -> usize {
        self.0.table.iter().map(|slot| slot.value.len()).sum()
    }

    fn snapshot_bytes(&self, state: &str) -> Result<Vec<u8>> {
        self.0.encode_snapshot(state)
    }

    fn merge_snapshots(
        &mut self,
        paths: &[PathBuf],
        state: &str,
        hasher: &dyn Fn(&[u8]) -> u64,
        keep: KeyCheck<'_>,
    ) -> Result<()> {
        self.0.merge_snapshots(paths, state, hasher, keep)
    }

    fn retain_keys(&mut self, keep: &dyn Fn(&[u8]) -> bool) -> usize {
        self.0.retain_keys(keep)
    }
}
