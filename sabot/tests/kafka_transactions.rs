//! The exactly-once Kafka sink (`KafkaSink::exactly_once`) against librdkafka's mock cluster,
//! with the sink writer driven by hand as the pipeline driver drives it at checkpoints.
//!
//! The mock runs init/begin/commit/abort, but `read_committed` consumers see the messages of
//! open and aborted transactions too, and a new producer with the same transactional id does
//! not fence the old one. These tests assert what committed transactions deliver, in order,
//! the driver's call sequence (including recovery), and the error of a fenced commit (with the
//! broker's answer injected); that aborted or open transactions stay invisible cannot be
//! checked against the mock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sabot::SabotError;
use sabot::checkpoint::{CheckpointConfig, CheckpointStorage};
use sabot::io::{Committable, ConsumedOffsets, Sink, SinkWriter};
use sabot::kafka::format::JsonFormat;
use sabot::kafka::{EmbeddedCluster, KafkaSink, KafkaSource, StartOffset};
use sabot::prelude::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

fn batch(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap()
}

/// The ids of partition 0 of `topic`, read with `isolation.level=read_committed` until
/// `expected` have arrived (or 30 s), then for another half second.
fn read_committed_ids(brokers: &str, topic: &str, expected: usize) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("check-{topic}"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut ids = vec![];
    let poll_until = |deadline: Instant, ids: &mut Vec<i64>, stop_at: usize| {
        while ids.len() < stop_at && Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(50)) {
                let message = message.unwrap();
                let row: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
                ids.push(row["id"].as_i64().unwrap());
            }
        }
    };
    poll_until(Instant::now() + Duration::from_secs(30), &mut ids, expected);
    poll_until(Instant::now() + Duration::from_millis(500), &mut ids, usize::MAX);
    ids
}

#[test]
fn transactions_commit_at_each_checkpoint_and_at_finish() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("alerts", 1).unwrap();
    let sink = KafkaSink::with_config(cluster.config(), "alerts").exactly_once("alerts-tx");
    assert!(sink.describe().contains("exactly-once as 'alerts-tx'"), "{}", sink.describe());

    let mut writer = sink.open(schema()).unwrap();
    writer.write(&batch(&[1, 2])).unwrap();
    writer.write(&batch(&[3])).unwrap();
    let c1 = writer.prepare_commit(1).unwrap().expect("a committable");
    let text = String::from_utf8(c1.clone()).unwrap();
    assert!(text.contains("alerts-tx") && text.contains('1'), "{text}");
    sink.commit(1, &[c1]).unwrap();
    assert_eq!(read_committed_ids(&brokers, "alerts", 3), vec![1, 2, 3]);

    writer.write(&batch(&[4])).unwrap();
    let c2 = writer.prepare_commit(2).unwrap().expect("a committable");
    sink.commit(2, &[c2]).unwrap();
    // A checkpoint that fails: its messages stay in the open transaction until a later commit.
    writer.write(&batch(&[5, 6])).unwrap();
    let c3 = writer.prepare_commit(3).unwrap().expect("a committable");
    writer.write(&batch(&[7])).unwrap();
    let c4 = writer.prepare_commit(4).unwrap().expect("a committable");
    sink.commit(4, &[c3, c4]).unwrap();
    writer.write(&batch(&[8, 9])).unwrap();
    writer.finish().unwrap();
    assert_eq!(read_committed_ids(&brokers, "alerts", 9), (1..=9).collect::<Vec<i64>>());
}

