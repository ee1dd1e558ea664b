//! Streaming joins (interval, window, as-of, table): operators driven with explicit event
//! time, out-of-order rows and watermarks, asserting exact outputs; then whole pipelines on
//! bounded sources with parallelism 2, compared with nested-loop joins computed here.

mod support;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Int64Array, LargeStringArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot::expr::count_all;
use sabot::operator::{
    AsofJoinOperator, IntervalJoinOperator, TableJoinOperator, TwoInputOperator, WindowJoinOperator,
};
use sabot::prelude::*;
use sabot::state::StateBackend;
use sabot::testing::TwoInputHarness;
use support::{on_each_backend, on_each_buffered_backend};

// ---------------------------------------------------------------------------------------------
// Data helpers

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("ts", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

/// Rows `(key, ts, v)` of [`schema`].
fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn cell(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) { "∅".into() } else { arrow::util::display::array_value_to_string(array, row).unwrap() }
}

/// Every row as "col,col,…" over `columns`, sorted.
fn rows_of(batches: &[RecordBatch], columns: &[&str]) -> Vec<String> {
    let mut out = vec![];
    for b in batches {
        let arrays: Vec<&ArrayRef> = columns.iter().map(|c| b.column_by_name(c).expect("column")).collect();
        for r in 0..b.num_rows() {
            out.push(arrays.iter().map(|a| cell(a, r)).collect::<Vec<_>>().join(","));
        }
    }
    out.sort();
    out
}

/// Every row, all columns, sorted.
fn all_rows(batches: &[RecordBatch]) -> Vec<String> {
    let Some(first) = batches.first() else { return vec![] };
    let schema = first.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    rows_of(batches, &names)
}

fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

// ---------------------------------------------------------------------------------------------
// Interval join, driven by hand

/// An interval join whose buffers live in `backend`, holding `buffered` rows per side in
/// memory.
fn interval(backend: &StateBackend, buffered: usize, lower: i64, upper: i64) -> TwoInputHarness<IntervalJoinOperator> {
    let op = IntervalJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", lower, upper)
        .unwrap()
        .with_state_backend(backend)
        .unwrap()
        .with_buffered_rows(buffered);
    TwoInputHarness::new(op)
}

#[test]
fn interval_join_emits_pairs_when_the_second_row_arrives_out_of_order() {
    on_each_buffered_backend(interval_join_emits_pairs_on);
}

fn interval_join_emits_pairs_on(backend: &StateBackend, buffered: usize) {
    // r.ts in [l.ts - 5, l.ts + 10]
    let mut h = interval(backend, buffered, -5, 10);
    h.process_left(batch(&[("a", 100, 1), ("b", 100, 2), ("a", 90, 3)])).unwrap();
    h.process_right(batch(&[("a", 95, 10), ("a", 111, 11), ("b", 94, 12), ("a", 86, 13)])).unwrap();
    // a@95 matches left a@100 (95 ∈ [95,110]) and a@90 (95 ∈ [85,100]); a@111 matches none;
    // b@94 misses b@100 (94 < 95); a@86 matches a@90.
    assert_eq!(
        all_rows(&h.take_output()),
        ["a,100,1,95,10", "a,90,3,86,13", "a,90,3,95,10"],
        "columns: k, ts, v, ts_right, v_right"
    );
    // A later left row joins the buffered right rows in its interval [96, 111].
    h.process_left(batch(&[("a", 101, 4)])).unwrap();
    assert_eq!(all_rows(&h.take_output()), ["a,101,4,111,11"]);

    // Event time 105: a right row at 104 is late; one at 108 still meets both buffered left rows
    // whose interval reaches it (100 and 101), though rows were pruned.
    h.watermark(105).unwrap();
    h.process_right(batch(&[("a", 104, 20), ("a", 108, 21)])).unwrap();
    assert_eq!(all_rows(&h.take_output()), ["a,100,1,108,21", "a,101,4,108,21"]);
    assert_eq!(h.operator().late_rows(), 1);
    h.watermark(200).unwrap();
    assert_eq!(h.operator().buffered_rows(), 0, "every row is behind the watermark");
    // The watermark is held back by the upper bound (10 ms): left times stay valid event times.
    assert_eq!(h.watermarks(), vec![95, 190]);
}

