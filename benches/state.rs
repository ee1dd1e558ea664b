//! Keyed-state throughput: `ValueState<i64>` counter updates over 100K keys in a pseudo-random
//! order, single thread, on the memory backend and (with `--features rocksdb`) on RocksDB.
//!
//! `cargo bench --bench state [--features rocksdb] -- [throughput] [recovery] [--updates N] [--keys K]`
//!
//! Three access patterns per backend: `set_current_key` + `value` + `update` (Flink style,
//! two lookups), `set_current_key` + `update_with` (one lookup), and `update_with_for`
//! (explicit key, batch-at-a-time style). Each run first touches every key once (untimed),
//! then times the updates; RocksDB's time includes the final `flush`.
//!
//! `recovery` (RocksDB only): builds keyed state of `--recovery-keys` (default 4M) values of
//! `--value-bytes` (default 256) random bytes, about 1.1 GB, snapshots it into a checkpoint
//! directory with `snapshot_into` + `StateSnapshot::write`, then times
//! `KeyedStateStore::restore` into a new RocksDB directory and reads back `--sample` random
//! keys (checked). Needs about 4× the state size free in the temporary directory (`TMPDIR`).
//!
//! ```text
//! cargo bench --bench state --features rocksdb -- recovery
//! cargo bench --bench state --features rocksdb -- recovery --recovery-keys 1000000
//! ```
//!
//! `windows`: keyed tumbling-window aggregation (count and sum per key) through
//! `WindowAggregateOperator` driven directly, single thread, with the panes on the heap and
//! (with `--features rocksdb`) in RocksDB: `--window-events N` (default 5M) events over
//! `--keys` keys, 1M events per window, batches of 8,192 rows, a watermark after each batch.
//! Every window's counts are checked to add up to its events.
//!
//! ```text
//! cargo bench --bench state --features rocksdb -- windows
//! ```
//!
//! `counts`: count windows of 10 rows per key (sum per key) through `CountWindowOperator`
//! driven directly, `--count-events N` (default 2M) events over `--keys` keys, batches of
//! 8,192, open windows on the heap and (with `--features rocksdb`) in RocksDB.
//!
//! `sessions`: session windows (count and sum per key, gap 5 s) through
//! `SessionWindowOperator` driven directly: `--session-events N` (default 2M) events over
//! `--session-keys K` (default 10K) keys, 100 events per ms of event time, batches of 8,192, a
//! watermark after each batch; most sessions span many watermarks. The rows of open sessions
//! on the heap and (with `--features rocksdb`) in RocksDB.
//!
//! `table`: a table join's lookups (`TableJoinOperator` driven directly, single thread):
//! a table of `--table-keys` (default 1M) rows (key, 32-byte name) loaded in batches of 8,192,
//! then `--probes` (default 5M) left rows with random keys, on the heap and (with `--features
//! rocksdb`) in RocksDB. Every left row must find its row.
//!
//! ```text
//! cargo bench --bench state --features rocksdb -- table
//! ```
//!
//! `joins`: an interval join (`[-1 s, +1 s]`), a tumbling 1 s window join and an as-of join
//! (tolerance 5 s) through their operators driven directly, single thread: two sides of
//! `--join-events` (default 1M) rows each over `--join-keys` (default 100K) keys, 100 rows
//! per ms of event time, batches of 8,192 taken from both sides in turn, a watermark after
//! each pair; the buffered rows on the heap and (with `--features rocksdb`) in RocksDB.
//! Throughput counts the rows of both sides; every output must be the same on both.
//!
//! ```text
//! cargo bench --bench state --features rocksdb -- joins
//! ```
//!
//! `handover`: key groups of a join changing workers. A window join with 1 h windows holds
//! both sides' `--join-events` rows (nothing fires), is snapshotted, releases 2 of its 4 key
//! groups, and a fresh instance acquires them from the snapshot; the times of the three steps.
//!
//! ```text
//! cargo bench --bench state --features rocksdb -- handover
//! ```
//!
//! Words after `--` select sections by name (none: every section).

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

