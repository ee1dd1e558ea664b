//! Windows driven with explicit event time and watermarks, asserting exact outputs.

mod support;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot::expr::{AggExpr, avg, col, count_all, count_distinct, first, last, max, min, sum};
use sabot::operator::{CountWindowOperator, SessionWindowOperator, WindowAggregateOperator};
use sabot::prelude::*;
use sabot::state::StateBackend;
use sabot::testing::OperatorHarness;
use support::{on_each_backend, on_each_buffered_backend};

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

fn tumbling(
    size_ms: u64,
    lateness: i64,
    late: Option<LateData>,
    backend: &StateBackend,
    buffered: usize,
) -> OperatorHarness<WindowAggregateOperator> {
    let op = WindowAggregateOperator::try_new(
        WindowSpec::tumbling(Duration::from_millis(size_ms)),
        "ts",
        schema(),
        vec![col("k")],
        vec![count_all(), sum(col("v")).alias("total")],
        lateness,
        late,
    )
    .unwrap()
    .with_state_backend(backend)
    .unwrap()
    .with_buffered_groups(buffered);
    OperatorHarness::new(op)
}

#[test]
fn tumbling_windows_fire_on_watermark_with_out_of_order_rows() {
    on_each_buffered_backend(tumbling_windows_fire_on_watermark);
}

fn tumbling_windows_fire_on_watermark(backend: &StateBackend, buffered: usize) {
    let mut h = tumbling(10, 0, None, backend, buffered);
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
    on_each_buffered_backend(late_rows_update_or_go_to_the_side_output);
}

fn late_rows_update_or_go_to_the_side_output(backend: &StateBackend, buffered: usize) {
    let late = LateData::new();
    let mut h = tumbling(10, 5, Some(late.clone()), backend, buffered);
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
    on_each_buffered_backend(sliding_windows_merge_their_panes);
}

fn sliding_windows_merge_their_panes(backend: &StateBackend, buffered: usize) {
    let op = WindowAggregateOperator::try_new(
        WindowSpec::sliding(Duration::from_millis(30), Duration::from_millis(10)),
        "ts",
        schema(),
        vec![col("k")],
        vec![sum(col("v")).alias("total"), max(col("ts")).alias("last")],
        0,
        None,
    )
    .unwrap()
    .with_state_backend(backend)
    .unwrap()
    .with_buffered_groups(buffered);
    let mut h = OperatorHarness::new(op);
    h.process(events(&[("a", 5, 1), ("a", 15, 2), ("a", 25, 4), ("a", 35, 8)])).unwrap();
    h.watermark(30).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,-10,20,3,15", "a,-20,10,1,5", "a,0,30,7,25"]);
    h.close().unwrap();
    assert_eq!(rows(&h.take_output()), ["a,10,40,14,35", "a,20,50,12,35", "a,30,60,8,35"]);
}

/// Panes in RocksDB, merged batch after batch (a one-group buffer) or at once, give every
/// aggregate exactly as the heap does: order-dependent and single-phase ones (`first`,
/// `last`, `count_distinct`, on the single-pane path) and, through late rows that re-fire
/// windows, the two-phase ones of sliding and tumbling windows with lateness.
#[test]
fn every_aggregate_is_the_same_wherever_the_panes_live() {
    let two_phase = || {
        vec![
            count_all(),
            sum(col("v")).alias("total"),
            avg(col("v")).alias("mean"),
            min(col("v")).alias("low"),
            max(col("k")).alias("top_key"),
        ]
    };
    let mut single_phase = two_phase();
    single_phase.extend([
        count_distinct(col("v")).alias("distinct_v"),
        first(col("v")).alias("first_v"),
        last(col("v")).alias("last_v"),
    ]);
    let run = |spec: WindowSpec, aggregates: &[AggExpr], lateness: i64, backend: &StateBackend, buffered: usize| {
        let op =
            WindowAggregateOperator::try_new(spec, "ts", schema(), vec![col("k")], aggregates.to_vec(), lateness, None)
                .unwrap()
                .with_state_backend(backend)
                .unwrap()
                .with_buffered_groups(buffered);
        let mut h = OperatorHarness::new(op);
        let mut state = 7u64;
        for round in 0..12i64 {
            let batch: Vec<(String, i64, i64)> = (0..40)
                .map(|i| {
                    let key = format!("k{}", xorshift(&mut state) % 5);
                    let late = if i % 9 == 0 { 15 } else { 0 };
                    (key, round * 10 + (xorshift(&mut state) % 10) as i64 - late, (xorshift(&mut state) % 7) as i64)
                })
                .collect();
            h.process(events(&batch.iter().map(|(k, t, v)| (k.as_str(), *t, *v)).collect::<Vec<_>>())).unwrap();
            h.watermark(round * 10).unwrap();
        }
        h.close().unwrap();
        rows(&h.take_output())
    };
    let cases = [
        (WindowSpec::tumbling(Duration::from_millis(30)), single_phase, 0),
        (WindowSpec::tumbling(Duration::from_millis(30)), two_phase(), 20),
        (WindowSpec::sliding(Duration::from_millis(30), Duration::from_millis(10)), two_phase(), 20),
    ];
    for (spec, aggregates, lateness) in cases {
        let on_heap = run(spec, &aggregates, lateness, &StateBackend::Memory, 100_000);
        assert!(on_heap.len() > 20, "{spec}: {} results", on_heap.len());
        on_each_buffered_backend(|backend, buffered| {
            let stored = run(spec, &aggregates, lateness, backend, buffered);
            assert_eq!(stored, on_heap, "{spec}, lateness {lateness}, {backend:?}, {buffered} buffered groups");
        });
    }
}

