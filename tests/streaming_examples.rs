//! The streaming examples' exact outputs.

#[path = "../examples/streaming_simulation.rs"]
#[allow(dead_code)]
mod streaming_simulation;

#[path = "../examples/window_aggregation.rs"]
#[allow(dead_code)]
mod window_aggregation;

use std::time::Duration;

#[test]
fn streaming_simulation_filters_899_rows() {
    let stats = streaming_simulation::run(10, 100, Duration::from_millis(1)).unwrap();
    let rows: usize = stats.iter().map(|s| s.rows).sum();
    let total: f64 = stats.iter().map(|s| s.value_sum).sum();
    let doubled: f64 = stats.iter().map(|s| s.doubled_sum).sum();
    assert_eq!(rows, 899);
    assert_eq!(total, 247_225.0);
    assert_eq!(doubled, 2.0 * 247_225.0);
    // Batch 0 holds ids 0..99 of which 101.. pass: none; batch 1 holds 100..199: 99 rows.
    assert_eq!(stats.first().unwrap().rows, 99);
    assert!(stats[1..].iter().all(|s| s.rows == 100));
}

#[test]
fn count_windows_sum_to_250j_plus_100() {
    let windows = window_aggregation::count_windows().unwrap();
    let expected: Vec<(i64, i64)> = (0..10).map(|j| (j, 250 * j + 100)).collect();
    assert_eq!(windows, expected);
}

#[test]
fn event_time_windows_update_within_lateness_and_side_output_beyond() {
    let (results, late) = window_aggregation::event_time_windows().unwrap();
    assert_eq!(
        results,
        [
            "s1 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 3 | 23.0",
            "s2 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 1 | 30.0",
            "s2 | 1970-01-01T00:00:00 | 1970-01-01T00:00:10 | 2 | 35.0",
            "s1 | 1970-01-01T00:00:10 | 1970-01-01T00:00:20 | 1 | 21.0",
            "s2 | 1970-01-01T00:00:10 | 1970-01-01T00:00:20 | 1 | 31.0",
            "s1 | 1970-01-01T00:00:20 | 1970-01-01T00:00:30 | 1 | 24.0",
            "s1 | 1970-01-01T00:00:40 | 1970-01-01T00:00:50 | 1 | 26.0",
        ]
    );
    assert_eq!(late, ["s2 | 1970-01-01T00:00:07 | 99.0"]);
}

#[path = "../examples/stateful_processing.rs"]
#[allow(dead_code)]
mod stateful_processing;

fn check_running_stats(updates: &[stateful_processing::AccountStats]) {
    assert_eq!(updates.len(), 100, "one update per transaction");
    // Recompute the running statistics directly.
    let mut expected = std::collections::HashMap::<String, (i64, f64)>::new();
    let mut expected_updates = vec![];
    for b in 0..10 {
        for tx in stateful_processing::batch(b) {
            let e = expected.entry(tx.account.clone()).or_default();
            e.0 += 1;
            e.1 += tx.amount;
            expected_updates.push((tx.account.clone(), b, e.0, e.1));
        }
    }
    let got: Vec<(String, i64, i64, f64)> =
        updates.iter().map(|s| (s.account.clone(), s.batch, s.count, s.total)).collect();
    assert_eq!(got, expected_updates, "single partition: updates in input order");
    let acc0 = updates.iter().rfind(|s| s.account == "ACC_0").unwrap();
    assert_eq!((acc0.count, acc0.total), (34, (0..100).filter(|i| i % 3 == 0).map(|i| 10.0 + i as f64).sum()));
    assert!(updates.iter().all(|s| (s.average - s.total / s.count as f64).abs() < 1e-12));
}

#[test]
fn stateful_processing_with_memory_state() {
    check_running_stats(&stateful_processing::run(sabot::state::StateBackend::Memory).unwrap());
}

#[cfg(feature = "rocksdb")]
#[test]
fn stateful_processing_with_rocksdb_state() {
    let dir = tempfile::tempdir().unwrap();
    let backend = sabot::state::StateBackend::RocksDb { path: dir.path().join("state") };
    check_running_stats(&stateful_processing::run(backend).unwrap());
}