/// What the mock supports of a restart: a second writer with the same transactional id opens
/// (its `init_transactions` succeeds) and its transactions commit. The mock does NOT fence the
/// first writer: its `InitProducerId` hands every new producer a fresh producer id instead of
/// bumping the epoch of the id registered for the transactional id, so the old producer's
/// sends and commits keep succeeding. Fencing itself is tested below with the broker's answer
/// to a fenced producer injected.
#[test]
fn a_second_writer_with_the_same_transactional_id_opens_and_commits() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("restarted", 1).unwrap();
    let old_sink = KafkaSink::with_config(cluster.config(), "restarted").exactly_once("worker-0");
    let mut old = old_sink.open(schema()).unwrap();
    old.write(&batch(&[1])).unwrap();
    let c1 = old.prepare_commit(1).unwrap().unwrap();
    old_sink.commit(1, std::slice::from_ref(&c1)).unwrap();
    old.write(&batch(&[2])).unwrap();
    old.flush().unwrap();
    std::mem::forget(old); // the worker dies with a transaction open

    // The restarted worker: recovery commits checkpoint 1 again (nothing live: a no-op) and
    // aborts what came after it, then opens; the replay writes 2 again.
    let new_sink = KafkaSink::with_config(cluster.config(), "restarted").exactly_once("worker-0");
    new_sink.commit(1, &[c1]).unwrap();
    new_sink.abort_uncommitted(Some(1)).unwrap();
    let mut new = new_sink.open(schema()).unwrap();
    new.write(&batch(&[2, 3])).unwrap();
    let c2 = new.prepare_commit(2).unwrap().unwrap();
    new_sink.commit(2, &[c2]).unwrap();
    new.write(&batch(&[4])).unwrap();
    new.finish().unwrap();
    // Against a real broker the dead worker's open transaction (holding 2) is aborted and
    // read_committed consumers see 1, 2, 3, 4; the mock shows aborted and open transactions'
    // messages to read_committed consumers too, so the old 2 shows up here as well.
    assert_eq!(read_committed_ids(&brokers, "restarted", 5), vec![1, 2, 2, 3, 4]);
}