/// Session windows whose rows live in `backend`, holding `buffered` rows on the heap.
fn sessions(
    backend: &StateBackend,
    buffered: usize,
    gap: i64,
    aggregates: Vec<AggExpr>,
    lateness: i64,
    late: Option<LateData>,
) -> SessionWindowOperator {
    SessionWindowOperator::try_new(gap, "ts", schema(), vec![col("k")], aggregates, lateness, late)
        .unwrap()
        .with_state_backend(backend)
        .unwrap()
        .with_buffered_rows(buffered)
}

#[test]
fn sessions_merge_and_late_rows_bridge_them() {
    on_each_buffered_backend(sessions_merge_on);
}

fn sessions_merge_on(backend: &StateBackend, buffered: usize) {
    let aggregates = vec![count_all(), sum(col("v")).alias("total")];
    let mut h = OperatorHarness::new(sessions(backend, buffered, 10, aggregates, 100, None));
    h.process(events(&[("a", 0, 1), ("a", 5, 2), ("b", 3, 5), ("a", 30, 4)])).unwrap();
    h.watermark(20).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,15,2,3", "b,3,13,1,5"]);
    // Late rows at 12 and 21 bridge [0,15) and [30,40): one session [0,40).
    h.process(events(&[("a", 21, 100), ("a", 12, 10)])).unwrap();
    h.watermark(45).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,40,5,117"]);
    // A late row that changes a fired session, which stays fired, makes it fire at once.
    h.process(events(&[("b", 9, 7)])).unwrap();
    assert_eq!(rows(&h.take_output()), ["b,3,19,2,12"]);
    h.close().unwrap();
    assert_eq!(h.output_rows(), 0, "unchanged sessions are not emitted again");
}

/// Dictionary-encoded keys (Arrow's row format decodes them as plain values) come out as
/// dictionaries, from heap panes and from panes merged into RocksDB.
#[test]
fn dictionary_keys_work_wherever_the_panes_live() {
    use arrow::array::DictionaryArray;
    use arrow::datatypes::Int32Type;
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", dictionary, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let batch = |keys: Vec<&str>, ts: Vec<i64>| {
        let v = Int64Array::from(vec![1; keys.len()]);
        let keys: DictionaryArray<Int32Type> = keys.into_iter().collect();
        RecordBatch::try_new(schema.clone(), vec![Arc::new(keys), Arc::new(Int64Array::from(ts)), Arc::new(v)]).unwrap()
    };
    on_each_buffered_backend(|backend, buffered| {
        let op = WindowAggregateOperator::try_new(
            WindowSpec::tumbling(Duration::from_millis(10)),
            "ts",
            schema.clone(),
            vec![col("k")],
            vec![sum(col("v")).alias("total")],
            0,
            None,
        )
        .unwrap()
        .with_state_backend(backend)
        .unwrap()
        .with_buffered_groups(buffered);
        let mut h = OperatorHarness::new(op);
        h.process(batch(vec!["a", "b", "a"], vec![1, 2, 3])).unwrap();
        h.process(batch(vec!["b", "a", "c"], vec![4, 5, 12])).unwrap();
        h.watermark(10).unwrap();
        assert_eq!(rows(&h.take_output()), ["a,0,10,3", "b,0,10,2"], "{backend:?}, {buffered}");
    });
}

/// A row whose own window expired still joins a session of its key that can change (as in
/// Flink's merging windows); without one it is late.
#[test]
fn a_row_inside_an_open_session_is_not_late() {
    on_each_buffered_backend(row_inside_an_open_session_on);
}

fn row_inside_an_open_session_on(backend: &StateBackend, buffered: usize) {
    let late = LateData::new();
    let mut h = OperatorHarness::new(sessions(backend, buffered, 10, vec![count_all()], 0, Some(late.clone())));
    h.process(events(&[("a", 0, 1), ("a", 8, 1), ("a", 16, 1)])).unwrap();
    h.watermark(12).unwrap();
    assert_eq!(h.output_rows(), 0, "[0, 26) is open");
    // [1, 11) ended before the watermark, but the row falls inside a's open session.
    h.process(events(&[("a", 1, 1), ("b", 1, 1)])).unwrap();
    assert_eq!(rows(&late.take()), ["b,1,1"], "b has no session to join");
    h.close().unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,26,4"]);
}

