//! Kafka sources and sinks against librdkafka's mock cluster, over the real Kafka protocol.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sabot::SabotError;
use sabot::kafka::dead_letter::origin;
use sabot::kafka::format::{IpcFormat, JsonFormat};
use sabot::kafka::{EmbeddedCluster, KafkaConfig, KafkaSink, KafkaSource, StartOffset, ensure_topic};
use sabot::prelude::*;

/// The cluster of a test: the embedded one, or the broker at `SABOT_TEST_BROKER` (as
/// `scripts/kafka-broker-test.sh` runs these tests against tansu, a Kafka-compatible broker).
enum TestCluster {
    Embedded(EmbeddedCluster),
    External(String),
}

impl TestCluster {
    fn start() -> TestCluster {
        match std::env::var("SABOT_TEST_BROKER") {
            Ok(brokers) if !brokers.is_empty() => TestCluster::External(brokers),
            _ => TestCluster::Embedded(EmbeddedCluster::start(1).unwrap()),
        }
    }

    fn bootstrap_servers(&self) -> String {
        match self {
            TestCluster::Embedded(c) => c.bootstrap_servers(),
            TestCluster::External(brokers) => brokers.clone(),
        }
    }

    fn create_topic(&self, topic: &str, partitions: usize) -> sabot::Result<()> {
        match self {
            TestCluster::Embedded(c) => c.create_topic(topic, partitions),
            TestCluster::External(brokers) => ensure_topic(&KafkaConfig::new(brokers), topic, partitions),
        }
    }

    fn config(&self) -> KafkaConfig {
        match self {
            TestCluster::Embedded(c) => c.config(),
            TestCluster::External(brokers) => KafkaConfig::new(brokers).set("session.timeout.ms", "6000"),
        }
    }
}

/// Logs to the test output with `RUST_LOG=sabot=debug cargo test ...`.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn payments_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("account", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("ts", DataType::Int64, false),
    ]))
}