#[test]
fn interval_join_with_a_negative_interval_matches_only_earlier_right_rows() {
    on_each_buffered_backend(negative_interval_on);
}

fn negative_interval_on(backend: &StateBackend, buffered: usize) {
    // r.ts in [l.ts - 20, l.ts - 10]
    let mut h = interval(backend, buffered, -20, -10);
    h.process_right(batch(&[("a", 85, 1), ("a", 95, 2), ("a", 80, 3), ("a", 79, 4)])).unwrap();
    h.process_left(batch(&[("a", 100, 0)])).unwrap();
    assert_eq!(rows_of(&h.take_output(), &["ts", "ts_right"]), ["100,80", "100,85"]);
    h.watermark(50).unwrap();
    assert_eq!(h.watermarks(), vec![50], "an upper bound below zero holds nothing back");
}

#[test]
fn interval_join_state_stays_bounded_by_the_watermark() {
    on_each_buffered_backend(interval_state_bounded_on);
}

fn interval_state_bounded_on(backend: &StateBackend, buffered: usize) {
    let mut h = interval(backend, buffered, -5, 10);
    let mut max_buffered = 0;
    let mut expected = 0;
    for t in 0..500i64 {
        h.process_left(batch(&[("a", t * 10, t)])).unwrap();
        h.process_right(batch(&[("a", t * 10 + 3, t)])).unwrap();
        h.watermark(t * 10 - 5).unwrap();
        max_buffered = max_buffered.max(h.operator().buffered_rows());
        // Right row at 10u + 3 matches left rows at 10t with 10t - 5 <= 10u + 3 <= 10t + 10.
        expected += (0..500i64).filter(|u| (t * 10 - 5..=t * 10 + 10).contains(&(u * 10 + 3))).count();
    }
    h.close().unwrap();
    let joined: usize = h.take_output().iter().map(|b| b.num_rows()).sum();
    assert_eq!(joined, expected);
    assert!(max_buffered <= 12, "state grew to {max_buffered} rows");
}

// ---------------------------------------------------------------------------------------------
// Window join, driven by hand

/// A window join whose buffers live in `backend`, holding `buffered` rows per side in memory.
fn window_join(backend: &StateBackend, buffered: usize, spec: WindowSpec) -> TwoInputHarness<WindowJoinOperator> {
    let op = WindowJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", spec)
        .unwrap()
        .with_state_backend(backend)
        .unwrap()
        .with_buffered_rows(buffered);
    TwoInputHarness::new(op)
}

const WINDOW_COLUMNS: [&str; 7] = ["k", "ts", "v", "ts_right", "v_right", "window_start", "window_end"];

#[test]
fn tumbling_window_join_fires_at_the_window_end_with_out_of_order_rows() {
    on_each_buffered_backend(tumbling_window_join_on);
}

fn tumbling_window_join_on(backend: &StateBackend, buffered: usize) {
    let mut h = window_join(backend, buffered, WindowSpec::tumbling(Duration::from_millis(10)));
    h.process_left(batch(&[("a", 3, 1), ("a", 12, 2), ("b", 5, 3)])).unwrap();
    h.process_right(batch(&[("a", 15, 12), ("a", 1, 10), ("b", 9, 11), ("c", 2, 13)])).unwrap();
    h.process_left(batch(&[("a", 7, 4)])).unwrap();
    h.watermark(9).unwrap();
    assert_eq!(h.output_rows(), 0, "window [0, 10) ends at 10");
    h.watermark(10).unwrap();
    assert_eq!(rows_of(&h.take_output(), &WINDOW_COLUMNS), ["a,3,1,1,10,0,10", "a,7,4,1,10,0,10", "b,5,3,9,11,0,10"]);
    assert_eq!(h.operator().buffered_rows(), 2, "the fired window's rows are gone");
    h.process_left(batch(&[("a", 8, 5)])).unwrap();
    assert_eq!(h.operator().late_rows(), 1, "window [0, 10) has fired");
    h.watermark(20).unwrap();
    assert_eq!(rows_of(&h.take_output(), &WINDOW_COLUMNS), ["a,12,2,15,12,10,20"]);
    assert_eq!(h.operator().buffered_rows(), 0);
    // Held back by size - 1 = 9 ms: windows still to fire start after `watermark - size`.
    assert_eq!(h.watermarks(), vec![0, 1, 11]);
}

