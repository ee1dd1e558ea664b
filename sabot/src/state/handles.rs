//! State handles: typed views of one registered state, used with `&mut KeyedStateStore`.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use super::StateValue;
#[cfg(feature = "rocksdb")]
use super::codec;
use super::descriptor::ReduceFn;
use super::memory::{ErasedTable, MapEntries, MapTable, ValueTable};
use super::store::{Access, Backend, KeyedStateStore};
use crate::{Result, SabotError};

/// Which store and which of its states a handle refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StateId {
    pub(super) store: u64,
    pub(super) idx: u32,
}

/// The typed memory table of state `idx`.
#[inline(always)]
fn table<'t, X: 'static>(tables: &'t mut [Box<dyn ErasedTable>], idx: usize, state: &str) -> Result<&'t mut X> {
    tables[idx].as_any_mut().downcast_mut::<X>().ok_or_else(|| SabotError::State {
        state: state.to_string(),
        message: "internal error: state table has another type than its handle".into(),
    })
}

/// RocksDB: appends the encoding of one value after the expiry header.
#[cfg(feature = "rocksdb")]
fn encode_stored<T: serde::Serialize>(state: &str, expires_at: u64, value: &T, buf: &mut Vec<u8>) -> Result<()> {
    codec::start(buf, expires_at);
    codec::encode_into(state, value, buf)
}

/// RocksDB: the key of a map entry, `len(key) as u32 BE | key | postcard(user key)`, so that
/// one key's entries form a contiguous, prefix-free range.
#[cfg(feature = "rocksdb")]
fn map_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 16);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

#[cfg(feature = "rocksdb")]
fn map_key<K: serde::Serialize>(
    key: &[u8],
    hasher: &foldhash::fast::FixedState,
    state: &str,
    user_key: &K,
) -> Result<(Vec<u8>, u64)> {
    use std::hash::BuildHasher;
    let mut out = map_prefix(key);
    codec::encode_into(state, user_key, &mut out)?;
    let hash = hasher.hash_one(&out[..]);
    Ok((out, hash))
}

// ---------------------------------------------------------------------------------------------
// ValueState

/// One value of type `T` per key. Get it from
/// [`KeyedStateStore::value_state`].
///
/// ```
/// use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
/// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
/// let count = store.value_state(&ValueStateDescriptor::<i64>::new("count"))?;
/// store.set_current_key(b"user-1");
/// count.update_with(&mut store, |c| c.copied().unwrap_or(0) + 1)?;
/// count.update_with(&mut store, |c| c.copied().unwrap_or(0) + 1)?;
/// assert_eq!(count.value(&mut store)?, Some(2));
/// count.clear(&mut store)?;
/// assert_eq!(count.value(&mut store)?, None);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct ValueState<T> {
    id: StateId,
    _type: PhantomData<fn() -> T>,
}

impl<T: StateValue> ValueState<T> {
    pub(super) fn new(id: StateId) -> Self {
        ValueState { id, _type: PhantomData }
    }

    /// The current key's value (`None` if never written, cleared or expired).
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let v = store.value_state(&ValueStateDescriptor::<u8>::new("v"))?;
    /// store.set_current_key(b"k");
    /// assert_eq!(v.value(&mut store)?, None);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[inline]
    pub fn value(&self, store: &mut KeyedStateStore) -> Result<Option<T>> {
        self.read(store.access(self.id, None)?)
    }

    /// The value of `key`, whatever the current key is.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let v = store.value_state(&ValueStateDescriptor::<u8>::new("v"))?;
    /// v.update_for(&mut store, b"k", 3)?;
    /// assert_eq!(v.value_for(&mut store, b"k")?, Some(3));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[inline]
    pub fn value_for(&self, store: &mut KeyedStateStore, key: &[u8]) -> Result<Option<T>> {
        self.read(store.access(self.id, Some(key))?)
    }

    /// Sets the current key's value (and restarts its TTL).
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let v = store.value_state(&ValueStateDescriptor::<String>::new("v"))?;
    /// store.set_current_key(b"k");
    /// v.update(&mut store, "x".into())?;
    /// assert_eq!(v.value(&mut store)?.as_deref(), Some("x"));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[inline]
    pub fn update(&self, store: &mut KeyedStateStore, value: T) -> Result<()> {
        self.put(store.access(self.id, None)?, value)
    }

