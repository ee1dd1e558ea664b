//! Global windows with triggers: count, continuous event time (cumulative and purging),
//! processing time, and a user-defined trigger; driven by a harness with explicit
//! watermarks (on the heap and with rows in RocksDB), and end to end through the Stream API.

mod support;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use sabot::operator::GlobalWindowOperator;
use sabot::prelude::*;
use sabot::state::StateBackend;
use sabot::testing::OperatorHarness;
use sabot::window::{
    CountTrigger, EventTimeTrigger, ProcessingTimeTrigger, PurgingTrigger, Trigger, TriggerResult, TriggerState,
};
use support::on_each_buffered_backend;

fn rows(data: &[(&str, i64, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("k", Arc::new(StringArray::from_iter_values(data.iter().map(|r| r.0))) as _),
        ("x", Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.1))) as _),
        ("ts", Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.2))) as _),
    ])
    .unwrap()
}

/// Global windows whose rows live in `backend`, holding `buffered` rows on the heap.
fn harness(trigger: impl Trigger, backend: &StateBackend, buffered: usize) -> OperatorHarness<GlobalWindowOperator> {
    let schema = rows(&[]).schema();
    let op = GlobalWindowOperator::try_new(
        Arc::new(trigger),
        schema,
        vec![col("k")],
        vec![sum(col("x")).alias("total"), count_all()],
        Some("ts".into()),
    )
    .unwrap()
    .with_state_backend(backend)
    .unwrap()
    .with_buffered_rows(buffered);
    OperatorHarness::new(op)
}

/// (key, window_start, window_end, total, count) of every output row.
fn fired(h: &mut OperatorHarness<GlobalWindowOperator>) -> Vec<(String, i64, i64, i64, i64)> {
    let mut out = vec![];
    for b in h.take_output() {
        let k = b.column(0).as_string::<i32>();
        let col = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (start, end, total, count) = (col(1), col(2), col(3), col(4));
        for r in 0..b.num_rows() {
            out.push((k.value(r).to_string(), start.value(r), end.value(r), total.value(r), count.value(r)));
        }
    }
    out
}

#[test]
fn a_count_trigger_fires_and_purges_every_n_rows_of_a_key() {
    on_each_buffered_backend(count_trigger_on);
}

fn count_trigger_on(backend: &StateBackend, buffered: usize) {
    let mut h = harness(CountTrigger(2), backend, buffered);
    h.process(rows(&[("a", 1, 10), ("b", 5, 11), ("a", 2, 12), ("a", 3, 13)])).unwrap();
    assert_eq!(fired(&mut h), vec![("a".into(), 10, 13, 3, 2)]);
    h.process(rows(&[("a", 4, 20), ("b", 6, 21)])).unwrap();
    assert_eq!(fired(&mut h), vec![("a".into(), 13, 21, 7, 2), ("b".into(), 11, 22, 11, 2)]);
    h.close().unwrap();
    assert_eq!(fired(&mut h), vec![], "incomplete windows do not fire at the end");
}

#[test]
fn a_continuous_event_time_trigger_fires_cumulative_results_as_the_watermark_passes() {
    on_each_buffered_backend(continuous_event_time_trigger_on);
}

fn continuous_event_time_trigger_on(backend: &StateBackend, buffered: usize) {
    let mut h = harness(EventTimeTrigger(Duration::from_secs(10)), backend, buffered);
    h.process(rows(&[("a", 1, 1_000), ("a", 2, 5_000), ("b", 7, 9_000)])).unwrap();
    h.watermark(9_999).unwrap();
    assert_eq!(fired(&mut h), vec![]);
    h.watermark(10_000).unwrap();
    let mut first = fired(&mut h);
    first.sort();
    assert_eq!(first, vec![("a".into(), 1_000, 5_001, 3, 2), ("b".into(), 9_000, 9_001, 7, 1)]);
    // Out of order but after the firing: it joins the cumulative result of the next one.
    h.process(rows(&[("a", 4, 8_000), ("a", 8, 15_000)])).unwrap();
    h.watermark(20_000).unwrap();
    let mut second = fired(&mut h);
    second.sort();
    assert_eq!(second, vec![("a".into(), 1_000, 15_001, 15, 4), ("b".into(), 9_000, 9_001, 7, 1)]);
}

#[test]
fn a_purging_trigger_fires_only_the_rows_since_the_last_firing() {
    on_each_buffered_backend(purging_trigger_on);
}

