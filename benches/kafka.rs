//! Kafka end to end on the embedded cluster (librdkafka's mock cluster, in process, real
//! protocol): the fraud-detection pipeline beside the raw librdkafka consume rate measured in
//! the same run, Arrow IPC messages through Kafka, and end-to-end latency at a fixed rate.
//!
//! ```text
//! cargo bench --bench kafka                                  # everything
//! cargo bench --bench kafka -- fraud                         # parts whose name contains a word
//! BENCH_TXNS=400000 BENCH_IPC_ROWS=5000000 BENCH_RATE=20000 cargo bench --bench kafka
//! ```
//!
//! The mock cluster keeps only 5 MiB per partition, so topics get enough partitions to hold
//! the whole input (64 for transactions, 96 for IPC).

#[path = "../examples/fraud_detection/app.rs"]
mod app;
#[path = "../examples/fraud_detection/generator.rs"]
mod generator;
#[path = "../examples/fraud_detection/io.rs"]
#[allow(dead_code)] // the bench reads alerts with its own consumers
mod io;
#[path = "../examples/fraud_detection/rules.rs"]
mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sabot::Result;
use sabot::deps::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use sabot::deps::rdkafka::consumer::{BaseConsumer, Consumer};
use sabot::deps::rdkafka::message::Timestamp;
use sabot::deps::rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sabot::kafka::format::{IpcFormat, JsonFormat};
use sabot::kafka::{EmbeddedCluster, KafkaSink, KafkaSource, StartOffset, StopHandle};
use sabot::prelude::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Reads every message of `topic` (all `partitions`) from the start with a plain consumer.
fn raw_consume(brokers: &str, topic: &str, partitions: i32, expected: usize) -> Result<(usize, f64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "raw-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| SabotError::kafka("create the raw consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|e| SabotError::kafka("assign", e))?;
    }
    consumer.assign(&tpl).map_err(|e| SabotError::kafka("assign", e))?;
    let start = Instant::now();
    let (mut n, mut bytes) = (0usize, 0usize);
    while n < expected && start.elapsed() < Duration::from_secs(120) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, <[u8]>::len);
            n += 1;
        }
    }
    std::hint::black_box(bytes);
    Ok((n, start.elapsed().as_secs_f64()))
}

fn fraud(brokers: &str, cluster: &EmbeddedCluster) -> Result<()> {
    let accounts = env_usize("BENCH_TXNS", 400_000) / 20;
    let traffic = generator::generate(11, accounts, 19);
    let n = traffic.transactions.len();
    cluster.create_topic("transactions", 64)?;
    cluster.create_topic("alerts", 4)?;
    let produce_secs = io::produce(brokers, "transactions", &traffic.transactions, &[], 0, true)?;
    let (read, raw_secs) = raw_consume(brokers, "transactions", 64, n)?;
    assert_eq!(read, n, "the raw consumer read everything");

    // The app's own agent over the same topic, read to its end: consume, decode JSON, key by
    // account, run the rules with keyed state, encode and produce the alerts.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let source = KafkaSource::new(brokers, "transactions")
        .group("bench-fraud")
        .format(JsonFormat::for_record::<rules::Transaction>())
        .start_offset(StartOffset::Earliest)
        .readers(threads)
        .bounded();
    let start = Instant::now();
    let input = Stream::from_kafka(source)?.with_parallelism(threads).typed::<rules::Transaction>()?;
    let alerts = app::fraud::detect(input)?.to_kafka(KafkaSink::new(brokers, "alerts"))?;
    let sabot_secs = start.elapsed().as_secs_f64();
    assert_eq!(alerts as usize, traffic.expected.len(), "exactly the planted alerts");

    let raw_rate = n as f64 / raw_secs;
    let sabot_rate = n as f64 / sabot_secs;
    println!("fraud detection, {n} JSON transactions (~{} B each), 64 partitions, {threads} threads:", {
        let sample = generator::to_json(&traffic.transactions[0]);
        sample.len()
    });
    println!(
        "  produce (rdkafka ThreadedProducer)      {:>10.0} msg/s  ({produce_secs:.2} s)",
        n as f64 / produce_secs
    );
    println!("  raw librdkafka consume (ceiling)        {:>10.0} msg/s  ({raw_secs:.2} s)", raw_rate);
    println!(
        "  Sabot: consume → rules → alerts topic   {:>10.0} txn/s  ({sabot_secs:.2} s, {alerts} alerts) = {:.0}% of the ceiling",
        sabot_rate,
        100.0 * sabot_rate / raw_rate
    );
    Ok(())
}

