//! Checkpoints of the stateful operators: an operator snapshotted at any point of its input
//! and restored into a fresh instance goes on to emit exactly what the uninterrupted one
//! emits (same batches, same watermarks, same late rows), and snapshotting does not disturb
//! the running instance either.

mod support;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot::SabotError;
use sabot::expr::{AggExpr, AggregateFunction, avg, col, count_all, count_distinct, first, last, max, min, sum, udaf};
use sabot::operator::{
    AggregateMode, AggregateOperator, AsofJoinOperator, CountWindowOperator, GlobalWindowOperator,
    IntervalJoinOperator, Operator, SessionWindowOperator, TableJoinOperator, TwoInputOperator,
    WindowAggregateOperator, WindowJoinOperator,
};
use sabot::plan::JoinType;
use sabot::state::StateBackend;
use sabot::testing::{OperatorHarness, TwoInputHarness};
use sabot::window::{CountTrigger, EventTimeTrigger, LateData, PurgingTrigger, WindowSpec};
use support::{on_each_backend, on_each_buffered_backend};

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// `k` (string key), `ts` (event time, ms), `v`, `name` (`n{v % 3}`), `g` (`v % 2`).
fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("g", DataType::Int64, false),
    ]))
}

fn rows(data: &[(&str, i64, i64)]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(data.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.1))),
        Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter_values(data.iter().map(|r| format!("n{}", r.2 % 3)))),
        Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.2 % 2))),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

/// The sum of squares, as a user-defined aggregate (its state is a serde struct).
struct SumSquares;

#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
struct Squares {
    sum: i64,
    n: u64,
}

impl AggregateFunction for SumSquares {
    type Input = i64;
    type State = Squares;
    type Output = i64;

    fn add(&self, state: &mut Squares, value: i64) {
        state.sum += value * value;
        state.n += 1;
    }

    fn merge(&self, state: &mut Squares, other: Squares) {
        state.sum += other.sum;
        state.n += other.n;
    }

    fn finish(&self, state: &Squares) -> i64 {
        state.sum
    }
}

/// Aggregates that run in two phases (partial states merged across panes).
fn two_phase_aggregates() -> Vec<AggExpr> {
    vec![
        count_all(),
        sum(col("v")).alias("total"),
        avg(col("v")).alias("mean"),
        min(col("v")).alias("low"),
        max(col("name")).alias("top"),
        udaf("sum_squares", SumSquares).call(col("v")).alias("squares"),
    ]
}

/// Every aggregate, single-phase ones included.
fn all_aggregates() -> Vec<AggExpr> {
    let mut aggregates = two_phase_aggregates();
    aggregates.extend([
        count_distinct(col("name")).alias("names"),
        first(col("v")).alias("first_v"),
        last(col("name")).alias("last_name"),
    ]);
    aggregates
}

// ---------------------------------------------------------------------------------------------
// Drivers: run a script of inputs uninterrupted, then for every position in it: snapshot
// there, finish the script on the snapshotted instance and on a fresh instance restored from
// the snapshot, and compare both with the uninterrupted run.

#[derive(Clone)]
enum Step {
    Batch(RecordBatch),
    Watermark(i64),
    Close,
}
use Step::{Batch, Close, Watermark};

#[derive(Debug, PartialEq)]
struct Emitted {
    batches: Vec<RecordBatch>,
    watermarks: Vec<i64>,
    late: Vec<RecordBatch>,
}

fn apply<O: Operator>(h: &mut OperatorHarness<O>, step: &Step) {
    match step {
        Batch(b) => h.process(b.clone()).unwrap(),
        Watermark(w) => h.watermark(*w).unwrap(),
        Close => h.close().unwrap(),
    }
}

