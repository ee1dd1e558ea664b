//! Keyed-state throughput: `ValueState<i64>` counter updates over 100K keys in a pseudo-random
//! order, single thread, on the memory backend and (with `--features rocksdb`) on RocksDB.
//!
//! `cargo bench --bench state [--features rocksdb] -- [--updates N] [--keys K]`
//!
//! Three access patterns per backend: `set_current_key` + `value` + `update` (Flink style,
//! two lookups), `set_current_key` + `update_with` (one lookup), and `update_with_for`
//! (explicit key, batch-at-a-time style). Each run first touches every key once (untimed),
//! then times the updates; RocksDB's time includes the final `flush`.

use std::time::Instant;

use sabot::state::{KeyedStateStore, StateBackend, ValueState, ValueStateDescriptor};

#[derive(Clone, Copy)]
enum Pattern {
    ValueThenUpdate,
    UpdateWith,
    UpdateWithFor,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::ValueThenUpdate => "set_current_key+value+update",
            Pattern::UpdateWith => "set_current_key+update_with",
            Pattern::UpdateWithFor => "update_with_for",
        }
    }
}

/// xorshift64*: a cheap, fixed-seed key sequence.
struct Keys {
    state: u64,
    keys: u64,
}

impl Keys {
    fn new(keys: u64) -> Self {
        Keys { state: 0x9E37_79B9_7F4A_7C15, keys }
    }

    #[inline]
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) % self.keys
    }
}

#[inline]
fn step(store: &mut KeyedStateStore, count: ValueState<i64>, pattern: Pattern, key: u64) -> sabot::Result<()> {
    let key = key.to_le_bytes();
    match pattern {
        Pattern::ValueThenUpdate => {
            store.set_current_key(&key);
            let c = count.value(store)?.unwrap_or(0);
            count.update(store, c + 1)
        }
        Pattern::UpdateWith => {
            store.set_current_key(&key);
            count.update_with(store, |c| c.copied().unwrap_or(0) + 1)
        }
        Pattern::UpdateWithFor => count.update_with_for(store, &key, |c| c.copied().unwrap_or(0) + 1),
    }
}

fn run(label: &str, mut store: KeyedStateStore, pattern: Pattern, keys: u64, updates: u64) -> sabot::Result<f64> {
    let count = store.value_state(&ValueStateDescriptor::<i64>::new("count"))?;
    for k in 0..keys {
        count.update_for(&mut store, &k.to_le_bytes(), 0)?;
    }
    store.flush()?;
    let mut seq = Keys::new(keys);
    let start = Instant::now();
    for _ in 0..updates {
        step(&mut store, count, pattern, seq.next())?;
    }
    store.flush()?;
    let secs = start.elapsed().as_secs_f64();
    // Every update landed.
    let mut total = 0i64;
    for k in 0..keys {
        total += count.value_for(&mut store, &k.to_le_bytes())?.unwrap_or(0);
    }
    assert_eq!(total as u64, updates, "lost updates");
    let rate = updates as f64 / secs;
    println!(
        "state {label:<8} {:<30} {:>8.2}M updates/s  ({updates} updates over {keys} keys in {secs:.3} s)",
        pattern.name(),
        rate / 1e6
    );
    Ok(rate)
}

fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.replace('_', "").parse().ok())
}

fn main() -> sabot::Result<()> {
    let keys = arg("--keys").unwrap_or(100_000);
    let updates = arg("--updates").unwrap_or(20_000_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    println!("machine: nproc={cores}, {cpu}; threads=1; keys={keys}");

    let patterns = [Pattern::ValueThenUpdate, Pattern::UpdateWith, Pattern::UpdateWithFor];
    for pattern in patterns {
        run("memory", KeyedStateStore::open(&StateBackend::Memory, "bench")?, pattern, keys, updates)?;
    }

    #[cfg(feature = "rocksdb")]
    {
        let updates = arg("--rocksdb-updates").unwrap_or(updates / 10);
        for pattern in patterns {
            let dir = tempfile::tempdir().map_err(|e| sabot::SabotError::io(std::env::temp_dir(), e))?;
            let backend = StateBackend::RocksDb { path: dir.path().join("worker-0") };
            run("rocksdb", KeyedStateStore::open(&backend, "bench")?, pattern, keys, updates)?;
        }
        // Sensitivity to the write-back batch size (default 16,384 pending entries).
        let dir = tempfile::tempdir().map_err(|e| sabot::SabotError::io(std::env::temp_dir(), e))?;
        let backend = StateBackend::RocksDb { path: dir.path().join("worker-0") };
        let store = KeyedStateStore::open(&backend, "bench")?.with_write_batch_size(1024);
        print!("(write batch 1024) ");
        run("rocksdb", store, Pattern::UpdateWith, keys, updates)?;
    }
    #[cfg(not(feature = "rocksdb"))]
    println!("state rocksdb: skipped (build with --features rocksdb)");
    Ok(())
}