#[test]
fn sliding_window_join_emits_a_pair_once_per_shared_window() {
    on_each_buffered_backend(sliding_window_join_on);
}

fn sliding_window_join_on(backend: &StateBackend, buffered: usize) {
    let spec = WindowSpec::sliding(Duration::from_millis(10), Duration::from_millis(5));
    let mut h = window_join(backend, buffered, spec);
    h.process_left(batch(&[("a", 7, 1), ("a", 12, 2)])).unwrap();
    h.process_right(batch(&[("a", 9, 10), ("a", 3, 11)])).unwrap();
    h.close().unwrap();
    assert_eq!(
        rows_of(&h.take_output(), &WINDOW_COLUMNS),
        ["a,12,2,9,10,5,15", "a,7,1,3,11,0,10", "a,7,1,9,10,0,10", "a,7,1,9,10,5,15"]
    );
}

// ---------------------------------------------------------------------------------------------
// As-of join, driven by hand

/// An as-of join whose sealed right rows live in `backend`.
fn asof(backend: &StateBackend, tolerance: Option<i64>) -> TwoInputHarness<AsofJoinOperator> {
    let op = AsofJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", tolerance)
        .unwrap()
        .with_state_backend(backend)
        .unwrap();
    TwoInputHarness::new(op)
}

#[test]
fn asof_join_waits_for_the_watermark_and_takes_the_latest_earlier_right_row() {
    on_each_backend(asof_join_takes_the_latest_earlier_right_row_on);
}

fn asof_join_takes_the_latest_earlier_right_row_on(backend: &StateBackend) {
    let mut h = asof(backend, Some(10));
    h.process_left(batch(&[("a", 100, 1), ("b", 100, 2), ("a", 50, 3), ("c", 200, 4)])).unwrap();
    h.process_right(batch(&[("a", 95, 10), ("a", 40, 11), ("c", 150, 13)])).unwrap();
    assert_eq!(h.output_rows(), 0, "left rows wait for the watermark");
    h.watermark(60).unwrap();
    assert_eq!(all_rows(&h.take_output()), ["a,50,3,40,11"]);
    // Arrives after the left row at 100 but before the watermark passes it: it is respected.
    h.process_right(batch(&[("a", 98, 12)])).unwrap();
    h.watermark(101).unwrap();
    assert_eq!(all_rows(&h.take_output()), ["a,100,1,98,12", "b,100,2,∅,∅"]);
    assert_eq!(h.operator().buffered_rows(), 3, "c@200 waits; right keeps a@98 and c@150");
    h.watermark(300).unwrap();
    assert_eq!(all_rows(&h.take_output()), ["c,200,4,∅,∅"], "150 is 50 ms before 200: beyond the tolerance");
    assert_eq!(h.operator().buffered_rows(), 0, "no right row is within the tolerance of 300");
    assert_eq!(h.watermarks(), vec![60, 101, 300]);
}

#[test]
fn asof_join_emits_rows_in_event_time_order_and_everything_on_close() {
    on_each_backend(asof_join_emits_in_event_time_order_on);
}

fn asof_join_emits_in_event_time_order_on(backend: &StateBackend) {
    let mut h = asof(backend, None);
    h.process_right(batch(&[("a", 1, 10), ("a", 20, 20)])).unwrap();
    h.process_left(batch(&[("a", 30, 1), ("a", 5, 2)])).unwrap();
    h.process_left(batch(&[("a", 25, 3)])).unwrap();
    h.close().unwrap();
    let out = h.take_output();
    let ts: Vec<i64> = out
        .iter()
        .flat_map(|b| b.column_by_name("ts").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
        .collect();
    assert_eq!(ts, vec![5, 25, 30]);
    assert_eq!(all_rows(&out), ["a,25,3,20,20", "a,30,1,20,20", "a,5,2,1,10"]);
}

// ---------------------------------------------------------------------------------------------
// Table join, driven by hand

fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false), Field::new("name", DataType::Utf8, true)]))
}

