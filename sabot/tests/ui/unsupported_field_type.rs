use std::collections::HashMap;

use sabot::Record;

#[derive(Record)]
struct Counts {
    by_symbol: HashMap<String, i64>,
    tags: Vec<String>,
    pair: (i64, f64),
}

fn main() {}