/// The section names given after `--` (words that are neither flags nor flag values).
fn sections() -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = vec![];
    let mut i = 0;
    while i < args.len() {
        if args[i].starts_with("--") {
            // Flags with a value skip it (`--bench`, which cargo passes, has none).
            i += if args[i] == "--bench" { 1 } else { 2 };
        } else {
            out.push(args[i].clone());
            i += 1;
        }
    }
    out
}

#[cfg(feature = "rocksdb")]
mod recovery {
    use std::path::Path;
    use std::time::Instant;

    use sabot::checkpoint::StateSnapshot;
    use sabot::state::{KeyedStateStore, StateBackend, ValueStateDescriptor};
    use sabot::{Result, SabotError};

    use super::Keys;

    /// The value of `key`: `len` pseudo-random (incompressible) bytes derived from the key.
    fn value_of(key: u64, len: usize, out: &mut Vec<u8>) {
        out.clear();
        let mut x = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            out.extend_from_slice(&word[..(len - out.len()).min(8)]);
        }
    }

    /// Bytes of the regular files under `path` (hard links counted at full size).
    fn dir_bytes(path: &Path) -> Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(path).map_err(|e| SabotError::io(path, e))? {
            let entry = entry.map_err(|e| SabotError::io(path, e))?;
            let meta = entry.metadata().map_err(|e| SabotError::io(entry.path(), e))?;
            total += if meta.is_dir() { dir_bytes(&entry.path())? } else { meta.len() };
        }
        Ok(total)
    }

    /// Copies the files under `from` to `to` (the cost of restoring by copying files).
    fn copy_dir(from: &Path, to: &Path) -> Result<()> {
        std::fs::create_dir_all(to).map_err(|e| SabotError::io(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| SabotError::io(from, e))? {
            let entry = entry.map_err(|e| SabotError::io(from, e))?;
            let target = to.join(entry.file_name());
            if entry.file_type().map_err(|e| SabotError::io(entry.path(), e))?.is_dir() {
                copy_dir(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target).map_err(|e| SabotError::io(&target, e))?;
            }
        }
        Ok(())
    }

    /// This process's CPU time (user + system, every thread) and bytes written to storage,
    /// from /proc (zeros elsewhere).
    #[derive(Clone, Copy, Default)]
    struct Usage {
        cpu_secs: f64,
        written: u64,
    }

    impl Usage {
        fn now() -> Self {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            // Fields after the command name (which ends with ')'): utime and stime are the
            // 12th and 13th, in clock ticks (100 per second on Linux).
            let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
            let written = io
                .lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Usage { cpu_secs: (ticks(11) + ticks(12)) as f64 / 100.0, written }
        }

        /// "CPU x s, wrote y MB" since `before`.
        fn since(before: Usage) -> String {
            let now = Usage::now();
            format!(
                "CPU {:.2} s (all threads), {:.0} MB written to storage",
                now.cpu_secs - before.cpu_secs,
                mb(now.written.saturating_sub(before.written))
            )
        }
    }

    fn mb(bytes: u64) -> f64 {
        bytes as f64 / 1e6
    }

    pub fn run(keys: u64, value_bytes: usize, sample: u64) -> Result<()> {
        let root = tempfile::tempdir().map_err(|e| SabotError::io(std::env::temp_dir(), e))?;
        let logical = keys * (8 + value_bytes as u64);
        println!(
            "recovery (rocksdb): {keys} keys of 8 B, values of {value_bytes} B random bytes = {:.0} MB of keys + \
             values, in {}",
            mb(logical),
            root.path().display()
        );
        let desc = ValueStateDescriptor::<Vec<u8>>::new("payload");
        let source_path = root.path().join("worker-0");
        let mut value = Vec::with_capacity(value_bytes);

        // Build the state through the state API, then flush it to SST files.
        let usage = Usage::now();
        let start = Instant::now();
        let mut store = KeyedStateStore::open(&StateBackend::RocksDb { path: source_path.clone() }, "recovery")?;
        let payload = store.value_state(&desc)?;
        for k in 0..keys {
            value_of(k, value_bytes, &mut value);
            payload.update_for(&mut store, &k.to_le_bytes(), value.clone())?;
        }
        store.flush()?;
        let build_secs = start.elapsed().as_secs_f64();
        let db_bytes = dir_bytes(&source_path)?;
        println!(
            "  build (update_for + flush)       {build_secs:>8.2} s  {:>8.1} MB/s of keys + values  (RocksDB dir {:.0} MB; \
             {})",
            mb(logical) / build_secs,
            mb(db_bytes),
            Usage::since(usage)
        );

        // Snapshot as a checkpoint does: the synchronous part (a RocksDB checkpoint of hard
        // links) and the write (checksums of every file; the writer thread's part).
        let task_dir = root.path().join("checkpoints/chk-1/recovery/p0");
        let start = Instant::now();
        let mut snapshot = StateSnapshot::new(1, &task_dir);
        store.snapshot_into(&mut snapshot, "keyed")?;
        let sync_secs = start.elapsed().as_secs_f64();
        let files = snapshot.write()?;
        let snapshot_secs = start.elapsed().as_secs_f64();
        let checkpoint_bytes: u64 = files.iter().map(|f| f.len).sum();
        println!("  snapshot_into (RocksDB checkpoint, hard links)  {sync_secs:>8.3} s",);
        println!(
            "  snapshot total (+ write: CRC-32 of {} files)   {snapshot_secs:>8.3} s  {:>8.1} MB/s  (checkpoint {:.0} MB)",
            files.len(),
            mb(checkpoint_bytes) / snapshot_secs,
            mb(checkpoint_bytes)
        );
        // The next checkpoint after a few updates: it links the same table files again, whose
        // checksums the first one computed, so it reads only what is new.
        for k in 0..1_000 {
            value_of(k, value_bytes, &mut value);
            payload.update_for(&mut store, &k.to_le_bytes(), value.clone())?;
        }
        let start = Instant::now();
        let mut next = StateSnapshot::new(2, root.path().join("checkpoints/chk-2/recovery/p0"));
        store.snapshot_into(&mut next, "keyed")?;
        let next_files = next.write()?;
        println!(
            "  next snapshot (1,000 keys updated; {} files)  {:>8.3} s",
            next_files.len(),
            start.elapsed().as_secs_f64()
        );
        // The worker is gone: close its instance and delete its directory (the checkpoint's
        // hard links keep the files it shares).
        drop(store);
        std::fs::remove_dir_all(&source_path).map_err(|e| SabotError::io(&source_path, e))?;

        // Restore into a new RocksDB directory, then read a sample of keys back.
        let restored_path = root.path().join("worker-0-restored");
        let usage = Usage::now();
        let start = Instant::now();
        let mut restored = KeyedStateStore::restore(
            &StateBackend::RocksDb { path: restored_path.clone() },
            "recovery",
            task_dir.join("keyed"),
        )?;
        let restore_secs = start.elapsed().as_secs_f64();
        let restore_usage = Usage::since(usage);
        let payload = restored.value_state(&desc)?;
        let start = Instant::now();
        let mut seq = Keys::new(keys);
        for _ in 0..sample {
            let k = seq.next();
            let got = payload.value_for(&mut restored, &k.to_le_bytes())?;
            value_of(k, value_bytes, &mut value);
            assert_eq!(got.as_deref(), Some(&value[..]), "key {k} restored");
        }
        let sample_secs = start.elapsed().as_secs_f64();
        let restored_bytes = dir_bytes(&restored_path)?;
        println!(
            "  restore (KeyedStateStore::restore)  {restore_secs:>8.2} s  {:>8.1} MB/s of checkpoint  {:>8.1} MB/s of \
             keys + values  (restored dir {:.0} MB)",
            mb(checkpoint_bytes) / restore_secs,
            mb(logical) / restore_secs,
            mb(restored_bytes)
        );
        println!("    restore used {restore_usage}");
        println!(
            "  read back {sample} random keys (checked)   {sample_secs:>8.2} s  {:>8.0} reads/s",
            sample as f64 / sample_secs
        );
        println!("  restore + sample reads              {:>8.2} s", restore_secs + sample_secs);

        // For comparison: a full scan of the restored state (about the read half of the
        // restore's copy) and copying the checkpoint's files (a file-level restore).
        let start = Instant::now();
        let entries = restored.stored_entries()?;
        let scan_secs = start.elapsed().as_secs_f64();
        assert_eq!(entries as u64, keys, "every key restored");
        println!(
            "  for comparison: full scan of the restored state  {scan_secs:>8.2} s  ({entries} entries, {:.1} MB/s)",
            mb(logical) / scan_secs
        );
        drop(restored);
        std::fs::remove_dir_all(&restored_path).map_err(|e| SabotError::io(&restored_path, e))?;
        let copy_path = root.path().join("copy");
        let start = Instant::now();
        copy_dir(&task_dir.join("keyed"), &copy_path)?;
        let copy_secs = start.elapsed().as_secs_f64();
        println!(
            "  for comparison: copying the checkpoint's files  {copy_secs:>8.2} s  ({:.1} MB/s)",
            mb(checkpoint_bytes) / copy_secs
        );
        Ok(())
    }
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
    let sections = sections();
    let wants = |name: &str| sections.is_empty() || sections.iter().any(|s| name.contains(s.as_str()));
    if wants("throughput") {
        throughput(keys, updates)?;
    }
    if wants("windows") {
        windows::run(keys, arg("--window-events").unwrap_or(5_000_000))?;
    }
    if wants("counts") {
        windows::counts(keys, arg("--count-events").unwrap_or(2_000_000))?;
    }
    if wants("sessions") {
        windows::sessions(arg("--session-keys").unwrap_or(10_000), arg("--session-events").unwrap_or(2_000_000))?;
    }
    if wants("table") {
        table::run(arg("--table-keys").unwrap_or(1_000_000), arg("--probes").unwrap_or(5_000_000))?;
    }
    if wants("joins") {
        joins::run(arg("--join-keys").unwrap_or(100_000), arg("--join-events").unwrap_or(1_000_000))?;
    }
    if wants("handover") {
        joins::handover(arg("--join-keys").unwrap_or(100_000), arg("--join-events").unwrap_or(1_000_000))?;
    }
    if wants("recovery") {
        #[cfg(feature = "rocksdb")]
        recovery::run(
            arg("--recovery-keys").unwrap_or(4_000_000),
            arg("--value-bytes").unwrap_or(256) as usize,
            arg("--sample").unwrap_or(100_000),
        )?;
        #[cfg(not(feature = "rocksdb"))]
        println!("recovery: skipped (build with --features rocksdb)");
    }
    Ok(())
}

