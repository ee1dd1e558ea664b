//! The Nexmark benchmark on Sabot's public `Stream` API.
//!
//! `cargo bench --bench nexmark -- [q0 q1 …] [--events N] [--parallelism P] [--reps R]`
//!
//! For each query: generate N events (persons : auctions : bids = 1 : 3 : 46, event times at
//! `--rate` events per second of event time), run the query to completion with P partitions,
//! and count and checksum its output. Throughput counts all N events, as Flink's and
//! RisingWave's Nexmark numbers do, although a query only generates the streams and columns it
//! reads (the source builds the projected columns of the kinds it serves).
//!
//! "Per core" is per CPU-second: N divided by the CPU time the process used (all threads,
//! from `CLOCK_PROCESS_CPUTIME_ID`), since the engine overlaps pipeline stages on more
//! threads than P. The generator's own cost is measured separately: the same scans (same
//! streams, same columns, P threads pulling morsels) with nothing downstream; the query's
//! own cost is the difference of the two CPU times. Each measurement is the median of
//! `--reps` runs (by wall time).

// Shared with tests/nexmark.rs, which uses parts the benchmark does not.
#[allow(dead_code)]
#[path = "nexmark/generator.rs"]
mod generator;
#[allow(dead_code)]
#[path = "nexmark/queries.rs"]
mod queries;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use sabot::deps::arrow;
use sabot::io::{ScanRequest, Source};
use sabot::plan::LogicalPlan;
use sabot::prelude::*;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMillisecondType};

use generator::{NexmarkConfig, NexmarkGenerator};
use queries::{Nexmark, QUERIES};

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "The Nexmark benchmark on Sabot")]
struct Args {
    /// Queries to run (default: all of them).
    queries: Vec<String>,
    /// Events to generate per run (all kinds).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Parallel partitions (default: the number of cores).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Generator seed (0 reproduces the reference generator's events).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Event-time rate of the generator, events per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Print each query's plans before running it.
    #[arg(long)]
    explain: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one query run produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Output {
    rows: u64,
    checksum: u64,
}

/// Wall-clock and CPU time of one run.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    /// CPU time of all the process's threads, when the platform reports it.
    cpu: Option<Duration>,
}

impl Timing {
    /// Times `f`.
    fn of<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Timing)> {
        let (cpu, start) = (cpu_time(), Instant::now());
        let value = f()?;
        let wall = start.elapsed();
        let cpu = cpu.zip(cpu_time()).map(|(before, after)| after.saturating_sub(before));
        Ok((value, Timing { wall, cpu }))
    }

    /// Events per second of wall-clock time.
    fn rate(&self, events: u64) -> f64 {
        events as f64 / self.wall.as_secs_f64()
    }

    /// Events per CPU-second.
    fn rate_per_cpu(&self, events: u64) -> Option<f64> {
        self.cpu.map(|cpu| events as f64 / cpu.as_secs_f64())
    }

    /// Cores kept busy on average.
    fn cores(&self) -> Option<f64> {
        self.cpu.map(|cpu| cpu.as_secs_f64() / self.wall.as_secs_f64())
    }
}

/// One query's measurements.
struct Measurement {
    query: String,
    /// What the query's scans generate, e.g. `bid 5/7 columns`.
    generated: String,
    output: Output,
    run: Timing,
    generate: Timing,
}

