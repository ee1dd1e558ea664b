//! [`KafkaSink`]: a stream's rows written to a topic.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaConfig;
use super::dead_letter::{DeliveryContext, DeliveryCounter};
use super::format::{Encoder, Format, JsonFormat};
use crate::expr::Expr;
use crate::io::{Sink, SinkWriter};
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
}

impl KafkaSink {
    /// Writes to `topic` on the cluster at `brokers`, as JSON until a format is set.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSink::with_config(KafkaConfig::new(brokers), topic)
    }

    /// Writes to `topic` with full client settings.
    pub fn with_config(config: KafkaConfig, topic: impl Into<String>) -> Self {
        KafkaSink { config, topic: topic.into(), format: None, key: None, partition_by: Vec::new() }
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
            .finish_non_exhaustive()
    }
}

impl Sink for KafkaSink {
    fn describe(&self) -> String {
        let format = self.format.as_ref().map_or("json", |f| f.name());
        format!("kafka: {} ({format})", self.topic)
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
        let producer: ThreadedProducer<DeliveryContext> = self
            .config
            .producer_config(&[
                ("enable.idempotence", "true"),
                ("linger.ms", "5"),
                ("partitioner", "murmur2_random"),
                ("queue.buffering.max.messages", "1000000"),
            ])
            .create_with_context(DeliveryContext(deliveries.clone()))
            .map_err(|e| SabotError::kafka(format!("create a producer for '{}'", self.topic), e))?;
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
        Ok(Box::new(KafkaWriter {
            topic: self.topic.clone(),
            producer,
            deliveries,
            encoder,
            key,
            partition_by: self.partition_by.clone(),
            partitions,
        }))
    }
}

struct KafkaWriter {
    topic: String,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<DeliveryCounter>,
    encoder: Box<dyn Encoder>,
    key: Option<usize>,
    partition_by: Vec<Expr>,
    partitions: usize,
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
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| SabotError::kafka(format!("flush messages to '{}'", self.topic), e))?;
        self.deliveries.check(&format!("produce to '{}'", self.topic))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush()
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
