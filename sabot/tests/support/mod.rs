//! Fixtures shared by the integration tests of this crate (each test crate uses some).
#![allow(dead_code)]

use sabot::state::StateBackend;

/// Runs `test` with every place an operator's buffered state (window panes, join rows) can
/// live, given as a state backend and the entries (groups, rows) buffered in memory: the
/// heap; RocksDB in a fresh directory (with the `rocksdb` feature), both with a one-entry
/// buffer (nearly every batch is written to RocksDB) and with the default buffer.
pub fn on_each_buffered_backend(test: impl Fn(&StateBackend, usize)) {
    let dir = tempfile::tempdir().unwrap();
    #[cfg_attr(not(feature = "rocksdb"), allow(unused_mut))]
    let mut setups = vec![(StateBackend::Memory, 100_000)];
    #[cfg(feature = "rocksdb")]
    setups.extend([
        (StateBackend::RocksDb { path: dir.path().join("rocksdb") }, 1),
        (StateBackend::RocksDb { path: dir.path().join("rocksdb") }, 100_000),
    ]);
    for (backend, buffered) in &setups {
        test(backend, *buffered);
    }
    drop(dir);
}

/// Runs `test` with every state backend: memory, and RocksDB in a fresh directory (with the
/// `rocksdb` feature).
pub fn on_each_backend(test: impl Fn(&StateBackend)) {
    let dir = tempfile::tempdir().unwrap();
    #[cfg_attr(not(feature = "rocksdb"), allow(unused_mut))]
    let mut backends = vec![StateBackend::Memory];
    #[cfg(feature = "rocksdb")]
    backends.push(StateBackend::RocksDb { path: dir.path().join("rocksdb") });
    for backend in &backends {
        test(backend);
    }
    drop(dir);
}
