//! Windows driven with explicit event time and watermarks, asserting exact outputs.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot::expr::{col, count_all, max, sum};
use sabot::operator::{CountWindowOperator, SessionWindowOperator, WindowAggregateOperator};
use sabot::prelude::*;
use sabot::testing::OperatorHarness;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

fn events(rows: &[(&str, i64, i64)]) -> RecordBatch {
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

/// Every row as "col,col,…", sorted.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = vec![];
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(r) { "∅".into() } else { arrow::util::display::array_value_to_string(c, r).unwrap() }
                })
                .collect();
            out.push(cells.join(","));
        }
    }
    out.sort();
    out
}

fn tumbling(size_ms: u64, lateness: i64, late: Option<LateData>) -> OperatorHarness<WindowAggregateOperator> {
    let op = WindowAggregateOperator::try_new(
        WindowSpec::tumbling(Duration::from_millis(size_ms)),
        "ts",
        schema(),
        vec![col("k")],
        vec![count_all(), sum(col("v")).alias("total")],
        lateness,
        late,
    )
    .unwrap();
    OperatorHarness::new(op)
}

#[test]
fn tumbling_windows_fire_on_watermark_with_out_of_order_rows() {
    let mut h = tumbling(10, 0, None);
    h.process(events(&[("a", 3, 1), ("b", 12, 10), ("a", 1, 2), ("a", 11, 4)])).unwrap();
    h.process(events(&[("b", 9, 100)])).unwrap();
    assert_eq!(h.output_rows(), 0);
    h.watermark(9).unwrap();
    assert_eq!(h.output_rows(), 0, "window [0,10) ends at 10");
    h.watermark(10).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,10,2,3", "b,0,10,1,100"]);
    h.watermark(25).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,10,20,1,4", "b,10,20,1,10"]);
    assert_eq!(h.watermarks(), vec![9, 10, 25], "watermarks are forwarded, never backwards");
    h.watermark(20).unwrap();
    assert_eq!(h.watermarks(), vec![9, 10, 25]);
}

#[test]
fn late_rows_within_lateness_update_and_beyond_go_to_the_side_output() {
    let late = LateData::new();
    let mut h = tumbling(10, 5, Some(late.clone()));
    h.process(events(&[("a", 1, 1), ("a", 15, 7)])).unwrap();
    h.watermark(12).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,10,1,1"]);
    // Late but within 5 ms of lateness: the window fires again with the new total.
    h.process(events(&[("a", 4, 10)])).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,10,2,11"]);
    h.watermark(15).unwrap();
    assert_eq!(h.output_rows(), 0);
    // [0,10) is now closed for good (10 + 5 <= 15): the row goes to the side output.
    h.process(events(&[("a", 8, 1000), ("a", 16, 1)])).unwrap();
    assert_eq!(h.output_rows(), 0);
    assert_eq!(rows(&late.take()), ["a,8,1000"]);
    h.close().unwrap();
    assert_eq!(rows(&h.take_output()), ["a,10,20,2,8"]);
}

#[test]
fn sliding_windows_merge_panes() {
    let op = WindowAggregateOperator::try_new(
        WindowSpec::sliding(Duration::from_millis(30), Duration::from_millis(10)),
        "ts",
        schema(),
        vec![col("k")],
        vec![sum(col("v")).alias("total"), max(col("ts")).alias("last")],
        0,
        None,
    )
    .unwrap();
    let mut h = OperatorHarness::new(op);
    h.process(events(&[("a", 5, 1), ("a", 15, 2), ("a", 25, 4), ("a", 35, 8)])).unwrap();
    h.watermark(30).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,-10,20,3,15", "a,-20,10,1,5", "a,0,30,7,25"]);
    h.close().unwrap();
    assert_eq!(rows(&h.take_output()), ["a,10,40,14,35", "a,20,50,12,35", "a,30,60,8,35"]);
}

#[test]
fn sessions_merge_and_late_rows_bridge_them() {
    let op = SessionWindowOperator::try_new(
        10,
        "ts",
        schema(),
        vec![col("k")],
        vec![count_all(), sum(col("v")).alias("total")],
        100,
        None,
    )
    .unwrap();
    let mut h = OperatorHarness::new(op);
    h.process(events(&[("a", 0, 1), ("a", 5, 2), ("b", 3, 5), ("a", 30, 4)])).unwrap();
    h.watermark(20).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,15,2,3", "b,3,13,1,5"]);
    // Late rows at 12 and 21 bridge [0,15) and [30,40): one session [0,40).
    h.process(events(&[("a", 21, 100), ("a", 12, 10)])).unwrap();
    h.watermark(45).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,40,5,117"]);
    h.close().unwrap();
    assert_eq!(h.output_rows(), 0, "unchanged sessions are not emitted again");
}

