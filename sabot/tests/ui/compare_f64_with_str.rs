use sabot::Record;

#[derive(Record)]
struct Trade {
    symbol: String,
    price: f64,
}

fn main() {
    let c = Trade::cols();
    let _ok = c.price.gt(100.0);
    let _bad = c.price.gt("abc");
    let _bad_col = c.price.eq(c.symbol);
}
