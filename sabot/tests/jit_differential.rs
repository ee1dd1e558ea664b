//! Differential tests: random expression trees over random arrays with nulls give identical
//! results (bit for bit, nulls included) or both fail, compiled by the JIT or interpreted.
//! Edge cases are drawn on purpose: NaN, ±infinity, -0.0, i64/i32 extremes (overflow),
//! zero divisors, empty batches, lengths that are not multiples of the vector width or of 64,
//! and sliced arrays with non-zero offsets.

#![cfg(feature = "jit")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use sabot::expr::{Expr, ScalarValue, coalesce, col, lit, when};
use sabot::jit::JitExprs;

static COMPILED: AtomicUsize = AtomicUsize::new(0);
static FALLBACK: AtomicUsize = AtomicUsize::new(0);

const I64_SPECIAL: [i64; 8] = [0, 1, -1, 2, i64::MAX, i64::MIN, 1 << 40, -7];
const I32_SPECIAL: [i32; 6] = [0, 1, -1, i32::MAX, i32::MIN, 46341];
const F64_SPECIAL: [f64; 9] = [0.0, -0.0, 1.5, -2.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, 3.0e9];

fn i64_value() -> impl Strategy<Value = i64> {
    prop_oneof![3 => -1000i64..1000, 1 => proptest::sample::select(I64_SPECIAL.to_vec())]
}

fn i32_value() -> impl Strategy<Value = i32> {
    prop_oneof![3 => -1000i32..1000, 1 => proptest::sample::select(I32_SPECIAL.to_vec())]
}

fn f64_value() -> impl Strategy<Value = f64> {
    prop_oneof![3 => -100.0f64..100.0, 1 => proptest::sample::select(F64_SPECIAL.to_vec())]
}

fn opt<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Option<T>> {
    prop_oneof![5 => s.prop_map(Some), 1 => Just(None)].boxed()
}

/// A batch of columns a, b (i64), c (i32), x, y (f64), z (f32), p, q (bool), sliced at `offset`.
fn batch() -> impl Strategy<Value = RecordBatch> {
    (0usize..140, 0usize..4).prop_flat_map(|(len, offset)| {
        let n = len + offset;
        (
            proptest::collection::vec(opt(i64_value()), n),
            proptest::collection::vec(opt(i64_value()), n),
            proptest::collection::vec(opt(i32_value()), n),
            proptest::collection::vec(opt(f64_value()), n),
            proptest::collection::vec(opt(f64_value()), n),
            proptest::collection::vec(opt(f64_value().prop_map(|v| v as f32)), n),
            proptest::collection::vec(opt(any::<bool>()), n),
            proptest::collection::vec(opt(any::<bool>()), n),
            any::<[bool; 8]>(),
        )
            .prop_map(move |(a, b, c, x, y, z, p, q, no_nulls)| {
                // Some columns have no nulls at all (the kernels differ).
                fn strip<T>(v: Vec<Option<T>>, on: bool, fill: T) -> Vec<Option<T>>
                where
                    T: Clone,
                {
                    if on { v.into_iter().map(|o| Some(o.unwrap_or(fill.clone()))).collect() } else { v }
                }
                let columns: Vec<(&str, ArrayRef)> = vec![
                    ("a", Arc::new(Int64Array::from(strip(a, no_nulls[0], 3)))),
                    ("b", Arc::new(Int64Array::from(strip(b, no_nulls[1], 5)))),
                    ("c", Arc::new(Int32Array::from(strip(c, no_nulls[2], 7)))),
                    ("x", Arc::new(Float64Array::from(strip(x, no_nulls[3], 0.5)))),
                    ("y", Arc::new(Float64Array::from(strip(y, no_nulls[4], -1.0)))),
                    ("z", Arc::new(Float32Array::from(strip(z, no_nulls[5], 2.0)))),
                    ("p", Arc::new(BooleanArray::from(strip(p, no_nulls[6], true)))),
                    ("q", Arc::new(BooleanArray::from(strip(q, no_nulls[7], false)))),
                ];
                let columns: Vec<(&str, ArrayRef)> =
                    columns.into_iter().map(|(name, a)| (name, a.slice(offset, len))).collect();
                RecordBatch::try_from_iter(columns).expect("batch")
            })
    })
}

