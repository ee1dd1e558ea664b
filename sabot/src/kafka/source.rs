//! [`KafkaSource`]: topics read by a consumer group into Arrow batches.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaConfig;
use super::consumer::{BoundedAssignment, KafkaReader, ReaderConsumer, ReaderPlan};
use super::dead_letter::DeadLetterProducer;
use super::format::Format;
use crate::io::{BatchIter, MessageIter, Scan, ScanRequest, Source};
use crate::window::WatermarkStrategy;
use crate::{Result, SabotError};

/// Where a consumer starts reading a partition it has no position for yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The group's committed offset; the earliest offset when none was committed.
    Committed,
    /// The first offset still in the partition, ignoring committed offsets.
    Earliest,
    /// Only messages produced after the start, ignoring committed offsets.
    Latest,
    /// The first message with a timestamp at or after this one (ms since the epoch).
    Timestamp(i64),
}

/// When a source stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Runs until [`StopHandle::stop`] (a consumer group member).
    Unbounded,
    /// Reads up to the high watermarks found when the scan starts, then ends (a snapshot of
    /// the topic read as a table: partitions are assigned, not subscribed).
    AtStart,
}

/// Stops a running unbounded source gracefully: readers finish their current batch, the
/// pipeline drains, and the final offsets are committed.
///
/// ```
/// let stop = sabot::kafka::StopHandle::default();
/// assert!(!stop.is_stopped());
/// stop.stop();
/// assert!(stop.is_stopped());
/// ```
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the source to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`StopHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Counters of a source, shared by its readers; read them while the pipeline runs.
///
/// ```
/// let metrics = sabot::kafka::SourceMetrics::default();
/// assert_eq!(metrics.messages(), 0);
/// ```
#[derive(Debug, Default)]
pub struct SourceMetrics {
    pub(crate) messages: AtomicU64,
    pub(crate) rows: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) assigned: AtomicU64,
}

impl SourceMetrics {
    /// Messages consumed (good and malformed).
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
    /// Rows decoded.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
    /// Malformed messages sent to the dead-letter topic.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }
    /// Offset commits issued.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
    /// Partitions the source's readers own now (after the group's last rebalance).
    pub fn assigned_partitions(&self) -> u64 {
        self.assigned.load(Ordering::Relaxed)
    }
}

/// One partition's next offset, recorded at a checkpoint barrier.
pub(crate) type Position = (Arc<str>, i32, i64);

/// A reader's positions recorded at each barrier it emitted, oldest first.
pub(crate) type Snapshots = Vec<(u64, Vec<Position>)>;

/// The next offset of each partition, by (topic, partition).
pub(crate) type Offsets = HashMap<(String, i32), i64>;

/// What the readers of one source share: the consumers (to commit from the driver thread),
/// the offsets recorded at each barrier, counters and the stop flag.
pub(crate) struct SourceShared {
    pub(crate) metrics: Arc<SourceMetrics>,
    pub(crate) stop: StopHandle,
    /// Per reader: its consumer, once open.
    pub(crate) consumers: Mutex<Vec<Option<Arc<ReaderConsumer>>>>,
    /// Per reader: (barrier id, positions) recorded when the reader emitted the barrier.
    pub(crate) pending: Mutex<Vec<Snapshots>>,
    pub(crate) dead_letters: Option<DeadLetterProducer>,
    /// Partitions that have started once in this process: without checkpoints, start offsets
    /// apply to them only the first time, later assignments resume from the committed offsets
    /// (with checkpoints, from [`SourceShared::handover`]).
    pub(crate) started: Mutex<hashbrown::HashSet<(String, i32)>>,
    /// Positions of a restored checkpoint, applied the first time a partition is assigned.
    pub(crate) restored: HashMap<(String, i32), i64>,
    /// The highest barrier id any reader emitted.
    pub(crate) max_barrier: AtomicU64,
    /// The id of the last barrier readers emit when the source stops (the same for all).
    pub(crate) stop_barrier: std::sync::OnceLock<u64>,
    /// Per reader: the positions it committed last, so unchanged positions are not re-sent.
    pub(crate) last_committed: Mutex<Vec<Vec<Position>>>,
    /// Per barrier (those not completed yet, and the last completed one): how far the
    /// pipeline's state is in every partition this run read or restored, i.e. the next offset
    /// after the last message any reader emitted before that barrier. Checkpoints record
    /// these rather than the readers' current partitions, so a partition a reader has lost,
    /// or that no reader was assigned since the restore, keeps its position in the next
    /// checkpoint instead of being read again from the start offset after a recovery.
    pub(crate) reached: Mutex<BTreeMap<u64, Offsets>>,
    /// With checkpoints: where a partition resumes when it is assigned (again) to a reader of
    /// this run: the restored position, then the position after the last message a reader
    /// had polled when the partition was revoked from it. Those messages are in the
    /// pipeline already; the committed offset lags behind them (commits follow completed
    /// checkpoints), so resuming there would count them twice in the state.
    pub(crate) handover: Mutex<Offsets>,
    /// The newest checkpoint completed (readers giving partitions back wait for it).
    pub(crate) completed: AtomicU64,
    /// Per barrier: the partitions the readers owned when they emitted it (with key groups,
    /// the partitions whose state the checkpoint holds).
    pub(crate) owned_at: Mutex<BTreeMap<u64, std::collections::BTreeSet<(String, i32)>>>,
    /// Asks every source of the pipeline for a checkpoint now.
    pub(crate) trigger: Option<crate::checkpoint::CheckpointTrigger>,
    /// With checkpoints: partitions the readers lost without handing them over (the group
    /// expelled this member, e.g. its session expired while it was stalled). Their new owner
    /// resumes from its own checkpoint, so this process must complete no checkpoint after.
    pub(crate) lost: Mutex<Vec<(String, i32)>>,
    /// With key groups: the partitions a reader of this process released, with the sequence
    /// of that release (see [`crate::checkpoint::KeyGroupChange::after_release`]).
    pub(crate) released: Mutex<HashMap<i32, u64>>,
}

