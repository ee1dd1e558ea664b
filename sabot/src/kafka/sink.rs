//! [`KafkaSink`]: a stream's rows written to a topic.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use super::KafkaConfig;
use super::dead_letter::{DeliveryContext, DeliveryCounter};
use super::format::{Encoder, Format, JsonFormat};
use crate::expr::Expr;
use crate::io::{Committable, ConsumedOffsets, Sink, SinkWriter};
use crate::{Result, SabotError};

/// Writes rows to a Kafka topic, encoded by a [`Format`] (JSON objects by default).
///
/// - With [`KafkaSink::key`], each message's key is that column's value (text for strings
///   and numbers, bytes for binary), and librdkafka's `murmur2_random` partitioner places
///   equal keys in one partition, as the Java client does.
/// - The producer is idempotent by default (retries never duplicate a message), batches
///   messages (`linger.ms` 5), and retries failed sends itself.
/// - At every checkpoint barrier and at the end, the sink waits for the delivery reports of
///   everything sent; a message that could not be delivered fails the pipeline, naming the
///   topic, before the source commits the offsets it came from.
/// - Delivery is at-least-once by default: after a restart, messages sent after the last
///   checkpoint are sent again. [`KafkaSink::exactly_once`] writes inside Kafka transactions,
///   one per checkpoint, instead.
///
/// ```no_run
/// use sabot::prelude::*;
/// use sabot::kafka::{KafkaSink, KafkaSource, format::JsonFormat};
///
/// # let schema = std::sync::Arc::new(arrow::datatypes::Schema::empty());
/// let alerts = Stream::from_kafka(KafkaSource::new("localhost:9092", "payments").format(JsonFormat::new(schema)))?
///     .filter(col("amount").gt(lit(10_000.0)))?;
/// alerts.to_kafka(KafkaSink::new("localhost:9092", "alerts").key("account"))?;
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct KafkaSink {
    config: KafkaConfig,
    topic: String,
    format: Option<Arc<dyn Format>>,
    key: Option<String>,
    partition_by: Vec<Expr>,
    /// The `transactional.id` of [`KafkaSink::exactly_once`].
    transactional_id: Option<String>,
    /// The producer of the writer opened last, in exactly-once mode: [`Sink::commit`] commits
    /// its transaction.
    live: Arc<Mutex<Option<Arc<SinkProducer>>>>,
}

/// The producer of a sink writer.
type SinkProducer = ThreadedProducer<DeliveryContext>;

/// How long transaction operations (init, commit, abort) may block.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The committable of an exactly-once sink: which transaction a checkpoint closes. Informative
/// only: the open transaction lives in the producer, and a transaction of a dead producer
/// cannot be resumed (see [`KafkaSink::exactly_once`]).
#[derive(Debug, Serialize, Deserialize)]
struct TransactionCommittable {
    transactional_id: String,
    checkpoint: u64,
}

