#[sabot::app(name = "nothing")]
struct Nothing;

fn main() {}
