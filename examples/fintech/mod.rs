//! The fintech-enrichment workload: a deterministic generator for `securities` and `quotes`,
//! the pipeline that joins and filters them, and the schemas the readers need.
//!
//! Shared by `examples/fintech_enrichment.rs` and `tests/fintech_enrichment.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sabot::deps::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringBuilder, TimestampMillisecondArray,
};
use sabot::deps::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sabot::io::csv::CsvSource;
use sabot::prelude::*;

/// Rows per generated chunk (one batch, one morsel).
pub const CHUNK_ROWS: usize = 64 * 1024;

/// The 11 GICS sectors.
pub const SECTORS: [&str; 11] = [
    "Energy",
    "Materials",
    "Industrials",
    "ConsumerDisc",
    "ConsumerStap",
    "HealthCare",
    "Financials",
    "InfoTech",
    "CommServices",
    "Utilities",
    "RealEstate",
];

/// Issuer ratings.
pub const RATINGS: [&str; 10] = ["AAA", "AA+", "AA", "AA-", "A+", "A", "A-", "BBB+", "BBB", "BBB-"];

/// 2024-03-15 09:30:00 UTC in milliseconds since the epoch.
pub const OPEN_MS: i64 = 1_710_495_000_000;

/// Default spread threshold (percent): spreads are 1..50 cents on prices of 5..200, so
/// roughly half of the quotes pass.
pub const DEFAULT_MAX_SPREAD_PCT: f64 = 0.25;

/// The file formats the workload is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Arrow IPC file (`.arrow`), memory-mapped when read.
    Ipc,
    /// Parquet (`.parquet`), snappy.
    Parquet,
    /// CSV with a header (`.csv`).
    Csv,
}

impl Format {
    /// All formats.
    pub const ALL: [Format; 3] = [Format::Ipc, Format::Parquet, Format::Csv];

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Ipc => "arrow",
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

/// `DIR/TABLE.EXT`.
pub fn table_path(dir: &Path, table: &str, format: Format) -> PathBuf {
    dir.join(format!("{table}.{}", format.extension()))
}

/// Schema of `securities`.
pub fn securities_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ID", DataType::Int64, false),
        Field::new("CUSIP", DataType::Utf8, false),
        Field::new("NAME", DataType::Utf8, false),
        Field::new("SECTOR", DataType::Utf8, false),
        Field::new("RATING", DataType::Utf8, false),
        Field::new("COUPON", DataType::Float64, false),
        Field::new("MATURITY_DAYS", DataType::Int32, false),
    ]))
}