fn throughput(keys: u64, updates: u64) -> sabot::Result<()> {
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

/// Runs `time` (which prints and returns a rate) with the state on the heap, then in RocksDB in
/// a fresh directory (with the `rocksdb` feature), and prints the ratio of the two.
fn on_heap_and_rocksdb(what: &str, time: impl Fn(&str, &StateBackend) -> sabot::Result<f64>) -> sabot::Result<()> {
    let heap = time("heap", &StateBackend::Memory)?;
    #[cfg(feature = "rocksdb")]
    {
        let dir = tempfile::tempdir().map_err(|e| sabot::SabotError::io(std::env::temp_dir(), e))?;
        let rocksdb = time("rocksdb", &StateBackend::RocksDb { path: dir.path().join("worker-0") })?;
        println!("{what}: rocksdb / heap = {:.3}", rocksdb / heap);
    }
    #[cfg(not(feature = "rocksdb"))]
    println!("{what} rocksdb: skipped (build with --features rocksdb); heap {heap:.0}/s");
    Ok(())
}

mod windows {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sabot::deps::arrow::array::{AsArray, Int64Array, RecordBatch};
    use sabot::deps::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use sabot::expr::{col, count_all, sum};
    use sabot::operator::{CountWindowOperator, SessionWindowOperator, WindowAggregateOperator};
    use sabot::state::StateBackend;
    use sabot::testing::OperatorHarness;
    use sabot::window::WindowSpec;

    use super::Keys;

    const BATCH: u64 = 8_192;
    const EVENTS_PER_WINDOW: u64 = 1_000_000;

    pub(super) fn run(keys: u64, events: u64) -> sabot::Result<()> {
        let batches = generate(keys, events);
        let tumbling = WindowSpec::tumbling(Duration::from_secs(1));
        super::on_heap_and_rocksdb("windows", |label, backend| time(label, backend, tumbling, &batches, events))?;
        // Each event in 4 windows: every pane is part of 4 firings.
        let sliding = WindowSpec::sliding(Duration::from_secs(1), Duration::from_millis(250));
        super::on_heap_and_rocksdb("sliding windows", |label, backend| {
            time(label, backend, sliding, &batches, 4 * events)
        })
    }

    /// Batches of (`k`, `ts`, `v`): keys in a pseudo-random order, event time in ms rising by
    /// one every 1,000 events (1M events per 1 s window).
    fn generate(keys: u64, events: u64) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let mut seq = Keys::new(keys);
        (0..events.div_ceil(BATCH))
            .map(|b| {
                let ids = b * BATCH..((b + 1) * BATCH).min(events);
                let k = Int64Array::from_iter_values(ids.clone().map(|_| seq.next() as i64));
                let ts = Int64Array::from_iter_values(ids.clone().map(|i| (i * 1000 / EVENTS_PER_WINDOW) as i64));
                let v = Int64Array::from_iter_values(ids.map(|i| (i % 100) as i64));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(ts), Arc::new(v)]).expect("columns")
            })
            .collect()
    }

    /// Events per second through count windows, on the heap and in RocksDB.
    pub(super) fn counts(keys: u64, events: u64) -> sabot::Result<()> {
        let batches = generate(keys, events);
        let time = |label: &str, backend: &StateBackend| -> sabot::Result<f64> {
            let aggregates = vec![sum(col("v")).alias("total")];
            let op = CountWindowOperator::try_new(10, batches[0].schema(), vec![col("k")], aggregates)?
                .with_state_backend(backend)?;
            let mut harness = OperatorHarness::new(op);
            let mut windows = 0usize;
            let start = Instant::now();
            for batch in &batches {
                harness.process(batch.clone())?;
                windows += harness.take_output().iter().map(|b| b.num_rows()).sum::<usize>();
            }
            harness.close()?;
            let secs = start.elapsed().as_secs_f64();
            let rate = events as f64 / secs;
            println!(
                "counts {label:<8} {:>8.2}M events/s  ({events} events, {windows} windows, {secs:.3} s)",
                rate / 1e6
            );
            Ok(rate)
        };
        super::on_heap_and_rocksdb("counts", time)
    }

    /// Events per second through session windows.
    pub(super) fn sessions(keys: u64, events: u64) -> sabot::Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let mut seq = Keys::new(keys);
        let batches: Vec<RecordBatch> = (0..events.div_ceil(BATCH))
            .map(|b| {
                let ids = b * BATCH..((b + 1) * BATCH).min(events);
                let k = Int64Array::from_iter_values(ids.clone().map(|_| seq.next() as i64));
                let ts = Int64Array::from_iter_values(ids.clone().map(|i| (i / 100) as i64));
                let v = Int64Array::from_iter_values(ids.map(|i| (i % 100) as i64));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(ts), Arc::new(v)]).expect("columns")
            })
            .collect();
        let time = |label: &str, backend: &StateBackend| -> sabot::Result<f64> {
            let aggregates = vec![count_all(), sum(col("v")).alias("total")];
            let op = SessionWindowOperator::try_new(5_000, "ts", schema.clone(), vec![col("k")], aggregates, 0, None)?
                .with_state_backend(backend)?;
            let mut harness = OperatorHarness::new(op);
            let mut counted = 0i64;
            let start = Instant::now();
            for batch in &batches {
                let ts = batch.column(1).as_primitive::<Int64Type>();
                let watermark = ts.value(ts.len() - 1);
                harness.process(batch.clone())?;
                harness.watermark(watermark)?;
                for b in harness.take_output() {
                    counted += b
                        .column_by_name("count")
                        .expect("count")
                        .as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .sum::<i64>();
                }
            }
            harness.close()?;
            for b in harness.take_output() {
                counted +=
                    b.column_by_name("count").expect("count").as_primitive::<Int64Type>().values().iter().sum::<i64>();
            }
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(counted as u64, events, "every event counted once");
            let rate = events as f64 / secs;
            println!("sessions {label:<8} {:>8.2}M events/s  ({events} events, {keys} keys, {secs:.3} s)", rate / 1e6);
            Ok(rate)
        };
        super::on_heap_and_rocksdb("sessions", time)
    }

    /// Events per second through a window aggregation of `spec` on `backend`; `counted_total` is
    /// the sum of the windows' counts (events times the windows each is in).
    fn time(
        label: &str,
        backend: &StateBackend,
        spec: WindowSpec,
        batches: &[RecordBatch],
        counted_total: u64,
    ) -> sabot::Result<f64> {
        let events: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let aggregates = vec![count_all(), sum(col("v")).alias("total")];
        let op =
            WindowAggregateOperator::try_new(spec, "ts", batches[0].schema(), vec![col("k")], aggregates, 0, None)?
                .with_state_backend(backend)?;
        let mut harness = OperatorHarness::new(op);
        let (mut groups, mut counted) = (0usize, 0i64);
        let mut tally = |results: Vec<RecordBatch>| {
            for b in results {
                groups += b.num_rows();
                counted +=
                    b.column_by_name("count").expect("count").as_primitive::<Int64Type>().values().iter().sum::<i64>();
            }
        };
        let start = Instant::now();
        for batch in batches {
            let ts = batch.column(1).as_primitive::<Int64Type>();
            let watermark = ts.value(ts.len() - 1);
            harness.process(batch.clone())?;
            harness.watermark(watermark)?;
            tally(harness.take_output());
        }
        harness.close()?;
        tally(harness.take_output());
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(counted as u64, counted_total, "every event counted once per window it is in");
        let rate = events as f64 / secs;
        println!(
            "{spec} {label:<8} {:>8.2}M events/s  ({events} events, {groups} window results, {secs:.3} s)",
            rate / 1e6
        );
        Ok(rate)
    }
}

