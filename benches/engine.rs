//! Sabot on the peer benchmark's fintech workload (`../shared/peers/`), op for op the same
//! as `run_peers.py`, so that the times compare with Polars / DuckDB / DataFusion / pyarrow.
//!
//! ```text
//! python3 ../shared/peers/gen_data.py --out /tmp/sabot-peers-data     # once (needs pyarrow, numpy)
//! cargo bench --bench engine                                          # every op
//! cargo bench --bench engine -- join filter                           # ops whose name contains a word
//! BENCH_REPS=9 BENCH_THREADS=1 PEERS_DATA=/path cargo bench --bench engine
//! ```
//!
//! Each op runs once to warm up, then `BENCH_REPS` times (default 7); the table shows the
//! median and the minimum. Op inputs are loaded once from Parquet into memory (untimed), as the
//! peers do; the load ops time reading both tables into memory. Checksums of every result are
//! printed so results can be compared with the peers'.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sabot::deps::arrow::array::{Array, AsArray, RecordBatch};
use sabot::deps::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit};
use sabot::io::csv::CsvSource;
use sabot::prelude::*;

/// `ask - bid` threshold of the filter op (spreads are 1..50 cents: about 50% pass).
const THR: f64 = 0.255;

fn quotes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("security_id", DataType::Int64, true),
        Field::new("bid", DataType::Float64, true),
        Field::new("ask", DataType::Float64, true),
        Field::new("size", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

fn securities_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("cusip", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("sector", DataType::Utf8, true),
        Field::new("issuer_rating", DataType::Utf8, true),
        Field::new("coupon", DataType::Float64, true),
        Field::new("maturity_days", DataType::Int32, true),
    ]))
}

struct Bench {
    reps: usize,
    config: ExecConfig,
    filters: Vec<String>,
    results: Vec<(String, usize, Duration, Duration, String)>,
}