fn purging_trigger_on(backend: &StateBackend, buffered: usize) {
    let mut h = harness(PurgingTrigger::of(EventTimeTrigger(Duration::from_secs(10))), backend, buffered);
    h.process(rows(&[("a", 1, 1_000), ("a", 2, 5_000)])).unwrap();
    h.watermark(10_000).unwrap();
    assert_eq!(fired(&mut h), vec![("a".into(), 1_000, 5_001, 3, 2)]);
    h.process(rows(&[("a", 8, 15_000)])).unwrap();
    h.watermark(20_000).unwrap();
    assert_eq!(fired(&mut h), vec![("a".into(), 15_000, 15_001, 8, 1)]);
    h.watermark(30_000).unwrap();
    assert_eq!(fired(&mut h), vec![], "an empty window does not fire");
}

#[test]
fn a_processing_time_trigger_fires_on_a_heartbeat_without_new_rows() {
    let mut h = harness(ProcessingTimeTrigger(Duration::from_millis(50)), &StateBackend::Memory, 0);
    h.process(rows(&[("a", 1, 1), ("a", 2, 2)])).unwrap();
    h.watermark(i64::MIN).unwrap();
    assert_eq!(fired(&mut h), vec![]);
    std::thread::sleep(Duration::from_millis(80));
    h.watermark(i64::MIN).unwrap();
    assert_eq!(fired(&mut h), vec![("a".into(), 1, 3, 3, 2)]);
}

/// Fires when a key has 3 rows or its first row is 5 s of event time old.
#[derive(Debug)]
struct CountOrAge;

impl Trigger for CountOrAge {
    fn on_element(&self, state: &mut TriggerState, _watermark: i64, _now: i64) -> TriggerResult {
        state.timer = state.first_time.map(|t| t + 5_000);
        if state.count >= 3 { TriggerResult::FireAndPurge } else { TriggerResult::Continue }
    }

    fn on_time(&self, state: &mut TriggerState, watermark: i64, _now: i64) -> TriggerResult {
        match state.timer {
            Some(t) if watermark >= t => TriggerResult::FireAndPurge,
            _ => TriggerResult::Continue,
        }
    }
}

#[test]
fn a_user_defined_trigger_combines_count_and_age() {
    on_each_buffered_backend(user_defined_trigger_on);
}

fn user_defined_trigger_on(backend: &StateBackend, buffered: usize) {
    let mut h = harness(CountOrAge, backend, buffered);
    h.process(rows(&[("a", 1, 0), ("b", 1, 100), ("a", 1, 200), ("a", 1, 300)])).unwrap();
    assert_eq!(fired(&mut h), vec![("a".into(), 0, 301, 3, 3)]);
    h.watermark(5_100).unwrap();
    assert_eq!(fired(&mut h), vec![("b".into(), 100, 101, 1, 1)]);
}

#[test]
fn global_windows_through_the_stream_api_match_count_windows() {
    support::on_each_backend(stream_api_matches_count_windows_on);
}

fn stream_api_matches_count_windows_on(backend: &StateBackend) {
    let data: Vec<(String, i64, i64)> = (0..300).map(|i| (format!("k{}", i % 7), i * 3 % 11, i)).collect();
    let refs: Vec<(&str, i64, i64)> = data.iter().map(|(k, x, t)| (k.as_str(), *x, *t)).collect();
    // One input batch: per-key order is the input order, so both window kinds see the same
    // rows in the same order after the repartition to 2 partitions.
    let config = ExecConfig::default().with_parallelism(2).with_state_backend(backend.clone());
    let stream = Stream::from_batches(vec![rows(&refs)]).unwrap().with_config(config);
    let sums = |s: Stream| -> Vec<(String, i64)> {
        let b = s.collect_batch().unwrap();
        let k = b.column_by_name("k").unwrap().as_string::<i32>().clone();
        let t = b.column_by_name("total").unwrap().as_primitive::<Int64Type>().clone();
        let mut v: Vec<(String, i64)> = (0..b.num_rows()).map(|i| (k.value(i).to_string(), t.value(i))).collect();
        v.sort();
        v
    };
    let global = stream.key_by(["k"]).global_window(CountTrigger(4)).aggregate([sum(col("x")).alias("total")]).unwrap();
    let counted = stream.key_by(["k"]).window(WindowSpec::count(4)).aggregate([sum(col("x")).alias("total")]).unwrap();
    assert!(global.explain().unwrap().contains("global_window(CountTrigger(4))"));
    assert_eq!(sums(global), sums(counted));
}