mod table {
    use std::sync::Arc;
    use std::time::Instant;

    use sabot::deps::arrow::array::{Int64Array, RecordBatch, StringArray};
    use sabot::deps::arrow::datatypes::{DataType, Field, Schema};
    use sabot::operator::TableJoinOperator;
    use sabot::plan::JoinType;
    use sabot::state::StateBackend;
    use sabot::testing::TwoInputHarness;

    use super::Keys;

    const BATCH: u64 = 8_192;

    pub(super) fn run(keys: u64, probes: u64) -> sabot::Result<()> {
        let table_schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let table: Vec<RecordBatch> = (0..keys.div_ceil(BATCH))
            .map(|b| {
                let ids = b * BATCH..((b + 1) * BATCH).min(keys);
                let id = Int64Array::from_iter_values(ids.clone().map(|i| i as i64));
                let name = StringArray::from_iter_values(ids.map(|i| format!("customer-{i:022}")));
                RecordBatch::try_new(table_schema.clone(), vec![Arc::new(id), Arc::new(name)]).expect("columns")
            })
            .collect();
        let left_schema = Arc::new(Schema::new(vec![Field::new("customer", DataType::Int64, false)]));
        let mut seq = Keys::new(keys);
        let left: Vec<RecordBatch> = (0..probes.div_ceil(BATCH))
            .map(|b| {
                let n = (probes - b * BATCH).min(BATCH);
                let customer = Int64Array::from_iter_values((0..n).map(|_| seq.next() as i64));
                RecordBatch::try_new(left_schema.clone(), vec![Arc::new(customer)]).expect("columns")
            })
            .collect();
        let time = |label: &str, backend: &StateBackend| -> sabot::Result<f64> {
            let op = TableJoinOperator::try_new(
                left_schema.clone(),
                table_schema.clone(),
                &["customer"],
                &["id"],
                JoinType::Inner,
            )?
            .with_state_backend(backend)?;
            let mut harness = TwoInputHarness::new(op);
            let loading = Instant::now();
            for batch in &table {
                harness.process_right(batch.clone())?;
            }
            let load_secs = loading.elapsed().as_secs_f64();
            let probing = Instant::now();
            let mut joined = 0;
            for batch in &left {
                harness.process_left(batch.clone())?;
                joined += harness.take_output().iter().map(|b| b.num_rows()).sum::<usize>();
            }
            let secs = probing.elapsed().as_secs_f64();
            assert_eq!(joined as u64, probes, "every left row found its table row");
            let rate = probes as f64 / secs;
            println!(
                "table {label:<8} load {:>6.2}M rows/s, lookups {:>6.2}M rows/s  ({keys} keys, {probes} probes)",
                keys as f64 / load_secs / 1e6,
                rate / 1e6
            );
            Ok(rate)
        };
        super::on_heap_and_rocksdb("table", time)
    }
}

