// A method outside the supported set (sqrt, abs, floor, ceil, trunc, round) is a compile error
// at the method, unless the attribute is #[udf(fallback)].

#[sabot::udf]
fn digits(x: f64) -> f64 {
    x.to_string().len() as f64
}

fn main() {}