fn produce(brokers: &str, topic: &str, messages: &[(Option<&str>, &[u8])], partition: Option<i32>) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    for (key, payload) in messages {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(*payload);
        if let Some(key) = key {
            record = record.key(*key);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn payment(id: i64, account: &str, amount: f64, ts: i64) -> Vec<u8> {
    format!(r#"{{"id": {id}, "account": "{account}", "amount": {amount}, "ts": {ts}}}"#).into_bytes()
}

/// Reads every message of `topic` (all partitions) until `expected` have arrived.
fn consume_all(brokers: &str, topic: &str, expected: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("check-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = vec![];
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    // Nothing more than expected arrives.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            out.push(m.detach());
        }
    }
    out
}

fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| match committed.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

#[test]
fn bounded_read_decodes_json_sends_malformed_messages_to_the_dead_letter_topic_and_commits() {
    let cluster = TestCluster::start();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("payments", 3).unwrap();
    cluster.create_topic("payments.dlq", 1).unwrap();
    let mut messages: Vec<Vec<u8>> =
        (0..30).map(|i| payment(i, &format!("A{}", i % 4), i as f64 * 10.0, 1000 + i)).collect();
    messages[7] = b"{not json".to_vec();
    messages[19] = br#"{"id": "nineteen", "account": "A3", "amount": 1.0, "ts": 1}"#.to_vec();
    let keyed: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (Some("k"), m.as_slice())).collect();
    produce(&brokers, "payments", &keyed, Some(1));

    let source = KafkaSource::new(&brokers, "payments")
        .group("bounded-reader")
        .format(JsonFormat::new(payments_schema()))
        .start_offset(StartOffset::Earliest)
        .dead_letter_topic("payments.dlq")
        .with_metadata()
        .bounded();
    let metrics = source.metrics();
    let batch = Stream::from_kafka(source).unwrap().collect_batch().unwrap();
    let ids: Vec<i64> = batch.column_by_name("id").unwrap().as_primitive::<Int64Type>().values().to_vec();
    let expected: Vec<i64> = (0..30).filter(|i| *i != 7 && *i != 19).collect();
    assert_eq!(ids, expected);
    let offsets = batch.column_by_name("_offset").unwrap().as_primitive::<Int64Type>();
    assert_eq!(offsets.value(7), 8, "row 7 is message 8: message 7 was diverted");
    assert_eq!(metrics.dead_letters(), 2);
    assert_eq!(metrics.messages(), 30);

    let dead = consume_all(&brokers, "payments.dlq", 2);
    let origins: Vec<_> = dead.iter().map(|m| origin(m).unwrap()).collect();
    assert_eq!(origins.len(), 2);
    assert_eq!((origins[0].0.as_str(), origins[0].1, origins[0].2), ("payments", 1, 7));
    assert_eq!((origins[1].0.as_str(), origins[1].1, origins[1].2), ("payments", 1, 19));
    assert!(origins[1].3.contains("id"), "the error names the field: {}", origins[1].3);
    assert_eq!(dead[0].payload().unwrap(), b"{not json");
    assert_eq!(dead[0].key().unwrap(), b"k");

    assert_eq!(committed(&brokers, "bounded-reader", "payments", 3), vec![-1, 30, -1]);
}

#[test]
fn without_a_dead_letter_topic_a_malformed_message_fails_naming_topic_partition_and_offset() {
    let cluster = TestCluster::start();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("strict", 1).unwrap();
    produce(&brokers, "strict", &[(None, &payment(1, "A", 1.0, 1)), (None, b"[1, 2]")], None);
    let source = KafkaSource::new(&brokers, "strict").format(JsonFormat::new(payments_schema())).bounded();
    let err = Stream::from_kafka(source).unwrap().collect().unwrap_err();
    match err {
        SabotError::MalformedMessage { topic, partition, offset, .. } => {
            assert_eq!((topic.as_str(), partition, offset), ("strict", 0, 1))
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn a_keyed_pipeline_from_topic_to_topic_keeps_keys_together_and_commits_after_delivery() {
    init_logs();
    let cluster = TestCluster::start();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 4).unwrap();
    cluster.create_topic("out", 4).unwrap();
    for p in 0..4 {
        let messages: Vec<Vec<u8>> =
            (0..50).map(|i| payment(p * 100 + i, &format!("A{}", i % 5), (i * 3) as f64, i)).collect();
        let keyed: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_slice())).collect();
        produce(&brokers, "in", &keyed, Some(p as i32));
    }

    // One reader: two would join the group one after the other, and on a loaded machine the
    // first may read everything before the second's join moves partitions, which are then
    // read again from the last commit (at-least-once, but not what this test counts).
    let source = KafkaSource::with_config(cluster.config(), "in")
        .group("doubler")
        .format(JsonFormat::new(payments_schema()))
        .commit_interval(Duration::from_millis(50))
        .readers(1);
    let stop = source.stop_handle();
    let metrics = source.metrics();
    let pipeline = Stream::from_kafka(source)
        .unwrap()
        .with_parallelism(2)
        .filter(col("amount").gt_eq(lit(30.0)))
        .unwrap()
        .with_column("doubled", col("amount") * lit(2.0))
        .unwrap()
        .select(["id", "account", "doubled"])
        .unwrap();
    let sink_brokers = brokers.clone();
    let runner = std::thread::spawn(move || pipeline.to_kafka(KafkaSink::new(sink_brokers, "out").key("account")));

    // 4 partitions x 40 kept rows.
    let out = consume_all(&brokers, "out", 160);
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed(&brokers, "doubler", "in", 4) != vec![50; 4] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.stop();
    let written = runner.join().unwrap().unwrap();
    assert_eq!(written, 160);
    assert_eq!(committed(&brokers, "doubler", "in", 4), vec![50; 4]);
    assert!(metrics.commits() > 0);

    assert_eq!(out.len(), 160, "every kept row once");
    let mut partitions_of_key: BTreeMap<String, std::collections::BTreeSet<i32>> = BTreeMap::new();
    let mut ids = vec![];
    for message in &out {
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let row: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(row["account"].as_str().unwrap(), key);
        let id = row["id"].as_i64().unwrap();
        let amount = ((id % 100) * 3) as f64;
        assert_eq!(row["doubled"].as_f64().unwrap(), amount * 2.0);
        ids.push(id);
        partitions_of_key.entry(key).or_default().insert(message.partition());
    }
    ids.sort();
    let expected: Vec<i64> = (0..4).flat_map(|p| (10..50).map(move |i| p * 100 + i)).collect();
    assert_eq!(ids, expected);
    assert!(partitions_of_key.values().all(|p| p.len() == 1), "a key lives in one partition: {partitions_of_key:?}");
}

#[test]
fn per_partition_watermarks_drive_event_time_windows_and_an_idle_partition_does_not_hold_them_back() {
    let cluster = TestCluster::start();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("clicks", 2).unwrap();
    // Partition 0 is far ahead in event time; partition 1 lags behind, then goes silent.
    let p0: Vec<Vec<u8>> = (0..20).map(|i| payment(i, "A", 1.0, i * 1000)).collect();
    let p1: Vec<Vec<u8>> = (0..5).map(|i| payment(100 + i, "B", 1.0, i * 1000)).collect();
    produce(&brokers, "clicks", &p0.iter().map(|m| (None, m.as_slice())).collect::<Vec<_>>(), Some(0));
    produce(&brokers, "clicks", &p1.iter().map(|m| (None, m.as_slice())).collect::<Vec<_>>(), Some(1));

    let source = KafkaSource::new(&brokers, "clicks")
        .group("windows")
        .format(JsonFormat::new(payments_schema()))
        .start_offset(StartOffset::Earliest)
        .readers(1)
        .idle_timeout(Duration::from_millis(300))
        .watermarks("ts", WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO));
    let stop = source.stop_handle();
    let windows = Stream::from_kafka(source)
        .unwrap()
        .key_by(["account"])
        .window(WindowSpec::tumbling(Duration::from_secs(5)))
        .aggregate(vec![count_all().alias("n")])
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        windows.for_each_batch(|b| {
            tx.send(b).unwrap();
            Ok(())
        })
    });
    // Partition 1's events end at ts 4000; once it is idle, partition 0 alone moves the
    // watermark to 19000, closing A's windows [0,5s), [5,10s), [10,15s) and B's [0,5s).
    let mut rows: Vec<(String, i64, i64)> = vec![];
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows.len() < 4 && Instant::now() < deadline {
        if let Ok(batch) = rx.recv_timeout(Duration::from_millis(100)) {
            rows.extend(window_rows(&batch));
        }
    }
    stop.stop();
    runner.join().unwrap().unwrap();
    while let Ok(batch) = rx.try_recv() {
        rows.extend(window_rows(&batch));
    }
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("A".into(), 0, 5),
            ("A".into(), 5000, 5),
            ("A".into(), 10000, 5),
            ("A".into(), 15000, 5),
            ("B".into(), 0, 5)
        ],
        "the last window of A closes with the final watermark at shutdown"
    );
}