fn table_rows(rows: &[(&str, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        table_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

#[test]
fn table_join_joins_the_table_as_it_is_when_each_row_arrives() {
    on_each_backend(table_join_joins_the_current_table);
}

fn table_join_joins_the_current_table(backend: &StateBackend) {
    let op = TableJoinOperator::try_new(schema(), table_schema(), &["k"], &["id"], JoinType::Left)
        .unwrap()
        .with_state_backend(backend)
        .unwrap();
    let mut h = TwoInputHarness::new(op);
    h.process_left(batch(&[("a", 1, 1)])).unwrap();
    h.process_right(table_rows(&[("a", "ann"), ("b", "bob")])).unwrap();
    h.process_left(batch(&[("a", 2, 2), ("b", 2, 3), ("z", 2, 4)])).unwrap();
    h.process_right(table_rows(&[("a", "anna")])).unwrap();
    h.process_left(batch(&[("a", 3, 5)])).unwrap();
    assert_eq!(rows_of(&h.take_output(), &["k", "v", "name"]), ["a,1,∅", "a,2,ann", "a,5,anna", "b,3,bob", "z,4,∅"]);
    assert_eq!(h.operator().buffered_rows(), 2, "one row per key");
    // The table has no event time: the left side alone drives the watermark.
    h.watermark_left(50).unwrap();
    assert_eq!(h.watermarks(), vec![50]);
    h.checkpoint(7).unwrap();
    assert_eq!(h.barriers(), vec![7]);
}

#[test]
fn inner_table_join_drops_rows_without_a_table_row() {
    on_each_backend(inner_table_join_drops_unmatched_rows);
}

fn inner_table_join_drops_unmatched_rows(backend: &StateBackend) {
    let op = TableJoinOperator::try_new(schema(), table_schema(), &["k"], &["id"], JoinType::Inner)
        .unwrap()
        .with_state_backend(backend)
        .unwrap();
    let mut h = TwoInputHarness::new(op);
    h.process_right(table_rows(&[("a", "ann")])).unwrap();
    h.process_left(batch(&[("a", 1, 1), ("z", 1, 2)])).unwrap();
    // The right key `id` is named differently from `k`, so it is kept.
    assert_eq!(all_rows(&h.take_output()), ["a,1,1,a,ann"]);
}

// ---------------------------------------------------------------------------------------------
// End to end: bounded sources, watermarks on both sides, parallelism 2, against nested loops

/// One generated row: key (`None`: null), event time, value.
#[derive(Debug, Clone)]
struct Event {
    key: Option<String>,
    ts: i64,
    v: i64,
}

/// A small deterministic generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `n` rows with distinct times `offset + i * step`, shuffled within blocks of 8 rows (out of
/// order by less than `8 * step`), keys `k0..k{keys-1}` and a null key every 23 rows.
fn events(seed: u64, n: usize, step: i64, offset: i64, keys: u64) -> Vec<Event> {
    let mut rng = Lcg(seed);
    let mut out: Vec<Event> = (0..n)
        .map(|i| Event {
            key: (i % 23 != 22).then(|| format!("k{}", rng.below(keys))),
            ts: offset + i as i64 * step,
            v: seed as i64 * 10_000 + i as i64,
        })
        .collect();
    for block in out.chunks_mut(8) {
        for i in (1..block.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            block.swap(i, j);
        }
    }
    out
}

/// The events as batches of 40 rows (one morsel each); `large` keys are `LargeUtf8`.
fn event_batches(events: &[Event], large: bool) -> Vec<RecordBatch> {
    let key_type = if large { DataType::LargeUtf8 } else { DataType::Utf8 };
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", key_type, true),
        Field::new("ts", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    events
        .chunks(40)
        .map(|chunk| {
            let keys: Vec<Option<&str>> = chunk.iter().map(|e| e.key.as_deref()).collect();
            let key: ArrayRef =
                if large { Arc::new(LargeStringArray::from(keys)) } else { Arc::new(StringArray::from(keys)) };
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    key,
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|e| e.ts))),
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|e| e.v))),
                ],
            )
            .unwrap()
        })
        .collect()
}

