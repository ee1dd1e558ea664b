//! Keyed state: a running count, total and average per account in `ValueState`, printed after
//! every batch and as a final table, once with the in-memory backend and once with RocksDB
//! (when built with `--features rocksdb`).
//!
//! 10 batches × 10 transactions over accounts ACC_0..ACC_2.
//!
//! Run: `cargo run --release --example stateful_processing [--features rocksdb]`

use std::collections::BTreeMap;
use std::sync::Arc;

use sabot::io::channel::ChannelSource;
use sabot::operator::{KeyedProcessFunction, ProcessContext};
use sabot::prelude::*;
use sabot::state::{StateBackend, ValueState, ValueStateDescriptor};
use serde::{Deserialize, Serialize};

/// One transaction.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Transaction {
    pub account: String,
    pub amount: f64,
    pub batch: i64,
}

/// The running statistics of an account after one of its transactions.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct AccountStats {
    pub account: String,
    pub batch: i64,
    pub count: i64,
    pub total: f64,
    pub average: f64,
}

/// What the state keeps per account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Running {
    count: i64,
    total: f64,
}

/// Updates the account's running statistics with each transaction.
#[derive(Default)]
pub struct RunningStats {
    running: Option<ValueState<Running>>,
}

impl KeyedProcessFunction for RunningStats {
    type In = Transaction;
    type Out = AccountStats;

    fn open(&mut self, ctx: &mut ProcessContext<'_>) -> Result<()> {
        self.running = Some(ctx.state().value_state(&ValueStateDescriptor::new("running"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        tx: TransactionView<'_>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Vec<AccountStats>,
    ) -> Result<()> {
        let state = self.running.expect("opened");
        let mut running = state.value(ctx.state())?.unwrap_or_default();
        running.count += 1;
        running.total += tx.amount;
        state.update(ctx.state(), running.clone())?;
        out.push(AccountStats {
            account: tx.account.to_string(),
            batch: tx.batch,
            count: running.count,
            total: running.total,
            average: running.total / running.count as f64,
        });
        Ok(())
    }
}

/// Batch `b` of the input: 10 transactions, transaction `i` (global) on `ACC_{i % 3}` for `10 + i`.
pub fn batch(b: i64) -> Vec<Transaction> {
    (b * 10..b * 10 + 10)
        .map(|i| Transaction { account: format!("ACC_{}", i % 3), amount: 10.0 + i as f64, batch: b })
        .collect()
}

/// Runs the job with `backend`; returns every emitted update, in order.
pub fn run(backend: StateBackend) -> Result<Vec<AccountStats>> {
    let (source, sender) = ChannelSource::new(Transaction::schema(), 2);
    let producer = std::thread::spawn(move || {
        for b in 0..10 {
            if sender.blocking_send(Transaction::to_batch(&batch(b))).is_err() {
                return;
            }
        }
    });
    let stream = Stream::from_source(Arc::new(source))
        .with_config(ExecConfig::default().with_parallelism(1).with_state_backend(backend))
        .key_by(["account"])
        .process(RunningStats::default)?;
    let mut updates = vec![];
    stream.for_each_batch(|batch| {
        let stats = AccountStats::from_batch(&batch)?;
        for s in &stats {
            println!(
                "  batch {} {}: count {:>2} total {:>7.1} average {:>6.2}",
                s.batch, s.account, s.count, s.total, s.average
            );
        }
        updates.extend(stats);
        Ok(())
    })?;
    producer.join().map_err(|_| SabotError::Execution("producer panicked".into()))?;
    Ok(updates)
}

fn print_final(updates: &[AccountStats]) {
    let last: BTreeMap<&str, &AccountStats> = updates.iter().map(|s| (s.account.as_str(), s)).collect();
    println!("\n{:<8} {:>6} {:>9} {:>9}", "account", "count", "total", "average");
    for s in last.values() {
        println!("{:<8} {:>6} {:>9.1} {:>9.2}", s.account, s.count, s.total, s.average);
    }
}

fn main() -> Result<()> {
    println!("== memory backend ==");
    print_final(&run(StateBackend::Memory)?);
    #[cfg(feature = "rocksdb")]
    {
        let dir = std::env::temp_dir().join(format!("sabot-stateful-{}", std::process::id()));
        println!("\n== RocksDB backend in {} ==", dir.display());
        print_final(&run(StateBackend::RocksDb { path: dir.clone() })?);
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}