fn ipc(brokers: &str, cluster: &EmbeddedCluster) -> Result<()> {
    let rows = env_usize("BENCH_IPC_ROWS", 5_000_000);
    cluster.create_topic("columns", 96)?;
    let batch_rows = 100_000;
    let batches: Vec<RecordBatch> = (0..rows.div_ceil(batch_rows))
        .map(|b| {
            let base = (b * batch_rows) as i64;
            let len = batch_rows.min(rows - b * batch_rows) as i64;
            RecordBatch::try_from_iter([
                ("id", Arc::new(Int64Array::from_iter_values(base..base + len)) as _),
                (
                    "account",
                    Arc::new(StringArray::from_iter_values((0..len).map(|i| format!("ACC{:06}", i % 50_000)))) as _,
                ),
                ("amount", Arc::new(Float64Array::from_iter_values((0..len).map(|i| (i % 1000) as f64 * 0.5))) as _),
                ("ts", Arc::new(Int64Array::from_iter_values(base..base + len)) as _),
            ])
            .expect("a valid batch")
        })
        .collect();
    let format = IpcFormat::new(batches[0].schema()).rows_per_message(1000);
    let start = Instant::now();
    // Keyed by each message's first id, so messages spread evenly over the partitions.
    let sink = KafkaSink::new(brokers, "columns").format(format.clone()).key("id");
    let written = Stream::from_batches(batches)?.to_kafka(sink)?;
    let produce_secs = start.elapsed().as_secs_f64();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let source = KafkaSource::new(brokers, "columns")
        .format(format)
        .start_offset(StartOffset::Earliest)
        .readers(threads)
        .max_batch_messages(64)
        .bounded();
    let start = Instant::now();
    let read = Stream::from_kafka(source)?.with_parallelism(threads).filter(col("amount").gt(lit(-1.0)))?.count()?;
    let consume_secs = start.elapsed().as_secs_f64();
    assert_eq!(read, written as usize);
    println!("Arrow IPC through Kafka, {rows} rows in messages of 1,000 rows, 96 partitions:");
    println!(
        "  Sabot sink   (encode + produce)         {:>10.0} rows/s  ({produce_secs:.2} s)",
        rows as f64 / produce_secs
    );
    println!(
        "  Sabot source (consume + decode + filter) {:>9.0} rows/s  ({consume_secs:.2} s)",
        rows as f64 / consume_secs
    );
    Ok(())
}

fn latency(brokers: &str, cluster: &EmbeddedCluster) -> Result<()> {
    let rate = env_usize("BENCH_RATE", 20_000) as u64;
    let seconds = 5;
    cluster.create_topic("paced", 4)?;
    cluster.create_topic("echo", 4)?;
    // A pass-through pipeline: each transaction comes back with its produce time.
    let source = KafkaSource::new(brokers, "paced")
        .group("bench-latency")
        .format(JsonFormat::for_record::<rules::Transaction>())
        .start_offset(StartOffset::Earliest)
        .readers(2)
        .linger(Duration::from_millis(5))
        .with_metadata();
    let stop: StopHandle = source.stop_handle();
    let pipeline = Stream::from_kafka(source)?.with_parallelism(2).select(["transaction_id", "_timestamp"])?;
    let sink_brokers = brokers.to_string();
    let runner =
        std::thread::spawn(move || pipeline.to_kafka(KafkaSink::new(sink_brokers, "echo").set("linger.ms", "1")));

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "echo-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| SabotError::kafka("create the echo reader", e))?;
    reader.subscribe(&["echo"]).map_err(|e| SabotError::kafka("subscribe", e))?;
    std::thread::sleep(Duration::from_secs(2)); // let the pipeline's group settle

    let traffic = generator::generate(5, (rate as usize * seconds).div_ceil(20), 19);
    let n = (rate as usize * seconds).min(traffic.transactions.len());
    let txs = traffic.transactions[..n].to_vec();
    let brokers_owned = brokers.to_string();
    let producer = std::thread::spawn(move || io::produce(&brokers_owned, "paced", &txs, &[], rate, false));
    let mut latencies = Vec::with_capacity(n);
    // Input create time to the time Sabot's sink produced the result.
    let mut through_sabot = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(seconds as u64 + 30);
    while latencies.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(20)) {
            let row: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())
                .map_err(|e| SabotError::kafka("read echo", e))?;
            // `_timestamp` is the input message's create time; JSON writes it as a date string.
            let produced = match row["_timestamp"].as_str() {
                Some(s) => parse_ms(s),
                None => None,
            };
            if let (Some(produced), Timestamp::CreateTime(written)) = (produced, m.timestamp()) {
                latencies.push(now_ms() - produced);
                through_sabot.push(written - produced);
            }
        }
    }
    producer.join().expect("producer thread")?;
    stop.stop();
    runner.join().expect("pipeline thread")?;
    latencies.sort_unstable();
    through_sabot.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let sabot_pct = |p: f64| through_sabot[((through_sabot.len() as f64 * p) as usize).min(through_sabot.len() - 1)];
    println!(
        "end-to-end latency at {rate} msg/s for {seconds} s (produce → Kafka → Sabot → Kafka → consumer), {} of {n}:",
        latencies.len()
    );
    println!("  p50 {} ms   p99 {} ms   max {} ms", pct(0.5), pct(0.99), latencies.last().copied().unwrap_or(0));
    println!(
        "  of which input produced → output produced by Sabot: p50 {} ms   p99 {} ms",
        sabot_pct(0.5),
        sabot_pct(0.99)
    );
    Ok(())
}

/// Milliseconds since the epoch of an Arrow JSON timestamp ("2024-01-02T03:04:05.678").
fn parse_ms(text: &str) -> Option<i64> {
    let array = sabot::deps::arrow::compute::cast(
        &StringArray::from(vec![text]),
        &sabot::deps::arrow::datatypes::DataType::Timestamp(sabot::deps::arrow::datatypes::TimeUnit::Millisecond, None),
    )
    .ok()?;
    let array = array.as_any().downcast_ref::<sabot::deps::arrow::array::TimestampMillisecondArray>()?;
    Some(array.value(0))
}

fn main() -> Result<()> {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let cluster = EmbeddedCluster::start(1)?;
    let brokers = cluster.bootstrap_servers();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "machine: {cpu}, {} threads; embedded Kafka at {brokers}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wants("fraud") {
        fraud(&brokers, &cluster)?;
    }
    if wants("ipc") {
        ipc(&brokers, &cluster)?;
    }
    if wants("latency") {
        latency(&brokers, &cluster)?;
    }
    Ok(())
}
