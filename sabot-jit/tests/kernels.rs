//! Compiled kernels over real Arrow arrays: nulls, slices with non-zero offsets, every length
//! from 0 to 67 (not multiples of the vector width or of 64), errors, SIMD vs scalar.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int8Array, Int32Array, Int64Array};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use arrow::error::ArrowError;
use sabot_jit::ir::{BinaryOp, Builder, Type, UnaryOp};
use sabot_jit::{Kernel, KernelCache, KernelSpec};

fn f64s(n: usize, nulls: bool, seed: u64) -> Float64Array {
    (0..n)
        .map(|i| {
            let v = ((i as u64 * 7919 + seed * 104729) % 1000) as f64 / 10.0 - 50.0;
            if nulls && (i + seed as usize) % 5 == 3 { None } else { Some(v) }
        })
        .collect()
}

/// Both the vectorized and the scalar kernel of `spec`.
fn both(spec: &KernelSpec) -> Vec<Kernel> {
    vec![Kernel::compile_with(spec.clone(), true).unwrap(), Kernel::compile_with(spec.clone(), false).unwrap()]
}

#[test]
fn arithmetic_over_lengths_nulls_and_offsets() {
    // (a + b) * 2 - a / b
    let mut b = Builder::new(&[Type::F64, Type::F64]);
    let (x, y) = (b.input(0), b.input(1));
    let s = b.add(x, y).unwrap();
    let two = b.f64(2.0);
    let s = b.mul(s, two).unwrap();
    let q = b.div(x, y).unwrap();
    let out = b.sub(s, q).unwrap();
    let program = b.finish(vec![out]);
    for nullable in [false, true] {
        let kernels = both(&KernelSpec::project(program.clone(), vec![nullable, nullable]));
        assert_eq!(kernels[0].lanes(), 2, "this program vectorizes");
        for len in 0..=67 {
            for offset in 0..3 {
                let a = f64s(len + offset, nullable, 1).slice(offset, len);
                let c = f64s(len + offset, nullable, 2).slice(offset, len);
                let expected: Float64Array = (0..len)
                    .map(|i| {
                        (a.is_valid(i) && c.is_valid(i)).then(|| {
                            let (x, y) = (a.value(i), c.value(i));
                            (x + y) * 2.0 - x / y
                        })
                    })
                    .collect();
                for k in &kernels {
                    let out = k.project(&[&a, &c]).unwrap();
                    let got = out[0].as_primitive::<Float64Type>();
                    assert_eq!(got.len(), len);
                    assert_eq!(got.nulls(), expected.nulls(), "len {len} offset {offset}");
                    for i in 0..len {
                        if expected.is_valid(i) {
                            assert_eq!(got.value(i).to_bits(), expected.value(i).to_bits(), "row {i}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fused_filter_and_projection_compacts() {
    // filter(a - b > 1) then s = (a - b) / ((a + b) / 2) * 1e4
    let mut b = Builder::new(&[Type::F64, Type::F64]);
    let (x, y) = (b.input(0), b.input(1));
    let d = b.sub(x, y).unwrap();
    let one = b.f64(1.0);
    let keep = b.binary(BinaryOp::Gt, d, one).unwrap();
    let m = b.add(x, y).unwrap();
    let two = b.f64(2.0);
    let m = b.div(m, two).unwrap();
    let s = b.div(d, m).unwrap();
    let k = b.f64(1e4);
    let s = b.mul(s, k).unwrap();
    let program = b.finish(vec![s]);
    for nullable in [false, true] {
        let kernels = both(&KernelSpec::filter(program.clone(), keep, vec![nullable, nullable]));
        for len in 0..=67 {
            let offset = len % 3;
            let a = f64s(len + offset, nullable, 3).slice(offset, len);
            let c = f64s(len + offset, nullable, 4).slice(offset, len);
            let mut sel = vec![];
            let mut values = vec![];
            for i in 0..len {
                let keep = a.is_valid(i) && c.is_valid(i) && a.value(i) - c.value(i) > 1.0;
                sel.push(keep);
                if keep {
                    let (x, y) = (a.value(i), c.value(i));
                    values.push((x - y) / ((x + y) / 2.0) * 1e4);
                }
            }
            for k in &kernels {
                let (selection, cols) = k.filter_project(&[&a, &c]).unwrap();
                assert_eq!(selection, BooleanArray::from(sel.clone()), "len {len}");
                assert_eq!(cols[0].as_primitive::<Float64Type>().values().to_vec(), values);
                assert_eq!(cols[0].null_count(), 0);
            }
        }
    }
}

#[test]
fn integer_overflow_and_division_by_zero_are_errors_except_in_null_rows() {
    let mut b = Builder::new(&[Type::I64, Type::I64]);
    let (x, y) = (b.input(0), b.input(1));
    let sum = b.add(x, y).unwrap();
    let p_add = b.clone().finish(vec![sum]);
    let q = b.div(x, y).unwrap();
    let p_div = b.clone().finish(vec![q]);
    let r = b.binary(BinaryOp::Rem, x, y).unwrap();
    let p_rem = b.finish(vec![r]);

    let big = Int64Array::from(vec![Some(1), Some(i64::MAX), Some(3)]);
    let one = Int64Array::from(vec![Some(1), Some(1), Some(1)]);
    let k = Kernel::compile(KernelSpec::project(p_add.clone(), vec![true, true])).unwrap();
    assert!(matches!(k.project(&[&big, &one]), Err(ArrowError::ArithmeticOverflow(_))));
    // the overflowing row is null: no error, a null
    let big_null = Int64Array::from(vec![Some(1), None, Some(3)]);
    let wrapped = Int64Array::from(vec![Some(1), Some(i64::MAX), Some(3)]);
    let null_one = Int64Array::from(vec![Some(1), None, Some(1)]);
    let out = k.project(&[&wrapped, &null_one]).unwrap();
    assert_eq!(out[0].as_primitive::<Int64Type>(), &Int64Array::from(vec![Some(2), None, Some(4)]));
    let out = k.project(&[&big_null, &one]).unwrap();
    assert_eq!(out[0].as_primitive::<Int64Type>(), &Int64Array::from(vec![Some(2), None, Some(4)]));

    let k = Kernel::compile(KernelSpec::project(p_div, vec![true, true])).unwrap();
    let zero = Int64Array::from(vec![Some(1), Some(0), Some(1)]);
    assert!(matches!(k.project(&[&one, &zero]), Err(ArrowError::DivideByZero)));
    let min = Int64Array::from(vec![i64::MIN]);
    let minus_one = Int64Array::from(vec![-1i64]);
    assert!(matches!(k.project(&[&min, &minus_one]), Err(ArrowError::ArithmeticOverflow(_))));
    let zero_null = Int64Array::from(vec![Some(1), None, Some(1)]);
    let out = k.project(&[&Int64Array::from(vec![7, 8, 9]), &zero_null]).unwrap();
    assert_eq!(out[0].as_primitive::<Int64Type>(), &Int64Array::from(vec![Some(7), None, Some(9)]));

    // MIN % -1 is 0, not an error (as Arrow's kernel)
    let k = Kernel::compile(KernelSpec::project(p_rem, vec![false, false])).unwrap();
    let out = k.project(&[&min, &minus_one]).unwrap();
    assert_eq!(out[0].as_primitive::<Int64Type>().value(0), 0);
}

#[test]
fn narrow_integers_overflow_at_their_width() {
    let mut b = Builder::new(&[Type::I32, Type::I32]);
    let (x, y) = (b.input(0), b.input(1));
    let m = b.mul(x, y).unwrap();
    let k = Kernel::compile(KernelSpec::project(b.finish(vec![m]), vec![false, false])).unwrap();
    let a = Int32Array::from(vec![3, 65536]);
    let out = k.project(&[&a, &Int32Array::from(vec![4, 2])]).unwrap();
    assert_eq!(out[0].as_primitive::<Int32Type>().values().to_vec(), vec![12, 131072]);
    assert!(k.project(&[&a, &Int32Array::from(vec![4, 65536])]).is_err());

    // checked casts: i64 -> i8 and f64 -> i32
    let mut b = Builder::new(&[Type::I64]);
    let x = b.input(0);
    let c = b.cast(x, Type::I8);
    let k = Kernel::compile(KernelSpec::project(b.finish(vec![c]), vec![false])).unwrap();
    let out = k.project(&[&Int64Array::from(vec![-128, 127])]).unwrap();
    assert_eq!(out[0].as_ref(), &Int8Array::from(vec![-128, 127]) as &dyn Array);
    assert!(matches!(k.project(&[&Int64Array::from(vec![128])]), Err(ArrowError::CastError(_))));

    let mut b = Builder::new(&[Type::F64]);
    let x = b.input(0);
    let c = b.cast(x, Type::I32);
    let k = Kernel::compile(KernelSpec::project(b.finish(vec![c]), vec![false])).unwrap();
    let out = k.project(&[&Float64Array::from(vec![-2.9, 2147483647.5])]).unwrap();
    assert_eq!(out[0].as_primitive::<Int32Type>().values().to_vec(), vec![-2, i32::MAX]);
    for bad in [f64::NAN, f64::INFINITY, 2147483648.0, -2147483649.0] {
        assert!(k.project(&[&Float64Array::from(vec![bad])]).is_err(), "{bad}");
    }
}

#[test]
fn float_comparisons_use_total_order_like_arrow() {
    let values = vec![f64::NAN, -0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 1.5, -f64::NAN];
    let mut b = Builder::new(&[Type::F64, Type::F64]);
    let (x, y) = (b.input(0), b.input(1));
    let ops = [BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge];
    let outs: Vec<_> = ops.iter().map(|op| b.binary(*op, x, y).unwrap()).collect();
    let ieee = [BinaryOp::IeeeEq, BinaryOp::IeeeLt, BinaryOp::IeeeGe];
    let ieee_outs: Vec<_> = ieee.iter().map(|op| b.binary(*op, x, y).unwrap()).collect();
    let mut all = outs.clone();
    all.extend(&ieee_outs);
    let spec = KernelSpec::project(b.finish(all), vec![false, false]);
    let (mut l, mut r) = (vec![], vec![]);
    for a in &values {
        for c in &values {
            l.push(*a);
            r.push(*c);
        }
    }
    let (la, ra) = (Float64Array::from(l.clone()), Float64Array::from(r.clone()));
    for k in both(&spec) {
        let out = k.project(&[&la, &ra]).unwrap();
        for (i, (a, c)) in l.iter().zip(&r).enumerate() {
            let ord = a.total_cmp(c);
            let expect = [ord.is_eq(), ord.is_ne(), ord.is_lt(), ord.is_le(), ord.is_gt(), ord.is_ge()];
            for (j, e) in expect.iter().enumerate() {
                assert_eq!(out[j].as_boolean().value(i), *e, "{a} {:?} {c}", ops[j]);
            }
            let ieee_expect = [a == c, a < c, a >= c];
            for (j, e) in ieee_expect.iter().enumerate() {
                assert_eq!(out[ops.len() + j].as_boolean().value(i), *e, "{a} {:?} {c}", ieee[j]);
            }
        }
    }
}

#[test]
fn three_valued_logic_and_is_null() {
    let vals = [Some(true), Some(false), None];
    let (mut l, mut r) = (vec![], vec![]);
    for a in vals {
        for c in vals {
            l.push(a);
            r.push(c);
        }
    }
    let mut b = Builder::new(&[Type::Bool, Type::Bool]);
    let (x, y) = (b.input(0), b.input(1));
    let and = b.binary(BinaryOp::And, x, y).unwrap();
    let or = b.binary(BinaryOp::Or, x, y).unwrap();
    let not = b.unary(UnaryOp::Not, x).unwrap();
    let is_null = b.unary(UnaryOp::IsNull, y).unwrap();
    let spec = KernelSpec::project(b.finish(vec![and, or, not, is_null]), vec![true, true]);
    let (la, ra) = (BooleanArray::from(l.clone()), BooleanArray::from(r.clone()));
    for k in both(&spec) {
        let out = k.project(&[&la, &ra]).unwrap();
        let expected_and = arrow::compute::and_kleene(&la, &ra).unwrap();
        let expected_or = arrow::compute::or_kleene(&la, &ra).unwrap();
        assert_eq!(out[0].as_boolean(), &expected_and);
        assert_eq!(out[1].as_boolean(), &expected_or);
        assert_eq!(out[2].as_boolean(), &arrow::compute::not(&la).unwrap());
        assert_eq!(out[3].as_boolean(), &arrow::compute::is_null(&ra).unwrap());
    }
}

#[test]
fn bounded_loops_and_lazy_if() {
    // total = sum over j in 0..100 of v * j; then if v != 0 { 1 / v } else { 0 } on integers
    let mut b = Builder::new(&[Type::F64, Type::I64]);
    let (v, n) = (b.input(0), b.input(1));
    let j = b.var(Type::I64);
    let total = b.var(Type::F64);
    let zero = b.f64(0.0);
    let start = b.i64(0);
    let end = b.i64(100);
    let jf = b.get(j);
    let jf = b.cast(jf, Type::F64);
    let vj = b.mul(v, jf).unwrap();
    let t = b.get(total);
    let next = b.add(t, vj).unwrap();
    let lp = b.for_range(j, start, end, vec![(total, zero)], vec![next]).unwrap();
    let sum = b.loop_out(lp, 0).unwrap();
    let izero = b.i64(0);
    let ione = b.i64(1);
    let nonzero = b.binary(BinaryOp::Ne, n, izero).unwrap();
    let inv = b.div(ione, n).unwrap();
    let safe = b.if_else(nonzero, inv, izero).unwrap();
    let eager = b.select(nonzero, inv, izero).unwrap();
    let loop_only = b.clone().finish(vec![sum]);
    let lazy_program = b.clone().finish(vec![sum, safe]);
    let eager_program = b.finish(vec![eager]);

    let vs = Float64Array::from(vec![1.0, 0.5, -2.0]);
    let ns = Int64Array::from(vec![1, 0, 2]);
    let k = Kernel::compile(KernelSpec::project(lazy_program, vec![false, false])).unwrap();
    assert_eq!(k.lanes(), 1, "loops are scalar");
    let out = k.project(&[&vs, &ns]).unwrap();
    let expect: Vec<f64> = [1.0, 0.5, -2.0].iter().map(|v| (0..100).map(|j| v * j as f64).sum()).collect();
    assert_eq!(out[0].as_primitive::<Float64Type>().values().to_vec(), expect);
    assert_eq!(out[1].as_primitive::<Int64Type>().values().to_vec(), vec![1, 0, 0]);
    // The loop alone (constant range, 64-bit values) runs on 2-lane vectors: same results.
    // (Values in a loop must be non-null: nullable inputs reach loops through `strict`.)
    let many: Float64Array = (0..67).map(|i| i as f64 * 0.37 - 3.0).collect();
    let ones = Int64Array::from(vec![1; 67]);
    let kernels = both(&KernelSpec::project(loop_only, vec![false, false]));
    assert_eq!(kernels[0].lanes(), 2);
    let (v1, v2) = (kernels[0].project(&[&many, &ones]).unwrap(), kernels[1].project(&[&many, &ones]).unwrap());
    assert_eq!(v1[0].to_data(), v2[0].to_data());
    // SQL CASE semantics evaluate both branches: the division by zero counts
    let k = Kernel::compile(KernelSpec::project(eager_program, vec![false, false])).unwrap();
    assert!(matches!(k.project(&[&vs, &ns]), Err(ArrowError::DivideByZero)));
}

#[test]
fn cache_compiles_once_and_fast() {
    let cache = KernelCache::new();
    let mut b = Builder::new(&[Type::F64, Type::F64]);
    let (x, y) = (b.input(0), b.input(1));
    let d = b.sub(x, y).unwrap();
    let t = b.f64(0.0);
    let keep = b.binary(BinaryOp::Gt, d, t).unwrap();
    let spec = KernelSpec::filter(b.finish(vec![d]), keep, vec![false, false]);
    let k1 = cache.get_or_compile(&spec).unwrap();
    let k2 = cache.get_or_compile(&spec).unwrap();
    assert!(Arc::ptr_eq(&k1, &k2));
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.compiled), (1, 1, 1));
    // A typical expression compiles in about a millisecond (generous bound for debug builds
    // on a loaded machine).
    assert!(k1.compile_time().as_millis() < 200, "{:?}", k1.compile_time());
    let other = KernelSpec { nullable: vec![true, false], ..spec };
    cache.get_or_compile(&other).unwrap();
    assert_eq!(cache.len(), 2);
}

#[test]
fn type_and_shape_errors() {
    let mut b = Builder::new(&[Type::F64]);
    let x = b.input(0);
    let i = b.i64(1);
    assert!(b.add(x, i).is_err());
    let k = Kernel::compile(KernelSpec::project(b.finish(vec![x]), vec![false])).unwrap();
    let ints: ArrayRef = Arc::new(Int64Array::from(vec![1]));
    assert!(k.project(&[ints.as_ref()]).is_err());
    let with_null = Float64Array::from(vec![Some(1.0), None]);
    assert!(k.project(&[&with_null]).is_err(), "compiled for no nulls");
}