/// Checks snapshots of the operators `make` builds (given their late-data output) at every
/// step of `steps`; returns what the uninterrupted run emitted.
fn check_one<O: Operator>(make: impl Fn(LateData) -> O, steps: &[Step]) -> Emitted {
    let late = LateData::new();
    let mut h = OperatorHarness::new(make(late.clone()));
    steps.iter().for_each(|s| apply(&mut h, s));
    let expected = Emitted { batches: h.take_output(), watermarks: h.watermarks(), late: late.take() };

    for split in 0..=steps.len() {
        let late = LateData::new();
        let mut h = OperatorHarness::new(make(late.clone()));
        steps[..split].iter().for_each(|s| apply(&mut h, s));
        let snapshot = h.snapshot().unwrap();
        assert!(!snapshot.files().is_empty(), "split {split}: a stateful operator saves state");
        let (before, watermarks_before, late_before) = (h.take_output(), h.watermarks(), late.take());

        // The snapshotted instance goes on undisturbed.
        steps[split..].iter().for_each(|s| apply(&mut h, s));
        let went_on = Emitted {
            batches: [before.clone(), h.take_output()].concat(),
            watermarks: h.watermarks(),
            late: [late_before.clone(), late.take()].concat(),
        };
        assert_eq!(went_on, expected, "split {split}: the snapshotted instance went on differently");

        // A fresh instance restored from the snapshot finishes the same.
        let late = LateData::new();
        let mut r = OperatorHarness::restore(make(late.clone()), &snapshot).unwrap();
        steps[split..].iter().for_each(|s| apply(&mut r, s));
        let restored = Emitted {
            batches: [before, r.take_output()].concat(),
            watermarks: [watermarks_before, r.watermarks()].concat(),
            late: [late_before, late.take()].concat(),
        };
        assert_eq!(restored, expected, "split {split}: the restored instance emitted differently");
    }
    expected
}

#[derive(Clone)]
enum Step2 {
    Left(RecordBatch),
    Right(RecordBatch),
    /// Both inputs' watermarks (left, then right).
    Both(i64),
    /// The left input's watermark only (for joins that do not track the right one).
    LeftWatermark(i64),
    End,
}

fn apply2<O: TwoInputOperator>(h: &mut TwoInputHarness<O>, step: &Step2) {
    match step {
        Step2::Left(b) => h.process_left(b.clone()).unwrap(),
        Step2::Right(b) => h.process_right(b.clone()).unwrap(),
        Step2::Both(w) => h.watermark(*w).unwrap(),
        Step2::LeftWatermark(w) => h.watermark_left(*w).unwrap(),
        Step2::End => h.close().unwrap(),
    }
}

/// [`check_one`] for two-input operators.
fn check_two<O: TwoInputOperator>(make: impl Fn() -> O, steps: &[Step2]) -> Emitted {
    let mut h = TwoInputHarness::new(make());
    steps.iter().for_each(|s| apply2(&mut h, s));
    let expected = Emitted { batches: h.take_output(), watermarks: h.watermarks(), late: vec![] };

    for split in 0..=steps.len() {
        let mut h = TwoInputHarness::new(make());
        steps[..split].iter().for_each(|s| apply2(&mut h, s));
        let snapshot = h.snapshot().unwrap();
        assert!(!snapshot.files().is_empty(), "split {split}: a join saves state");
        let (before, watermarks_before) = (h.take_output(), h.watermarks());

        steps[split..].iter().for_each(|s| apply2(&mut h, s));
        let went_on =
            Emitted { batches: [before.clone(), h.take_output()].concat(), watermarks: h.watermarks(), late: vec![] };
        assert_eq!(went_on, expected, "split {split}: the snapshotted instance went on differently");

        let mut r = TwoInputHarness::restore(make(), &snapshot).unwrap();
        steps[split..].iter().for_each(|s| apply2(&mut r, s));
        let restored = Emitted {
            batches: [before, r.take_output()].concat(),
            watermarks: [watermarks_before, r.watermarks()].concat(),
            late: vec![],
        };
        assert_eq!(restored, expected, "split {split}: the restored instance emitted differently");
    }
    expected
}

fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

// ---------------------------------------------------------------------------------------------
// Windows.

#[test]
fn tumbling_windows_on_the_single_pane_path_restore_open_windows_and_late_rows() {
    on_each_buffered_backend(tumbling_windows_on_the_single_pane_path_restore_open_windows_and_late_rows_on);
}

