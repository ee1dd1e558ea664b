//! Rough read throughput of the file sources (ignored by default; run with
//! `cargo test --release -p sabot --test io_throughput -- --ignored --nocapture`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sabot::io::csv::CsvSource;
use sabot::io::ipc::IpcSink;
use sabot::io::ipc::IpcSource;
use sabot::io::json::JsonLinesSource;
use sabot::io::parquet::{ParquetSink, ParquetSource};
use sabot::io::{ScanRequest, Sink, Source};

fn parallel_count(source: &dyn Source, threads: usize) -> usize {
    let scan = source
        .scan(&ScanRequest {
            projection: None,
            filters: vec![],
            batch_size: 8192,
        })
        .unwrap();
    let next = AtomicUsize::new(0);
    let rows = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let m = next.fetch_add(1, Ordering::Relaxed);
                    if m >= scan.morsel_count() {
                        break;
                    }
                    for b in scan.read_morsel(m).unwrap() {
                        rows.fetch_add(b.unwrap().num_rows(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    rows.into_inner()
}

fn time(name: &str, rows_expected: usize, f: impl Fn() -> usize) {
    let _ = f(); // warm the page cache
    let start = Instant::now();
    let rows = f();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(rows, rows_expected);
    println!(
        "{name}: {rows} rows in {secs:.3} s = {:.1} M rows/s",
        rows as f64 / secs / 1e6
    );
}

#[test]
#[ignore]
fn throughput() {
    let n = 5_000_000usize;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("big.csv");
    let mut text = String::with_capacity(n * 40);
    text.push_str("id,qty,price,category,name\n");
    for i in 0..n {
        use std::fmt::Write;
        writeln!(
            text,
            "{i},{},{:.2},{},customer_{}",
            i % 1000,
            (i % 10007) as f64 * 1.37,
            ["A", "B", "C", "D"][i % 4],
            i % 50_000
        )
        .unwrap();
    }
    std::fs::write(&csv, &text).unwrap();
    println!("csv: {} MB, {threads} threads", text.len() >> 20);
    drop(text);
    let source = CsvSource::new(&csv);
    time("csv", n, || parallel_count(&source, threads));

    // Convert to the other formats through the sinks, then read them back.
    let scan = source
        .scan(&ScanRequest {
            batch_size: 65536,
            ..Default::default()
        })
        .unwrap();
    let schema = scan.schema();
    let pq = dir.path().join("big.parquet");
    let ipc = dir.path().join("big.arrow");
    let mut pw = ParquetSink::new(&pq).open(schema.clone()).unwrap();
    let mut iw = IpcSink::new(&ipc).open(schema.clone()).unwrap();
    for m in 0..scan.morsel_count() {
        for b in scan.read_morsel(m).unwrap() {
            let b = b.unwrap();
            pw.write(&b).unwrap();
            iw.write(&b).unwrap();
        }
    }
    pw.finish().unwrap();
    iw.finish().unwrap();
    let pq_source = ParquetSource::new(&pq).unwrap();
    time("parquet", n, || parallel_count(&pq_source, threads));
    let open = Instant::now();
    let ipc_source = IpcSource::new(&ipc).unwrap();
    println!("ipc open: {:.3} ms", open.elapsed().as_secs_f64() * 1e3);
    time("ipc", n, || parallel_count(&ipc_source, threads));

    let json = dir.path().join("big.jsonl");
    let mut jw = sabot::io::json::JsonLinesSink::new(&json)
        .open(schema.clone())
        .unwrap();
    for m in 0..scan.morsel_count().min(13) {
        for b in scan.read_morsel(m).unwrap() {
            jw.write(&b.unwrap()).unwrap();
        }
    }
    jw.finish().unwrap();
    let json_source = JsonLinesSource::new(&json).schema(schema.clone());
    let json_rows = parallel_count(&json_source, threads);
    time("json", json_rows, || parallel_count(&json_source, threads));
}