fn stream_of(events: &[Event], large_keys: bool) -> Stream {
    let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(200));
    Stream::from_batches(event_batches(events, large_keys))
        .unwrap()
        .with_parallelism(2)
        .with_watermarks("ts", strategy)
        .unwrap()
}

fn show(v: Option<i64>) -> String {
    v.map_or("∅".into(), |v| v.to_string())
}

fn sides() -> (Vec<Event>, Vec<Event>) {
    (events(1, 400, 10, 0, 5), events(2, 300, 13, 7, 5))
}

#[test]
fn interval_join_end_to_end_matches_a_nested_loop_join() {
    on_each_backend(interval_join_end_to_end);
}

fn interval_join_end_to_end(backend: &StateBackend) {
    let (left, right) = sides();
    let (lower, upper) = (-30, 25);
    // Right keys are LargeUtf8: both sides are partitioned on keys cast to one type.
    let joined = stream_of(&left, false)
        .with_config(ExecConfig::default().with_parallelism(2).with_state_backend(backend.clone()))
        .interval_join(&stream_of(&right, true), ["k"], ["k"], lower, upper)
        .unwrap();
    let plan = joined.explain().unwrap();
    assert!(plan.contains("StreamJoin: interval [l.ts - 30ms, l.ts + 25ms]"), "{plan}");
    assert!(plan.contains("Repartition: hash(CAST(k AS LargeUtf8))"), "{plan}");
    let mut expected = vec![];
    for l in &left {
        for r in &right {
            if l.key.is_some() && l.key == r.key && l.ts + lower <= r.ts && r.ts <= l.ts + upper {
                expected.push(format!("{},{},{},{},{}", l.key.as_deref().unwrap_or(""), l.ts, l.v, r.ts, r.v));
            }
        }
    }
    assert!(expected.len() > 100, "the data should join a fair amount: {}", expected.len());
    let got = rows_of(&joined.collect().unwrap(), &["k", "ts", "v", "ts_right", "v_right"]);
    assert_eq!(got, sorted(expected));
}

#[test]
fn interval_join_output_keeps_a_valid_event_time_for_windows_downstream() {
    let (left, right) = sides();
    let per_window = stream_of(&left, false)
        .interval_join(&stream_of(&right, false), ["k"], ["k"], -30, 25)
        .unwrap()
        .window_all(WindowSpec::tumbling(Duration::from_millis(500)))
        .aggregate([count_all().alias("n")])
        .unwrap();
    let mut expected = std::collections::BTreeMap::<i64, i64>::new();
    for l in &left {
        for r in &right {
            if l.key.is_some() && l.key == r.key && l.ts - 30 <= r.ts && r.ts <= l.ts + 25 {
                *expected.entry(l.ts.div_euclid(500) * 500).or_default() += 1;
            }
        }
    }
    let expected: Vec<String> = expected.into_iter().map(|(w, n)| format!("{w},{n}")).collect();
    // No joined row is dropped as late by the window: the join held its watermark back.
    assert_eq!(rows_of(&per_window.collect().unwrap(), &["window_start", "n"]), sorted(expected));
}

#[test]
fn window_joins_end_to_end_match_a_nested_loop_join() {
    on_each_backend(window_joins_end_to_end);
}

fn window_joins_end_to_end(backend: &StateBackend) {
    let (left, right) = sides();
    for spec in [
        WindowSpec::tumbling(Duration::from_millis(100)),
        WindowSpec::sliding(Duration::from_millis(100), Duration::from_millis(50)),
    ] {
        let joined = stream_of(&left, false)
            .with_config(ExecConfig::default().with_parallelism(2).with_state_backend(backend.clone()))
            .window_join(&stream_of(&right, false), ["k"], ["k"], spec)
            .unwrap();
        let mut expected = vec![];
        for l in &left {
            for r in &right {
                if l.key.is_none() || l.key != r.key {
                    continue;
                }
                for (start, end) in spec.windows_of(l.ts) {
                    if spec.windows_of(r.ts).contains(&(start, end)) {
                        let k = l.key.as_deref().unwrap_or("");
                        expected.push(format!("{k},{},{},{},{},{start},{end}", l.ts, l.v, r.ts, r.v));
                    }
                }
            }
        }
        assert!(expected.len() > 100, "{spec}: {}", expected.len());
        let got = rows_of(&joined.collect().unwrap(), &WINDOW_COLUMNS);
        assert_eq!(got, sorted(expected), "{spec}");
    }
}