fn tumbling_windows_on_the_single_pane_path_restore_open_windows_and_late_rows_on(
    backend: &StateBackend,
    buffered: usize,
) {
    let make = |late: LateData| {
        let spec = WindowSpec::tumbling(Duration::from_millis(10));
        WindowAggregateOperator::try_new(spec, "ts", schema(), vec![col("k")], all_aggregates(), 0, Some(late))
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
            .with_buffered_groups(buffered)
    };
    let steps = [
        Batch(rows(&[("a", 1, 1), ("b", 3, 2), ("a", 12, 3)])),
        Batch(rows(&[("a", 5, 4), ("c", 14, 5), ("a", 7, 4)])),
        Watermark(10),
        Batch(rows(&[("a", 8, 6), ("b", 15, 7), ("a", 21, 8)])),
        Batch(rows(&[("b", 18, 9), ("c", 22, 10), ("b", 11, 9)])),
        Watermark(20),
        Batch(rows(&[("a", 25, 11), ("c", 29, 12), ("c", 3, 1)])),
        Watermark(25),
        Batch(rows(&[("a", 26, 13)])),
        Close,
    ];
    let out = check_one(make, &steps);
    assert_eq!(total_rows(&out.batches), 7, "[0, 10): a, b; [10, 20): a, b, c; [20, 30): a, c");
    assert_eq!(total_rows(&out.late), 2, "(a, 8) and (c, 3) came after their windows fired");
}

#[test]
fn tumbling_windows_with_allowed_lateness_restore_fired_panes_and_refire() {
    on_each_buffered_backend(tumbling_windows_with_allowed_lateness_restore_fired_panes_and_refire_on);
}

fn tumbling_windows_with_allowed_lateness_restore_fired_panes_and_refire_on(backend: &StateBackend, buffered: usize) {
    let make = |late: LateData| {
        let spec = WindowSpec::tumbling(Duration::from_millis(10));
        WindowAggregateOperator::try_new(spec, "ts", schema(), vec![col("k")], two_phase_aggregates(), 5, Some(late))
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
            .with_buffered_groups(buffered)
    };
    let steps = [
        Batch(rows(&[("a", 1, 1), ("b", 3, 2), ("a", 12, 3)])),
        Watermark(10),
        Batch(rows(&[("a", 8, 4)])),
        Batch(rows(&[("b", 2, 5), ("c", 13, 6), ("b", 4, 7)])),
        Watermark(16),
        Batch(rows(&[("a", 9, 7), ("a", 17, 8)])),
        Watermark(20),
        Batch(rows(&[("c", 19, 8), ("d", 21, 2)])),
        Watermark(30),
        Close,
    ];
    let out = check_one(make, &steps);
    assert!(total_rows(&out.batches) >= 8, "windows fired and re-fired: {}", total_rows(&out.batches));
    assert_eq!(total_rows(&out.late), 1, "(a, 9) came after [0, 10) expired");
}

#[test]
fn sliding_windows_restore_open_and_closed_panes() {
    on_each_buffered_backend(sliding_windows_restore_open_and_closed_panes_on);
}

fn sliding_windows_restore_open_and_closed_panes_on(backend: &StateBackend, buffered: usize) {
    let make = |late: LateData| {
        let spec = WindowSpec::sliding(Duration::from_millis(30), Duration::from_millis(10));
        // Two keys (a string and an integer): the general row-format group keys.
        WindowAggregateOperator::try_new(
            spec,
            "ts",
            schema(),
            vec![col("k"), col("g")],
            two_phase_aggregates(),
            10,
            Some(late),
        )
        .unwrap()
        .with_state_backend(backend)
        .unwrap()
        .with_buffered_groups(buffered)
    };
    let steps = [
        Batch(rows(&[("a", 1, 1), ("b", 3, 2), ("a", 12, 3), ("a", 25, 4)])),
        Batch(rows(&[("b", 14, 5), ("c", 27, 6)])),
        Watermark(10),
        Batch(rows(&[("a", 31, 7), ("b", 33, 8), ("a", 5, 9)])),
        Watermark(22),
        Batch(rows(&[("a", 8, 10), ("c", 18, 11)])),
        Watermark(35),
        Batch(rows(&[("b", 2, 12), ("b", 41, 13), ("c", 36, 14)])),
        Watermark(47),
        Batch(rows(&[("a", 44, 15), ("b", 5, 16)])),
        Watermark(60),
        Batch(rows(&[("a", 63, 16)])),
        Close,
    ];
    let out = check_one(make, &steps);
    assert!(total_rows(&out.batches) > 20, "{}", total_rows(&out.batches));
    assert_eq!(total_rows(&out.late), 1, "(b, 5) came after every window holding it expired");
}

#[test]
fn a_global_tumbling_window_without_keys_restores() {
    on_each_buffered_backend(a_global_tumbling_window_without_keys_restores_on);
}