fn num_leaf() -> BoxedStrategy<Expr> {
    prop_oneof![
        4 => proptest::sample::select(vec!["a", "b", "c", "x", "y", "z"]).prop_map(col),
        1 => i64_value().prop_map(lit),
        1 => i32_value().prop_map(lit),
        1 => f64_value().prop_map(lit),
        1 => (-5i32..5).prop_map(lit),
        1 => Just(Expr::Literal(ScalarValue::Int64(None))),
    ]
    .boxed()
}

fn bool_leaf() -> BoxedStrategy<Expr> {
    prop_oneof![
        3 => proptest::sample::select(vec!["p", "q"]).prop_map(col),
        1 => any::<bool>().prop_map(lit),
        1 => Just(Expr::Literal(ScalarValue::Boolean(None))),
    ]
    .boxed()
}

fn num(depth: u32) -> BoxedStrategy<Expr> {
    if depth == 0 {
        return num_leaf();
    }
    let n = num(depth - 1);
    let b = boolean(depth - 1);
    let types = proptest::sample::select(vec![DataType::Int64, DataType::Int32, DataType::Float64, DataType::Float32]);
    prop_oneof![
        2 => num_leaf(),
        6 => (n.clone(), 0..9usize, n.clone()).prop_map(|(l, op, r)| match op {
            0 | 1 => l + r,
            2 | 3 => l - r,
            4 | 5 => l * r,
            6 | 7 => l / r,
            _ => l % r,
        }),
        1 => n.clone().prop_map(|e| -e),
        1 => (n.clone(), 0..5usize).prop_map(|(e, f)| match f {
            0 => e.abs(),
            1 => e.sqrt(),
            2 => e.floor(),
            3 => e.ceil(),
            _ => e.round(2),
        }),
        1 => (n.clone(), types).prop_map(|(e, t)| e.cast(t)),
        1 => (b, n.clone(), n.clone()).prop_map(|(c, t, o)| when(c, t).otherwise(o)),
        1 => (n.clone(), n).prop_map(|(l, r)| coalesce([l, r])),
    ]
    .boxed()
}

fn boolean(depth: u32) -> BoxedStrategy<Expr> {
    if depth == 0 {
        return bool_leaf();
    }
    let n = num(depth - 1);
    let b = boolean(depth - 1);
    prop_oneof![
        1 => bool_leaf(),
        4 => (n.clone(), 0..6usize, n.clone()).prop_map(|(l, op, r)| match op {
            0 => l.eq(r),
            1 => l.not_eq(r),
            2 => l.lt(r),
            3 => l.lt_eq(r),
            4 => l.gt(r),
            _ => l.gt_eq(r),
        }),
        2 => (b.clone(), any::<bool>(), b.clone()).prop_map(|(l, and, r)| if and { l.and(r) } else { l.or(r) }),
        1 => b.prop_map(|e| !e),
        1 => (n, any::<bool>()).prop_map(|(e, null)| if null { e.is_null() } else { e.is_not_null() }),
    ]
    .boxed()
}

/// IEEE 754 leaves the sign and payload of a NaN produced by arithmetic unspecified (x86's default
/// NaN is negative; Rust's `f64::NAN` is positive), so NaNs compare equal whatever their bits.
fn canonical_nan(array: &ArrayRef) -> ArrayRef {
    use arrow::array::{AsArray, Float64Array};
    use arrow::datatypes::Float64Type;
    if array.data_type() != &arrow::datatypes::DataType::Float64 {
        return array.clone();
    }
    let values = array.as_primitive::<Float64Type>();
    let canonical: Vec<f64> = values.values().iter().map(|v| if v.is_nan() { f64::NAN } else { *v }).collect();
    std::sync::Arc::new(Float64Array::new(canonical.into(), values.nulls().cloned()))
}