impl KafkaSink {
    /// Writes to `topic` on the cluster at `brokers`, as JSON until a format is set.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSink::with_config(KafkaConfig::new(brokers), topic)
    }

    /// Writes to `topic` with full client settings.
    pub fn with_config(config: KafkaConfig, topic: impl Into<String>) -> Self {
        KafkaSink {
            config,
            topic: topic.into(),
            format: None,
            key: None,
            partition_by: Vec::new(),
            transactional_id: None,
            live: Arc::new(Mutex::new(None)),
        }
    }

    /// Writes exactly once, inside Kafka transactions that commit with the pipeline's
    /// checkpoints (two-phase commit, as Flink's `KafkaSink` with `EXACTLY_ONCE`). Consumers
    /// of the topic must read with `isolation.level=read_committed` to see only committed
    /// messages.
    ///
    /// - The writer's producer gets `transactional.id` = `transactional_id`; opening it calls
    ///   `init_transactions`, which fences any older producer with the same id (a previous
    ///   incarnation of this worker: its writes and commits fail from then on) and aborts the
    ///   transaction it left open, then begins a transaction.
    /// - At a checkpoint barrier ([`SinkWriter::prepare_commit`]) the writer waits until every
    ///   message sent is delivered (a failed delivery fails the checkpoint); when the
    ///   checkpoint is complete, [`Sink::commit`] commits the transaction and begins the next.
    ///   A checkpoint that fails leaves its messages in the open transaction, which the next
    ///   completed checkpoint commits.
    /// - At the end of a bounded run, [`SinkWriter::finish`] commits the open transaction.
    ///   A writer dropped without finishing (a failed run) aborts it.
    /// - After a crash, the restarted worker's `init_transactions` aborts the transaction the
    ///   dead one left open: the messages sent after the restored checkpoint are discarded and
    ///   sent again by the replay. [`Sink::commit`] called on recovery, before the writer is
    ///   open, has no transaction to commit and does nothing.
    ///
    /// `transactional_id` must stay the same across restarts of one pipeline (so that the
    /// restart fences the dead worker) and differ between pipelines (or workers) running at
    /// the same time, or they fence each other. The checkpoint interval must stay well below
    /// the producer's `transaction.timeout.ms` (60 s by default; raise it with
    /// [`KafkaSink::set`], up to the broker's `transaction.max.timeout.ms`), or the broker
    /// aborts the transaction and the commit fails.
    ///
    /// **Offsets in the transaction.** The pipeline adds what its Kafka sources consumed up to
    /// the checkpoint to the transaction ([`Sink::add_consumed_offsets`], librdkafka's
    /// `send_offsets_to_transaction`), so the output and the consumer group's offsets commit
    /// atomically, as in Kafka Streams. The commit is the pipeline's commit point: after it,
    /// a marker is written into the checkpoint. A worker that died after the checkpoint's
    /// metadata was written but before the broker committed the transaction leaves a
    /// checkpoint without the marker; on recovery the group's committed offsets tell whether
    /// that transaction committed ([`Source::transaction_committed`]). If it did not, the
    /// checkpoint is discarded and the one before it restored, so the interval whose output
    /// was aborted is processed and written again: nothing is lost. (Flink resumes such a
    /// transaction with the producer id and epoch it stored; librdkafka cannot resume
    /// another producer's transaction, so Sabot replays it instead.)
    ///
    /// [`Source::transaction_committed`]: crate::io::Source::transaction_committed
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::Int64Array;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use arrow::record_batch::RecordBatch;
    /// use sabot::io::{Sink, SinkWriter};
    /// use sabot::kafka::{EmbeddedCluster, KafkaSink};
    ///
    /// let cluster = EmbeddedCluster::start(1)?;
    /// cluster.create_topic("alerts", 1)?;
    /// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    /// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])?;
    ///
    /// let sink = KafkaSink::with_config(cluster.config(), "alerts").exactly_once("alerts-writer");
    /// let mut writer = sink.open(schema)?; // init_transactions, begin_transaction
    /// writer.write(&batch)?;
    /// let committable = writer.prepare_commit(1)?.expect("a transaction to commit");
    /// sink.commit(1, &[committable])?; // commit_transaction, begin_transaction
    /// writer.finish()?; // commits the last (here empty) transaction
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exactly_once(mut self, transactional_id: impl Into<String>) -> Self {
        self.transactional_id = Some(transactional_id.into());
        self
    }

    /// How rows are encoded (default: one JSON object per row).
    pub fn format(mut self, format: impl Format + 'static) -> Self {
        self.format = Some(Arc::new(format));
        self
    }

    /// Takes each message's key from `column`.
    pub fn key(mut self, column: impl Into<String>) -> Self {
        self.key = Some(column.into());
        self
    }

    /// Sends all rows with equal `keys` to one partition of the topic, chosen by a hash of the
    /// key values; each message holds rows of one partition only (so an Arrow IPC message of
    /// many rows is still partitioned correctly). This is how repartition topics between the
    /// workers of an app are written.
    pub fn partition_by(mut self, keys: Vec<Expr>) -> Self {
        self.partition_by = keys;
        self
    }

    /// A librdkafka producer property, passed through (e.g. `enable.idempotence=false` for
    /// brokers without idempotence, `compression.type=zstd`).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config = self.config.set(key, value);
        self
    }

    /// The topic written.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("config", &self.config)
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("transactional_id", &self.transactional_id)
            .finish_non_exhaustive()
    }
}