impl SourceShared {
    /// Drops recorded positions of partitions a reader lost in a rebalance: their new owner
    /// commits them (and a fencing commit must not move them back).
    pub(crate) fn forget(&self, reader: usize, lost: &[(String, i32)]) {
        let kept = |(t, p, _): &Position| !lost.iter().any(|(lt, lp)| lt.as_str() == t.as_ref() && lp == p);
        let mut pending = self.pending.lock().expect("kafka pending offsets");
        if let Some(snapshots) = pending.get_mut(reader) {
            for (_, positions) in snapshots.iter_mut() {
                positions.retain(kept);
            }
        }
        if let Some(committed) = self.last_committed.lock().expect("kafka committed offsets").get_mut(reader) {
            committed.retain(kept);
        }
    }

    /// Records where a reader was at barrier `id` in every partition it read before the
    /// barrier (also those it lost since): the positions of barrier `id` and of every later
    /// barrier already begun move forward to them. A barrier's positions start from those of
    /// the barrier before it (the restored positions for the first).
    pub(crate) fn reached_at<'a>(&self, id: u64, read: impl Iterator<Item = (&'a str, i32, i64)> + Clone) {
        let mut reached = self.reached.lock().expect("kafka reached positions");
        if !reached.contains_key(&id) {
            let base = reached.range(..id).next_back().map_or_else(|| self.restored.clone(), |(_, at)| at.clone());
            reached.insert(id, base);
        }
        for (_, at) in reached.range_mut(id..) {
            for (topic, partition, next) in read.clone() {
                let offset = at.entry((topic.to_string(), partition)).or_insert(next);
                *offset = (*offset).max(next);
            }
        }
    }
}