mod joins {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sabot::deps::arrow::array::{Int64Array, RecordBatch};
    use sabot::deps::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use sabot::operator::{AsofJoinOperator, IntervalJoinOperator, TwoInputOperator, WindowJoinOperator};
    use sabot::state::StateBackend;
    use sabot::testing::TwoInputHarness;
    use sabot::window::WindowSpec;

    use super::Keys;

    const BATCH: u64 = 8_192;
    const ROWS_PER_MS: u64 = 100;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    /// One side's batches: keys in a pseudo-random order (seeded by `seed`), event time rising.
    fn side(keys: u64, events: u64, seed: u64) -> Vec<RecordBatch> {
        let mut seq = Keys::new(keys);
        (0..seed).for_each(|_| {
            seq.next();
        });
        (0..events.div_ceil(BATCH))
            .map(|b| {
                let rows = b * BATCH..((b + 1) * BATCH).min(events);
                let k = Int64Array::from_iter_values(rows.clone().map(|_| seq.next() as i64));
                let ts = Int64Array::from_iter_values(rows.clone().map(|i| (i / ROWS_PER_MS) as i64));
                let v = Int64Array::from_iter_values(rows.map(|i| i as i64));
                RecordBatch::try_new(schema(), vec![Arc::new(k), Arc::new(ts), Arc::new(v)]).expect("columns")
            })
            .collect()
    }