fn same(expr: &str, interpreted: sabot::Result<ArrayRef>, compiled: sabot::Result<ArrayRef>) {
    match (interpreted, compiled) {
        (Ok(i), Ok(c)) => {
            assert_eq!(i.data_type(), c.data_type(), "{expr}");
            let (i, c) = (canonical_nan(&i), canonical_nan(&c));
            assert_eq!(i.to_data(), c.to_data(), "{expr}:\ninterpreted {i:?}\ncompiled {c:?}");
        }
        (Err(_), Err(_)) => {}
        (i, c) => panic!("{expr}: interpreted {i:?}, compiled {c:?}"),
    }
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 400, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn projections_match(batch in batch(), e in num(3)) {
        let schema = batch.schema();
        prop_assume!(e.data_type(&schema).is_ok());
        let Some(jit) = JitExprs::try_new(&schema, None, std::slice::from_ref(&e)) else {
            FALLBACK.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        COMPILED.fetch_add(1, Ordering::Relaxed);
        same(&e.to_string(), e.evaluate(&batch), jit.project(&batch).map(|mut v| v.remove(0)));
    }

    #[test]
    fn predicates_match(batch in batch(), e in boolean(3)) {
        let schema = batch.schema();
        prop_assume!(e.data_type(&schema).is_ok());
        let Some(jit) = JitExprs::try_new(&schema, Some(&e), &[]) else {
            FALLBACK.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        COMPILED.fetch_add(1, Ordering::Relaxed);
        let interpreted = e.evaluate_predicate(&batch).map(|m| Arc::new(m) as ArrayRef);
        let compiled = jit.filter_project(&batch).map(|(m, _)| Arc::new(m) as ArrayRef);
        same(&e.to_string(), interpreted, compiled);
        // boolean projections (with their nulls) too
        if let Some(jit) = JitExprs::try_new(&schema, None, std::slice::from_ref(&e)) {
            same(&e.to_string(), e.evaluate(&batch), jit.project(&batch).map(|mut v| v.remove(0)));
        }
    }

    #[test]
    fn fused_filter_projection_matches(batch in batch(), p in boolean(2), e in num(2)) {
        let schema = batch.schema();
        prop_assume!(p.data_type(&schema).is_ok() && e.data_type(&schema).is_ok());
        let Some(jit) = JitExprs::try_new(&schema, Some(&p), std::slice::from_ref(&e)) else {
            FALLBACK.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        COMPILED.fetch_add(1, Ordering::Relaxed);
        let interpreted = p.evaluate_predicate(&batch).and_then(|mask| {
            let kept = filter_record_batch(&batch, &mask)?;
            e.evaluate(&kept)
        });
        let compiled = jit.filter_project(&batch).map(|(_, mut v)| v.remove(0));
        same(&format!("filter {p} project {e}"), interpreted, compiled);
    }
}

/// The generators reach the JIT often (the differential tests are not vacuous).
#[test]
fn most_generated_expressions_compile() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let schema = batch().new_tree(&mut runner).expect("tree").current().schema();
    let (mut compiled, mut total) = (0, 0);
    for _ in 0..200 {
        let e = num(3).new_tree(&mut runner).expect("tree").current();
        if e.data_type(&schema).is_err() {
            continue;
        }
        total += 1;
        match JitExprs::try_compile(&schema, None, std::slice::from_ref(&e)) {
            Ok(_) => compiled += 1,
            Err(reason) => eprintln!("fallback: {reason}"),
        }
    }
    eprintln!("compiled {compiled} of {total} generated projections");
    assert!(compiled * 2 > total, "compiled {compiled} of {total}");
    let _ = (COMPILED.load(Ordering::Relaxed), FALLBACK.load(Ordering::Relaxed));
}