/// Schema of `quotes`.
pub fn quotes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("instrumentId", DataType::Int64, true),
        Field::new("bid", DataType::Float64, false),
        Field::new("ask", DataType::Float64, false),
        Field::new("size", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

/// The random generator of chunk `chunk` of table `table` (0 = securities, 1 = quotes):
/// every chunk has its own stream, so chunks can be made in parallel and in any order.
fn chunk_rng(seed: u64, table: u64, chunk: usize) -> SmallRng {
    let mixed =
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (table << 56) ^ (chunk as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    SmallRng::seed_from_u64(mixed)
}

fn chunk_range(total: usize, chunk: usize) -> (usize, usize) {
    let start = chunk * CHUNK_ROWS;
    (start, CHUNK_ROWS.min(total - start))
}

/// The number of chunks of a table of `rows` rows.
pub fn chunk_count(rows: usize) -> usize {
    rows.div_ceil(CHUNK_ROWS)
}

/// Chunk `chunk` of `securities` (of `total` rows): IDs `start..start + len`.
pub fn securities_chunk(seed: u64, total: usize, chunk: usize) -> RecordBatch {
    const ALNUM: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let (start, len) = chunk_range(total, chunk);
    let mut rng = chunk_rng(seed, 0, chunk);
    let ids = Int64Array::from_iter_values((start..start + len).map(|i| i as i64));
    let mut cusip = StringBuilder::with_capacity(len, len * 9);
    let mut name = StringBuilder::with_capacity(len, len * 20);
    let mut sector = StringBuilder::with_capacity(len, len * 10);
    let mut rating = StringBuilder::with_capacity(len, len * 3);
    let mut coupon = Vec::with_capacity(len);
    let mut maturity = Vec::with_capacity(len);
    let mut buf = [0u8; 32];
    for _ in 0..len {
        for b in &mut buf[..9] {
            *b = ALNUM[rng.random_range(0..36)];
        }
        cusip.append_value(std::str::from_utf8(&buf[..9]).expect("ascii"));
        let n = rng.random_range(12..=24);
        for b in &mut buf[..n] {
            *b = rng.random_range(b'A'..=b'Z');
        }
        name.append_value(std::str::from_utf8(&buf[..n]).expect("ascii"));
        sector.append_value(SECTORS[rng.random_range(0..SECTORS.len())]);
        rating.append_value(RATINGS[rng.random_range(0..RATINGS.len())]);
        coupon.push(rng.random_range(0..=10_000) as f64 / 1000.0);
        maturity.push(rng.random_range(1..=30 * 365));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids),
        Arc::new(cusip.finish()),
        Arc::new(name.finish()),
        Arc::new(sector.finish()),
        Arc::new(rating.finish()),
        Arc::new(Float64Array::from(coupon)),
        Arc::new(Int32Array::from(maturity)),
    ];
    RecordBatch::try_new(securities_schema(), columns).expect("columns match the schema")
}

/// Chunk `chunk` of `quotes` (of `total` rows) referencing `securities` IDs `0..n_securities`:
/// about 1% of `instrumentId`s are null and 1% are unknown IDs (≥ `n_securities`); `ts` is
/// strictly increasing.
pub fn quotes_chunk(seed: u64, total: usize, n_securities: usize, chunk: usize) -> RecordBatch {
    let (start, len) = chunk_range(total, chunk);
    let mut rng = chunk_rng(seed, 1, chunk);
    let n = n_securities.max(1) as i64;
    let mut ids = Vec::with_capacity(len);
    let (mut bid, mut ask, mut size, mut ts) =
        (Vec::with_capacity(len), Vec::with_capacity(len), Vec::with_capacity(len), Vec::with_capacity(len));
    for row in start..start + len {
        let kind = rng.random_range(0..100);
        ids.push(match kind {
            0 => None,
            1 => Some(n + rng.random_range(0..n)),
            _ => Some(rng.random_range(0..n)),
        });
        let bid_cents: i64 = rng.random_range(500..=20_000);
        let spread_cents: i64 = rng.random_range(1..=50);
        bid.push(bid_cents as f64 / 100.0);
        ask.push((bid_cents + spread_cents) as f64 / 100.0);
        size.push(rng.random_range(1..=100i64) * 100);
        ts.push(OPEN_MS + row as i64 * 10 + rng.random_range(0..10));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(Float64Array::from(bid)),
        Arc::new(Float64Array::from(ask)),
        Arc::new(Int64Array::from(size)),
        Arc::new(TimestampMillisecondArray::from(ts)),
    ];
    RecordBatch::try_new(quotes_schema(), columns).expect("columns match the schema")
}

/// A stream that generates `securities` in parallel chunks.
pub fn securities_stream(seed: u64, rows: usize) -> Stream {
    Stream::generate(securities_schema(), chunk_count(rows), move |chunk| Ok(securities_chunk(seed, rows, chunk)))
}

/// A stream that generates `quotes` in parallel chunks.
pub fn quotes_stream(seed: u64, rows: usize, n_securities: usize) -> Stream {
    Stream::generate(quotes_schema(), chunk_count(rows), move |chunk| Ok(quotes_chunk(seed, rows, n_securities, chunk)))
}

/// Reads table `table` (`"securities"` or `"quotes"`) of `dir` in `format`.
pub fn read_table(dir: &Path, table: &str, format: Format) -> Result<Stream> {
    let path = table_path(dir, table, format);
    match format {
        Format::Ipc => Stream::from_ipc(path),
        Format::Parquet => Stream::from_parquet(path),
        Format::Csv => {
            let schema = if table == "quotes" { quotes_schema() } else { securities_schema() };
            Stream::from_csv_source(CsvSource::new(path).with_schema(schema))
        }
    }
}

/// Writes `stream` to `path` in `format`; returns the rows written.
pub fn write_table(stream: &Stream, path: &Path, format: Format) -> Result<u64> {
    match format {
        Format::Ipc => stream.to_ipc(path),
        Format::Parquet => stream.to_parquet(path),
        Format::Csv => stream.to_csv(path),
    }
}

/// Generates both tables into `dir` in every format: first Arrow IPC straight from the
/// generator, then Parquet and CSV converted from the IPC files. `progress(table, format,
/// rows)` is called for every batch written.
pub fn generate_dataset(
    dir: &Path,
    securities: usize,
    quotes: usize,
    seed: u64,
    progress: impl Fn(&str, Format, usize) + Send + Sync + Clone + 'static,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| SabotError::io(dir, e))?;
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "# generated data: never commit\n*\n").map_err(|e| SabotError::io(&ignore, e))?;
    }
    let tables =
        [("securities", securities_stream(seed, securities)), ("quotes", quotes_stream(seed, quotes, securities))];
    for (table, stream) in tables {
        let p = progress.clone();
        let stream = stream.inspect(move |b| p(table, Format::Ipc, b.num_rows()));
        write_table(&stream, &table_path(dir, table, Format::Ipc), Format::Ipc)?;
        for format in [Format::Parquet, Format::Csv] {
            let p = progress.clone();
            let from_ipc =
                Stream::from_ipc(table_path(dir, table, Format::Ipc))?.inspect(move |b| p(table, format, b.num_rows()));
            write_table(&from_ipc, &table_path(dir, table, format), format)?;
        }
    }
    Ok(())
}

/// Whether `dir` holds both tables in `format`.
pub fn dataset_exists(dir: &Path, format: Format) -> bool {
    ["securities", "quotes"].iter().all(|t| table_path(dir, t, format).is_file())
}

/// `spreadPct = (ask - bid) / ((ask + bid) / 2) * 100`.
pub fn spread_pct() -> Expr {
    (col("ask") - col("bid")) / ((col("ask") + col("bid")) / lit(2.0)) * lit(100.0)
}

/// The enrichment: `quotes ⋈ securities` on `instrumentId = ID`, plus `spreadPct`, keeping
/// quotes whose spread is below `max_spread_pct` percent.
pub fn enrich(quotes: &Stream, securities: &Stream, max_spread_pct: f64) -> Result<Stream> {
    quotes
        .join(securities, [("instrumentId", "ID")], JoinType::Inner)?
        .with_column("spreadPct", spread_pct())?
        .filter(col("spreadPct").lt(lit(max_spread_pct)))
}

/// The top `k` rows by `size` (largest first; ties by earlier `ts`).
pub fn top_by_size(enriched: &Stream, k: usize) -> Result<Stream> {
    enriched.top_k(k, [SortKey::desc(col("size")), SortKey::asc(col("ts"))])
}