    /// Sets the value of `key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let v = store.value_state(&ValueStateDescriptor::<i32>::new("v"))?;
    /// v.update_for(&mut store, b"a", -1)?;
    /// assert_eq!(v.value_for(&mut store, b"a")?, Some(-1));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[inline]
    pub fn update_for(&self, store: &mut KeyedStateStore, key: &[u8], value: T) -> Result<()> {
        self.put(store.access(self.id, Some(key))?, value)
    }

    /// Replaces the current key's value by `f(current value)`: one lookup in memory instead of
    /// a `value` then an `update`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let total = store.value_state(&ValueStateDescriptor::<f64>::new("total"))?;
    /// store.set_current_key(b"ACC_0");
    /// total.update_with(&mut store, |t| t.copied().unwrap_or(0.0) + 12.5)?;
    /// assert_eq!(total.value(&mut store)?, Some(12.5));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[inline]
    pub fn update_with(&self, store: &mut KeyedStateStore, f: impl FnOnce(Option<&T>) -> T) -> Result<()> {
        self.modify(store.access(self.id, None)?, f)
    }

    /// [`update_with`](Self::update_with) for `key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let n = store.value_state(&ValueStateDescriptor::<u64>::new("n"))?;
    /// for key in [b"a", b"b", b"a"] {
    ///     n.update_with_for(&mut store, key, |c| c.copied().unwrap_or(0) + 1)?;
    /// }
    /// assert_eq!(n.value_for(&mut store, b"a")?, Some(2));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[inline]
    pub fn update_with_for(
        &self,
        store: &mut KeyedStateStore,
        key: &[u8],
        f: impl FnOnce(Option<&T>) -> T,
    ) -> Result<()> {
        self.modify(store.access(self.id, Some(key))?, f)
    }