fn a_global_tumbling_window_without_keys_restores_on(backend: &StateBackend, buffered: usize) {
    let make = |late: LateData| {
        let spec = WindowSpec::tumbling(Duration::from_millis(10));
        WindowAggregateOperator::try_new(spec, "ts", schema(), vec![], all_aggregates(), 0, Some(late))
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
            .with_buffered_groups(buffered)
    };
    let steps = [
        Batch(rows(&[("a", 1, 1), ("b", 13, 2)])),
        Watermark(10),
        Batch(rows(&[("a", 15, 3)])),
        Watermark(30),
        Batch(rows(&[("a", 35, 3)])),
        Close,
    ];
    let out = check_one(make, &steps);
    assert_eq!(total_rows(&out.batches), 3);
}

#[test]
fn session_windows_restore_and_merge_across_the_snapshot() {
    let out = same_on_each_buffered_backend(session_windows_restore_on);
    assert_eq!(total_rows(&out.late), 1);
    let starts: Vec<String> = out
        .batches
        .iter()
        .flat_map(|b| {
            let (k, s, e) = (b.column(0).clone(), b.column(1).clone(), b.column(2).clone());
            (0..b.num_rows()).map(move |i| {
                use arrow::util::display::array_value_to_string as v;
                format!("{}:{}-{}", v(&k, i).unwrap(), v(&s, i).unwrap(), v(&e, i).unwrap())
            })
        })
        .collect();
    assert!(starts.contains(&"a:0-30".to_string()), "the merged session fired: {starts:?}");
}

fn session_windows_restore_on(backend: &StateBackend, buffered: usize) -> Emitted {
    let make = |late: LateData| {
        SessionWindowOperator::try_new(10, "ts", schema(), vec![col("k")], all_aggregates(), 5, Some(late))
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
            .with_buffered_rows(buffered)
    };
    let steps = [
        Batch(rows(&[("a", 0, 1), ("a", 5, 2), ("b", 3, 3)])),
        Watermark(10),
        Batch(rows(&[("a", 20, 4)])),
        // a [0, 15) and b [3, 13) fire.
        Watermark(16),
        // Bridges a's two sessions into [0, 30): the fired one re-fires with the new totals.
        Batch(rows(&[("a", 12, 5)])),
        Watermark(31),
        // Its own window [10, 20) expired with the lateness: late.
        Batch(rows(&[("b", 10, 6), ("b", 30, 7), ("c", 33, 8)])),
        Batch(rows(&[("c", 38, 9), ("b", 36, 10)])),
        Watermark(50),
        Batch(rows(&[("c", 49, 11)])),
        Close,
    ];
    check_one(make, &steps)
}

#[test]
fn count_windows_restore_partial_windows() {
    on_each_backend(count_windows_restore_partial_windows_on);
}

fn count_windows_restore_partial_windows_on(backend: &StateBackend) {
    let make = |_: LateData| {
        CountWindowOperator::try_new(3, schema(), vec![col("g")], all_aggregates())
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
    };
    let steps = [
        Batch(rows(&[("a", 1, 1), ("b", 2, 2), ("a", 3, 3)])),
        Batch(rows(&[("a", 4, 4), ("c", 5, 5)])),
        Batch(rows(&[("a", 6, 7), ("b", 7, 8), ("a", 8, 9), ("c", 9, 10)])),
        Batch(rows(&[("a", 10, 11)])),
        Batch(rows(&[("b", 11, 12), ("b", 12, 14), ("a", 13, 13)])),
        Close,
    ];
    let out = check_one(make, &steps);
    assert_eq!(total_rows(&out.batches), 4, "odd v: 7 rows, even v: 7 rows: two windows each");
}

#[test]
fn count_windows_restore_after_many_batches_were_compacted() {
    on_each_backend(count_windows_restore_after_many_batches_on);
}

fn count_windows_restore_after_many_batches_on(backend: &StateBackend) {
    let make = |_: LateData| {
        CountWindowOperator::try_new(7, schema(), vec![col("k")], two_phase_aggregates())
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
    };
    let steps: Vec<Step> = (0..45)
        .map(|i| {
            let k = ["a", "b", "c"][(i % 3) as usize];
            Batch(rows(&[(k, i, i), ("d", i, i * 2)]))
        })
        .chain([Close])
        .collect();
    let out = check_one(make, &steps);
    assert_eq!(total_rows(&out.batches), 12, "a, b, c: 15 rows each (2 windows each); d: 45 rows (6 windows)");
}