/// Feeds both sides' batches alternately, with a watermark 120 ms behind the earliest side
/// after every pair (both sides are out of order by less), then closes; returns the output.
fn drive<O: TwoInputOperator>(mut h: TwoInputHarness<O>, left: &[Event], right: &[Event]) -> Vec<RecordBatch> {
    let (lb, rb) = (event_batches(left, false), event_batches(right, false));
    let newest = |b: &RecordBatch| {
        let ts = b.column_by_name("ts").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        ts.values().iter().copied().max().unwrap()
    };
    let (mut left_max, mut right_max) = (i64::MIN, i64::MIN);
    for i in 0..lb.len().max(rb.len()) {
        if let Some(b) = lb.get(i) {
            left_max = left_max.max(newest(b));
            h.process_left(b.clone()).unwrap();
        }
        if let Some(b) = rb.get(i) {
            right_max = right_max.max(newest(b));
            h.process_right(b.clone()).unwrap();
        }
        h.watermark(left_max.min(right_max) - 120).unwrap();
    }
    h.close().unwrap();
    h.take_output()
}

#[test]
fn joins_emit_the_same_batches_wherever_their_rows_live() {
    let (left, right) = sides();
    let heap: std::cell::RefCell<Vec<Vec<RecordBatch>>> = Default::default();
    on_each_buffered_backend(|backend, buffered| {
        let interval = IntervalJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", -200, 150)
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
            .with_buffered_rows(buffered);
        let mut outputs = vec![drive(TwoInputHarness::new(interval), &left, &right)];
        for tolerance in [Some(40), None] {
            let op = AsofJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", tolerance)
                .unwrap()
                .with_state_backend(backend)
                .unwrap();
            outputs.push(drive(TwoInputHarness::new(op), &left, &right));
        }
        for spec in [
            WindowSpec::tumbling(Duration::from_millis(500)),
            WindowSpec::sliding(Duration::from_millis(500), Duration::from_millis(200)),
        ] {
            let op = WindowJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", spec)
                .unwrap()
                .with_state_backend(backend)
                .unwrap()
                .with_buffered_rows(buffered);
            outputs.push(drive(TwoInputHarness::new(op), &left, &right));
        }
        let mut heap = heap.borrow_mut();
        if heap.is_empty() {
            for output in &outputs {
                let rows: usize = output.iter().map(RecordBatch::num_rows).sum();
                assert!(rows >= 400, "the data should join plenty of rows: {rows}");
            }
            *heap = outputs;
        } else {
            assert_eq!(outputs, *heap, "{backend:?}, {buffered} buffered rows");
        }
    });
}

#[test]
fn asof_joins_end_to_end_match_a_nested_loop_join() {
    on_each_backend(asof_joins_end_to_end);
}

fn asof_joins_end_to_end(backend: &StateBackend) {
    let (left, right) = sides();
    for tolerance in [Some(40), None] {
        let joined = stream_of(&left, false)
            .with_config(ExecConfig::default().with_parallelism(2).with_state_backend(backend.clone()))
            .asof_join(&stream_of(&right, true), ["k"], ["k"], tolerance.map(Duration::from_millis))
            .unwrap();
        let mut expected = vec![];
        for l in &left {
            let best = right
                .iter()
                .filter(|r| l.key.is_some() && l.key == r.key && r.ts <= l.ts)
                .filter(|r| tolerance.is_none_or(|t| l.ts - r.ts <= t as i64))
                .max_by_key(|r| r.ts);
            let k = l.key.as_deref().unwrap_or("∅");
            expected.push(format!("{k},{},{},{},{}", l.ts, l.v, show(best.map(|r| r.ts)), show(best.map(|r| r.v))));
        }
        let got = rows_of(&joined.collect().unwrap(), &["k", "ts", "v", "ts_right", "v_right"]);
        assert_eq!(got.len(), left.len(), "left outer: every left row once");
        assert_eq!(got, sorted(expected), "tolerance {tolerance:?}");
    }
}