    /// Removes the current key's value.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let v = store.value_state(&ValueStateDescriptor::<u8>::new("v"))?;
    /// store.set_current_key(b"k");
    /// v.update(&mut store, 1)?;
    /// v.clear(&mut store)?;
    /// assert_eq!(v.value(&mut store)?, None);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        remove_value::<T>(store.access(self.id, None)?)
    }

    /// Removes the value of `key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let v = store.value_state(&ValueStateDescriptor::<u8>::new("v"))?;
    /// v.update_for(&mut store, b"k", 1)?;
    /// v.clear_for(&mut store, b"k")?;
    /// assert_eq!(v.value_for(&mut store, b"k")?, None);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn clear_for(&self, store: &mut KeyedStateStore, key: &[u8]) -> Result<()> {
        remove_value::<T>(store.access(self.id, Some(key))?)
    }

    /// Reads the values of `keys` ahead, in one batch: on RocksDB the keys missing from the
    /// store's cache are fetched with one MultiGet, so that the `*_for` calls on them that
    /// follow are served from memory (a large batch may evict earlier cached entries); in
    /// memory it does nothing. For batch-at-a-time operators, which know a batch's keys up
    /// front.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let v = store.value_state(&ValueStateDescriptor::<u32>::new("v"))?;
    /// v.update_for(&mut store, b"a", 1)?;
    /// v.prefetch_for(&mut store, [&b"a"[..], b"b"])?;
    /// assert_eq!(v.value_for(&mut store, b"a")?, Some(1));
    /// assert_eq!(v.value_for(&mut store, b"b")?, None);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn prefetch_for<'k>(
        &self,
        store: &mut KeyedStateStore,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<()> {
        store.prefetch(self.id, keys)
    }

    /// The live entries whose stored key starts with `prefix`, in key order: operators that
    /// keep a namespace before the key (a window's pane) read one namespace at a time. On
    /// RocksDB a range scan; in memory a pass over the whole table.
    pub(crate) fn entries_with_prefix(
        &self,
        store: &mut KeyedStateStore,
        prefix: &[u8],
    ) -> Result<Vec<(Box<[u8]>, T)>> {
        let a = store.access(self.id, Some(prefix))?;
        match a.backend {
            Backend::Memory(tables) => {
                let mut entries = table::<ValueTable<T>>(tables, a.idx, a.state)?.0.entries_with_prefix(prefix, a.now);
                entries.sort_unstable_by(|x, y| x.0.cmp(&y.0));
                Ok(entries)
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => r
                .scan_prefix(a.idx, prefix, a.now)?
                .into_iter()
                .map(|(key, stored)| Ok((key, codec::decode(a.state, super::rocks::payload(&stored))?)))
                .collect(),
        }
    }

    /// The keys of the live entries whose stored key sorts in `[from, bound)`, in key order:
    /// operators that put an event time in front of the key (see
    /// [`time_prefix`](crate::operator::time_prefix)) read what expired since they last
    /// looked. On RocksDB a bounded scan; in memory a pass over the whole table.
    pub(crate) fn keys_between(
        &self,
        store: &mut KeyedStateStore,
        from: &[u8],
        bound: &[u8],
    ) -> Result<Vec<Box<[u8]>>> {
        let a = store.access(self.id, Some(bound))?;
        match a.backend {
            Backend::Memory(tables) => {
                let mut keys = table::<ValueTable<T>>(tables, a.idx, a.state)?.0.keys_between(from, bound, a.now);
                keys.sort_unstable();
                Ok(keys)
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => r.keys_between(a.idx, from, bound, a.now),
        }
    }

    /// Up to `limit` of the entries [`entries_with_prefix`](Self::entries_with_prefix)
    /// returns, those whose stored key sorts after `after` (from the first with `None`): a
    /// namespace read a page at a time.
    pub(crate) fn entries_with_prefix_after(
        &self,
        store: &mut KeyedStateStore,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Box<[u8]>, T)>> {
        let a = store.access(self.id, Some(prefix))?;
        match a.backend {
            Backend::Memory(tables) => {
                let mut entries = table::<ValueTable<T>>(tables, a.idx, a.state)?.0.entries_with_prefix(prefix, a.now);
                entries.retain(|(key, _)| after.is_none_or(|after| key.as_ref() > after));
                entries.sort_unstable_by(|x, y| x.0.cmp(&y.0));
                entries.truncate(limit);
                Ok(entries)
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => r
                .scan_page(a.idx, prefix, after, limit, a.now)?
                .into_iter()
                .map(|(key, stored)| Ok((key, codec::decode(a.state, super::rocks::payload(&stored))?)))
                .collect(),
        }
    }

    /// Removes every entry whose stored key starts with `prefix`.
    pub(crate) fn clear_prefix(&self, store: &mut KeyedStateStore, prefix: &[u8]) -> Result<()> {
        let a = store.access(self.id, Some(prefix))?;
        match a.backend {
            Backend::Memory(tables) => {
                table::<ValueTable<T>>(tables, a.idx, a.state)?.0.retain_keys(&|key| !key.starts_with(prefix));
                Ok(())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => r.delete_prefix(a.idx, prefix),
        }
    }

    #[inline]
    fn read(&self, a: Access<'_>) -> Result<Option<T>> {
        match a.backend {
            Backend::Memory(tables) => {
                Ok(table::<ValueTable<T>>(tables, a.idx, a.state)?.0.get(a.key, a.hash, a.now).cloned())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => r.read(a.idx, a.key, a.hash, a.now, |bytes| codec::decode(a.state, bytes)),
        }
    }

    #[inline]
    fn put(&self, a: Access<'_>, value: T) -> Result<()> {
        match a.backend {
            Backend::Memory(tables) => {
                table::<ValueTable<T>>(tables, a.idx, a.state)?.0.update_with(
                    a.key,
                    a.hash,
                    a.now,
                    a.expires_at,
                    |_| value,
                );
                Ok(())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                r.write(a.idx, a.key, a.hash, |buf| encode_stored(a.state, a.expires_at, &value, buf))
            }
        }
    }

    #[inline]
    fn modify(&self, a: Access<'_>, f: impl FnOnce(Option<&T>) -> T) -> Result<()> {
        match a.backend {
            Backend::Memory(tables) => {
                table::<ValueTable<T>>(tables, a.idx, a.state)?.0.update_with(a.key, a.hash, a.now, a.expires_at, f);
                Ok(())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                let old: Option<T> = r.read(a.idx, a.key, a.hash, a.now, |bytes| codec::decode(a.state, bytes))?;
                let new = f(old.as_ref());
                r.write(a.idx, a.key, a.hash, |buf| encode_stored(a.state, a.expires_at, &new, buf))
            }
        }
    }
}

/// Removes a key's entry from a value, list or reducing state (stored as `ValueTable<V>`).
fn remove_value<V: StateValue>(a: Access<'_>) -> Result<()> {
    match a.backend {
        Backend::Memory(tables) => {
            table::<ValueTable<V>>(tables, a.idx, a.state)?.0.remove(a.key, a.hash, a.now);
            Ok(())
        }
        #[cfg(feature = "rocksdb")]
        Backend::RocksDb(r) => r.delete(a.idx, a.key, a.hash),
    }
}

// ---------------------------------------------------------------------------------------------
// ListState

/// A list of `T` per key. Get it from [`KeyedStateStore::list_state`]. The TTL, if any,
/// covers a key's whole list and is renewed by every write to it. On RocksDB a key's list is
/// one value (elements encoded back to back), so `add` costs the list's size.
///
/// ```
/// use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
/// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
/// let events = store.list_state(&ListStateDescriptor::<String>::new("events"))?;
/// store.set_current_key(b"k");
/// events.add(&mut store, "open".into())?;
/// events.add_all(&mut store, ["read".to_string(), "close".to_string()])?;
/// assert_eq!(events.get(&mut store)?, ["open", "read", "close"]);
/// events.update(&mut store, vec!["reset".into()])?;
/// assert_eq!(events.get(&mut store)?, ["reset"]);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct ListState<T> {
    id: StateId,
    _type: PhantomData<fn() -> T>,
}

impl<T: StateValue> ListState<T> {
    pub(super) fn new(id: StateId) -> Self {
        ListState { id, _type: PhantomData }
    }

    /// Appends `value` to the current key's list.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let l = store.list_state(&ListStateDescriptor::<u8>::new("l"))?;
    /// store.set_current_key(b"k");
    /// l.add(&mut store, 1)?;
    /// assert_eq!(l.get(&mut store)?, [1]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn add(&self, store: &mut KeyedStateStore, value: T) -> Result<()> {
        self.append(store.access(self.id, None)?, std::iter::once(value))
    }

    /// Appends `value` to the list of `key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let l = store.list_state(&ListStateDescriptor::<u8>::new("l"))?;
    /// l.add_for(&mut store, b"k", 5)?;
    /// assert_eq!(l.get_for(&mut store, b"k")?, [5]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn add_for(&self, store: &mut KeyedStateStore, key: &[u8], value: T) -> Result<()> {
        self.append(store.access(self.id, Some(key))?, std::iter::once(value))
    }

    /// Appends every value of `values` to the current key's list.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let l = store.list_state(&ListStateDescriptor::<u8>::new("l"))?;
    /// store.set_current_key(b"k");
    /// l.add_all(&mut store, [1, 2, 3])?;
    /// assert_eq!(l.get(&mut store)?, [1, 2, 3]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn add_all(&self, store: &mut KeyedStateStore, values: impl IntoIterator<Item = T>) -> Result<()> {
        self.append(store.access(self.id, None)?, values)
    }

    /// The current key's list (empty if none).
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let l = store.list_state(&ListStateDescriptor::<u8>::new("l"))?;
    /// store.set_current_key(b"k");
    /// assert!(l.get(&mut store)?.is_empty());
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn get(&self, store: &mut KeyedStateStore) -> Result<Vec<T>> {
        self.read(store.access(self.id, None)?)
    }

    /// The list of `key` (empty if none).
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let l = store.list_state(&ListStateDescriptor::<u8>::new("l"))?;
    /// assert!(l.get_for(&mut store, b"nobody")?.is_empty());
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn get_for(&self, store: &mut KeyedStateStore, key: &[u8]) -> Result<Vec<T>> {
        self.read(store.access(self.id, Some(key))?)
    }

    /// Replaces the current key's list by `values` (an empty list clears it).
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let l = store.list_state(&ListStateDescriptor::<u8>::new("l"))?;
    /// store.set_current_key(b"k");
    /// l.add(&mut store, 1)?;
    /// l.update(&mut store, vec![8, 9])?;
    /// assert_eq!(l.get(&mut store)?, [8, 9]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn update(&self, store: &mut KeyedStateStore, values: Vec<T>) -> Result<()> {
        let a = store.access(self.id, None)?;
        if values.is_empty() {
            return remove_value::<Vec<T>>(a);
        }
        match a.backend {
            Backend::Memory(tables) => {
                table::<ValueTable<Vec<T>>>(tables, a.idx, a.state)?.0.update_with(
                    a.key,
                    a.hash,
                    a.now,
                    a.expires_at,
                    |_| values,
                );
                Ok(())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => r.write(a.idx, a.key, a.hash, |buf| {
                codec::start(buf, a.expires_at);
                values.iter().try_for_each(|v| codec::encode_into(a.state, v, buf))
            }),
        }
    }

    /// Removes the current key's list.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ListStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let l = store.list_state(&ListStateDescriptor::<u8>::new("l"))?;
    /// store.set_current_key(b"k");
    /// l.add(&mut store, 1)?;
    /// l.clear(&mut store)?;
    /// assert!(l.get(&mut store)?.is_empty());
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        remove_value::<Vec<T>>(store.access(self.id, None)?)
    }

    fn append(&self, a: Access<'_>, values: impl IntoIterator<Item = T>) -> Result<()> {
        match a.backend {
            Backend::Memory(tables) => {
                table::<ValueTable<Vec<T>>>(tables, a.idx, a.state)?
                    .0
                    .slot_for_write(a.key, a.hash, a.now, a.expires_at, Vec::new)
                    .extend(values);
                Ok(())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                let old: Option<Vec<u8>> = r.read(a.idx, a.key, a.hash, a.now, |bytes| Ok(bytes.to_vec()))?;
                r.write(a.idx, a.key, a.hash, |buf| {
                    codec::start(buf, a.expires_at);
                    buf.extend_from_slice(old.as_deref().unwrap_or_default());
                    values.into_iter().try_for_each(|v| codec::encode_into(a.state, &v, buf))
                })
            }
        }
    }

    fn read(&self, a: Access<'_>) -> Result<Vec<T>> {
        match a.backend {
            Backend::Memory(tables) => Ok(table::<ValueTable<Vec<T>>>(tables, a.idx, a.state)?
                .0
                .get(a.key, a.hash, a.now)
                .cloned()
                .unwrap_or_default()),
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                let list = r.read(a.idx, a.key, a.hash, a.now, |mut bytes| {
                    let mut out = Vec::new();
                    while !bytes.is_empty() {
                        let (v, rest) = codec::decode_prefix(a.state, bytes)?;
                        out.push(v);
                        bytes = rest;
                    }
                    Ok(out)
                })?;
                Ok(list.unwrap_or_default())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MapState

/// A map from `K` to `V` per key. Get it from [`KeyedStateStore::map_state`]. The TTL, if
/// any, applies to each entry. Iteration order is unspecified.
///
/// ```
/// use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
/// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
/// let pos = store.map_state(&MapStateDescriptor::<String, i64>::new("positions"))?;
/// store.set_current_key(b"ACC_1");
/// pos.put(&mut store, "AAPL".into(), 100)?;
/// pos.put(&mut store, "MSFT".into(), -20)?;
/// assert!(pos.contains(&mut store, &"AAPL".into())?);
/// pos.remove(&mut store, &"AAPL".into())?;
/// let mut keys = pos.keys(&mut store)?;
/// keys.sort();
/// assert_eq!(keys, ["MSFT"]);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct MapState<K, V> {
    id: StateId,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K: StateValue + Hash + Eq, V: StateValue> MapState<K, V> {
    pub(super) fn new(id: StateId) -> Self {
        MapState { id, _type: PhantomData }
    }

    /// The value under `user_key` in the current key's map.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, String>::new("m"))?;
    /// store.set_current_key(b"k");
    /// assert_eq!(m.get(&mut store, &1)?, None);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn get(&self, store: &mut KeyedStateStore, user_key: &K) -> Result<Option<V>> {
        self.lookup(store.access(self.id, None)?, user_key)
    }

    /// The value under `user_key` in the map of `key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// m.put_for(&mut store, b"k", 1, 10)?;
    /// assert_eq!(m.get_for(&mut store, b"k", &1)?, Some(10));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn get_for(&self, store: &mut KeyedStateStore, key: &[u8], user_key: &K) -> Result<Option<V>> {
        self.lookup(store.access(self.id, Some(key))?, user_key)
    }

    /// Puts `value` under `user_key` in the current key's map (renewing that entry's TTL).
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// store.set_current_key(b"k");
    /// m.put(&mut store, 1, 10)?;
    /// m.put(&mut store, 1, 11)?;
    /// assert_eq!(m.get(&mut store, &1)?, Some(11));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn put(&self, store: &mut KeyedStateStore, user_key: K, value: V) -> Result<()> {
        self.insert(store.access(self.id, None)?, user_key, value)
    }

    /// Puts `value` under `user_key` in the map of `key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// m.put_for(&mut store, b"k", 2, 20)?;
    /// assert_eq!(m.get_for(&mut store, b"k", &2)?, Some(20));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn put_for(&self, store: &mut KeyedStateStore, key: &[u8], user_key: K, value: V) -> Result<()> {
        self.insert(store.access(self.id, Some(key))?, user_key, value)
    }

    /// Removes `user_key` from the current key's map.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// store.set_current_key(b"k");
    /// m.put(&mut store, 1, 10)?;
    /// m.remove(&mut store, &1)?;
    /// assert!(m.is_empty(&mut store)?);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn remove(&self, store: &mut KeyedStateStore, user_key: &K) -> Result<()> {
        let a = store.access(self.id, None)?;
        match a.backend {
            Backend::Memory(tables) => {
                let t = table::<MapTable<K, V>>(tables, a.idx, a.state)?;
                if let Some(map) = t.0.get(a.key, a.hash, a.now) {
                    map.remove(user_key);
                    if map.is_empty() {
                        t.0.remove(a.key, a.hash, a.now);
                    }
                }
                Ok(())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                let (k, h) = map_key(a.key, a.hasher, a.state, user_key)?;
                r.delete(a.idx, &k, h)
            }
        }
    }

    /// Whether the current key's map holds a live entry under `user_key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// store.set_current_key(b"k");
    /// m.put(&mut store, 1, 10)?;
    /// assert!(m.contains(&mut store, &1)?);
    /// assert!(!m.contains(&mut store, &2)?);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn contains(&self, store: &mut KeyedStateStore, user_key: &K) -> Result<bool> {
        let a = store.access(self.id, None)?;
        match a.backend {
            Backend::Memory(tables) => {
                let map = table::<MapTable<K, V>>(tables, a.idx, a.state)?.0.get(a.key, a.hash, a.now);
                Ok(map.and_then(|m| m.get(user_key)).is_some_and(|(_, expires_at)| *expires_at > a.now))
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                let (k, h) = map_key(a.key, a.hasher, a.state, user_key)?;
                Ok(r.read(a.idx, &k, h, a.now, |_| Ok(()))?.is_some())
            }
        }
    }

    /// The live entries of the current key's map, in no particular order.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// store.set_current_key(b"k");
    /// m.put(&mut store, 1, 10)?;
    /// m.put(&mut store, 2, 20)?;
    /// let mut all: Vec<(u32, u32)> = m.iter(&mut store)?.collect();
    /// all.sort();
    /// assert_eq!(all, [(1, 10), (2, 20)]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn iter(&self, store: &mut KeyedStateStore) -> Result<std::vec::IntoIter<(K, V)>> {
        let entries = self.entries(store.access(self.id, None)?, true)?;
        Ok(entries.into_iter().filter_map(|(k, v)| Some((k, v?))).collect::<Vec<_>>().into_iter())
    }

    /// The user keys of the current key's live entries, in no particular order.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// store.set_current_key(b"k");
    /// m.put(&mut store, 7, 70)?;
    /// assert_eq!(m.keys(&mut store)?, [7]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn keys(&self, store: &mut KeyedStateStore) -> Result<Vec<K>> {
        Ok(self.entries(store.access(self.id, None)?, false)?.into_iter().map(|(k, _)| k).collect())
    }

    /// Whether the current key's map has no live entry.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// store.set_current_key(b"k");
    /// assert!(m.is_empty(&mut store)?);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn is_empty(&self, store: &mut KeyedStateStore) -> Result<bool> {
        Ok(self.entries(store.access(self.id, None)?, false)?.is_empty())
    }

    /// Removes the current key's whole map.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, MapStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let m = store.map_state(&MapStateDescriptor::<u32, u32>::new("m"))?;
    /// store.set_current_key(b"k");
    /// m.put(&mut store, 1, 1)?;
    /// m.clear(&mut store)?;
    /// assert!(m.is_empty(&mut store)?);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        let a = store.access(self.id, None)?;
        match a.backend {
            Backend::Memory(tables) => {
                table::<MapTable<K, V>>(tables, a.idx, a.state)?.0.remove(a.key, a.hash, a.now);
                Ok(())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => r.delete_prefix(a.idx, &map_prefix(a.key)),
        }
    }

    fn lookup(&self, a: Access<'_>, user_key: &K) -> Result<Option<V>> {
        match a.backend {
            Backend::Memory(tables) => {
                let Some(map) = table::<MapTable<K, V>>(tables, a.idx, a.state)?.0.get(a.key, a.hash, a.now) else {
                    return Ok(None);
                };
                match map.get(user_key) {
                    Some((v, expires_at)) if *expires_at > a.now => Ok(Some(v.clone())),
                    Some(_) => {
                        map.remove(user_key);
                        Ok(None)
                    }
                    None => Ok(None),
                }
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                let (k, h) = map_key(a.key, a.hasher, a.state, user_key)?;
                r.read(a.idx, &k, h, a.now, |bytes| codec::decode(a.state, bytes))
            }
        }
    }

    fn insert(&self, a: Access<'_>, user_key: K, value: V) -> Result<()> {
        match a.backend {
            Backend::Memory(tables) => {
                table::<MapTable<K, V>>(tables, a.idx, a.state)?
                    .0
                    .slot_for_write(a.key, a.hash, a.now, u64::MAX, MapEntries::default)
                    .insert(user_key, (value, a.expires_at));
                Ok(())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                let (k, h) = map_key(a.key, a.hasher, a.state, &user_key)?;
                r.write(a.idx, &k, h, |buf| encode_stored(a.state, a.expires_at, &value, buf))
            }
        }
    }

    /// The live entries (values decoded only when `with_values`).
    fn entries(&self, a: Access<'_>, with_values: bool) -> Result<Vec<(K, Option<V>)>> {
        match a.backend {
            Backend::Memory(tables) => {
                let t = table::<MapTable<K, V>>(tables, a.idx, a.state)?;
                let Some(map) = t.0.get(a.key, a.hash, a.now) else { return Ok(Vec::new()) };
                Ok(map
                    .iter()
                    .filter(|(_, (_, expires_at))| *expires_at > a.now)
                    .map(|(k, (v, _))| (k.clone(), with_values.then(|| v.clone())))
                    .collect())
            }
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb(r) => {
                let prefix = map_prefix(a.key);
                let raw = r.scan_prefix(a.idx, &prefix, a.now)?;
                raw.iter()
                    .map(|(k, v)| {
                        let user_key = codec::decode(a.state, &k[prefix.len()..])?;
                        let value = if with_values { Some(codec::decode(a.state, &v[codec::HEADER..])?) } else { None };
                        Ok((user_key, value))
                    })
                    .collect()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ReducingState

/// One value per key, folded with the descriptor's reduce function on every `add`. Get it
/// from [`KeyedStateStore::reducing_state`].
///
/// ```
/// use sabot::state::{KeyedStateStore, ReducingStateDescriptor, StateBackend};
/// let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
/// let sum = store.reducing_state(&ReducingStateDescriptor::new("sum", |a: &i64, b: &i64| a + b))?;
/// for (key, amount) in [(b"a", 5), (b"b", 1), (b"a", 7)] {
///     sum.add_for(&mut store, key, amount)?;
/// }
/// assert_eq!(sum.get_for(&mut store, b"a")?, Some(12));
/// assert_eq!(sum.get_for(&mut store, b"b")?, Some(1));
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct ReducingState<T> {
    id: StateId,
    reduce: ReduceFn<T>,
}

impl<T: StateValue> ReducingState<T> {
    pub(super) fn new(id: StateId, reduce: ReduceFn<T>) -> Self {
        ReducingState { id, reduce }
    }

    /// Folds `value` into the current key's value (or stores it, if there is none).
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ReducingStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let min = store.reducing_state(&ReducingStateDescriptor::new("min", |a: &u8, b: &u8| *a.min(b)))?;
    /// store.set_current_key(b"k");
    /// min.add(&mut store, 4)?;
    /// min.add(&mut store, 2)?;
    /// assert_eq!(min.get(&mut store)?, Some(2));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[inline]
    pub fn add(&self, store: &mut KeyedStateStore, value: T) -> Result<()> {
        self.fold(store.access(self.id, None)?, value)
    }

    /// Folds `value` into the value of `key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ReducingStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let n = store.reducing_state(&ReducingStateDescriptor::new("n", |a: &u32, b: &u32| a + b))?;
    /// n.add_for(&mut store, b"k", 1)?;
    /// n.add_for(&mut store, b"k", 1)?;
    /// assert_eq!(n.get_for(&mut store, b"k")?, Some(2));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[inline]
    pub fn add_for(&self, store: &mut KeyedStateStore, key: &[u8], value: T) -> Result<()> {
        self.fold(store.access(self.id, Some(key))?, value)
    }

    /// The current key's reduced value.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ReducingStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let n = store.reducing_state(&ReducingStateDescriptor::new("n", |a: &u32, b: &u32| a + b))?;
    /// store.set_current_key(b"k");
    /// assert_eq!(n.get(&mut store)?, None);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn get(&self, store: &mut KeyedStateStore) -> Result<Option<T>> {
        ValueState::<T>::new(self.id).value(store)
    }

    /// The reduced value of `key`.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ReducingStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let n = store.reducing_state(&ReducingStateDescriptor::new("n", |a: &u32, b: &u32| a + b))?;
    /// assert_eq!(n.get_for(&mut store, b"k")?, None);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn get_for(&self, store: &mut KeyedStateStore, key: &[u8]) -> Result<Option<T>> {
        ValueState::<T>::new(self.id).value_for(store, key)
    }

    /// Removes the current key's value.
    ///
    /// ```
    /// # use sabot::state::{KeyedStateStore, ReducingStateDescriptor, StateBackend};
    /// # let mut store = KeyedStateStore::open(&StateBackend::Memory, "op")?;
    /// let n = store.reducing_state(&ReducingStateDescriptor::new("n", |a: &u32, b: &u32| a + b))?;
    /// store.set_current_key(b"k");
    /// n.add(&mut store, 1)?;
    /// n.clear(&mut store)?;
    /// assert_eq!(n.get(&mut store)?, None);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn clear(&self, store: &mut KeyedStateStore) -> Result<()> {
        remove_value::<T>(store.access(self.id, None)?)
    }

    #[inline]
    fn fold(&self, a: Access<'_>, value: T) -> Result<()> {
        let reduce = &*self.reduce;
        ValueState::<T>::new(self.id).modify(a, move |old| match old {
            Some(old) => reduce(old, &value),
            None => value,
        })
    }
}

// Handles are plain ids: copyable without requiring `T: Copy`.

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ValueState<T> {}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ListState<T> {}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for MapState<K, V> {}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        ReducingState { id: self.id, reduce: self.reduce.clone() }
    }
}

macro_rules! debug_handle {
    ($name:ident < $($p:ident),+ >) => {
        impl<$($p),+> fmt::Debug for $name<$($p),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("state", &self.id.idx).finish()
            }
        }
    };
}

debug_handle!(ValueState<T>);
debug_handle!(ListState<T>);
debug_handle!(MapState<K, V>);
debug_handle!(ReducingState<T>);