#[test]
fn global_windows_with_a_count_trigger_restore() {
    let out = same_on_each_buffered_backend(global_windows_with_a_count_trigger_on);
    assert_eq!(total_rows(&out.batches), 3, "a at its 3rd row, b at its 3rd, a at its 6th");
}

fn global_windows_with_a_count_trigger_on(backend: &StateBackend, buffered: usize) -> Emitted {
    let make = |_: LateData| {
        GlobalWindowOperator::try_new(
            Arc::new(CountTrigger(3)),
            schema(),
            vec![col("k")],
            two_phase_aggregates(),
            Some("ts".into()),
        )
        .unwrap()
        .with_state_backend(backend)
        .unwrap()
        .with_buffered_rows(buffered)
    };
    let steps = [
        Batch(rows(&[("a", 1, 1), ("b", 2, 2), ("a", 3, 3)])),
        Batch(rows(&[("a", 4, 4), ("c", 5, 5), ("b", 6, 6)])),
        Watermark(5),
        Batch(rows(&[("a", 6, 7), ("b", 7, 8), ("a", 8, 9), ("c", 9, 10)])),
        Batch(rows(&[("a", 10, 11), ("b", 11, 12)])),
        Close,
    ];
    check_one(make, &steps)
}

#[test]
fn global_windows_with_event_time_triggers_restore_timers() {
    same_on_each_buffered_backend(global_windows_with_event_time_triggers_on);
}

