//! User-defined aggregate functions in group-by and in every window kind, checked against the
//! built-in aggregates over the same data.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use sabot::expr::{AggregateFunction, udaf};
use sabot::prelude::*;

/// max − min, with the state holding both.
struct Range;

#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
struct Bounds {
    low: Option<f64>,
    high: Option<f64>,
}

impl AggregateFunction for Range {
    type Input = f64;
    type State = Bounds;
    type Output = f64;

    fn add(&self, state: &mut Bounds, value: f64) {
        state.low = Some(state.low.map_or(value, |l| l.min(value)));
        state.high = Some(state.high.map_or(value, |h| h.max(value)));
    }

    fn merge(&self, state: &mut Bounds, other: Bounds) {
        if let Some(low) = other.low {
            self.add(state, low);
        }
        if let Some(high) = other.high {
            self.add(state, high);
        }
    }

    fn finish(&self, state: &Bounds) -> f64 {
        state.high.unwrap_or(0.0) - state.low.unwrap_or(0.0)
    }
}

/// The longest string (a non-numeric input and output).
struct Longest;

impl AggregateFunction for Longest {
    type Input = String;
    type State = String;
    type Output = String;

    fn add(&self, state: &mut String, value: &str) {
        if value.len() > state.len() {
            *state = value.to_string();
        }
    }

    fn merge(&self, state: &mut String, other: String) {
        self.add(state, &other);
    }

    fn finish(&self, state: &String) -> String {
        state.clone()
    }
}

fn events(n: i64) -> Vec<RecordBatch> {
    // Four batches of consecutive rows, out of order by at most 2.4 s inside (within the 3 s
    // bound, so no row is late); partial states merge across partitions and panes.
    (0..4)
        .map(|part| {
            let rows: Vec<i64> = (0..n).filter(|i| i * 4 / n == part).collect();
            let ts: Vec<i64> = rows.iter().map(|i| i * 700 - (i % 5) * 600).collect();
            RecordBatch::try_from_iter([
                ("k", Arc::new(StringArray::from_iter_values(rows.iter().map(|i| format!("k{}", i % 3)))) as _),
                ("x", Arc::new(Float64Array::from_iter_values(rows.iter().map(|i| ((i * 37) % 101) as f64))) as _),
                (
                    "name",
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|i| "n".repeat((i % 13) as usize)))) as _,
                ),
                ("ts", Arc::new(Int64Array::from(ts)) as _),
            ])
            .unwrap()
        })
        .collect()
}

fn sorted_rows(batch: &RecordBatch, columns: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = (0..batch.num_rows())
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    let a = batch.column_by_name(c).unwrap();
                    arrow::util::display::array_value_to_string(a, r).unwrap()
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn a_udaf_in_group_by_equals_the_builtins() {
    let range = udaf("range", Range);
    let longest = udaf("longest", Longest);
    let stream = Stream::from_batches(events(500)).unwrap().with_parallelism(2);
    let out = stream
        .group_by(["k"])
        .agg([range.call(col("x")).alias("r"), longest.call(col("name")).alias("l")])
        .unwrap()
        .collect_batch()
        .unwrap();
    let expected = stream
        .group_by(["k"])
        .agg([max(col("x")).alias("hi"), min(col("x")).alias("lo")])
        .unwrap()
        .with_column("r", col("hi") - col("lo"))
        .unwrap()
        .collect_batch()
        .unwrap();
    assert_eq!(sorted_rows(&out, &["k", "r"]), sorted_rows(&expected, &["k", "r"]));
    let longest_len: Vec<usize> =
        out.column_by_name("l").unwrap().as_string::<i32>().iter().map(|s| s.unwrap().len()).collect();
    assert!(longest_len.iter().all(|l| *l == 12), "{longest_len:?}");
    assert!(out.schema().field_with_name("r").is_ok());
}

#[test]
fn a_udaf_in_tumbling_sliding_and_session_windows_equals_the_builtins() {
    let range = udaf("range", Range);
    let stream = Stream::from_batches(events(400))
        .unwrap()
        .with_parallelism(2)
        .with_watermarks("ts", WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(3)))
        .unwrap();
    for spec in [
        WindowSpec::tumbling(Duration::from_secs(10)),
        WindowSpec::sliding(Duration::from_secs(10), Duration::from_secs(2)),
        WindowSpec::session(Duration::from_millis(650)),
    ] {
        let ours = stream.key_by(["k"]).window(spec).aggregate([range.call(col("x")).alias("r")]).unwrap();
        let builtin = stream
            .key_by(["k"])
            .window(spec)
            .aggregate([max(col("x")).alias("hi"), min(col("x")).alias("lo")])
            .unwrap()
            .with_column("r", col("hi") - col("lo"))
            .unwrap();
        let columns = ["k", "window_start", "window_end", "r"];
        let (a, b) = (ours.collect_batch().unwrap(), builtin.collect_batch().unwrap());
        assert!(a.num_rows() > 0, "{spec:?}");
        assert_eq!(sorted_rows(&a, &columns), sorted_rows(&b, &columns), "{spec:?}");
        if let WindowSpec::Tumbling { size } = spec {
            assert_eq!(sorted_rows(&a, &columns), brute_force_tumbling(size), "{spec:?}");
        }
    }
}

#[test]
fn a_udaf_over_the_wrong_input_type_is_a_plan_error() {
    let range = udaf("range", Range);
    let err = Stream::from_batches(events(10)).unwrap().group_by(["k"]).agg([range.call(col("name"))]).unwrap_err();
    assert!(err.to_string().contains("range takes Float64, name is Utf8"), "{err}");
}

/// `max(x) - min(x)` per key and tumbling window, with loops.
fn brute_force_tumbling(size: i64) -> Vec<String> {
    let mut windows: std::collections::BTreeMap<(String, i64), (f64, f64)> = Default::default();
    for b in events(400) {
        let k = b.column(0).as_string::<i32>();
        let x = b.column(1).as_primitive::<arrow::datatypes::Float64Type>();
        let ts = b.column(3).as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            let start = ts.value(i).div_euclid(size) * size;
            let w = windows.entry((k.value(i).to_string(), start)).or_insert((f64::MAX, f64::MIN));
            *w = (w.0.min(x.value(i)), w.1.max(x.value(i)));
        }
    }
    let mut rows: Vec<String> =
        windows.iter().map(|((k, s), (lo, hi))| format!("{k}|{s}|{}|{:?}", s + size, hi - lo)).collect();
    rows.sort();
    rows
}
