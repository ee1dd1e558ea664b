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