/// Reads Kafka topics into Arrow batches: one consumer per parallel partition of the
/// pipeline, all in one consumer group, so partitions spread over the readers of this worker
/// and over every other worker of the group.
///
/// - Messages are batched by count and by time (`max_batch_messages`, `linger`).
/// - With [`KafkaSource::watermarks`], watermarks are tracked per Kafka partition and the
///   reader's watermark is the minimum over its partitions; partitions silent for
///   [`KafkaSource::idle_timeout`] stop holding it back.
/// - Offsets are committed after the records they cover have been written by the sink
///   (at-least-once): readers emit checkpoint barriers every [`KafkaSource::commit_interval`],
///   and commit the positions recorded at a barrier once it has reached the end of the pipeline.
/// - A message the format cannot decode goes to the [dead-letter topic](KafkaSource::dead_letter_topic)
///   with its topic, partition, offset and error; without one it stops the pipeline with a
///   [`SabotError::MalformedMessage`].
///
/// ```no_run
/// use std::time::Duration;
/// use sabot::prelude::*;
/// use sabot::kafka::{KafkaSource, StartOffset, format::JsonFormat};
///
/// #[derive(sabot::Record)]
/// struct Payment { account: String, amount: f64, ts: i64 }
///
/// let source = KafkaSource::new("localhost:9092", "payments")
///     .group("fraud-detection")
///     .format(JsonFormat::for_record::<Payment>())
///     .start_offset(StartOffset::Earliest)
///     .dead_letter_topic("payments.dlq")
///     .watermarks("ts", WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5)));
/// let large = Stream::from_kafka(source)?.filter(col("amount").gt(lit(1000.0)))?;
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct KafkaSource {
    pub(crate) config: KafkaConfig,
    pub(crate) topics: Vec<String>,
    pub(crate) group: Option<String>,
    pub(crate) format: Arc<dyn Format>,
    pub(crate) start: StartOffset,
    bound: Bound,
    pub(crate) max_batch_messages: usize,
    pub(crate) linger: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) watermarks: Option<(String, WatermarkStrategy)>,
    pub(crate) metadata_columns: bool,
    pub(crate) readers: Option<usize>,
    dead_letter_topic: Option<String>,
    /// The keys the topic is partitioned by (partitions are key groups).
    partitioned_by: Option<Vec<crate::expr::Expr>>,
    handover_timeout: Duration,
    metrics: Arc<SourceMetrics>,
    stop: StopHandle,
    shared: Mutex<Option<Arc<SourceShared>>>,
    /// Positions restored from a checkpoint, for the next scan.
    restored: Mutex<HashMap<(String, i32), i64>>,
    /// With key groups: the assignment shared with a source that follows this one.
    leads: Mutex<Option<Arc<super::co_partition::CoPartitioning>>>,
    /// With key groups: the source whose partitions this one follows.
    follows: Mutex<Option<Arc<super::co_partition::CoPartitioning>>>,
}

