//! Fintech enrichment: join quotes with their securities, compute the bid/ask spread, keep
//! the tight quotes and show the largest.
//!
//! ```text
//! cargo run --release --example fintech_enrichment                     # run (generates a small dataset if needed)
//! cargo run --release --example fintech_enrichment -- generate         # 10M securities, 1.2M quotes
//! cargo run --release --example fintech_enrichment -- convert --to parquet
//! cargo run --release --example fintech_enrichment -- run --format parquet --max-spread-pct 0.1
//! ```

#[path = "fintech/mod.rs"]
mod fintech;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use fintech::Format;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sabot::Result;
use sabot::deps::arrow::record_batch::RecordBatch;
use sabot::prelude::*;

#[derive(Parser)]
#[command(about = "Quotes × securities enrichment on Sabot")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate securities and quotes as CSV, Parquet and Arrow IPC.
    Generate {
        /// Rows of `securities`.
        #[arg(long, default_value_t = 10_000_000)]
        securities: usize,
        /// Rows of `quotes`.
        #[arg(long, default_value_t = 1_200_000)]
        quotes: usize,
        /// Output directory.
        #[arg(long, default_value = "data/fintech")]
        out: PathBuf,
        /// Random seed (the same seed gives the same data).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Convert the CSV files of a dataset to Arrow IPC or Parquet.
    Convert {
        /// Dataset directory.
        #[arg(long, default_value = "data/fintech")]
        data: PathBuf,
        /// Target format.
        #[arg(long, value_enum, default_value_t = FormatArg::Ipc)]
        to: FormatArg,
    },
    /// Run the enrichment pipeline.
    Run(RunArgs),
}