/// A fenced producer's commit fails with an error that names the topic and the transactional
/// id and says it was fenced. The mock does not fence by itself (see above), so the broker's
/// answer to a fenced producer's `EndTxn` (PRODUCER_FENCED) is injected.
#[test]
fn a_fenced_writer_fails_its_commit_with_a_clear_error() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("fenced", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let sink = KafkaSink::new(&brokers, "fenced").exactly_once("worker-0");
    let mut writer = sink.open(schema()).unwrap();
    writer.write(&batch(&[1])).unwrap();
    let c1 = writer.prepare_commit(1).unwrap().unwrap();
    sink.commit(1, &[c1]).unwrap();

    writer.write(&batch(&[2])).unwrap();
    let c2 = writer.prepare_commit(2).unwrap().unwrap();
    mock.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let err = sink.commit(2, &[c2]).unwrap_err();
    assert!(matches!(err, SabotError::Kafka { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("checkpoint 2") && text.contains("'fenced'"), "names checkpoint and topic: {text}");
    assert!(text.contains("was fenced") && text.contains("'worker-0'"), "says who fenced it: {text}");
    // The failed writer is dropped by the driver; that must neither hang nor panic.
    drop(writer);
    assert_eq!(read_committed_ids(&brokers, "fenced", 1)[..1], [1]);
}

#[test]
fn recovery_commit_before_open_does_nothing_and_at_least_once_sinks_prepare_nothing() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("plain", 1).unwrap();
    let sink = KafkaSink::with_config(cluster.config(), "plain").exactly_once("plain-tx");
    sink.commit(7, &[br#"{"transactional_id":"plain-tx","checkpoint":7}"#.to_vec()]).unwrap();
    sink.abort_uncommitted(Some(7)).unwrap();

    let at_least_once = KafkaSink::with_config(cluster.config(), "plain");
    let mut writer = at_least_once.open(schema()).unwrap();
    writer.write(&batch(&[1, 2])).unwrap();
    assert!(writer.prepare_commit(1).unwrap().is_none());
    at_least_once.commit(1, &[]).unwrap();
    writer.finish().unwrap();
    assert_eq!(read_committed_ids(&brokers, "plain", 2), vec![1, 2]);
}

/// The exactly-once Kafka sink of a pipeline, with a crash injected when `crash` is set: the
/// commit of the first checkpoint that carries output fails after the checkpoint's metadata
/// was written and before the transaction commits, as when the worker dies in between.
#[derive(Debug)]
struct CrashBeforeCommit {
    inner: KafkaSink,
    written: Arc<Mutex<Vec<i64>>>,
    crash: bool,
    crashed_at: Arc<Mutex<Option<u64>>>,
}

impl CrashBeforeCommit {
    fn new(cluster: &EmbeddedCluster, crash: bool) -> Self {
        CrashBeforeCommit {
            inner: KafkaSink::with_config(cluster.config(), "copies").exactly_once("copier-tx"),
            written: Arc::default(),
            crash,
            crashed_at: Arc::default(),
        }
    }
}

struct RecordingWriter {
    inner: Box<dyn SinkWriter>,
    written: Arc<Mutex<Vec<i64>>>,
}

impl SinkWriter for RecordingWriter {
    fn write(&mut self, batch: &RecordBatch) -> sabot::Result<()> {
        let ids = batch.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        self.written.lock().unwrap().extend(ids.values().iter().copied());
        self.inner.write(batch)
    }
    fn flush(&mut self) -> sabot::Result<()> {
        self.inner.flush()
    }
    fn prepare_commit(&mut self, checkpoint: u64) -> sabot::Result<Option<Committable>> {
        self.inner.prepare_commit(checkpoint)
    }
    fn finish(self: Box<Self>) -> sabot::Result<()> {
        self.inner.finish()
    }
}

impl Sink for CrashBeforeCommit {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn open(&self, schema: SchemaRef) -> sabot::Result<Box<dyn SinkWriter>> {
        Ok(Box::new(RecordingWriter { inner: self.inner.open(schema)?, written: self.written.clone() }))
    }
    fn commit(&self, checkpoint: u64, committables: &[Committable]) -> sabot::Result<()> {
        if self.crash && !self.written.lock().unwrap().is_empty() {
            *self.crashed_at.lock().unwrap() = Some(checkpoint);
            return Err(SabotError::Execution("injected crash before the transaction commits".into()));
        }
        self.inner.commit(checkpoint, committables)
    }
    fn abort_uncommitted(&self, restored: Option<u64>) -> sabot::Result<()> {
        self.inner.abort_uncommitted(restored)
    }
    fn takes_consumed_offsets(&self) -> bool {
        self.inner.takes_consumed_offsets()
    }
    fn add_consumed_offsets(&self, checkpoint: u64, consumed: &ConsumedOffsets) -> sabot::Result<()> {
        self.inner.add_consumed_offsets(checkpoint, consumed)
    }
}

/// When [`copy_numbers`] stops its pipeline.
enum StopWhen {
    /// Never: the pipeline runs until it fails.
    Failed,
    /// Once the sink has written this many rows and two more checkpoints completed.
    Written(usize),
}

/// Copies topic `numbers` (JSON `{"id": n}`) into `copies` through `sink`, checkpointing
/// every 50 ms; returns the pipeline's result.
fn copy_numbers(
    cluster: &EmbeddedCluster,
    checkpoints: &CheckpointConfig,
    sink: CrashBeforeCommit,
    stop_when: StopWhen,
) -> sabot::Result<u64> {
    let source = KafkaSource::with_config(cluster.config(), "numbers")
        .group("copier")
        .start_offset(StartOffset::Earliest)
        .format(JsonFormat::new(schema()));
    let stop = source.stop_handle();
    let pipeline = Stream::from_kafka(source)?.with_parallelism(1).with_checkpointing(checkpoints.clone());
    let written = sink.written.clone();
    let runner = std::thread::spawn(move || pipeline.to_sink(&sink));
    if let StopWhen::Written(rows) = stop_when {
        let deadline = Instant::now() + Duration::from_secs(60);
        let completed_before = checkpoints.metrics.completed();
        while written.lock().unwrap().len() < rows || checkpoints.metrics.completed() < completed_before + 2 {
            assert!(Instant::now() < deadline, "only {} of {rows} rows", written.lock().unwrap().len());
            assert!(!runner.is_finished(), "the pipeline ended early: {:?}", runner.join().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.stop();
    }
    runner.join().unwrap()
}

/// Recovery when the worker died between a checkpoint's metadata and its transaction commit:
/// the transaction never committed (the group's offsets, which travel in it, did not move),
/// so that checkpoint is discarded and the one before it restored; its interval is processed
/// and written again, and nothing is lost. (Restoring that checkpoint instead would skip the
/// aborted interval's input.) Then a crash after the commit but before the commit marker:
/// the group's offsets confirm the transaction, and the checkpoint is restored.
///
/// On the mock the aborted messages stay visible to `read_committed` consumers and offsets
/// sent to a transaction are not stored (the plain commit that follows each completed
/// checkpoint is), so this asserts what the pipeline writes, not what a consumer would see.
#[test]
fn a_checkpoint_whose_transaction_did_not_commit_is_replayed_from_the_one_before() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    cluster.create_topic("numbers", 2).unwrap();
    cluster.create_topic("copies", 1).unwrap();
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
    for id in 0..1000i64 {
        let payload = format!(r#"{{"id":{id}}}"#);
        let key = id.to_string();
        producer.send(BaseRecord::to("numbers").key(&key).payload(&payload)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = CheckpointConfig::new(dir.path()).with_interval(Duration::from_millis(50));
    let storage = CheckpointStorage::open(dir.path(), 3).unwrap();

    // Run 1 dies in the commit of the first checkpoint with output.
    let crashing = CrashBeforeCommit::new(&cluster, true);
    let (first, crashed_at) = (crashing.written.clone(), crashing.crashed_at.clone());
    let err = copy_numbers(&cluster, &checkpoints, crashing, StopWhen::Failed).unwrap_err();
    assert!(err.to_string().contains("injected crash"), "{err}");
    let lost = crashed_at.lock().unwrap().expect("the crash happened");
    assert_eq!(storage.latest().unwrap().unwrap().1.id, lost, "its metadata was written");
    assert!(!first.lock().unwrap().is_empty());

    // Run 2 finds no commit marker and the group's offsets behind that checkpoint: it
    // deletes it, restores the one before (none here), and writes every row again.
    let replaying = CrashBeforeCommit::new(&cluster, false);
    let second = replaying.written.clone();
    copy_numbers(&cluster, &checkpoints, replaying, StopWhen::Written(1000)).unwrap();
    assert_ne!(checkpoints.metrics.restored_id(), lost);
    assert!(!storage.checkpoint_dir(lost).exists(), "the aborted checkpoint is deleted");
    let mut rows = second.lock().unwrap().clone();
    rows.sort();
    assert_eq!(rows, (0..1000).collect::<Vec<i64>>(), "every row once, none lost");
    let (last_dir, last) = storage.latest().unwrap().unwrap();
    assert!(last_dir.join("_COMMITTED").exists(), "committed checkpoints are marked");

    // Run 3 finds no marker (removed, as if it crashed right after the commit), but the
    // group's offsets confirm the transaction: it restores that checkpoint and has nothing
    // to write again.
    std::fs::remove_file(last_dir.join("_COMMITTED")).unwrap();
    let resuming = CrashBeforeCommit::new(&cluster, false);
    let third = resuming.written.clone();
    copy_numbers(&cluster, &checkpoints, resuming, StopWhen::Written(0)).unwrap();
    assert_eq!(checkpoints.metrics.restored_id(), last.id);
    assert!(third.lock().unwrap().is_empty(), "{} rows written again", third.lock().unwrap().len());
}
