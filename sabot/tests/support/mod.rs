//! Fixtures shared by the integration tests of this crate (each test crate uses some).
#![allow(dead_code)]

use sabot::state::StateBackend;

/// Runs `test` with every place window panes can live, given as a state backend and the
/// groups buffered in memory: the heap; RocksDB in a fresh directory (with the `rocksdb`
/// feature), both with a one-group buffer (nearly every batch is merged into RocksDB) and
/// with the default buffer.
pub fn on_each_pane_store(test: impl Fn(&StateBackend, usize)) {
    let dir = tempfile::tempdir().unwrap();
    #[cfg_attr(not(feature = "rocksdb"), allow(unused_mut))]
    let mut setups = vec![(StateBackend::Memory, 100_000)];
    #[cfg(feature = "rocksdb")]
    setups.extend([
        (StateBackend::RocksDb { path: dir.path().join("rocksdb") }, 1),
        (StateBackend::RocksDb { path: dir.path().join("rocksdb") }, 100_000),
    ]);
    for (backend, buffered_groups) in &setups {
        test(backend, *buffered_groups);
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