fn window_rows(batch: &RecordBatch) -> Vec<(String, i64, i64)> {
    let account = batch.column_by_name("account").unwrap().as_string::<i32>().clone();
    let start = arrow::compute::cast(batch.column_by_name("window_start").unwrap(), &DataType::Int64).unwrap();
    let start = start.as_primitive::<Int64Type>().clone();
    let n = batch.column_by_name("n").unwrap().as_primitive::<Int64Type>().clone();
    (0..batch.num_rows()).map(|i| (account.value(i).to_string(), start.value(i), n.value(i))).collect()
}

#[test]
fn arrow_ipc_messages_round_trip_through_a_topic() {
    let cluster = TestCluster::start();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("columns", 1).unwrap();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(0..2500)) as _),
        ("name", Arc::new(StringArray::from_iter_values((0..2500).map(|i| format!("n{i}")))) as _),
    ])
    .unwrap();
    let format = IpcFormat::new(batch.schema()).rows_per_message(1000);
    let written = Stream::from_batches(vec![batch.clone()])
        .unwrap()
        .to_kafka(KafkaSink::new(&brokers, "columns").format(format.clone()))
        .unwrap();
    assert_eq!(written, 2500);
    let source = KafkaSource::new(&brokers, "columns").format(format).start_offset(StartOffset::Earliest).bounded();
    let metrics = source.metrics();
    let read = Stream::from_kafka(source).unwrap().collect_batch().unwrap();
    assert_eq!(read, batch);
    assert_eq!(metrics.messages(), 3, "1,000 rows per message");
}

#[test]
fn settings_are_checked_before_connecting() {
    let source = KafkaSource::new("127.0.0.1:1", "t")
        .format(JsonFormat::new(payments_schema()))
        .watermarks("account", WatermarkStrategy::monotonous());
    let err = Stream::from_kafka(source).unwrap_err();
    assert!(err.to_string().contains("account"), "{err}");
}

/// `StartOffset::Timestamp` is checked against an external broker only: librdkafka's mock
/// cluster answers every ListOffsets-by-time request with the end of the partition.
#[test]
fn start_offsets_choose_where_reading_begins() {
    let cluster = TestCluster::start();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("timed", 1).unwrap();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for i in 0..10i64 {
        let payload = payment(i, "A", 1.0, i);
        producer
            .send(BaseRecord::<str, [u8]>::to("timed").payload(&payload).timestamp(1_000_000 + i * 1000))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let ids = |start: StartOffset| -> Vec<i64> {
        let source = KafkaSource::new(&brokers, "timed")
            .format(JsonFormat::new(payments_schema()))
            .start_offset(start)
            .bounded();
        let batch = Stream::from_kafka(source).unwrap().collect_batch().unwrap();
        batch.column_by_name("id").unwrap().as_primitive::<Int64Type>().values().to_vec()
    };
    assert_eq!(ids(StartOffset::Earliest), (0..10).collect::<Vec<_>>());
    if matches!(cluster, TestCluster::External(_)) {
        assert_eq!(ids(StartOffset::Timestamp(1_006_500)), vec![7, 8, 9]);
    }
    assert_eq!(ids(StartOffset::Latest), Vec::<i64>::new());
}