impl Measurement {
    /// Events per CPU-second of the query's own work: the run's CPU time minus the
    /// generator's, when the difference is meaningful (more than 3% of the run's).
    fn query_alone_per_cpu(&self, events: u64) -> Option<f64> {
        let (run, generate) = (self.run.cpu?, self.generate.cpu?);
        let rest = run.checked_sub(generate)?;
        (rest.as_secs_f64() > 0.03 * run.as_secs_f64()).then(|| events as f64 / rest.as_secs_f64())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let parallelism = args.parallelism.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let selected: Vec<String> =
        if args.queries.is_empty() { QUERIES.iter().map(|q| q.to_string()).collect() } else { args.queries.clone() };
    if let Some(unknown) = selected.iter().find(|q| !QUERIES.contains(&q.as_str())) {
        return Err(SabotError::plan(format!("unknown query {unknown}; known: {}", QUERIES.join(", "))));
    }
    let config =
        NexmarkConfig { events: args.events, seed: args.seed, events_per_second: args.rate, ..Default::default() };
    let generator = Arc::new(NexmarkGenerator::new(config));
    let nexmark = Nexmark::new(generator.clone(), parallelism);
    let batch_size = ExecConfig::default().batch_size;

    println!("machine: {}", machine());
    println!(
        "threads: {parallelism} partitions ({} cores available); batch size {batch_size}; {} runs per measurement (median)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.reps.max(1)
    );
    println!(
        "events: {} per run (seed {}, {} events/s of event time, {} morsels of {} events); load average at start: {}",
        args.events,
        args.seed,
        args.rate,
        generator.morsel_count(),
        generator.config().events_per_morsel,
        load_average()
    );
    println!();

    let mut results = vec![];
    for query in &selected {
        let stream = nexmark.query(query)?;
        if args.explain {
            println!("{}", stream.explain()?);
        }
        let scans = scans_of(&stream)?;
        let mut outputs = vec![];
        let run_timing = median(args.reps, || {
            let (output, timing) = Timing::of(|| run(&stream))?;
            outputs.push(output);
            Ok(timing)
        })?;
        if outputs.windows(2).any(|w| w[0] != w[1]) {
            return Err(SabotError::Execution(format!("{query}: runs disagree: {outputs:?}")));
        }
        let generate = median(args.reps, || Ok(Timing::of(|| generate_only(&scans, parallelism, batch_size))?.1))?;
        let generated = scans.iter().map(describe_scan).collect::<Vec<_>>().join(" + ");
        let m = Measurement { query: query.clone(), generated, output: outputs[0], run: run_timing, generate };
        print_measurement(&m, args.events, parallelism);
        results.push(m);
    }
    println!("\nload average at end: {}", load_average());
    print_summary(&results, args.events, parallelism);
    Ok(())
}

/// Runs a query to completion; counts and checksums its rows on the calling thread.
fn run(stream: &Stream) -> Result<Output> {
    let mut output = Output { rows: 0, checksum: 0 };
    stream.for_each_batch(|batch| {
        output.rows += batch.num_rows() as u64;
        output.checksum = output.checksum.wrapping_add(checksum(&batch));
        Ok(())
    })?;
    Ok(output)
}

/// An order-independent checksum of a batch: wrapping sums of its integer, time and float
/// (bit pattern) columns, and the byte length of its string columns.
fn checksum(batch: &RecordBatch) -> u64 {
    let mut sum = 0u64;
    for (i, column) in batch.columns().iter().enumerate() {
        let part = match column.data_type() {
            DataType::Int64 => {
                column.as_primitive::<Int64Type>().values().iter().fold(0u64, |a, &v| a.wrapping_add(v as u64))
            }
            DataType::Timestamp(_, _) => column
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .iter()
                .fold(0u64, |a, &v| a.wrapping_add(v as u64)),
            DataType::Float64 => {
                column.as_primitive::<Float64Type>().values().iter().fold(0u64, |a, &v| a.wrapping_add(v.to_bits()))
            }
            DataType::Utf8 => {
                let offsets = column.as_string::<i32>().value_offsets();
                (offsets[offsets.len() - 1] - offsets[0]) as u64
            }
            _ => column.len() as u64,
        };
        sum = sum.wrapping_add(part.wrapping_mul(2 * i as u64 + 1));
    }
    sum
}

/// A scan of a plan: the source and the columns read (`None`: all).
type ScanSpec = (Arc<dyn Source>, Option<Vec<usize>>);

/// The scans of a query's optimized plan: each source with the columns it will be asked for.
fn scans_of(stream: &Stream) -> Result<Vec<ScanSpec>> {
    fn visit(plan: &LogicalPlan, out: &mut Vec<ScanSpec>) {
        if let LogicalPlan::Scan { source, projection, .. } = plan {
            out.push((source.clone(), projection.clone()));
        }
        for input in plan.inputs() {
            visit(input, out);
        }
    }
    let mut scans = vec![];
    visit(stream.optimized_plan()?.as_ref(), &mut scans);
    Ok(scans)
}

/// `bid 5/7 columns`: the stream a scan reads and how many of its columns.
fn describe_scan((source, projection): &ScanSpec) -> String {
    let described = source.describe();
    let stream = described.split(':').next().unwrap_or("?").trim_start_matches("nexmark ").to_string();
    let all = source.schema().fields().len();
    format!("{stream} {}/{all} columns", projection.as_ref().map_or(all, Vec::len))
}

/// Generates what a query's scans read, with `parallelism` threads pulling morsels from a
/// shared counter as the engine's partitions do, and nothing downstream.
fn generate_only(scans: &[ScanSpec], parallelism: usize, batch_size: usize) -> Result<()> {
    for (source, projection) in scans {
        let request =
            ScanRequest { projection: projection.clone(), batch_size, partitions: parallelism, ..Default::default() };
        let scan = source.scan(&request)?;
        let next = AtomicUsize::new(0);
        let results: Vec<Result<u64>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..parallelism)
                .map(|_| {
                    s.spawn(|| {
                        let mut rows = 0u64;
                        loop {
                            let morsel = next.fetch_add(1, Ordering::Relaxed);
                            if morsel >= scan.morsel_count() {
                                return Ok(rows);
                            }
                            for batch in scan.read_morsel(morsel)? {
                                rows += std::hint::black_box(batch?).num_rows() as u64;
                            }
                        }
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("generator thread panicked")).collect()
        });
        let rows: u64 = results.into_iter().sum::<Result<u64>>()?;
        if Some(rows as usize) != source.num_rows() {
            return Err(SabotError::Execution(format!("generated {rows} rows, expected {:?}", source.num_rows())));
        }
    }
    Ok(())
}

/// The run with the median wall time of `reps` runs.
fn median(reps: usize, mut f: impl FnMut() -> Result<Timing>) -> Result<Timing> {
    let mut timings = (0..reps.max(1)).map(|_| f()).collect::<Result<Vec<_>>>()?;
    timings.sort_by_key(|t| t.wall);
    Ok(timings[timings.len() / 2])
}

/// The CPU time used so far by all threads of this process (those that ended included).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn cpu_time() -> Option<Duration> {
    /// `struct timespec` on 64-bit Linux.
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut time = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a valid, writable `struct timespec` for the duration of the call, and
    // `clock_gettime` writes nothing else.
    let status = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut time) };
    (status == 0).then(|| Duration::new(time.tv_sec as u64, time.tv_nsec as u32))
}

