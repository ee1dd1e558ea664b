//! `#[udf]`: a plain Rust function that also runs in pipelines, fused by the JIT with the
//! expressions around it, and giving the same results with the JIT off.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::compute::concat_batches;
use sabot::exec::ExecConfig;
use sabot::expr::{col, lit};
use sabot::prelude::*;

#[sabot::udf]
fn spread_bps(bid: f64, ask: f64) -> f64 {
    (ask - bid) / ((ask + bid) / 2.0) * 1e4
}

#[sabot::udf]
fn weighted(v: f64, n: i64) -> f64 {
    let mut total = 0.0;
    for j in 0..n {
        total += v * j as f64;
    }
    if total > 100.0 { total.sqrt() } else { -total }
}

#[sabot::udf]
fn checked_ratio(a: i64, b: i64) -> i64 {
    if b != 0 && a % b == 0 { a / b } else { -1 }
}

#[sabot::udf(fallback)]
fn label_len(x: i64) -> i64 {
    format!("#{x}").len() as i64
}

fn quotes(n: usize) -> RecordBatch {
    let bid: Vec<Option<f64>> = (0..n).map(|i| if i % 7 == 3 { None } else { Some(100.0 + (i % 13) as f64) }).collect();
    let ask: Vec<f64> = (0..n).map(|i| 100.5 + (i % 11) as f64).collect();
    let k: Vec<i64> = (0..n as i64).map(|i| i % 9).collect();
    let d: Vec<i64> = (0..n as i64).map(|i| i % 4).collect();
    RecordBatch::try_from_iter([
        ("bid", Arc::new(Float64Array::from(bid)) as ArrayRef),
        ("ask", Arc::new(Float64Array::from(ask)) as ArrayRef),
        ("k", Arc::new(Int64Array::from(k)) as ArrayRef),
        ("d", Arc::new(Int64Array::from(d)) as ArrayRef),
    ])
    .unwrap()
}

fn run(stream: &Stream, jit: bool) -> RecordBatch {
    let stream = stream.clone().with_config(ExecConfig::default().with_parallelism(2).with_jit(jit));
    let batches = stream.collect().unwrap();
    concat_batches(&stream.schema(), &batches).unwrap()
}

#[test]
fn the_plain_function_is_unchanged() {
    assert_eq!(spread_bps(99.0, 101.0), 200.0);
    assert_eq!(weighted(1.0, 3), -3.0);
    assert_eq!(label_len(42), 3);
    assert_eq!(spread_bps::checked(99.0, 101.0).unwrap(), 200.0);
    assert!(checked_ratio::checked(i64::MIN, -1).is_err(), "checked arithmetic: MIN / -1 overflows");
    assert_eq!((checked_ratio(6, 3), checked_ratio(7, 3), checked_ratio(1, 0)), (2, -1, -1), "the plain Rust function");
}

#[test]
fn udfs_fuse_in_a_pipeline_and_match_the_interpreter() {
    let batches: Vec<RecordBatch> = (0..4).map(|i| quotes(1000 + i * 37).slice(i, 900)).collect();
    let stream = Stream::from_batches(batches)
        .unwrap()
        .filter((col("ask") - col("bid")).gt(lit(1.0)))
        .unwrap()
        .with_column("bps", spread_bps::call(col("bid"), col("ask")))
        .unwrap()
        .with_column("w", weighted::call(col("bid"), col("k")))
        .unwrap()
        .with_column("r", checked_ratio::call(col("k"), col("d")))
        .unwrap();
    let explain = stream.clone().with_config(ExecConfig::default().with_jit(true)).explain().unwrap();
    assert!(explain.contains("FilterProject[jit]"), "the UDFs fuse with the filter: {explain}");
    let off = stream.clone().with_config(ExecConfig::default().with_jit(false)).explain().unwrap();
    assert!(!off.contains("[jit]"), "{off}");

    let compiled = run(&stream, true);
    let interpreted = run(&stream, false);
    assert!(compiled.num_rows() > 100);
    assert_eq!(compiled, interpreted);
    // spot check against the plain function
    let bid = compiled.column_by_name("bid").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
    let ask = compiled.column_by_name("ask").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
    let bps = compiled.column_by_name("bps").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
    for i in 0..compiled.num_rows() {
        assert!(bid.is_valid(i), "null bids are filtered out (null > 1.0 is not true)");
        assert_eq!(bps.value(i), spread_bps(bid.value(i), ask.value(i)));
    }
}

#[test]
fn udf_nulls_and_errors_match() {
    let batch = RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(vec![Some(6), None, Some(7), Some(i64::MIN)])) as ArrayRef),
        ("b", Arc::new(Int64Array::from(vec![Some(3), Some(0), Some(0), Some(1)])) as ArrayRef),
    ])
    .unwrap();
    let stream = Stream::from_batches(vec![batch.clone()])
        .unwrap()
        .with_column("r", checked_ratio::call(col("a"), col("b")))
        .unwrap()
        .with_column("l", label_len::call(col("a")))
        .unwrap();
    let compiled = run(&stream, true);
    assert_eq!(compiled, run(&stream, false));
    let r = compiled.column_by_name("r").unwrap();
    assert_eq!(r.as_ref(), &Int64Array::from(vec![Some(2), None, Some(-1), Some(i64::MIN)]) as &dyn Array);

    // MIN / -1 overflows: an error both ways
    let bad = RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(vec![i64::MIN])) as ArrayRef),
        ("b", Arc::new(Int64Array::from(vec![-1])) as ArrayRef),
    ])
    .unwrap();
    let stream =
        Stream::from_batches(vec![bad]).unwrap().with_column("r", checked_ratio::call(col("a"), col("b"))).unwrap();
    for jit in [true, false] {
        let s = stream.clone().with_config(ExecConfig::default().with_jit(jit));
        assert!(s.collect().is_err(), "jit={jit}");
    }
}

#[test]
fn udf_ir_translates_and_fallback_only_does_not() {
    let mut b = sabot::jit::ir::Builder::new(&[sabot::jit::ir::Type::F64, sabot::jit::ir::Type::I64]);
    let params = [b.input(0), b.input(1)];
    assert!(weighted::build_ir(&mut b, &params).is_ok());
    let schema = quotes(1).schema();
    assert!(sabot::jit::JitExprs::try_compile(&schema, None, &[weighted::call(col("bid"), col("k"))]).is_ok());
    let reason = sabot::jit::JitExprs::try_compile(&schema, None, &[label_len::call(col("k"))]).unwrap_err();
    assert!(reason.contains("fallback only"), "{reason}");
}