#[derive(Parser)]
struct RunArgs {
    /// Dataset directory (a small dataset is generated there if it is missing).
    #[arg(long, default_value = "data/fintech")]
    data: PathBuf,
    /// Input format.
    #[arg(long, value_enum, default_value_t = FormatArg::Ipc)]
    format: FormatArg,
    /// Keep quotes whose spread is below this percentage of the mid price.
    #[arg(long, default_value_t = fintech::DEFAULT_MAX_SPREAD_PCT)]
    max_spread_pct: f64,
    /// Rows to show.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Parallel partitions (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Ipc,
    Parquet,
    Csv,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Ipc => Format::Ipc,
            FormatArg::Parquet => Format::Parquet,
            FormatArg::Csv => Format::Csv,
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| Command::Run(RunArgs::parse_from(["run"])));
    let result = match command {
        Command::Generate { securities, quotes, out, seed } => generate(&out, securities, quotes, seed),
        Command::Convert { data, to } => convert(&data, to.into()),
        Command::Run(args) => run(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn bar(multi: &MultiProgress, len: u64, label: &str) -> ProgressBar {
    let pb = multi.add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, {elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

fn spinner(label: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>16} {human_pos} rows {msg} ({elapsed})")
            .expect("valid template"),
    );
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

fn generate(dir: &Path, securities: usize, quotes: usize, seed: u64) -> Result<()> {
    println!("generating {securities} securities and {quotes} quotes into {} (seed {seed})", dir.display());
    let start = Instant::now();
    let multi = MultiProgress::new();
    let mut bars = vec![];
    for (table, rows) in [("securities", securities), ("quotes", quotes)] {
        for format in Format::ALL {
            bars.push(((table, format), bar(&multi, rows as u64, &format!("{table}.{}", format.extension()))));
        }
    }
    let bars = Arc::new(bars);
    let progress = {
        let bars = bars.clone();
        move |table: &str, format: Format, rows: usize| {
            if let Some((_, pb)) = bars.iter().find(|((t, f), _)| *t == table && *f == format) {
                pb.inc(rows as u64);
            }
        }
    };
    fintech::generate_dataset(dir, securities, quotes, seed, progress)?;
    for (_, pb) in bars.iter() {
        pb.finish();
    }
    println!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn convert(dir: &Path, to: Format) -> Result<()> {
    if to == Format::Csv {
        return Err(SabotError::plan("convert reads CSV: choose --to ipc or --to parquet"));
    }
    let multi = MultiProgress::new();
    for table in ["securities", "quotes"] {
        let source = fintech::read_table(dir, table, Format::Csv)?;
        let pb = multi.add(spinner(&format!("{table}.csv -> .{}", to.extension())));
        let p = pb.clone();
        let start = Instant::now();
        let target = fintech::table_path(dir, table, to);
        let rows = fintech::write_table(&source.inspect(move |b| p.inc(b.num_rows() as u64)), &target, to)?;
        pb.finish_with_message(format!("-> {}", target.display()));
        let secs = start.elapsed().as_secs_f64();
        println!("{table}: {rows} rows in {secs:.2} s ({})", rate(rows as usize, secs));
    }
    Ok(())
}

fn rate(rows: usize, secs: f64) -> String {
    let r = rows as f64 / secs.max(1e-9);
    if r >= 1e9 {
        format!("{:.2}G rows/s", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.1}M rows/s", r / 1e6)
    } else {
        format!("{:.0}k rows/s", r / 1e3)
    }
}

/// Runs `stream` to completion, counting rows on a spinner; returns the batches.
fn collect_with_spinner(stream: &Stream, label: &str) -> Result<(Vec<RecordBatch>, usize, Duration)> {
    let pb = spinner(label);
    let p = pb.clone();
    let start = Instant::now();
    let batches = stream.inspect(move |b| p.inc(b.num_rows() as u64)).collect()?;
    let elapsed = start.elapsed();
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    pb.finish_with_message(format!("in {:.1} ms", elapsed.as_secs_f64() * 1e3));
    Ok((batches, rows, elapsed))
}

fn run(args: &RunArgs) -> Result<()> {
    let format: Format = args.format.into();
    if !fintech::dataset_exists(&args.data, format) {
        println!("no {} dataset in {}: generating a small one first", format.extension(), args.data.display());
        generate(&args.data, 100_000, 12_000, 42)?;
    }
    let config = match args.threads {
        Some(t) => ExecConfig::default().with_parallelism(t),
        None => ExecConfig::default(),
    };
    println!("threads: {}, format: {}, spreadPct < {}", config.parallelism, format.extension(), args.max_spread_pct);

    // Stage 1: load both tables into memory.
    let load_start = Instant::now();
    let quotes_file = fintech::read_table(&args.data, "quotes", format)?.with_config(config.clone());
    let securities_file = fintech::read_table(&args.data, "securities", format)?.with_config(config.clone());
    let (q, q_rows, _) = collect_with_spinner(&quotes_file, "load quotes")?;
    let (s, s_rows, _) = collect_with_spinner(&securities_file, "load securities")?;
    let load = load_start.elapsed();
    let quotes = Stream::from_batches_with_schema(quotes_file.schema(), q)?.with_config(config.clone());
    let securities = Stream::from_batches_with_schema(securities_file.schema(), s)?.with_config(config.clone());

    // Stage 2: join, enrich, filter.
    let enriched = fintech::enrich(&quotes, &securities, args.max_spread_pct)?;
    let (joined, joined_rows, join_time) = collect_with_spinner(&enriched, "join+enrich")?;
    let enriched = Stream::from_batches_with_schema(enriched.schema(), joined)?.with_config(config.clone());

    // Stage 3: top-k.
    let pb = spinner("top-k");
    let start = Instant::now();
    let top = fintech::top_by_size(&enriched, args.top)?.collect_batch()?;
    let topk_time = start.elapsed();
    pb.finish_with_message(format!("in {:.1} ms", topk_time.as_secs_f64() * 1e3));

    println!("\ntop {} quotes by size with spreadPct < {}:", args.top, args.max_spread_pct);
    Stream::from_batches_with_schema(top.schema(), vec![top])?.show(args.top)?;

    println!("\n{:<14} {:>12} {:>10} {:>16}", "stage", "rows in", "ms", "rows/s");
    for (stage, rows, time) in [
        ("load", q_rows + s_rows, load),
        ("join+enrich", q_rows + s_rows, join_time),
        ("top-k", joined_rows, topk_time),
    ] {
        let secs = time.as_secs_f64();
        println!("{stage:<14} {rows:>12} {:>10.1} {:>16}", secs * 1e3, rate(rows, secs));
    }
    println!("{joined_rows} quotes matched a security and passed the spread filter");
    Ok(())
}
