//! Fixtures shared by the integration tests of this crate.

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