impl KafkaSource {
    /// Reads `topic` from the cluster at `brokers`, as raw strings until a
    /// [format](KafkaSource::format) is set.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSource::with_config(KafkaConfig::new(brokers), topic)
    }

    /// Reads `topic` with full client settings (security, timeouts…).
    pub fn with_config(config: KafkaConfig, topic: impl Into<String>) -> Self {
        KafkaSource {
            config,
            topics: vec![topic.into()],
            group: None,
            format: Arc::new(super::format::RawFormat::string()),
            start: StartOffset::Committed,
            bound: Bound::Unbounded,
            max_batch_messages: 4096,
            linger: Duration::from_millis(20),
            commit_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            watermarks: None,
            metadata_columns: false,
            readers: None,
            dead_letter_topic: None,
            partitioned_by: None,
            handover_timeout: Duration::from_secs(60),
            metrics: Arc::default(),
            stop: StopHandle::default(),
            shared: Mutex::new(None),
            restored: Mutex::default(),
            leads: Mutex::default(),
            follows: Mutex::default(),
        }
    }

    /// Also reads `topic`.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topics.push(topic.into());
        self
    }

    /// The consumer group (default: `sabot-<first topic>`). Workers of one app share it.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How messages are decoded.
    pub fn format(mut self, format: impl Format + 'static) -> Self {
        self.format = Arc::new(format);
        self
    }

    /// Where to start in partitions that have no position yet (default: committed offsets).
    pub fn start_offset(mut self, start: StartOffset) -> Self {
        self.start = start;
        self
    }

    /// Reads only what the topic holds when the pipeline starts, then ends: the topic read
    /// as a table. Partitions are assigned to readers, not subscribed in a group.
    pub fn bounded(mut self) -> Self {
        self.bound = Bound::AtStart;
        self
    }

    /// The most messages in one batch (default 4,096).
    pub fn max_batch_messages(mut self, messages: usize) -> Self {
        self.max_batch_messages = messages.max(1);
        self
    }

    /// How long a reader waits to fill a batch before emitting a smaller one (default 20 ms).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How often readers emit checkpoint barriers, after which offsets are committed
    /// (default 1 s).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long a partition may stay silent before it stops holding back the watermark
    /// (default 5 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Emits watermarks from the event-time column `column` (`Int64` or `Timestamp(ms)`),
    /// tracked per Kafka partition with `strategy`; windows downstream then need no
    /// `with_watermarks`.
    pub fn watermarks(mut self, column: impl Into<String>, strategy: WatermarkStrategy) -> Self {
        self.watermarks = Some((column.into(), strategy));
        self
    }

    /// Appends `_topic`, `_partition`, `_offset`, `_timestamp` and `_key` columns.
    pub fn with_metadata(mut self) -> Self {
        self.metadata_columns = true;
        self
    }

    /// Number of consumers in this worker (default: the pipeline's parallelism).
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = Some(readers.max(1));
        self
    }

    /// Sends malformed messages to `topic` (on the same cluster) instead of failing.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// With [`partitioned_by`](Self::partitioned_by): how long a reader keeps revoked
    /// partitions while it waits for the checkpoint that holds their state (default 60 s).
    /// The rebalance waits that long at most; if the checkpoint has not completed by then
    /// (it failed), the partitions go back anyway and their new owner resumes from an older
    /// checkpoint. Keep it below the group's `max.poll.interval.ms`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::prelude::*;
    /// use sabot::kafka::KafkaSource;
    /// let source = KafkaSource::new("localhost:9092", "clicks-by-user")
    ///     .partitioned_by(vec![col("user")])
    ///     .handover_timeout(Duration::from_secs(20));
    /// # let _ = source;
    /// ```
    pub fn handover_timeout(mut self, timeout: Duration) -> Self {
        self.handover_timeout = timeout;
        self
    }

    /// Declares that the topic was written by a Sabot sink partitioned by `keys`
    /// ([`KafkaSink::partition_by`](super::KafkaSink::partition_by), as repartition topics
    /// are): each partition holds the keys of one key group, so keyed state downstream (keyed
    /// by the same `keys`) moves with the partitions when the consumer group rebalances. The
    /// workers need a shared checkpoint store
    /// ([`CheckpointConfig::shared_by`](crate::checkpoint::CheckpointConfig::shared_by));
    /// see [`crate::checkpoint::KeyGroupStore`] for the protocol. One topic only.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// use sabot::kafka::KafkaSource;
    /// let source = KafkaSource::new("localhost:9092", "clicks-by-user").partitioned_by(vec![col("user")]);
    /// # let _ = source;
    /// ```
    pub fn partitioned_by(mut self, keys: Vec<crate::expr::Expr>) -> Self {
        self.partitioned_by = Some(keys);
        self
    }

    /// A librdkafka consumer property, passed through.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config = self.config.set(key, value);
        self
    }

    /// The source's counters.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// A handle that stops the source gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The consumer group this source joins.
    pub fn group_id(&self) -> String {
        self.group.clone().unwrap_or_else(|| format!("sabot-{}", self.topics[0]))
    }

    /// The topics read.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The schema of decoded rows, with the metadata columns when asked for.
    /// This source's part in a pair of co-partitioned sources, for a new scan.
    fn co_partitioning(&self) -> Option<super::consumer::CoPartitioned> {
        if let Some(co) = self.follows.lock().expect("kafka co-partitioning").clone() {
            return Some(super::consumer::CoPartitioned::Follows(co));
        }
        let co = self.leads.lock().expect("kafka co-partitioning").clone()?;
        co.reset();
        Some(super::consumer::CoPartitioned::Leads(co))
    }

    fn output_schema(&self) -> SchemaRef {
        let schema = self.format.schema();
        if !self.metadata_columns {
            return schema;
        }
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.extend(metadata_fields().into_iter().map(Arc::new));
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// Validates settings that can be checked before connecting.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.partitioned_by.is_some() && self.topics.len() != 1 {
            return Err(SabotError::plan(format!(
                "kafka source: key groups are the partitions of one topic, not of {}",
                self.topics.join(", ")
            )));
        }
        if let Some((column, _)) = &self.watermarks {
            let schema = self.format.schema();
            let field = schema.field_with_name(column).map_err(|_| SabotError::column_not_found(&schema, column))?;
            if !matches!(field.data_type(), DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _)) {
                return Err(SabotError::TypeMismatch {
                    column: column.clone(),
                    expected: DataType::Timestamp(TimeUnit::Millisecond, None),
                    found: field.data_type().clone(),
                });
            }
        }
        Ok(())
    }

    fn shared(&self) -> Option<Arc<SourceShared>> {
        self.shared.lock().expect("kafka source state").clone()
    }
}

