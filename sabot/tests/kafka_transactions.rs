//! The exactly-once Kafka sink (`KafkaSink::exactly_once`) against librdkafka's mock cluster,
//! with the sink writer driven by hand as the pipeline driver drives it at checkpoints.
//!
//! The mock runs init/begin/commit/abort, but `read_committed` consumers see the messages of
//! open and aborted transactions too, and a new producer with the same transactional id does
//! not fence the old one. These tests assert what committed transactions deliver, in order,
//! the driver's call sequence (including recovery), and the error of a fenced commit (with the
//! broker's answer injected); that aborted or open transactions stay invisible cannot be
//! checked against the mock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sabot::SabotError;
use sabot::io::Sink;
use sabot::kafka::{EmbeddedCluster, KafkaSink};

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
