// A #[udf] parameter must be a number or a bool: a String points at the type.

#[sabot::udf]
fn shout(name: String) -> i64 {
    name.len() as i64
}

fn main() {}