/// The metadata columns of [`KafkaSource::with_metadata`].
pub(crate) fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new("_topic", DataType::Utf8, false),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_timestamp", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("_key", DataType::Binary, true),
    ]
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .field("topics", &self.topics)
            .field("group", &self.group_id())
            .field("format", &self.format.name())
            .finish_non_exhaustive()
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn schema(&self) -> SchemaRef {
        self.output_schema()
    }

    fn describe(&self) -> String {
        let mode = match self.bound {
            Bound::Unbounded => format!("group {}", self.group_id()),
            Bound::AtStart => "bounded".to_string(),
        };
        format!("kafka: {} ({}, {mode})", self.topics.join(", "), self.format.name())
    }

    fn is_unbounded(&self) -> bool {
        self.bound == Bound::Unbounded
    }

    fn partitions_are_key_groups(&self) -> bool {
        self.partitioned_by.is_some() && self.bound == Bound::Unbounded
    }

    fn partition_leader(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        if !self.partitions_are_key_groups() {
            return None;
        }
        let mut leads = self.leads.lock().expect("kafka co-partitioning");
        let co = leads.get_or_insert_with(|| {
            Arc::new(super::co_partition::CoPartitioning::new(self.topics[0].clone(), self.group_id()))
        });
        Some(co.clone())
    }

    fn follow_partitions_of(&self, leader: Arc<dyn std::any::Any + Send + Sync>) -> Result<()> {
        let Ok(co) = leader.downcast::<super::co_partition::CoPartitioning>() else {
            return Err(SabotError::plan("a Kafka source follows the partitions of another Kafka source only"));
        };
        let topic = &self.topics[0];
        if !self.partitions_are_key_groups() {
            return Err(SabotError::plan(format!(
                "'{topic}' is joined with '{}', whose partitions are key groups: declare how '{topic}' is \
                 partitioned too (KafkaSource::partitioned_by, by the join keys)",
                co.leader_topic
            )));
        }
        if self.group_id() == co.leader_group {
            return Err(SabotError::plan(format!(
                "'{topic}' and '{}' are joined in consumer group '{}': give the right side its own group \
                 (KafkaSource::group); it follows the left side's partitions without joining the left side's group",
                co.leader_topic, co.leader_group
            )));
        }
        let (mine, theirs) = (
            super::consumer::partition_count(&self.config, topic)?,
            super::consumer::partition_count(&self.config, &co.leader_topic)?,
        );
        if mine != theirs {
            return Err(SabotError::plan(format!(
                "a stream join across workers needs co-partitioned topics: '{}' has {theirs} partitions, \
                 '{topic}' has {mine}",
                co.leader_topic
            )));
        }
        {
            let mut follower = co.follower.lock().expect("kafka co-partitioning");
            if let Some(other) = follower.as_ref().filter(|other| *other != topic) {
                return Err(SabotError::plan(format!(
                    "'{}' is joined with both '{other}' and '{topic}': a partitioned source can pair with one \
                     other source only",
                    co.leader_topic
                )));
            }
            *follower = Some(topic.clone());
        }
        *self.follows.lock().expect("kafka co-partitioning") = Some(co);
        Ok(())
    }

    fn event_time_column(&self) -> Option<String> {
        self.watermarks.as_ref().map(|(column, _)| column.clone())
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        self.validate()?;
        let readers = self.readers.unwrap_or(request.partitions).max(1);
        let dead_letters = match &self.dead_letter_topic {
            Some(topic) => Some(DeadLetterProducer::new(&self.config, topic)?),
            None => None,
        };
        let restored = self.restored.lock().expect("kafka restored positions").clone();
        let shared = Arc::new(SourceShared {
            metrics: self.metrics.clone(),
            stop: self.stop.clone(),
            consumers: Mutex::new(vec![None; readers]),
            pending: Mutex::new(vec![Vec::new(); readers]),
            dead_letters,
            started: Mutex::default(),
            restored: restored.clone(),
            max_barrier: AtomicU64::new(0),
            stop_barrier: std::sync::OnceLock::new(),
            last_committed: Mutex::new(vec![Vec::new(); readers]),
            reached: Mutex::default(),
            handover: Mutex::new(restored.clone()),
            completed: AtomicU64::new(0),
            owned_at: Mutex::default(),
            trigger: request.checkpoint_trigger.clone(),
            lost: Mutex::new(Vec::new()),
            released: Mutex::default(),
        });
        *self.shared.lock().expect("kafka source state") = Some(shared.clone());
        let assignments = match self.bound {
            Bound::Unbounded => None,
            Bound::AtStart => Some(super::consumer::bounded_assignments(self, readers)?),
        };
        let key_groups = match (&request.key_group_store, self.partitions_are_key_groups()) {
            (Some(root), true) if request.checkpoint_interval.is_some() => {
                let topic = self.topics[0].clone();
                let partitions = super::consumer::partition_count(&self.config, &topic)?;
                tracing::info!(%topic, partitions, store = %root.display(), "partitions are key groups: keyed state follows them");
                Some(super::consumer::KeyGroupPlan {
                    store: crate::checkpoint::KeyGroupStore::new(root, self.group_id()),
                    topic,
                    partitions,
                    handover_timeout: self.handover_timeout,
                })
            }
            _ => None,
        };
        let schema = self.output_schema();
        let projected = match &request.projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        let plan = ReaderPlan {
            config: self.config.clone(),
            topics: self.topics.clone(),
            group: self.group_id(),
            format: self.format.clone(),
            start: self.start,
            max_batch_messages: self.max_batch_messages,
            linger: self.linger,
            commit_interval: request.checkpoint_interval.unwrap_or(self.commit_interval),
            checkpointing: request.checkpoint_interval.is_some(),
            idle_timeout: self.idle_timeout,
            watermarks: self.watermarks.clone(),
            metadata_columns: self.metadata_columns,
            projection: request.projection.clone(),
            schema: projected,
            shared,
            co_partitioning: key_groups.as_ref().and(self.co_partitioning()),
            key_groups,
        };
        Ok(Arc::new(KafkaScan { plan: Arc::new(plan), readers, assignments }))
    }

    fn checkpoint_positions(&self, id: u64) -> Result<Option<serde_json::Value>> {
        let Some(shared) = self.shared() else { return Ok(None) };
        let reached = shared.reached.lock().expect("kafka reached positions");
        // The positions at the barrier (or at the last one emitted before it).
        let at = reached.range(..=id).next_back().map_or(&shared.restored, |(_, at)| at);
        let mut positions: Vec<(String, i32, i64)> = at.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        positions.sort();
        if !self.partitions_are_key_groups() {
            return Ok(Some(serde_json::json!(positions)));
        }
        let owned_at = shared.owned_at.lock().expect("kafka owned partitions");
        let owned = owned_at.range(..=id).next_back().map(|(_, o)| o.iter().cloned().collect()).unwrap_or_default();
        let recorded = crate::checkpoint::OwnedPositions { group: self.group_id(), positions, owned };
        serde_json::to_value(recorded).map(Some).map_err(|e| SabotError::Execution(format!("kafka positions: {e}")))
    }

    fn restore_positions(&self, positions: &serde_json::Value) -> Result<()> {
        let parsed = parse_positions(positions)?;
        tracing::info!(partitions = parsed.len(), "kafka source resumes from checkpoint positions");
        *self.restored.lock().expect("kafka restored positions") =
            parsed.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
        Ok(())
    }

    fn stop_barrier(&self) -> Option<u64> {
        self.shared()?.stop_barrier.get().copied()
    }

    /// Commits each reader's last committed positions again, synchronously: the group
    /// coordinator rejects the commit of a member it expelled (unknown member), which fails
    /// the pipeline before the checkpoint completes. A rebalance in progress is not a fence:
    /// the member is still in the group, handing partitions over.
    fn fence(&self, id: u64) -> Result<()> {
        let Some(shared) = self.shared() else { return Ok(()) };
        if self.follows.lock().expect("kafka co-partitioning").is_some() {
            return Ok(()); // not a member of any group: its leader is fenced
        }
        let lost = shared.lost.lock().expect("kafka lost partitions").clone();
        if !lost.is_empty() {
            return Err(SabotError::kafka(
                format!("confirm the partitions of group '{}' before checkpoint {id}", self.group_id()),
                format!(
                    "this worker is no longer a member of the group: it lost partitions {lost:?} without handing \
                     them over (its session expired), so it stops without completing the checkpoint; restart it \
                     to rejoin"
                ),
            ));
        }
        let consumers = shared.consumers.lock().expect("kafka consumers").clone();
        let committed = shared.last_committed.lock().expect("kafka committed offsets").clone();
        for (reader, positions) in committed.iter().enumerate() {
            let Some(consumer) = consumers.get(reader).and_then(Option::as_ref) else { continue };
            if positions.is_empty() {
                continue;
            }
            let mut offsets = TopicPartitionList::new();
            for (topic, partition, next) in positions {
                offsets
                    .add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| SabotError::kafka(format!("commit offsets of '{topic}'"), e))?;
            }
            if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
                if is_fenced(&e) {
                    return Err(SabotError::kafka(
                        format!("confirm the partitions of group '{}' before checkpoint {id}", self.group_id()),
                        format!(
                            "this worker is no longer a member of the group ({e}): its session expired and its \
                             partitions moved to another worker, so it stops without completing the checkpoint; \
                             restart it to rejoin"
                        ),
                    ));
                }
                tracing::debug!(reader, checkpoint = id, error = %e, "fencing commit failed (not fenced)");
            }
        }
        Ok(())
    }

    /// Per reader, its group membership and its positions at the last barrier up to `id`:
    /// the offsets [`checkpoint_complete`](Source::checkpoint_complete) would commit.
    fn consumed_offsets(&self, id: u64) -> Result<crate::io::ConsumedOffsets> {
        let mut consumed = crate::io::ConsumedOffsets::default();
        let Some(shared) = self.shared() else { return Ok(consumed) };
        let consumers = shared.consumers.lock().expect("kafka consumers").clone();
        let pending = shared.pending.lock().expect("kafka pending offsets");
        for (reader, snapshots) in pending.iter().enumerate() {
            let Some((_, positions)) = snapshots.iter().take_while(|(barrier, _)| *barrier <= id).last() else {
                continue;
            };
            let Some(consumer) = consumers.get(reader).and_then(Option::as_ref) else { continue };
            if positions.is_empty() {
                continue;
            }
            let Some(metadata) = consumer.group_metadata() else { continue };
            let mut offsets = TopicPartitionList::new();
            for (topic, partition, next) in positions {
                offsets
                    .add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| SabotError::kafka(format!("offsets of '{topic}' for a transaction"), e))?;
            }
            consumed.kafka.push(GroupOffsets { metadata, offsets });
        }
        Ok(consumed)
    }

    /// Reads the group's committed offsets: the transaction committed if they reached the
    /// checkpoint's position in every partition that advanced since the checkpoint before
    /// (the partitions whose offsets the transaction carried).
    fn transaction_committed(
        &self,
        positions: &serde_json::Value,
        previous: Option<&serde_json::Value>,
    ) -> Result<bool> {
        let before: HashMap<(String, i32), i64> = match previous {
            Some(previous) => parse_positions(previous)?.into_iter().map(|(t, p, o)| ((t, p), o)).collect(),
            None => HashMap::new(),
        };
        let advanced: Vec<(String, i32, i64)> = parse_positions(positions)?
            .into_iter()
            .filter(|(t, p, o)| *o > before.get(&(t.clone(), *p)).copied().unwrap_or(0))
            .collect();
        if advanced.is_empty() {
            return Ok(true);
        }
        let group = self.group_id();
        let consumer: BaseConsumer =
            self.config.consumer_config(&[("group.id", &group), ("enable.auto.commit", "false")]).create().map_err(
                |e| SabotError::kafka(format!("create a consumer to read the offsets of group '{group}'"), e),
            )?;
        let mut partitions = TopicPartitionList::new();
        for (topic, partition, _) in &advanced {
            partitions.add_partition(topic, *partition);
        }
        let committed = consumer
            .committed_offsets(partitions, Duration::from_secs(30))
            .map_err(|e| SabotError::kafka(format!("read the committed offsets of group '{group}'"), e))?;
        let behind: Vec<String> = advanced
            .iter()
            .filter(|(topic, partition, position)| {
                let at = committed.find_partition(topic, *partition).map(|e| e.offset());
                !matches!(at, Some(Offset::Offset(offset)) if offset >= *position)
            })
            .map(|(topic, partition, position)| format!("{topic}/{partition} (checkpoint at {position})"))
            .collect();
        if !behind.is_empty() {
            tracing::warn!(group, partitions = %behind.join(", "), "the group's committed offsets are behind the checkpoint");
        }
        Ok(behind.is_empty())
    }

    fn close(&self) -> Result<()> {
        if let Some(shared) = self.shared() {
            shared.consumers.lock().expect("kafka consumers").iter_mut().for_each(|c| *c = None);
        }
        Ok(())
    }

    fn checkpoint_complete(&self, id: u64) -> Result<()> {
        let Some(shared) = self.shared() else { return Ok(()) };
        {
            // Later checkpoints start from this one's positions: older ones are not needed.
            let mut reached = shared.reached.lock().expect("kafka reached positions");
            if let Some(&base) = reached.range(..=id).next_back().map(|(barrier, _)| barrier) {
                *reached = reached.split_off(&base);
            }
            let mut owned_at = shared.owned_at.lock().expect("kafka owned partitions");
            if let Some(&base) = owned_at.range(..=id).next_back().map(|(barrier, _)| barrier) {
                *owned_at = owned_at.split_off(&base);
            }
        }
        shared.completed.fetch_max(id, Ordering::AcqRel);
        // Dead letters of the committed range must be durable before their offsets are.
        if let Some(dead_letters) = &shared.dead_letters {
            dead_letters.flush()?;
        }
        let consumers = shared.consumers.lock().expect("kafka consumers").clone();
        let mut pending = shared.pending.lock().expect("kafka pending offsets");
        for (reader, snapshots) in pending.iter_mut().enumerate() {
            let done = snapshots.iter().take_while(|(barrier, _)| *barrier <= id).count();
            if done == 0 {
                continue;
            }
            let (_, mut positions) = snapshots.drain(..done).next_back().expect("a completed snapshot");
            let Some(consumer) = consumers.get(reader).and_then(Option::as_ref) else { continue };
            positions.sort();
            let mut last = shared.last_committed.lock().expect("kafka committed offsets");
            if positions.is_empty() || last[reader] == positions {
                continue;
            }
            last[reader] = positions.clone();
            drop(last);
            let mut offsets = TopicPartitionList::new();
            for (topic, partition, next) in &positions {
                offsets
                    .add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| SabotError::kafka(format!("commit offsets of '{topic}'"), e))?;
            }
            // The final commit of a run (also the last checkpoint of a stopping one) waits for
            // the broker, so the partitions' next owner resumes after it; periodic ones do not.
            let last = id == u64::MAX || shared.stop_barrier.get().is_some_and(|&stop| id >= stop);
            let mode = if last { CommitMode::Sync } else { CommitMode::Async };
            match consumer.commit(&offsets, mode) {
                Ok(()) => {
                    shared.metrics.commits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(reader, checkpoint = id, partitions = positions.len(), "committed offsets");
                }
                // A rebalance may have taken the partitions: their new owner re-reads from
                // the last commit (at-least-once), so this is not fatal.
                Err(e) => tracing::warn!(reader, checkpoint = id, error = %e, "offset commit failed"),
            }
        }
        if id == u64::MAX {
            // The run is over: closing the consumers leaves the group at once, so partitions
            // move to the remaining members without waiting for the session timeout.
            drop(pending);
            shared.consumers.lock().expect("kafka consumers").iter_mut().for_each(|c| *c = None);
        }
        Ok(())
    }
}