/// CPU time is only read on 64-bit Linux.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn cpu_time() -> Option<Duration> {
    None
}

/// `1.23M`, `456K`; `–` when unknown.
fn human(rate: Option<f64>) -> String {
    match rate {
        Some(r) if r >= 1e6 => format!("{:.2}M", r / 1e6),
        Some(r) => format!("{:.0}K", r / 1e3),
        None => "–".to_string(),
    }
}

fn print_measurement(m: &Measurement, events: u64, parallelism: usize) {
    let cores = |t: &Timing| t.cores().map_or("–".to_string(), |c| format!("{c:.2}"));
    println!(
        "{:<4} {}\n     out {} rows (checksum {:016x}); generates {}",
        m.query,
        queries::describe(&m.query),
        m.output.rows,
        m.output.checksum,
        m.generated,
    );
    println!(
        "     run       {:>7.3} s, {} cores busy: {:>8} events/s ({:>8} per partition), {:>8} per CPU-second",
        m.run.wall.as_secs_f64(),
        cores(&m.run),
        human(Some(m.run.rate(events))),
        human(Some(m.run.rate(events) / parallelism as f64)),
        human(m.run.rate_per_cpu(events)),
    );
    println!(
        "     generate  {:>7.3} s, {} cores busy: {:>8} events/s, {:>8} per CPU-second | query alone {:>8} per CPU-second",
        m.generate.wall.as_secs_f64(),
        cores(&m.generate),
        human(Some(m.generate.rate(events))),
        human(m.generate.rate_per_cpu(events)),
        human(m.query_alone_per_cpu(events)),
    );
}

/// Published Nexmark throughput per core (events/s): Flink's and RisingWave's own reports.
fn published(query: &str) -> (&'static str, &'static str) {
    match query {
        "q0" => ("≈155K", "≈170K"),
        "q5" => ("22–75K", "–"),
        "q7" => ("12–23K", "37K"),
        "q8" => ("≈150K", "–"),
        "q11" => ("40–46K", "–"),
        _ => ("–", "–"),
    }
}

fn print_summary(results: &[Measurement], events: u64, parallelism: usize) {
    println!("\nEvents per second per core ({events} events, {parallelism} partitions; per CPU-second):\n");
    println!("| query | generated | Sabot | Sabot, query alone | generator alone | Flink | RisingWave |");
    println!("|---|---|---|---|---|---|---|");
    let mut by_query: BTreeMap<usize, &Measurement> = BTreeMap::new();
    for m in results {
        by_query.insert(QUERIES.iter().position(|q| *q == m.query).unwrap_or(usize::MAX), m);
    }
    for m in by_query.values() {
        let (flink, risingwave) = published(&m.query);
        println!(
            "| {} | {} | {} | {} | {} | {flink} | {risingwave} |",
            m.query,
            m.generated,
            human(m.run.rate_per_cpu(events)),
            human(m.query_alone_per_cpu(events)),
            human(m.generate.rate_per_cpu(events)),
        );
    }
    println!(
        "\nEvents/s count all N events; a query generates only the streams and columns it reads (q3 and q8 \
         read persons and auctions, 4 events in 50). Flink and RisingWave generate every column of every \
         event inside the engine; their numbers are their own published per-core throughputs on their \
         hardware, not runs on this machine."
    );
}

/// The CPU model and core count, from /proc/cpuinfo.
fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(String::new(), |kb| format!(", {:.1} GB", kb as f64 / 1024.0 / 1024.0));
    format!("{model}, {cpus} logical CPUs{memory}")
}

/// The 1, 5 and 15-minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}
