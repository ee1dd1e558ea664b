//! The JIT against Arrow's kernels one at a time, the interpreter, and a hand-written loop.
//!
//! ```text
//! cargo bench --bench jit                       # 1.2M and 100M rows
//! JIT_BENCH_ROWS=1200000 cargo bench --bench jit  # only one size
//! cargo bench --bench jit -- chain              # one workload
//! ```
//!
//! Workloads, on batches of 65,536 rows (the engine's batch size), single thread:
//! - `fused`: `filter(a - b > t).with_column(s = (a - b) / ((a + b) / 2) * 1e4)`; every
//!   variant produces the selection and `s` for the selected rows;
//! - `chain`: `((a + b) * 1.5 - a) / (b + 2.0)`, five operations;
//! - `udf_loop`: a `#[udf]` with `for j in 0..100 { total += v * j as f64 }`.
//!
//! Throughput is reported in rows (elements) per second.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sabot::deps::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch};
use sabot::deps::arrow::compute::kernels::{cmp, numeric};
use sabot::deps::arrow::compute::{filter, filter_record_batch};
use sabot::deps::arrow::datatypes::Float64Type;
use sabot::expr::{Expr, col, lit};
use sabot::jit::JitExprs;

const BATCH: usize = 64 * 1024;
const THRESHOLD: f64 = 0.25;

#[sabot::udf]
fn weighted(v: f64) -> f64 {
    let mut total = 0.0;
    for j in 0..100 {
        total += v * j as f64;
    }
    total
}

/// Batches of columns `a` (asks around 100) and `b` (a minus a spread of 0.01..0.5).
fn data(rows: usize) -> Vec<RecordBatch> {
    let mut out = vec![];
    let mut start = 0;
    let mut state = 0x9e3779b97f4a7c15u64;
    while start < rows {
        let n = BATCH.min(rows - start);
        let mut a = Vec::with_capacity(n);
        let mut b = Vec::with_capacity(n);
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let ask = 100.0 + (state % 10_000) as f64 / 100.0;
            let spread = 0.01 + ((state >> 20) % 50) as f64 / 100.0;
            a.push(ask);
            b.push(ask - spread);
        }
        out.push(
            RecordBatch::try_from_iter([
                ("a", Arc::new(Float64Array::from(a)) as ArrayRef),
                ("b", Arc::new(Float64Array::from(b)) as ArrayRef),
            ])
            .unwrap(),
        );
        start += n;
    }
    out
}

fn f64s(batch: &RecordBatch, i: usize) -> &Float64Array {
    batch.column(i).as_primitive::<Float64Type>()
}

fn predicate() -> Expr {
    (col("a") - col("b")).gt(lit(THRESHOLD))
}

fn spread() -> Expr {
    ((col("a") - col("b")) / ((col("a") + col("b")) / lit(2.0)) * lit(1e4)).alias("s")
}

fn chain() -> Expr {
    (((col("a") + col("b")) * lit(1.5) - col("a")) / (col("b") + lit(2.0))).alias("c")
}

fn scalar(v: f64) -> sabot::deps::arrow::array::Scalar<Float64Array> {
    Float64Array::new_scalar(v)
}

fn fused_arrow(batch: &RecordBatch) -> (BooleanArray, ArrayRef) {
    let (a, b) = (batch.column(0), batch.column(1));
    let d = numeric::sub(a, b).unwrap();
    let mask = cmp::gt(&d, &scalar(THRESHOLD)).unwrap();
    let (a, b) = (filter(a, &mask).unwrap(), filter(b, &mask).unwrap());
    let d = numeric::sub(&a, &b).unwrap();
    let m = numeric::add(&a, &b).unwrap();
    let m = numeric::div(&m, &scalar(2.0)).unwrap();
    let s = numeric::div(&d, &m).unwrap();
    (mask, numeric::mul(&s, &scalar(1e4)).unwrap())
}

fn fused_interpreter(batch: &RecordBatch, p: &Expr, s: &Expr) -> (BooleanArray, ArrayRef) {
    let mask = p.evaluate_predicate(batch).unwrap();
    let kept = filter_record_batch(batch, &mask).unwrap();
    (mask, s.evaluate(&kept).unwrap())
}

/// Branch-free (the selection is unpredictable): every row's value is written at the next free
/// slot, which only advances for kept rows.
fn fused_hand(batch: &RecordBatch, words: &mut Vec<u64>, out: &mut Vec<f64>) -> usize {
    let (a, b) = (f64s(batch, 0).values(), f64s(batch, 1).values());
    words.clear();
    words.resize(a.len().div_ceil(64), 0);
    out.clear();
    out.resize(a.len() + 1, 0.0);
    let mut k = 0;
    for (w, (a, b)) in words.iter_mut().zip(a.chunks(64).zip(b.chunks(64))) {
        let mut bits = 0u64;
        for (j, (&x, &y)) in a.iter().zip(b).enumerate() {
            let d = x - y;
            let keep = d > THRESHOLD;
            bits |= (keep as u64) << j;
            out[k] = d / ((x + y) / 2.0) * 1e4;
            k += keep as usize;
        }
        *w = bits;
    }
    out.truncate(k);
    k
}