#[test]
fn count_windows_fire_every_n_rows_per_key() {
    let op = CountWindowOperator::try_new(2, schema(), vec![col("k")], vec![sum(col("v")).alias("total")]).unwrap();
    let mut h = OperatorHarness::new(op);
    h.process(events(&[("a", 0, 1), ("b", 0, 10), ("a", 0, 2)])).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,2,3"]);
    h.process(events(&[("b", 0, 20), ("a", 0, 4)])).unwrap();
    assert_eq!(rows(&h.take_output()), ["b,0,2,30"]);
    h.close().unwrap();
    assert_eq!(h.output_rows(), 0, "the incomplete window of a does not fire");
}

/// A deterministic pseudo-random sequence (xorshift), so the test needs no extra crate.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn streaming_windows_equal_the_batch_group_by() {
    for seed in 1..=5u64 {
        let mut state = seed * 0x9E37_79B9;
        let bound = 50i64;
        // Event times roughly increasing, shuffled within the out-of-orderness bound.
        let mut rows_in: Vec<(String, i64, i64)> = (0..2000)
            .map(|i| {
                let jitter = (xorshift(&mut state) % bound as u64) as i64;
                let key = format!("k{}", xorshift(&mut state) % 7);
                (key, i * 3 + jitter, (xorshift(&mut state) % 1000) as i64)
            })
            .collect();
        let mut keyed: Vec<(i64, (String, i64, i64))> =
            rows_in.drain(..).map(|r| (r.1 + (xorshift(&mut state) % bound as u64) as i64, r)).collect();
        keyed.sort_by_key(|(arrival, _)| *arrival);
        rows_in = keyed.into_iter().map(|(_, r)| r).collect();
        let batches: Vec<RecordBatch> = rows_in
            .chunks(97)
            .map(|c| events(&c.iter().map(|(k, t, v)| (k.as_str(), *t, *v)).collect::<Vec<_>>()))
            .collect();
        for spec in [
            WindowSpec::tumbling(Duration::from_millis(100)),
            WindowSpec::sliding(Duration::from_millis(120), Duration::from_millis(40)),
        ] {
            let streamed = Stream::from_batches(batches.clone())
                .unwrap()
                .with_parallelism(3)
                .with_watermarks(
                    "ts",
                    WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(2 * bound as u64)),
                )
                .unwrap()
                .key_by(["k"])
                .window(spec)
                .aggregate([count_all(), sum(col("v")).alias("total")])
                .unwrap()
                .collect()
                .unwrap();
            // The batch answer: every (key, window) bucket, computed directly.
            let mut expected = std::collections::BTreeMap::<(String, i64, i64), (i64, i64)>::new();
            for (k, t, v) in &rows_in {
                for (start, end) in spec.windows_of(*t) {
                    let e = expected.entry((k.clone(), start, end)).or_default();
                    e.0 += 1;
                    e.1 += v;
                }
            }
            let expected: Vec<String> = {
                let mut v: Vec<String> =
                    expected.iter().map(|((k, s, e), (c, t))| format!("{k},{s},{e},{c},{t}")).collect();
                v.sort();
                v
            };
            assert_eq!(rows(&streamed), expected, "seed {seed}, {spec}");
        }
    }
}

#[test]
fn windowed_pipeline_through_the_engine_reports_late_rows() {
    let late = LateData::new();
    let batches = vec![
        events(&[("a", 1_000, 1), ("b", 2_000, 2), ("a", 61_000, 3)]),
        events(&[("a", 125_000, 4)]),
        events(&[("a", 5_000, 5)]),
    ];
    let out = Stream::from_batches(batches)
        .unwrap()
        .with_parallelism(1)
        .with_watermarks("ts", WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(1)))
        .unwrap()
        .key_by(["k"])
        .window(WindowSpec::tumbling(Duration::from_secs(60)))
        .late_data(late.clone())
        .aggregate([sum(col("v")).alias("total")])
        .unwrap();
    let text = out.explain().unwrap();
    assert!(text.contains("Repartition: hash(k)"), "{text}");
    assert_eq!(rows(&out.collect().unwrap()), ["a,0,60000,1", "a,120000,180000,4", "a,60000,120000,3", "b,0,60000,2"]);
    assert_eq!(rows(&late.take()), ["a,5000,5"]);
    let _ = concat_batches(&schema(), &[]).unwrap();
}
