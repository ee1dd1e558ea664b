use sabot::Record;

#[derive(Record)]
enum Side {
    Buy,
    Sell,
}

fn main() {}