impl Sink for KafkaSink {
    fn describe(&self) -> String {
        let format = self.format.as_ref().map_or("json", |f| f.name());
        match &self.transactional_id {
            Some(id) => format!("kafka: {} ({format}, exactly-once as '{id}')", self.topic),
            None => format!("kafka: {} ({format})", self.topic),
        }
    }

    fn open(&self, schema: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        let key = match &self.key {
            Some(column) => Some(schema.index_of(column).map_err(|_| SabotError::column_not_found(&schema, column))?),
            None => None,
        };
        let encoder = match &self.format {
            Some(format) => format.encoder(schema.clone())?,
            None => JsonFormat::new(schema.clone()).encoder(schema.clone())?,
        };
        let deliveries = Arc::new(DeliveryCounter::default());
        let mut config = self.config.producer_config(&[
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("partitioner", "murmur2_random"),
            ("queue.buffering.max.messages", "1000000"),
        ]);
        if let Some(id) = &self.transactional_id {
            config.set("transactional.id", id);
        }
        let producer: SinkProducer = config
            .create_with_context(DeliveryContext(deliveries.clone()))
            .map_err(|e| SabotError::kafka(format!("create a producer for '{}'", self.topic), e))?;
        let producer = Arc::new(producer);
        let partitions = if self.partition_by.is_empty() {
            0
        } else {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
                .map_err(|e| SabotError::kafka(format!("read the metadata of '{}'", self.topic), e))?;
            let count = metadata.topics().iter().find(|t| t.name() == self.topic).map_or(0, |t| t.partitions().len());
            if count == 0 {
                return Err(SabotError::kafka(format!("write to '{}'", self.topic), "the topic has no partitions"));
            }
            count
        };
        let transaction = match &self.transactional_id {
            Some(id) => {
                let context = |what: &str| format!("{what} for '{}' (transactional id '{id}')", self.topic);
                producer
                    .init_transactions(TRANSACTION_TIMEOUT)
                    .map_err(|e| transaction_error(context("initialize transactions"), id, e))?;
                producer.begin_transaction().map_err(|e| transaction_error(context("begin a transaction"), id, e))?;
                *lock(&self.live) = Some(producer.clone());
                Some(OpenTransaction { id: id.clone(), live: self.live.clone() })
            }
            None => None,
        };
        Ok(Box::new(KafkaWriter {
            topic: self.topic.clone(),
            producer,
            deliveries,
            encoder,
            key,
            partition_by: self.partition_by.clone(),
            partitions,
            transaction,
        }))
    }

    fn takes_consumed_offsets(&self) -> bool {
        self.transactional_id.is_some()
    }

    /// Sends the consumed offsets to the open transaction (exactly-once mode).
    fn add_consumed_offsets(&self, checkpoint: u64, consumed: &ConsumedOffsets) -> Result<()> {
        let Some(id) = &self.transactional_id else { return Ok(()) };
        let Some(producer) = lock(&self.live).clone() else { return Ok(()) };
        for group in &consumed.kafka {
            producer.send_offsets_to_transaction(&group.offsets, &group.metadata, TRANSACTION_TIMEOUT).map_err(|e| {
                let context = format!(
                    "send the consumed offsets of checkpoint {checkpoint} to the transaction of '{}' (transactional id '{id}')",
                    self.topic
                );
                transaction_error(context, id, e)
            })?;
        }
        Ok(())
    }