    /// Drives `op` over both sides and returns (rows of both sides per second, output rows).
    fn drive<O: TwoInputOperator>(op: O, left: &[RecordBatch], right: &[RecordBatch]) -> sabot::Result<(f64, usize)> {
        let newest = |b: &RecordBatch| {
            let ts = b.column(1).as_any().downcast_ref::<Int64Array>().expect("ts");
            ts.values().iter().copied().max().unwrap_or(i64::MIN)
        };
        let mut h = TwoInputHarness::new(op);
        let (mut joined, mut rows) = (0, 0);
        let started = Instant::now();
        for (l, r) in left.iter().zip(right) {
            h.process_left(l.clone())?;
            h.process_right(r.clone())?;
            h.watermark(newest(l).min(newest(r)))?;
            rows += l.num_rows() + r.num_rows();
            joined += h.take_output().iter().map(RecordBatch::num_rows).sum::<usize>();
        }
        h.close()?;
        joined += h.take_output().iter().map(RecordBatch::num_rows).sum::<usize>();
        Ok((rows as f64 / started.elapsed().as_secs_f64(), joined))
    }

    pub(super) fn run(keys: u64, events: u64) -> sabot::Result<()> {
        let (left, right) = (side(keys, events, 0), side(keys, events, 7));
        let outputs = std::cell::RefCell::new(std::collections::BTreeMap::<&str, usize>::new());
        let check = |what: &'static str, joined: usize| {
            let mut outputs = outputs.borrow_mut();
            let first = *outputs.entry(what).or_insert(joined);
            assert_eq!(joined, first, "{what}: every backend joins the same rows");
        };
        super::on_heap_and_rocksdb("interval join", |label, backend: &StateBackend| {
            let op = IntervalJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", -1_000, 1_000)?
                .with_state_backend(backend)?;
            let (rate, joined) = drive(op, &left, &right)?;
            check("interval", joined);
            println!("interval join {label:<8} {:>6.2}M rows/s  ({joined} pairs, {keys} keys)", rate / 1e6);
            Ok(rate)
        })?;
        super::on_heap_and_rocksdb("window join", |label, backend: &StateBackend| {
            let spec = WindowSpec::tumbling(Duration::from_secs(1));
            let op = WindowJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", spec)?
                .with_state_backend(backend)?;
            let (rate, joined) = drive(op, &left, &right)?;
            check("window", joined);
            println!("window join   {label:<8} {:>6.2}M rows/s  ({joined} pairs, {keys} keys)", rate / 1e6);
            Ok(rate)
        })?;
        super::on_heap_and_rocksdb("as-of join", |label, backend: &StateBackend| {
            let op = AsofJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", Some(5_000))?
                .with_state_backend(backend)?;
            let (rate, joined) = drive(op, &left, &right)?;
            check("asof", joined);
            println!("as-of join    {label:<8} {:>6.2}M rows/s  ({joined} rows, {keys} keys)", rate / 1e6);
            Ok(rate)
        })
    }

    /// Key groups changing hands (the scale-out of a join): a window join whose 1 h windows
    /// hold both sides' rows, checkpointed, releases half of its 4 key groups, and a fresh
    /// instance acquires them from the checkpoint.
    pub(super) fn handover(keys: u64, events: u64) -> sabot::Result<()> {
        use sabot::checkpoint::KeyGroupHandover;
        let (left, right) = (side(keys, events, 0), side(keys, events, 7));
        let make = |backend: &StateBackend| {
            let spec = WindowSpec::tumbling(Duration::from_secs(3_600));
            WindowJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", spec)?
                .with_state_backend(backend)
        };
        super::on_heap_and_rocksdb("handover", |label, backend: &StateBackend| {
            let mut owner = TwoInputHarness::new(make(backend)?);
            for (l, r) in left.iter().zip(&right) {
                owner.process_left(l.clone())?;
                owner.process_right(r.clone())?;
            }
            let started = Instant::now();
            let snapshot = owner.snapshot()?;
            let snapshotted = started.elapsed();
            let half = |acquired| KeyGroupHandover { partitions: 4, released: vec![], acquired, instance: (0, 1) };
            let started = Instant::now();
            owner.hand_over_key_groups(&KeyGroupHandover { released: vec![0, 1], ..half(vec![]) })?;
            let released = started.elapsed();
            let mut taker = TwoInputHarness::new(make(backend)?);
            taker.checkpoint(0)?; // started
            let started = Instant::now();
            taker.hand_over_key_groups(&half(vec![(vec![0, 1], vec![snapshot.restored_state()])]))?;
            let acquired = started.elapsed();
            let rows = 2.0 * events as f64;
            println!(
                "handover {label:<8} {rows} buffered rows: snapshot {:>7.1} ms, release half {:>7.1} ms, acquire half {:>7.1} ms",
                snapshotted.as_secs_f64() * 1e3,
                released.as_secs_f64() * 1e3,
                acquired.as_secs_f64() * 1e3,
            );
            // The rate reported is the rows moved per second (released and acquired).
            Ok(rows / (released + acquired).as_secs_f64())
        })
    }
}