impl Bench {
    fn wants(&self, op: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| op.contains(f.as_str()))
    }

    /// Times `run` (warm-up + `reps`), `rows_in` input rows; `check` summarizes the result.
    fn time<T>(&mut self, op: &str, rows_in: usize, mut run: impl FnMut() -> Result<T>, check: impl Fn(&T) -> String) {
        if !self.wants(op) {
            return;
        }
        let mut last = match run() {
            Ok(v) => v,
            Err(e) => {
                println!("{op:<16} ERROR {e}");
                return;
            }
        };
        let mut times = vec![];
        for _ in 0..self.reps {
            drop(last);
            let start = Instant::now();
            last = run().expect("ran once already");
            times.push(start.elapsed());
        }
        times.sort();
        let (median, min) = (times[times.len() / 2], times[0]);
        let summary = check(&last);
        println!(
            "{op:<16} median {:>9.2} ms  min {:>9.2} ms  {:>14}  {summary}",
            ms(median),
            ms(min),
            rate(rows_in, median)
        );
        self.results.push((op.to_string(), rows_in, median, min, summary));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rate(rows: usize, d: Duration) -> String {
    let r = rows as f64 / d.as_secs_f64().max(1e-12);
    if r >= 1e9 {
        format!("{:.2}G rows/s", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.1}M rows/s", r / 1e6)
    } else {
        format!("{:.0}k rows/s", r / 1e3)
    }
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

fn column<'a>(batches: &'a [RecordBatch], name: &str) -> impl Iterator<Item = &'a dyn Array> + 'a {
    let name = name.to_string();
    batches.iter().map(move |b| b.column_by_name(&name).expect("column exists").as_ref())
}

fn sum_f64(batches: &[RecordBatch], name: &str) -> f64 {
    // Kahan-free but order-stable enough for a 6-digit comparison.
    column(batches, name).map(|a| a.as_primitive::<Float64Type>().values().iter().sum::<f64>()).sum()
}

fn sum_i64(batches: &[RecordBatch], name: &str) -> i128 {
    column(batches, name)
        .map(|a| {
            let a = sabot::deps::arrow::compute::cast(a, &DataType::Int64).expect("integer column");
            a.as_primitive::<Int64Type>().values().iter().map(|&v| v as i128).sum::<i128>()
        })
        .sum()
}

fn load(dir: &Path, table: &str, format: &str, config: &ExecConfig) -> Result<Vec<RecordBatch>> {
    let stream = match format {
        "csv" => {
            let schema = if table == "quotes" { quotes_schema() } else { securities_schema() };
            Stream::from_csv_source(CsvSource::new(dir.join(format!("{table}.csv"))).with_schema(schema))?
        }
        "parquet" => Stream::from_parquet(dir.join(format!("{table}.parquet")))?,
        _ => Stream::from_ipc(dir.join(format!("{table}.arrow")))?,
    };
    stream.with_config(config.clone()).collect()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!("{cpu}, nproc {cores}, loadavg {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn main() -> Result<()> {
    // RUST_LOG=sabot=debug shows the engine's own timings (e.g. join table builds).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let data = PathBuf::from(std::env::var("PEERS_DATA").unwrap_or_else(|_| "/tmp/sabot-peers-data".into()));
    if !data.join("securities.parquet").is_file() || !data.join("quotes.parquet").is_file() {
        eprintln!(
            "no peer data in {}. Create it with:\n  python3 -m venv /tmp/sabot-peers-venv && /tmp/sabot-peers-venv/bin/pip install pyarrow numpy\n  /tmp/sabot-peers-venv/bin/python ../shared/peers/gen_data.py --out {}\n(or set PEERS_DATA to where it is; add --scale 0.01 for a small copy)",
            data.display(),
            data.display()
        );
        std::process::exit(2);
    }
    let reps = std::env::var("BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(7usize).max(1);
    let mut config = ExecConfig::default();
    if let Some(t) = std::env::var("BENCH_THREADS").ok().and_then(|s| s.parse().ok()) {
        config = config.with_parallelism(t);
    }
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    println!("machine: {}", machine());
    println!(
        "threads: {}, batch size {}, reps {reps} (+1 warm-up), data {}",
        config.parallelism,
        config.batch_size,
        data.display()
    );
    let mut bench = Bench { reps, config: config.clone(), filters, results: vec![] };

    // Op inputs, loaded once (untimed) from Parquet into memory, as the peers do
    // (BENCH_INPUT=ipc maps the IPC files instead: faster to start, e.g. for profiling).
    let input = std::env::var("BENCH_INPUT").unwrap_or_else(|_| "parquet".into());
    let q = load(&data, "quotes", &input, &config)?;
    let s = load(&data, "securities", &input, &config)?;
    let (nq, ns) = (rows(&q), rows(&s));
    println!("quotes {nq} rows in {} batches, securities {ns} rows in {} batches\n", q.len(), s.len());

    for format in ["csv", "parquet", "ipc"] {
        let op = format!("load_{format}");
        let cfg = bench.config.clone();
        bench.time(
            &op,
            nq + ns,
            || Ok((load(&data, "quotes", format, &cfg)?, load(&data, "securities", format, &cfg)?)),
            |(q, s)| {
                format!("rows={} bid={:.4} coupon={:.3}", rows(q) + rows(s), sum_f64(q, "bid"), sum_f64(s, "coupon"))
            },
        );
    }

    let quotes = Stream::from_batches(q.clone())?.with_config(config.clone());
    let securities = Stream::from_batches(s.clone())?.with_config(config.clone());
    let spread = || col("ask") - col("bid");

    let join = quotes.join(&securities, [("security_id", "id")], JoinType::Inner)?.select([
        "security_id",
        "bid",
        "ask",
        "size",
        "ts",
        "cusip",
        "name",
        "sector",
        "issuer_rating",
        "coupon",
        "maturity_days",
    ])?;
    bench.time(
        "join",
        nq + ns,
        || join.collect(),
        |r| {
            format!(
                "rows={} bid={:.4} coupon={:.3} maturity={}",
                rows(r),
                sum_f64(r, "bid"),
                sum_f64(r, "coupon"),
                sum_i64(r, "maturity_days")
            )
        },
    );

    let filter = quotes.filter(spread().gt(lit(THR)))?;
    bench.time(
        "filter",
        nq,
        || filter.collect(),
        |r| format!("rows={} ask={:.4} size={}", rows(r), sum_f64(r, "ask"), sum_i64(r, "size")),
    );

    let project = quotes.select([
        col("security_id"),
        col("ts"),
        (spread() / ((col("ask") + col("bid")) / lit(2.0)) * lit(1e4)).alias("spread_bps"),
    ])?;
    bench.time(
        "project",
        nq,
        || project.collect(),
        |r| format!("rows={} spread_bps={:.4}", rows(r), sum_f64(r, "spread_bps")),
    );

    let groupby = securities.group_by(["sector"]).agg([
        count_all().alias("n"),
        avg(col("coupon")).alias("avg_coupon"),
        max(col("maturity_days")).alias("max_maturity"),
    ])?;
    bench.time(
        "groupby_sector",
        ns,
        || groupby.collect(),
        |r| {
            format!(
                "rows={} n={} avg_coupon={:.6} max_maturity={}",
                rows(r),
                sum_i64(r, "n"),
                sum_f64(r, "avg_coupon"),
                sum_i64(r, "max_maturity")
            )
        },
    );

    let sort = quotes.sort([SortKey::desc(col("ts"))])?;
    bench.time(
        "sort_ts_desc",
        nq,
        || sort.collect(),
        |r| {
            let ts: Vec<i64> = column(r, "ts")
                .flat_map(|a| {
                    a.as_primitive::<sabot::deps::arrow::datatypes::TimestampMillisecondType>().values().to_vec()
                })
                .collect();
            format!("rows={} sorted_desc={} bid={:.4}", rows(r), ts.windows(2).all(|w| w[0] >= w[1]), sum_f64(r, "bid"))
        },
    );

    let topk = quotes
        .with_column("spread", spread())?
        .top_k(1000, [SortKey::desc(col("spread")), SortKey::desc(col("ts"))])?;
    bench.time(
        "topk_spread",
        nq,
        || topk.collect(),
        |r| format!("rows={} spread={:.4}", rows(r), sum_f64(r, "spread")),
    );

    // Keyed 1-minute tumbling windows over the transactions, on event time; with no watermarks
    // every window fires at the end of the bounded input.
    let t = load(&data, "transactions", &input, &config)?;
    let nt = rows(&t);
    let windows = Stream::from_batches(t)?
        .with_config(config.clone())
        .key_by(["account_id"])
        .window(WindowSpec::tumbling(Duration::from_secs(60)))
        .event_time("ts")
        .aggregate([
            count_all().alias("n"),
            sum(col("amount")).alias("total"),
            max(col("amount")).alias("max_amount"),
        ])?;
    bench.time(
        "window_agg",
        nt,
        || windows.collect(),
        |r| format!("rows={} n={} total={:.2}", rows(r), sum_i64(r, "n"), sum_f64(r, "total")),
    );

    println!("\n| op | Sabot median ms | min ms | rows/s |");
    println!("|---|---|---|---|");
    for (op, rows_in, median, min, _) in &bench.results {
        println!("| {op} | {:.2} | {:.2} | {} |", ms(*median), ms(*min), rate(*rows_in, *median));
    }
    Ok(())
}