/// Intermediates are dropped as soon as they are used (as the interpreter does): holding all
/// of them makes the allocator return and re-fault pages for every batch, which would
/// exaggerate the cost of materializing.
fn chain_arrow(batch: &RecordBatch) -> ArrayRef {
    let (a, b) = (batch.column(0), batch.column(1));
    let x = numeric::sub(&numeric::mul(&numeric::add(a, b).unwrap(), &scalar(1.5)).unwrap(), a).unwrap();
    numeric::div(&x, &numeric::add(b, &scalar(2.0)).unwrap()).unwrap()
}

fn chain_hand(batch: &RecordBatch, out: &mut Vec<f64>) {
    let (a, b) = (f64s(batch, 0).values(), f64s(batch, 1).values());
    out.clear();
    out.extend(a.iter().zip(b.iter()).map(|(&a, &b)| ((a + b) * 1.5 - a) / (b + 2.0)));
}

fn loop_arrow(batch: &RecordBatch) -> ArrayRef {
    let v = batch.column(0);
    let mut total: ArrayRef = Arc::new(Float64Array::from(vec![0.0; v.len()]));
    for j in 0..100 {
        let t = numeric::mul(v, &scalar(j as f64)).unwrap();
        total = numeric::add(&total, &t).unwrap();
    }
    total
}

fn loop_hand(batch: &RecordBatch, out: &mut Vec<f64>) {
    out.clear();
    out.extend(f64s(batch, 0).values().iter().map(|&v| weighted(v)));
}

fn rows_of(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

fn sizes() -> Vec<usize> {
    match std::env::var("JIT_BENCH_ROWS") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().expect("JIT_BENCH_ROWS: row counts")).collect(),
        Err(_) => vec![1_200_000, 100_000_000],
    }
}

fn bench(c: &mut Criterion) {
    for rows in sizes() {
        let batches = data(rows);
        let schema = batches[0].schema();
        let label = if rows >= 1_000_000 { format!("{}M", rows as f64 / 1e6) } else { rows.to_string() };

        let mut g = c.benchmark_group(format!("fused/{label}"));
        g.throughput(Throughput::Elements(rows_of(&batches) as u64));
        if rows > 10_000_000 {
            g.sample_size(10);
        }
        let (p, s) = (predicate(), spread());
        let jit = JitExprs::try_compile(&schema, Some(&p), std::slice::from_ref(&s)).expect("compiles");
        // all variants agree
        for batch in batches.iter().take(2) {
            let (m1, s1) = fused_arrow(batch);
            let (m2, s2) = fused_interpreter(batch, &p, &s);
            let (m3, s3) = jit.filter_project(batch).unwrap();
            assert_eq!((&m1, &m1), (&m2, &m3));
            assert_eq!(s1.to_data(), s2.to_data());
            assert_eq!(s1.to_data(), s3[0].to_data());
        }
        g.bench_function(BenchmarkId::new("arrow_kernels", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| fused_arrow(b).1.len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("interpreter", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| fused_interpreter(b, &p, &s).1.len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("jit", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| jit.filter_project(b).unwrap().1[0].len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("hand_written", &label), |bench| {
            let (mut words, mut out) = (vec![], vec![]);
            bench.iter(|| batches.iter().map(|b| fused_hand(b, &mut words, &mut out)).sum::<usize>())
        });
        g.finish();

        let mut g = c.benchmark_group(format!("chain/{label}"));
        g.throughput(Throughput::Elements(rows_of(&batches) as u64));
        if rows > 10_000_000 {
            g.sample_size(10);
        }
        let e = chain();
        let jit = JitExprs::try_compile(&schema, None, std::slice::from_ref(&e)).expect("compiles");
        assert_eq!(chain_arrow(&batches[0]).to_data(), jit.project(&batches[0]).unwrap()[0].to_data());
        g.bench_function(BenchmarkId::new("arrow_kernels", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| chain_arrow(b).len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("interpreter", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| e.evaluate(b).unwrap().len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("jit", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| jit.project(b).unwrap()[0].len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("hand_written", &label), |bench| {
            let mut out = vec![];
            bench.iter(|| {
                for b in &batches {
                    chain_hand(b, &mut out);
                    black_box(&out);
                }
            })
        });
        g.finish();

        // The loop UDF is 100x the work per row: 1.2M rows only (100M would take minutes per
        // sample for the kernel-at-a-time variant).
        if rows > 10_000_000 {
            continue;
        }
        let mut g = c.benchmark_group(format!("udf_loop/{label}"));
        g.throughput(Throughput::Elements(rows_of(&batches) as u64));
        g.sample_size(10);
        let e = weighted::call(col("a")).alias("w");
        let jit = JitExprs::try_compile(&schema, None, std::slice::from_ref(&e)).expect("compiles");
        let interpreted = e.evaluate(&batches[0]).unwrap();
        assert_eq!(interpreted.to_data(), jit.project(&batches[0]).unwrap()[0].to_data());
        g.bench_function(BenchmarkId::new("arrow_kernels", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| loop_arrow(b).len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("interpreter", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| e.evaluate(b).unwrap().len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("jit", &label), |bench| {
            bench.iter(|| batches.iter().map(|b| jit.project(b).unwrap()[0].len()).sum::<usize>())
        });
        g.bench_function(BenchmarkId::new("hand_written", &label), |bench| {
            let mut out = vec![];
            bench.iter(|| {
                for b in &batches {
                    loop_hand(b, &mut out);
                    black_box(&out);
                }
            })
        });
        g.finish();
    }
    let stats = sabot::jit::cache_stats();
    eprintln!(
        "JIT: {} kernels compiled, {:?} in total, longest {:?}",
        stats.compiled, stats.compile_time, stats.max_compile_time
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
