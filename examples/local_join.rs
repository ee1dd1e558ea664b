//! Enrich quotes with security reference data through a hash join.
//!
//! 10 quotes (instrumentId 1, 5, 10, 3, 7, 2, 8, 4, 6, 9) join 20 securities (ID 0..19) on
//! `instrumentId = ID` → 10 rows `[instrumentId, price, size, CUSIP, NAME]`.
//!
//! Run: `cargo run --release --example local_join`

use sabot::prelude::*;

/// A price quote.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Quote {
    #[record(rename = "instrumentId")]
    pub instrument_id: i64,
    pub price: f64,
    pub size: i64,
}

/// Reference data of one security.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Security {
    #[record(rename = "ID")]
    pub id: i64,
    #[record(rename = "CUSIP")]
    pub cusip: String,
    #[record(rename = "NAME")]
    pub name: String,
}

/// A quote with its security's identifiers.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct EnrichedQuote {
    #[record(rename = "instrumentId")]
    pub instrument_id: i64,
    pub price: f64,
    pub size: i64,
    #[record(rename = "CUSIP")]
    pub cusip: String,
    #[record(rename = "NAME")]
    pub name: String,
}

/// The 10 quotes.
pub fn quotes() -> Vec<Quote> {
    [1, 5, 10, 3, 7, 2, 8, 4, 6, 9]
        .iter()
        .enumerate()
        .map(|(i, &id)| Quote { instrument_id: id, price: 100.0 + i as f64 * 0.25, size: 100 * (i as i64 + 1) })
        .collect()
}

/// The 20 securities.
pub fn securities() -> Vec<Security> {
    (0..20)
        .map(|id| Security { id, cusip: format!("{:09}", 37_833_100 + id), name: format!("Security {id}") })
        .collect()
}

/// The join, not yet run.
pub fn pipeline() -> Result<Stream<EnrichedQuote>> {
    let quotes = Stream::from_records(quotes());
    let securities = Stream::from_records(securities());
    quotes
        .join(&securities, [("instrumentId", "ID")], JoinType::Inner)?
        .select(["instrumentId", "price", "size", "CUSIP", "NAME"])?
        .typed()
}

fn main() -> Result<()> {
    let joined = pipeline()?;
    println!("{}", joined.explain()?);
    joined.show(10)?;
    for q in joined.collect_records()? {
        println!("{} @ {:.2} x {} -> {} ({})", q.instrument_id, q.price, q.size, q.cusip, q.name);
    }
    Ok(())
}
