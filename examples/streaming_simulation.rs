//! Streaming is infinite batching: an async producer emits batches into an unbounded source,
//! the pipeline filters and derives a column, and per-batch statistics print as batches arrive.
//!
//! 10 batches × 100 events with a global id and `value = id × 0.5`; keep `value > 50`; add
//! `doubled_value` → 899 rows in total, sum of `value` 247,225.0.
//!
//! Run: `cargo run --release --example streaming_simulation`

use std::sync::Arc;
use std::time::Duration;

use sabot::deps::arrow::array::{Array, Float64Array, Int64Array, RecordBatch};
use sabot::deps::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot::io::channel::ChannelSource;
use sabot::prelude::*;

/// Statistics of one output batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    pub rows: usize,
    pub value_sum: f64,
    pub doubled_sum: f64,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("value", DataType::Float64, false)]))
}

/// Runs the simulation: `batches` × `per_batch` events sent by a tokio task every `interval`.
pub fn run(batches: usize, per_batch: usize, interval: Duration) -> Result<Vec<BatchStats>> {
    let (source, sender) = ChannelSource::new(schema(), 4);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| SabotError::io("<tokio runtime>", e))?;
    let producer = std::thread::spawn(move || {
        runtime.block_on(async move {
            let mut ticker = tokio::time::interval(interval);
            for b in 0..batches {
                ticker.tick().await;
                let ids: Vec<i64> = (0..per_batch).map(|i| (b * per_batch + i) as i64).collect();
                let values: Vec<f64> = ids.iter().map(|&id| id as f64 * 0.5).collect();
                let batch = RecordBatch::try_new(
                    schema(),
                    vec![Arc::new(Int64Array::from(ids)), Arc::new(Float64Array::from(values))],
                )
                .expect("schema matches");
                if sender.send(batch).await.is_err() {
                    return;
                }
            }
        })
    });

    let mut stats = vec![];
    Stream::from_source(Arc::new(source))
        .filter(col("value").gt(lit(50.0)))?
        .with_column("doubled_value", col("value") * lit(2.0))?
        .for_each_batch(|batch| {
            let sum = |name: &str| -> f64 {
                let column = batch.column_by_name(name).expect("column exists");
                let values = column.as_any().downcast_ref::<Float64Array>().expect("f64 column");
                values.iter().flatten().sum()
            };
            let s = BatchStats { rows: batch.num_rows(), value_sum: sum("value"), doubled_sum: sum("doubled_value") };
            tracing::info!(rows = s.rows, value_sum = s.value_sum, "batch");
            stats.push(s);
            Ok(())
        })?;
    producer.join().map_err(|_| SabotError::Execution("producer panicked".into()))?;
    Ok(stats)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let stats = run(10, 100, Duration::from_millis(50))?;
    println!("{:>5} {:>6} {:>12} {:>14}", "batch", "rows", "sum(value)", "sum(doubled)");
    for (i, s) in stats.iter().enumerate() {
        println!("{i:>5} {:>6} {:>12.1} {:>14.1}", s.rows, s.value_sum, s.doubled_sum);
    }
    let rows: usize = stats.iter().map(|s| s.rows).sum();
    let total: f64 = stats.iter().map(|s| s.value_sum).sum();
    println!("total: {rows} rows, sum of value {total:.1}");
    Ok(())
}