/// Offsets a consumer of a [`KafkaSource`] consumed, with its group membership, for a
/// transactional producer's `send_offsets_to_transaction`.
pub(crate) struct GroupOffsets {
    pub(crate) metadata: rdkafka::consumer::ConsumerGroupMetadata,
    pub(crate) offsets: TopicPartitionList,
}

/// Whether a commit failed because the group expelled this member. (A stale generation is
/// not: a member handing partitions over in a rebalance commits with one too.)
fn is_fenced(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(error.rdkafka_error_code(), Some(Code::UnknownMemberId | Code::FencedInstanceId))
}

/// Parses the positions a Kafka source recorded in a checkpoint (with key groups, together
/// with the partitions it owned).
fn parse_positions(positions: &serde_json::Value) -> Result<Vec<(String, i32, i64)>> {
    match serde_json::from_value::<crate::checkpoint::OwnedPositions>(positions.clone()) {
        Ok(recorded) => Ok(recorded.positions),
        Err(_) => serde_json::from_value(positions.clone())
            .map_err(|e| SabotError::plan(format!("kafka source: unreadable checkpoint positions: {e}"))),
    }
}

/// A planned Kafka scan: one morsel per reader.
struct KafkaScan {
    plan: Arc<ReaderPlan>,
    readers: usize,
    /// For bounded scans: the partitions (with start and end offsets) of each reader.
    assignments: Option<Vec<BoundedAssignment>>,
}

impl Scan for KafkaScan {
    fn schema(&self) -> SchemaRef {
        self.plan.schema.clone()
    }

    fn morsel_count(&self) -> usize {
        self.readers
    }

    fn read_morsel(&self, index: usize) -> Result<BatchIter<'static>> {
        let messages = self.read_morsel_messages(index)?;
        Ok(Box::new(messages.filter_map(|m| match m {
            Ok(crate::operator::Message::Batch(b)) => Some(Ok(b)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })))
    }

    fn read_morsel_messages(&self, index: usize) -> Result<MessageIter<'static>> {
        let assignment = self.assignments.as_ref().map(|a| a[index].clone());
        Ok(Box::new(KafkaReader::open(self.plan.clone(), index, assignment)?))
    }
}