#[test]
fn table_join_end_to_end_loads_a_bounded_table_first() {
    on_each_backend(table_join_end_to_end);
}

fn table_join_end_to_end(backend: &StateBackend) {
    let (left, _) = sides();
    // A changelog: each key is updated several times within a batch; the last row wins.
    let ids = ["k0", "k1", "k2", "k3", "k0", "k1", "k0"];
    let names = ["a", "b", "c", "d", "a2", "b2", "a3"];
    let table = RecordBatch::try_new(
        table_schema(),
        vec![Arc::new(StringArray::from_iter_values(ids)) as ArrayRef, Arc::new(StringArray::from_iter_values(names))],
    )
    .unwrap();
    let latest = |k: &str| ids.iter().zip(names).filter(|(id, _)| **id == k).map(|(_, n)| n).next_back();
    for join_type in [JoinType::Inner, JoinType::Left] {
        let users = Stream::from_batches(vec![table.clone()]).unwrap();
        let joined = stream_of(&left, false)
            .with_config(ExecConfig::default().with_parallelism(2).with_state_backend(backend.clone()))
            .table_join(&users, ["k"], ["id"], join_type)
            .unwrap();
        assert!(joined.explain().unwrap().contains("(table loaded first)"));
        let mut expected = vec![];
        for l in &left {
            let name = l.key.as_deref().and_then(latest);
            if name.is_none() && join_type == JoinType::Inner {
                continue;
            }
            expected.push(format!("{},{},{}", l.key.as_deref().unwrap_or("∅"), l.v, name.unwrap_or("∅")));
        }
        let got = rows_of(&joined.collect().unwrap(), &["k", "v", "name"]);
        assert_eq!(got, sorted(expected), "{join_type:?}, {backend:?}");
    }
}

#[test]
fn projections_are_pushed_through_a_stream_join_without_changing_results() {
    let (left, right) = sides();
    let joined = stream_of(&left, false)
        .interval_join(&stream_of(&right, false), ["k"], ["k"], -30, 25)
        .unwrap()
        .select(["v", "v_right"])
        .unwrap();
    let optimized = joined.optimized_plan().unwrap().display_indent();
    assert!(optimized.contains("StreamJoin"), "{optimized}");
    let unoptimized = joined.clone().with_config(
        ExecConfig::default().with_parallelism(2).with_optimizer(sabot::exec::OptimizerConfig::disabled()),
    );
    let expected = all_rows(&unoptimized.collect().unwrap());
    assert!(!expected.is_empty());
    assert_eq!(all_rows(&joined.collect().unwrap()), expected);
}

#[test]
fn plan_errors_name_the_side_and_the_problem() {
    let (left, right) = sides();
    let plain = Stream::from_batches(event_batches(&right, false)).unwrap();
    let timed = stream_of(&left, false);
    let err = timed.interval_join(&plain, ["k"], ["k"], 0, 10).unwrap_err().to_string();
    assert!(err.contains("interval_join: the right side has no event-time column"), "{err}");
    let err = plain.asof_join(&timed, ["k"], ["k"], None).unwrap_err().to_string();
    assert!(err.contains("asof_join: the left side has no event-time column"), "{err}");
    let err = timed.interval_join(&timed, ["k"], ["nope"], 0, 10).unwrap_err().to_string();
    assert!(err.contains("join key 'nope' not found on the right side"), "{err}");
    let err = timed.interval_join(&timed, ["k"], ["k"], 10, 0).unwrap_err().to_string();
    assert!(err.contains("lower bound (10ms) is above the upper bound (0ms)"), "{err}");
    let err = timed.window_join(&timed, ["k"], ["k"], WindowSpec::count(3)).unwrap_err().to_string();
    assert!(err.contains("use tumbling or sliding windows"), "{err}");
    let err = timed.table_join(&plain, ["k"], ["k"], JoinType::Full).unwrap_err().to_string();
    assert!(err.contains("use Inner or Left"), "{err}");
    assert!(matches!(timed.table_join(&plain, ["v"], ["k"], JoinType::Left), Err(SabotError::Plan(_))));
}