    /// Commits the open transaction of the writer this sink opened, and begins the next one
    /// (exactly-once mode). On recovery, before a writer is open, there is nothing to commit:
    /// the transaction a dead producer left open cannot be resumed and is aborted when the
    /// new writer opens (see [`KafkaSink::exactly_once`]).
    fn commit(&self, checkpoint: u64, _committables: &[Committable]) -> Result<()> {
        let Some(id) = &self.transactional_id else { return Ok(()) };
        let Some(producer) = lock(&self.live).clone() else { return Ok(()) };
        commit_transaction(&producer, &self.topic, id, checkpoint)?;
        producer.begin_transaction().map_err(|e| {
            transaction_error(format!("begin a transaction for '{}' (transactional id '{id}')", self.topic), id, e)
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A transaction error naming the topic and transactional id; fencing gets a message that
/// says who fenced the producer.
fn transaction_error(context: String, id: &str, error: KafkaError) -> SabotError {
    let fenced = matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
    );
    if fenced {
        return SabotError::kafka(
            context,
            format!(
                "this producer was fenced: a newer producer with transactional id '{id}' has started \
                 (a restarted worker or another pipeline using the same id), and this one's open transaction \
                 was aborted ({error})"
            ),
        );
    }
    SabotError::kafka(context, error)
}

/// Commits `producer`'s open transaction (checkpoint `checkpoint`): retries what librdkafka
/// calls retriable, aborts the transaction on an abortable error, and fails either way.
fn commit_transaction(producer: &SinkProducer, topic: &str, id: &str, checkpoint: u64) -> Result<()> {
    let context =
        || format!("commit the transaction of checkpoint {checkpoint} to '{topic}' (transactional id '{id}')");
    let mut attempts = 0;
    loop {
        attempts += 1;
        match producer.commit_transaction(TRANSACTION_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 3 => {
                tracing::warn!(topic, transactional_id = id, "retrying a transaction commit: {e}");
            }
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                let aborted = match producer.abort_transaction(TRANSACTION_TIMEOUT) {
                    Ok(()) => "the transaction was aborted".to_string(),
                    Err(abort) => format!("aborting the transaction failed too: {abort}"),
                };
                return Err(SabotError::kafka(context(), format!("{e}; {aborted}")));
            }
            Err(e) => return Err(transaction_error(context(), id, e)),
        }
    }
}

/// The transaction of an exactly-once writer.
struct OpenTransaction {
    id: String,
    /// The sink's slot for the live producer: cleared when the writer finishes or is dropped.
    live: Arc<Mutex<Option<Arc<SinkProducer>>>>,
}

struct KafkaWriter {
    topic: String,
    producer: Arc<SinkProducer>,
    deliveries: Arc<DeliveryCounter>,
    encoder: Box<dyn Encoder>,
    key: Option<usize>,
    partition_by: Vec<Expr>,
    partitions: usize,
    /// Exactly-once mode; `None` once the last transaction is committed by `finish`.
    transaction: Option<OpenTransaction>,
}

/// Message keys of a batch: a binary column's bytes, or any other column as text (cast once
/// per batch; each key borrows from the column).
struct MessageKeys(ArrayRef);

impl MessageKeys {
    fn new(column: &ArrayRef) -> Result<Self> {
        Ok(match column.data_type() {
            DataType::Binary | DataType::LargeBinary | DataType::Utf8 => MessageKeys(column.clone()),
            _ => MessageKeys(arrow::compute::cast(column, &DataType::Utf8)?),
        })
    }

    /// The key of `row`; `None` for a null.
    fn get(&self, row: usize) -> Option<&[u8]> {
        if self.0.is_null(row) {
            return None;
        }
        Some(match self.0.data_type() {
            DataType::Binary => self.0.as_binary::<i32>().value(row),
            DataType::LargeBinary => self.0.as_binary::<i64>().value(row),
            _ => self.0.as_string::<i32>().value(row).as_bytes(),
        })
    }
}

/// The partition of each row: a hash of its key values.
fn row_partitions(batch: &RecordBatch, keys: &[Expr], partitions: usize) -> Result<Vec<u32>> {
    let arrays = keys.iter().map(|k| k.evaluate(batch)).collect::<Result<Vec<ArrayRef>>>()?;
    let fields = arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect();
    let rows = RowConverter::new(fields)?.convert_columns(&arrays)?;
    Ok((0..rows.num_rows())
        .map(|i| (crate::operator::hash_bytes(rows.row(i).as_ref()) % partitions as u64) as u32)
        .collect())
}

impl KafkaWriter {
    fn send(&self, payload: &[u8], key: Option<&[u8]>, partition: Option<i32>) -> Result<()> {
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The local queue is full: the background thread is delivering; wait for room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => return Err(SabotError::kafka(format!("produce to '{}'", self.topic), e)),
            }
        }
    }
}