/// Random rows per key, out of order within the watermark's bound, streamed through session
/// windows with a watermark after every batch, equal sessions computed directly: per key,
/// rows sorted by time, split where the next row is a gap or more after the latest.
#[test]
fn streaming_sessions_equal_the_batch_computation() {
    on_each_buffered_backend(streaming_sessions_on);
}

fn streaming_sessions_on(backend: &StateBackend, buffered: usize) {
    for seed in 1..=4u64 {
        let mut state = seed * 0x2545_F491;
        let (gap, bound) = (30i64, 40i64);
        let rows_in: Vec<(String, i64, i64)> = (0..1500)
            .map(|i| {
                let key = format!("k{}", xorshift(&mut state) % 9);
                // Bursts and pauses: sessions of varied length.
                let pause = if xorshift(&mut state).is_multiple_of(25) { 200 } else { 0 };
                (key, i * 4 + pause + (xorshift(&mut state) % bound as u64) as i64, (xorshift(&mut state) % 100) as i64)
            })
            .collect();
        // Arrival order: event time shuffled within the bound.
        let mut arriving: Vec<(i64, (String, i64, i64))> =
            rows_in.into_iter().map(|r| (r.1 + (xorshift(&mut state) % bound as u64) as i64, r)).collect();
        arriving.sort_by_key(|(arrival, _)| *arrival);
        let rows_in: Vec<(String, i64, i64)> = arriving.into_iter().map(|(_, r)| r).collect();
        let aggregates = vec![count_all(), sum(col("v")).alias("total")];
        let mut h = OperatorHarness::new(sessions(backend, buffered, gap, aggregates, 0, None));
        let mut max_seen = i64::MIN;
        for chunk in rows_in.chunks(37) {
            h.process(events(&chunk.iter().map(|(k, t, v)| (k.as_str(), *t, *v)).collect::<Vec<_>>())).unwrap();
            max_seen = max_seen.max(chunk.iter().map(|r| r.1).max().unwrap());
            h.watermark(max_seen - 2 * bound).unwrap();
        }
        h.close().unwrap();
        let mut by_key: std::collections::BTreeMap<&str, Vec<(i64, i64)>> = Default::default();
        for (k, t, v) in &rows_in {
            by_key.entry(k.as_str()).or_default().push((*t, *v));
        }
        let mut expected = vec![];
        for (k, mut rows) in by_key {
            rows.sort_unstable();
            let (mut start, mut latest, mut count, mut total) = (rows[0].0, rows[0].0, 0, 0);
            for (t, v) in rows {
                if t >= latest + gap {
                    expected.push(format!("{k},{start},{},{count},{total}", latest + gap));
                    (start, count, total) = (t, 0, 0);
                }
                latest = latest.max(t);
                count += 1;
                total += v;
            }
            expected.push(format!("{k},{start},{},{count},{total}", latest + gap));
        }
        expected.sort();
        assert_eq!(rows(&h.take_output()), expected, "seed {seed}, {backend:?}, {buffered} buffered rows");
    }
}

#[test]
fn count_windows_fire_every_n_rows_per_key() {
    on_each_backend(count_windows_fire_every_n_rows);
}

fn count_windows_fire_every_n_rows(backend: &StateBackend) {
    let op = CountWindowOperator::try_new(2, schema(), vec![col("k")], vec![sum(col("v")).alias("total")])
        .unwrap()
        .with_state_backend(backend)
        .unwrap();
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
    on_each_buffered_backend(streaming_windows_equal_batch_group_by);
}

fn streaming_windows_equal_batch_group_by(backend: &StateBackend, _buffered: usize) {
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
                .with_config(ExecConfig::default().with_parallelism(3).with_state_backend(backend.clone()))
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
            assert_eq!(rows(&streamed), expected, "seed {seed}, {spec}, {backend:?}");
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

/// Panes in RocksDB live in a column family of the worker's instance while the operator runs,
/// and leave with it (restores copy them from checkpoints, never from the live instance).
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_panes_live_in_the_workers_instance_while_the_operator_runs() {
    let dir = tempfile::tempdir().unwrap();
    let backend = StateBackend::RocksDb { path: dir.path().join("rocksdb") };
    let instance = sabot::state::RocksDbInstance::open(dir.path().join("rocksdb")).unwrap();
    let pane_families = || {
        instance
            .column_families()
            .into_iter()
            .filter(|cf| cf.starts_with("transient.window_aggregate-"))
            .collect::<Vec<_>>()
    };
    let mut h = tumbling(10, 0, None, &backend, 1);
    h.process(events(&[("a", 1, 1), ("b", 2, 2), ("a", 12, 3)])).unwrap();
    assert_eq!(pane_families().len(), 1, "{:?}", instance.column_families());
    h.watermark(10).unwrap();
    assert_eq!(rows(&h.take_output()), ["a,0,10,1,1", "b,0,10,1,2"]);
    drop(h);
    assert!(pane_families().is_empty(), "{:?}", instance.column_families());
}
