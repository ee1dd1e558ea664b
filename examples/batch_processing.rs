//! Parquet in, Parquet out: write, read back with pushdown, transform, write, verify.
//!
//! 1,000 rows `{transaction_id 1..=1000, amount = 100 + 0.5 i, category A/B/C}` are written to
//! Parquet, read back, filtered on `amount > 500`, given a `tax` column, projected to four
//! columns, written to a second Parquet file, and that file is read back and checked.
//!
//! Run: `cargo run --release --example batch_processing [-- DIR]`

use std::path::{Path, PathBuf};

use sabot::prelude::*;

/// One input row.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Transaction {
    pub transaction_id: i64,
    pub amount: f64,
    pub category: String,
}

/// One output row.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Taxed {
    pub transaction_id: i64,
    pub amount: f64,
    pub tax: f64,
    pub category: String,
}

/// The input rows.
pub fn transactions() -> Vec<Transaction> {
    (1..=1000)
        .map(|i| Transaction {
            transaction_id: i,
            amount: 100.0 + 0.5 * i as f64,
            category: ["A", "B", "C"][(i % 3) as usize].to_string(),
        })
        .collect()
}

/// Runs the whole job in `dir`; returns the rows read back from the output file.
pub fn run(dir: &Path) -> Result<Vec<Taxed>> {
    std::fs::create_dir_all(dir).map_err(|e| SabotError::io(dir, e))?;
    let input = dir.join("transactions.parquet");
    let output = dir.join("taxed.parquet");
    let written = Stream::from_records(transactions()).to_parquet(&input)?;
    tracing::info!(rows = written, path = %input.display(), "wrote input");

    let stream = Stream::from_parquet(&input)?
        .filter(col("amount").gt(lit(500.0)))?
        .with_column("tax", col("amount") * lit(0.1))?
        .select(["transaction_id", "amount", "tax", "category"])?;
    tracing::info!("plan:\n{}", stream.explain()?);
    let rows = stream.to_parquet(&output)?;
    tracing::info!(rows, path = %output.display(), "wrote output");

    Stream::from_parquet(&output)?.typed::<Taxed>()?.collect_records()
}

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sabot-batch-processing"));
    let rows = run(&dir)?;
    let total_tax: f64 = rows.iter().map(|r| r.tax).sum();
    println!("{} rows written to {}, total tax {total_tax:.2}", rows.len(), dir.join("taxed.parquet").display());
    Stream::from_parquet(dir.join("taxed.parquet"))?.show(5)?;
    Ok(())
}
