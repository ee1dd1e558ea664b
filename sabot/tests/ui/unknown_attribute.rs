use sabot::Record;

#[derive(Record)]
struct Trade {
    #[record(rename = "px", default)]
    price: f64,
}

fn main() {}
