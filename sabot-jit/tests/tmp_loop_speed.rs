use arrow::array::*;
use sabot_jit::ir::*;
use sabot_jit::*;
#[test]
fn loop_speed() {
    let mut b = Builder::new(&[Type::F64]);
    let v = b.input(0);
    let j = b.var(Type::I64);
    let total = b.var(Type::F64);
    let zero = b.f64(0.0);
    let (s, e) = (b.i64(0), b.i64(100));
    let jf = b.get(j);
    let jf = b.cast(jf, Type::F64);
    let vj = b.mul(v, jf).unwrap();
    let t = b.get(total);
    let next = b.add(t, vj).unwrap();
    let lp = b.for_range(j, s, e, vec![(total, zero)], vec![next]).unwrap();
    let out = b.loop_out(lp, 0).unwrap();
    let spec = KernelSpec::project(b.finish(vec![out]), vec![false]);
    let a = Float64Array::from((0..1_200_000).map(|i| i as f64 * 0.001).collect::<Vec<_>>());
    for vec in [true, false] {
        let k = Kernel::compile_with(spec.clone(), vec).unwrap();
        k.project(&[&a]).unwrap();
        let t0 = std::time::Instant::now();
        for _ in 0..5 { k.project(&[&a]).unwrap(); }
        let dt = t0.elapsed().as_secs_f64() / 5.0;
        println!("lanes {} compile {:?}: {:.1} Mrows/s", k.lanes(), k.compile_time(), 1.2 / dt);
    }
}
