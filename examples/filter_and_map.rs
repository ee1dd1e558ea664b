//! Filter, derive a column, and project: the smallest useful Sabot pipeline.
//!
//! 1,000 transactions `{id, amount = 100 + (i % 500), category A/B}`; keep `amount > 300`,
//! add `tax = 0.1 × amount`, select four columns → 598 rows × 4 columns.
//!
//! Run: `cargo run --release --example filter_and_map`

use sabot::prelude::*;

/// One input row.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Transaction {
    pub id: i64,
    pub amount: f64,
    pub category: String,
}

/// The input: 1,000 deterministic transactions.
pub fn transactions() -> Vec<Transaction> {
    (0..1000)
        .map(|i| Transaction {
            id: i,
            amount: 100.0 + (i % 500) as f64,
            category: if i % 2 == 0 { "A" } else { "B" }.to_string(),
        })
        .collect()
}

/// The pipeline, not yet run.
pub fn pipeline() -> Result<Stream> {
    let amount = Transaction::cols().amount;
    Stream::from_records(transactions())
        .filter(amount.gt(300.0))?
        .with_column("tax", amount * 0.1)?
        .select(["id", "amount", "tax", "category"])
}

fn main() -> Result<()> {
    let stream = pipeline()?;
    println!("{}", stream.explain()?);
    let result = stream.collect_batch()?;
    stream.show(5)?;
    println!("{} rows × {} columns", result.num_rows(), result.num_columns());
    Ok(())
}