impl SinkWriter for KafkaWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if !self.partition_by.is_empty() {
            let targets = row_partitions(batch, &self.partition_by, self.partitions)?;
            let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); self.partitions];
            for (row, target) in targets.iter().enumerate() {
                rows_of[*target as usize].push(row as u32);
            }
            for (partition, rows) in rows_of.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let part = take_record_batch(batch, &UInt32Array::from(rows))?;
                for message in self.encoder.encode(&part)? {
                    self.send(&message.payload, None, Some(partition as i32))?;
                }
            }
            return self.deliveries.check(&format!("produce to '{}'", self.topic));
        }
        let keys = match self.key {
            Some(index) => Some(MessageKeys::new(batch.column(index))?),
            None => None,
        };
        for message in self.encoder.encode(batch)? {
            let key = keys.as_ref().and_then(|k| k.get(message.first_row));
            self.send(&message.payload, key, None)?;
        }
        self.deliveries.check(&format!("produce to '{}'", self.topic))
    }

    fn flush(&mut self) -> Result<()> {
        self.producer.flush(Duration::from_secs(60)).map_err(|e| match &self.transaction {
            Some(t) => transaction_error(format!("flush messages to '{}'", self.topic), &t.id, e),
            None => SabotError::kafka(format!("flush messages to '{}'", self.topic), e),
        })?;
        self.deliveries.check(&format!("produce to '{}'", self.topic))
    }

    /// Waits until everything sent is delivered; in exactly-once mode, returns the
    /// committable of the open transaction, which [`Sink::commit`] commits.
    fn prepare_commit(&mut self, checkpoint: u64) -> Result<Option<Committable>> {
        self.flush()?;
        let Some(transaction) = &self.transaction else { return Ok(None) };
        let committable = TransactionCommittable { transactional_id: transaction.id.clone(), checkpoint };
        Ok(Some(
            serde_json::to_vec(&committable)
                .map_err(|e| SabotError::kafka(format!("prepare the transaction of '{}'", self.topic), e))?,
        ))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        let Some(transaction) = self.transaction.take() else { return Ok(()) };
        release(&transaction.live, &self.producer);
        commit_transaction(&self.producer, &self.topic, &transaction.id, u64::MAX)
    }
}

/// Clears the sink's live-producer slot if it still holds `producer`.
fn release(live: &Mutex<Option<Arc<SinkProducer>>>, producer: &Arc<SinkProducer>) {
    let mut live = lock(live);
    if live.as_ref().is_some_and(|p| Arc::ptr_eq(p, producer)) {
        *live = None;
    }
}

impl Drop for KafkaWriter {
    /// An exactly-once writer dropped without finishing (a failed run) aborts its open
    /// transaction, so that `read_committed` consumers are not held back until it times out.
    fn drop(&mut self) {
        if let Some(transaction) = self.transaction.take() {
            release(&transaction.live, &self.producer);
            if let Err(e) = self.producer.abort_transaction(Duration::from_secs(5)) {
                tracing::debug!(topic = %self.topic, "aborting the transaction of a dropped writer: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{BinaryArray, Int64Array, StringArray};

    use super::*;

    #[test]
    fn keys_are_text_for_strings_and_numbers_and_bytes_for_binary() {
        let key_bytes = |column: &ArrayRef| -> Result<Vec<Option<Vec<u8>>>> {
            let keys = MessageKeys::new(column)?;
            Ok((0..column.len()).map(|row| keys.get(row).map(<[u8]>::to_vec)).collect())
        };
        let strings: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        assert_eq!(key_bytes(&strings).unwrap(), vec![Some(b"a".to_vec()), None]);
        let numbers: ArrayRef = Arc::new(Int64Array::from(vec![42]));
        assert_eq!(key_bytes(&numbers).unwrap(), vec![Some(b"42".to_vec())]);
        let binary: ArrayRef = Arc::new(BinaryArray::from(vec![&[0u8, 1][..]]));
        assert_eq!(key_bytes(&binary).unwrap(), vec![Some(vec![0, 1])]);
    }
}