fn global_windows_with_event_time_triggers_on(backend: &StateBackend, buffered: usize) -> Emitted {
    let mut all = Emitted { batches: vec![], watermarks: vec![], late: vec![] };
    for purging in [false, true] {
        let make = |_: LateData| {
            let trigger = EventTimeTrigger(Duration::from_millis(10));
            let trigger: Arc<dyn sabot::window::Trigger> =
                if purging { Arc::new(PurgingTrigger::of(trigger)) } else { Arc::new(trigger) };
            GlobalWindowOperator::try_new(trigger, schema(), vec![col("k")], all_aggregates(), Some("ts".into()))
                .unwrap()
                .with_state_backend(backend)
                .unwrap()
                .with_buffered_rows(buffered)
        };
        let steps = [
            Batch(rows(&[("a", 1, 1), ("b", 2, 2), ("c", 3, 3)])),
            Batch(rows(&[("a", 4, 4), ("c", 5, 5), ("b", 6, 6)])),
            // Every key's timer (10) fires at once: in key order.
            Watermark(12),
            Batch(rows(&[("a", 13, 7), ("b", 17, 8)])),
            Watermark(19),
            Watermark(25),
            Batch(rows(&[("c", 26, 9), ("a", 27, 10)])),
            Watermark(40),
            Close,
        ];
        let out = check_one(make, &steps);
        assert!(total_rows(&out.batches) >= 6, "purging {purging}: {}", total_rows(&out.batches));
        all.batches.extend(out.batches);
        all.watermarks.extend(out.watermarks);
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Plain aggregation (blocking, emits at the end) in its three modes.

#[test]
fn aggregations_restore_their_groups_in_every_mode() {
    let input = schema();
    let batches = [
        rows(&[("a", 1, 1), ("b", 2, 2), ("a", 3, 3)]),
        rows(&[("c", 4, 4), ("a", 5, 5)]),
        rows(&[("b", 6, 6), ("d", 7, 7), ("a", 8, 8)]),
    ];
    for keys in [vec![col("k")], vec![col("g")], vec![col("k"), col("g")], vec![]] {
        let single = |_: LateData| {
            AggregateOperator::try_new(AggregateMode::Single, &input, keys.clone(), all_aggregates()).unwrap()
        };
        let steps: Vec<Step> = batches.iter().cloned().map(Batch).chain([Close]).collect();
        let out = check_one(single, &steps);
        assert_eq!(out.batches.len(), 1);

        let partial = |_: LateData| {
            AggregateOperator::try_new(AggregateMode::Partial, &input, keys.clone(), two_phase_aggregates()).unwrap()
        };
        let partials = check_one(partial, &steps).batches;

        // The final phase over two partitions' partial states.
        let final_phase = |_: LateData| {
            AggregateOperator::try_new(AggregateMode::Final, &input, keys.clone(), two_phase_aggregates()).unwrap()
        };
        let steps: Vec<Step> = [partials.clone(), partials].concat().into_iter().map(Batch).chain([Close]).collect();
        check_one(final_phase, &steps);
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregates whose state cannot be saved.

/// A state that serde cannot write (postcard needs the length of a sequence up front).
#[derive(Default, Clone)]
struct Opaque(Vec<i64>);

impl serde::Serialize for Opaque {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(None)?;
        for v in &self.0 {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for Opaque {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<i64>::deserialize(deserializer).map(Opaque)
    }
}

struct Collect;

impl AggregateFunction for Collect {
    type Input = i64;
    type State = Opaque;
    type Output = i64;

    fn add(&self, state: &mut Opaque, value: i64) {
        state.0.push(value);
    }

    fn merge(&self, state: &mut Opaque, other: Opaque) {
        state.0.extend(other.0);
    }

    fn finish(&self, state: &Opaque) -> i64 {
        state.0.len() as i64
    }
}

#[test]
fn an_aggregate_state_that_cannot_be_written_fails_the_snapshot_clearly_and_keeps_the_state() {
    let spec = WindowSpec::tumbling(Duration::from_millis(10));
    let aggregates = vec![count_all(), udaf("collect", Collect).call(col("v")).alias("collected")];
    let op = WindowAggregateOperator::try_new(spec, "ts", schema(), vec![col("k")], aggregates, 0, None).unwrap();
    let mut h = OperatorHarness::new(op);
    h.process(rows(&[("a", 1, 1), ("a", 2, 2), ("b", 3, 3)])).unwrap();
    let err = h.snapshot().expect_err("the state cannot be written");
    match &err {
        SabotError::State { state, message } => {
            assert_eq!(state, "window_aggregate/collected", "{err}");
            assert!(message.contains("collect(v)"), "{err}");
        }
        other => panic!("expected a state error, got {other}"),
    }
    // The failed snapshot left the window as it was.
    h.watermark(10).unwrap();
    let out = h.take_output();
    let collected = out[0].column_by_name("collected").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(collected.values().to_vec(), vec![2, 1]);
}

// ---------------------------------------------------------------------------------------------
// Joins.

/// Runs `test` on every backend and buffer size (see [`on_each_buffered_backend`]) and checks
/// that all emit the same.
fn same_on_each_buffered_backend(test: impl Fn(&StateBackend, usize) -> Emitted) -> Emitted {
    let first: std::cell::RefCell<Option<Emitted>> = Default::default();
    on_each_buffered_backend(|backend, buffered| {
        let emitted = test(backend, buffered);
        let mut first = first.borrow_mut();
        match first.as_ref() {
            Some(expected) => assert_eq!(&emitted, expected, "{backend:?}, {buffered} buffered rows"),
            None => *first = Some(emitted),
        }
    });
    first.into_inner().expect("at least the heap ran")
}

#[test]
fn interval_joins_restore_both_sides_buffers() {
    let out = same_on_each_buffered_backend(interval_joins_restore_on);
    assert!(total_rows(&out.batches) >= 6, "{}", total_rows(&out.batches));
}

fn interval_joins_restore_on(backend: &StateBackend, buffered: usize) -> Emitted {
    let make = || {
        IntervalJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", -5, 10)
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
            .with_buffered_rows(buffered)
    };
    let steps = [
        Step2::Left(rows(&[("a", 10, 1), ("b", 12, 2), ("a", 30, 3)])),
        Step2::Right(rows(&[("a", 8, 4), ("a", 18, 5), ("c", 14, 6)])),
        Step2::Both(12),
        Step2::Left(rows(&[("c", 15, 7), ("a", 14, 8), ("a", 5, 9)])),
        Step2::Right(rows(&[("b", 20, 10), ("a", 33, 11), ("a", 26, 12)])),
        Step2::Both(30),
        Step2::Right(rows(&[("a", 40, 13)])),
        Step2::Left(rows(&[("a", 31, 14), ("b", 35, 15)])),
        Step2::Both(100),
        Step2::End,
    ];
    check_two(make, &steps)
}

#[test]
fn sliding_window_joins_restore_buffered_panes() {
    let out = same_on_each_buffered_backend(sliding_window_joins_restore_on);
    assert!(total_rows(&out.batches) >= 8, "{}", total_rows(&out.batches));
}

fn sliding_window_joins_restore_on(backend: &StateBackend, buffered: usize) -> Emitted {
    let make = || {
        let spec = WindowSpec::sliding(Duration::from_millis(20), Duration::from_millis(10));
        WindowJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", spec)
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
            .with_buffered_rows(buffered)
    };
    let steps = [
        Step2::Left(rows(&[("a", 1, 1), ("b", 5, 2), ("a", 14, 3)])),
        Step2::Right(rows(&[("a", 3, 4), ("a", 12, 5), ("b", 18, 6)])),
        Step2::Both(10),
        Step2::Left(rows(&[("a", 22, 7), ("b", 15, 8)])),
        Step2::Right(rows(&[("a", 25, 9), ("b", 2, 10)])),
        Step2::Both(20),
        Step2::Right(rows(&[("a", 31, 11)])),
        Step2::Left(rows(&[("a", 33, 12)])),
        Step2::End,
    ];
    check_two(make, &steps)
}

#[test]
fn asof_joins_restore_pending_left_rows_and_sealed_right_rows() {
    on_each_backend(asof_joins_restore_on);
}

fn asof_joins_restore_on(backend: &StateBackend) {
    for tolerance in [None, Some(8)] {
        let make = || {
            AsofJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", tolerance)
                .unwrap()
                .with_state_backend(backend)
                .unwrap()
        };
        let steps = [
            Step2::Right(rows(&[("a", 1, 1), ("a", 5, 2), ("b", 3, 3), ("a", 5, 4)])),
            Step2::Left(rows(&[("a", 6, 5), ("b", 2, 6), ("c", 4, 7)])),
            Step2::Both(4),
            Step2::Right(rows(&[("a", 7, 8), ("b", 9, 9)])),
            Step2::Left(rows(&[("a", 7, 10), ("b", 20, 11), ("a", 12, 12)])),
            Step2::Both(8),
            Step2::Right(rows(&[("a", 10, 13), ("b", 15, 14), ("a", 10, 15)])),
            Step2::Both(13),
            Step2::Left(rows(&[("a", 16, 16), ("b", 30, 17), ("a", 15, 18)])),
            Step2::Both(25),
            Step2::End,
        ];
        let out = check_two(make, &steps);
        assert_eq!(total_rows(&out.batches), 9, "tolerance {tolerance:?}: every on-time left row, once");
    }
}

/// The key group (of two) of key `k`, as a sink partitioned by `k` places it.
fn group_of(k: &str) -> u32 {
    let converter = arrow::row::RowConverter::new(vec![arrow::row::SortField::new(DataType::Utf8)]).unwrap();
    let rows = converter.convert_columns(&[Arc::new(StringArray::from(vec![k])) as ArrayRef]).unwrap();
    sabot::checkpoint::key_group(rows.row(0).data(), 2)
}

/// Every emitted row as text, sorted.
fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = vec![];
    for batch in batches {
        for row in 0..batch.num_rows() {
            let fields: Vec<String> =
                batch.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, row).unwrap()).collect();
            rows.push(fields.join(","));
        }
    }
    rows.sort();
    rows
}

/// A join's state split by key groups between two instances (one releases group 1, the
/// other acquires it from the snapshot) emits together what the unsplit join emits, each
/// instance only rows of its own group.
fn split_by_key_groups<O: TwoInputOperator>(make: impl Fn() -> O, before: &[Step2], after: &[Step2]) {
    let mut h = TwoInputHarness::new(make());
    before.iter().for_each(|s| apply2(&mut h, s));
    let snapshot = h.snapshot().unwrap();
    h.take_output();
    let mut whole = TwoInputHarness::restore(make(), &snapshot).unwrap();
    after.iter().for_each(|s| apply2(&mut whole, s));
    let expected = sorted_rows(&whole.take_output());

    let handover = |released: Vec<u32>, acquired| sabot::checkpoint::KeyGroupHandover {
        partitions: 2,
        released,
        acquired,
        instance: (0, 1),
    };
    let mut keeps = TwoInputHarness::restore(make(), &snapshot).unwrap();
    keeps.hand_over_key_groups(&handover(vec![1], vec![])).unwrap();
    let mut takes = TwoInputHarness::new(make());
    takes.hand_over_key_groups(&handover(vec![], vec![(vec![1], vec![snapshot.restored_state()])])).unwrap();
    let mut split = vec![];
    for (h, group) in [(&mut keeps, 0), (&mut takes, 1)] {
        // Each instance reads only its own group's partition.
        let own = |b: &RecordBatch| {
            let keys = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let mask: arrow::array::BooleanArray = keys.iter().map(|k| Some(group_of(k.unwrap()) == group)).collect();
            arrow::compute::filter_record_batch(b, &mask).unwrap()
        };
        for step in after {
            match step {
                Step2::Left(b) => apply2(h, &Step2::Left(own(b))),
                Step2::Right(b) => apply2(h, &Step2::Right(own(b))),
                other => apply2(h, other),
            }
        }
        let rows = sorted_rows(&h.take_output());
        assert!(!rows.is_empty(), "group {group} emits");
        for row in &rows {
            assert_eq!(group_of(row.split(',').next().unwrap()), group, "{row}");
        }
        split.extend(rows);
    }
    split.sort();
    assert_eq!(split, expected);
}

#[test]
fn joins_split_by_key_groups_emit_what_one_join_emits() {
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
    assert!(keys.iter().any(|k| group_of(k) == 0) && keys.iter().any(|k| group_of(k) == 1));
    let each = |ts: i64, v: i64| {
        rows(&keys.iter().enumerate().map(|(i, k)| (*k, ts + i as i64 % 3, v + i as i64)).collect::<Vec<_>>())
    };
    let before = [Step2::Left(each(10, 0)), Step2::Right(each(12, 100)), Step2::Both(5), Step2::Left(each(16, 200))];
    let after = [
        Step2::Both(8),
        Step2::Right(each(17, 300)),
        Step2::Left(each(21, 400)),
        Step2::Right(each(25, 500)),
        Step2::Both(40),
        Step2::End,
    ];
    on_each_buffered_backend(|backend, buffered| {
        split_by_key_groups(
            || {
                IntervalJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", -5, 10)
                    .unwrap()
                    .with_state_backend(backend)
                    .unwrap()
                    .with_buffered_rows(buffered)
            },
            &before,
            &after,
        );
        split_by_key_groups(
            || {
                let spec = WindowSpec::sliding(Duration::from_millis(20), Duration::from_millis(10));
                WindowJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", spec)
                    .unwrap()
                    .with_state_backend(backend)
                    .unwrap()
                    .with_buffered_rows(buffered)
            },
            &before,
            &after,
        );
    });
    on_each_backend(|backend| {
        split_by_key_groups(
            || {
                TableJoinOperator::try_new(schema(), schema(), &["k"], &["k"], JoinType::Inner)
                    .unwrap()
                    .with_state_backend(backend)
                    .unwrap()
            },
            &before,
            &after,
        );
        for tolerance in [None, Some(8)] {
            split_by_key_groups(
                || {
                    AsofJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", tolerance)
                        .unwrap()
                        .with_state_backend(backend)
                        .unwrap()
                },
                &before,
                &after,
            );
        }
    });
}

#[test]
fn table_joins_restore_the_latest_row_per_key() {
    on_each_backend(table_joins_restore_the_latest_row_per_key_on);
}

fn table_joins_restore_the_latest_row_per_key_on(backend: &StateBackend) {
    let make = || {
        TableJoinOperator::try_new(schema(), schema(), &["k"], &["k"], JoinType::Left)
            .unwrap()
            .with_state_backend(backend)
            .unwrap()
    };
    // Enough replaced rows to compact the table.
    let many: Vec<(String, i64, i64)> = (0..1500).map(|i| (format!("k{}", i % 7), i, i)).collect();
    let many: Vec<(&str, i64, i64)> = many.iter().map(|(k, t, v)| (k.as_str(), *t, *v)).collect();
    let steps = [
        Step2::Right(rows(&[("a", 1, 1), ("b", 2, 2)])),
        Step2::Left(rows(&[("a", 3, 3), ("c", 4, 4), ("b", 5, 5)])),
        Step2::Right(rows(&[("a", 6, 6), ("c", 7, 7)])),
        Step2::LeftWatermark(5),
        Step2::Left(rows(&[("a", 8, 8), ("c", 9, 9), ("k3", 10, 10)])),
        Step2::Right(rows(&many)),
        Step2::Left(rows(&[("k3", 11, 11), ("a", 12, 12), ("k5", 13, 13)])),
        Step2::Right(rows(&[("k5", 14, 14)])),
        Step2::Left(rows(&[("k5", 15, 15), ("zz", 16, 16)])),
        Step2::End,
    ];
    let out = check_two(make, &steps);
    assert_eq!(total_rows(&out.batches), 11);
}
