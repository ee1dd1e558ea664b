//! Keyed state for streaming operators, in the manner of Flink's keyed state.
//!
//! Each operator instance (one per worker partition) opens a [`KeyedStateStore`] on a
//! [`StateBackend`] with its operator id, registers states with descriptors
//! ([`ValueStateDescriptor`], [`ListStateDescriptor`], [`MapStateDescriptor`],
//! [`ReducingStateDescriptor`]) and gets back typed handles. Before touching state for a
//! record the operator calls [`KeyedStateStore::set_current_key`] with the encoded key
//! columns; handles then read and write that key's state. Batch-at-a-time operators can name
//! the key on each call instead (`value_for`, `update_for`, `add_for`, ...).
//!
//! * **Memory** (default): one typed hash table per state, keyed by the key bytes with a hash
//!   computed once per `set_current_key`; values are stored as Rust values, never serialized
//!   on the access path.
//! * **RocksDB** (cargo feature `rocksdb`): one RocksDB instance per worker directory, shared
//!   by every operator of the worker, with one column family per state named
//!   `{operator}/{state}`. Values are encoded with `postcard` (serde). Writes are buffered in
//!   a bounded write-back cache that reads consult first (read-your-writes) and are written as
//!   one `WriteBatch` once it holds [`with_write_batch_size`](KeyedStateStore::with_write_batch_size)
//!   pending entries, or on [`flush`](KeyedStateStore::flush); the cache also keeps recently
//!   read and written entries, up to four batches' worth. The write-ahead log is disabled:
//!   durability comes from `flush` and [`snapshot`](KeyedStateStore::snapshot) (checkpoints), as in
//!   Flink, where a failed job restarts from its last checkpoint.
//!
//! Values may carry a time-to-live (`with_ttl` on a descriptor): an expired value is invisible
//! to reads at once and is removed lazily when read, by
//! [`purge_expired`](KeyedStateStore::purge_expired), and on RocksDB by a compaction filter.
//! Time comes from the store's [`StateClock`] (the system clock, or a [`ManualClock`] in tests).
//!
//! ```
//! use std::time::Duration;
//! use sabot::state::{KeyedStateStore, ManualClock, StateBackend, ValueStateDescriptor};
//!
//! let clock = ManualClock::new(0);
//! let mut store = KeyedStateStore::open(&StateBackend::Memory, "running_total")?.with_clock(clock.clone());
//! let count = store.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//! let total = store.value_state(&ValueStateDescriptor::<f64>::new("total").with_ttl(Duration::from_secs(60)))?;
//!
//! for (account, amount) in [("ACC_0", 10.0), ("ACC_1", 5.0), ("ACC_0", 2.5)] {
//!     store.set_current_key(account.as_bytes());
//!     count.update_with(&mut store, |n| n.copied().unwrap_or(0) + 1)?;
//!     total.update_with(&mut store, |t| t.copied().unwrap_or(0.0) + amount)?;
//! }
//! assert_eq!(count.value_for(&mut store, b"ACC_0")?, Some(2));
//! assert_eq!(total.value_for(&mut store, b"ACC_0")?, Some(12.5));
//!
//! clock.advance(Duration::from_secs(60));
//! assert_eq!(total.value_for(&mut store, b"ACC_0")?, None); // expired: invisible at once
//! assert_eq!(count.value_for(&mut store, b"ACC_0")?, Some(2)); // no TTL
//! # Ok::<(), sabot::SabotError>(())
//! ```

mod clock;
mod codec;
mod descriptor;
mod handles;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;
mod store;

pub use clock::{ManualClock, StateClock};
pub use descriptor::{
    ListStateDescriptor, MapStateDescriptor, ReduceFn, ReducingStateDescriptor, ValueStateDescriptor,
};
pub use handles::{ListState, MapState, ReducingState, ValueState};
pub(crate) use memory::KeyPredicate;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksDbInstance;
pub(crate) use store::SnapshotSource;
pub use store::{KeyedStateStore, StateBackend};

/// What a state value (or map key) must be: serde-encodable for RocksDB and snapshots,
/// cloneable for reads, and sendable between threads. Implemented for every such type.
///
/// ```
/// fn assert_state_value<T: sabot::state::StateValue>() {}
/// assert_state_value::<(String, Vec<f64>)>();
/// ```
pub trait StateValue: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static> StateValue for T {}

/// Runs `test` with every state backend: memory, and RocksDB in a fresh directory (with the
/// `rocksdb` feature). For the crate's unit tests; integration tests have their own.
#[cfg(test)]
pub(crate) fn on_each_backend(mut test: impl FnMut(&StateBackend)) {
    test(&StateBackend::Memory);
    #[cfg(feature = "rocksdb")]
    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        test(&StateBackend::RocksDb { path: dir.path().join("rocksdb") });
    }
}
