//! One reader of a Kafka source: a consumer polled on a pipeline thread, turned into
//! batches, watermarks and checkpoint barriers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::compute::max;
use arrow::datatypes::SchemaRef;
use hashbrown::HashMap;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext as RdConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaConfig;
use super::co_partition::{CoPartitioning, FollowerStep};
use super::dead_letter::DeadLetter;
use super::format::{Decoder, Format};
use super::source::{KafkaSource, Position, SourceShared, StartOffset};
use crate::operator::{CheckpointBarrier, Message, Watermark};
use crate::window::{WatermarkGenerator, WatermarkStrategy};
use crate::{Result, SabotError};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a reader needs, shared by the readers of one scan.
pub(crate) struct ReaderPlan {
    pub(crate) config: KafkaConfig,
    pub(crate) topics: Vec<String>,
    pub(crate) group: String,
    pub(crate) format: Arc<dyn Format>,
    pub(crate) start: StartOffset,
    pub(crate) max_batch_messages: usize,
    pub(crate) linger: Duration,
    pub(crate) commit_interval: Duration,
    /// The pipeline checkpoints: on stop, emit a last barrier and no final watermark.
    pub(crate) checkpointing: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) watermarks: Option<(String, WatermarkStrategy)>,
    pub(crate) metadata_columns: bool,
    pub(crate) projection: Option<Vec<usize>>,
    pub(crate) schema: SchemaRef,
    pub(crate) shared: Arc<SourceShared>,
    /// The topic's partitions are key groups whose state moves with them.
    pub(crate) key_groups: Option<KeyGroupPlan>,
    /// With key groups: another source follows this one's partitions (`Leads`), or this one
    /// follows another's (`Follows`: its readers do not join the consumer group).
    pub(crate) co_partitioning: Option<CoPartitioned>,
}

/// The role of a source in a pair of co-partitioned sources (see [`CoPartitioning`]).
pub(crate) enum CoPartitioned {
    Leads(Arc<CoPartitioning>),
    Follows(Arc<CoPartitioning>),
}

/// How a source whose partitions are key groups hands them over (see
/// [`crate::checkpoint::KeyGroupStore`]).
pub(crate) struct KeyGroupPlan {
    pub(crate) store: crate::checkpoint::KeyGroupStore,
    pub(crate) topic: String,
    pub(crate) partitions: u32,
    /// How long revoked partitions wait for the checkpoint holding their state before they
    /// go back anyway (the checkpoint failed; the new owner resumes from an older one).
    pub(crate) handover_timeout: Duration,
}

/// The number of partitions of `topic`.
pub(crate) fn partition_count(config: &KafkaConfig, topic: &str) -> Result<u32> {
    let consumer: BaseConsumer = config
        .client_config(&[("enable.auto.commit", "false")])
        .create()
        .map_err(|e| SabotError::kafka("create a consumer", e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| SabotError::kafka(format!("read the metadata of '{topic}'"), e))?;
    let count = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    if count == 0 {
        return Err(SabotError::kafka(format!("read '{topic}'"), "the topic does not exist or has no partitions"));
    }
    Ok(count as u32)
}

/// Key groups of one reader changing hands, between its rebalance callback and its loop.
#[derive(Default)]
pub(crate) struct Handover {
    /// Changes acquiring the state of assigned partitions.
    acquired: Vec<crate::checkpoint::KeyGroupChange>,
    /// Partitions revoked and paused, not yet given back to the group.
    revoked: Vec<i32>,
    /// The checkpoint that must complete before they are given back, and since when.
    revoke_checkpoint: Option<(u64, Instant)>,
    /// The reader is going away: partitions are given back at once.
    closing: bool,
}

/// How long dropping a consumer may take before it is left to close in the background.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A reader's consumer, closed on drop on a helper thread that is waited for at most
/// [`CLOSE_TIMEOUT`]. Closing serves the group's last rebalance, whose revocation calls
/// `unassign`, a request to librdkafka's group thread that waits without a timeout; once in
/// a while that request is never answered and the close would block forever (the hang
/// librdkafka #4041 describes). The pipeline then goes on and the consumer's close is
/// abandoned; the group notices the member is gone after its session timeout.
pub(crate) struct ReaderConsumer(Option<BaseConsumer<ConsumerContext>>);

impl std::ops::Deref for ReaderConsumer {
    type Target = BaseConsumer<ConsumerContext>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("the consumer is only taken on drop")
    }
}

impl Drop for ReaderConsumer {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else { return };
        let (closed, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("sabot-consumer-close".into()).spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
        // Without a helper thread the closure, consumer included, was dropped right here.
        if spawned.is_ok() && wait.recv_timeout(CLOSE_TIMEOUT).is_err() {
            tracing::warn!(
                timeout = ?CLOSE_TIMEOUT,
                "a Kafka consumer did not close in time (librdkafka #4041): it is left to close in the background"
            );
        }
    }
}

/// Rebalance hooks of a reader's consumer: applies the start offset to partitions seen for
/// the first time and forgets the pending offsets of partitions that were taken away.
pub(crate) struct ConsumerContext {
    reader: usize,
    start: StartOffset,
    /// The pipeline checkpoints: a partition assigned again resumes where this run left it.
    checkpointing: bool,
    shared: Arc<SourceShared>,
    /// With key groups: what the reader's loop still has to do for a rebalance.
    handover: Option<(Arc<std::sync::Mutex<Handover>>, Arc<std::sync::atomic::AtomicBool>)>,
    key_groups: Option<Arc<ReaderPlan>>,
}

impl ClientContext for ConsumerContext {}

impl RdConsumerContext for ConsumerContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if !self.acquire_key_groups(tpl) {
                    self.apply_start_offsets(consumer, tpl);
                }
                let partitions: Vec<_> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                tracing::info!(reader = self.reader, ?partitions, "partitions assigned");
                self.shared.metrics.assigned.fetch_add(partitions.len() as u64, Ordering::Relaxed);
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(reader = self.reader, error = %e, "cannot take the assigned partitions");
                }
                // A partition paused while it was handed over stays paused when it comes back.
                if self.handover.is_some()
                    && let Err(e) = consumer.resume(tpl)
                {
                    tracing::error!(reader = self.reader, error = %e, "cannot resume the assigned partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost: Vec<_> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                tracing::info!(reader = self.reader, partitions = ?lost, "partitions revoked");
                if self.checkpointing && consumer.assignment_lost() {
                    // The group expelled this member (its session expired): another worker
                    // may own these partitions already, so no checkpoint may cover them now.
                    tracing::warn!(reader = self.reader, partitions = ?lost, "partitions lost: this worker is no longer a member of the group");
                    self.shared.lost.lock().expect("kafka lost partitions").extend(lost.iter().cloned());
                } else if self.defer_revoke(consumer, tpl) {
                    self.lead(FollowerStep::Pause(lost.iter().map(|(_, p)| *p).collect()));
                    return;
                }
                self.lead(FollowerStep::Unassign(lost.iter().map(|(_, p)| *p).collect()));
                // Where this reader left them: another reader of this process that gets them
                // resumes there, after the messages already in the pipeline.
                self.hand_over(consumer, tpl);
                self.shared.forget(self.reader, &lost);
                self.shared.metrics.assigned.fetch_sub(lost.len() as u64, Ordering::Relaxed);
                if let Err(e) = consumer.unassign() {
                    tracing::error!(reader = self.reader, error = %e, "cannot release the revoked partitions");
                }
            }
            other => tracing::error!(reader = self.reader, error = ?other, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::trace!(reader = self.reader, partitions = offsets.count(), "offsets committed"),
            Err(e) => tracing::warn!(reader = self.reader, error = %e, "offset commit failed"),
        }
    }
}

impl ConsumerContext {
    /// With key groups: resumes each assigned partition where the newest checkpoint holding
    /// its state left it, and queues the loading of that state for the reader's loop (ahead
    /// of the partition's first row). Returns false without key groups.
    fn acquire_key_groups(&self, tpl: &mut TopicPartitionList) -> bool {
        let (Some((handover, _)), Some(plan)) = (&self.handover, &self.key_groups) else { return false };
        let Some(key_groups) = &plan.key_groups else { return false };
        let mut acquired = vec![];
        let assigned: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        for (topic, partition) in assigned {
            match key_groups.store.locate(&topic, partition) {
                Ok(Some(holder)) => {
                    let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(holder.position));
                    acquired.push((partition, holder.checkpoint, holder.position));
                }
                Ok(None) => {
                    // No worker checkpointed this key group yet: the start offset applies.
                    let offset = match self.start {
                        StartOffset::Committed => continue,
                        StartOffset::Earliest => Offset::Beginning,
                        StartOffset::Latest => Offset::End,
                        StartOffset::Timestamp(_) => continue,
                    };
                    let _ = tpl.set_partition_offset(&topic, partition, offset);
                }
                Err(e) => {
                    tracing::error!(reader = self.reader, %topic, partition, error = %e, "cannot look up a key group's state")
                }
            }
        }
        tracing::info!(reader = self.reader, key_groups = ?acquired, "key groups to load from the checkpoint store");
        let partitions = tpl.elements().iter().map(|e| e.partition()).collect();
        let change = (!acquired.is_empty()).then(|| {
            let released = self.shared.released.lock().expect("kafka released partitions");
            let groups = acquired.iter().map(|(p, dir, _)| (*p as u32, dir.clone())).collect();
            crate::checkpoint::KeyGroupChange {
                after_release: acquired
                    .iter()
                    .filter_map(|(p, ..)| released.get(p).map(|sequence| (*p as u32, *sequence)))
                    .collect(),
                ..crate::checkpoint::KeyGroupChange::acquire(&key_groups.topic, key_groups.partitions, groups)
            }
        });
        self.lead(FollowerStep::Assign { partitions, acquire: change.clone() });
        if let Some(change) = change {
            handover.lock().expect("kafka handover").acquired.push(change);
        }
        true
    }

    /// Queues `step` for the readers of a source that follows this one's partitions.
    fn lead(&self, step: FollowerStep) {
        if let Some(plan) = &self.key_groups
            && let Some(CoPartitioned::Leads(co)) = &plan.co_partitioning
        {
            co.push(self.reader, step);
        }
    }

    /// With key groups: keeps revoked partitions (paused) until the reader's loop has
    /// completed a checkpoint holding their state and released it; they are given back to
    /// the group then (the rebalance waits). Returns false when the partitions go back now.
    fn defer_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) -> bool {
        let Some((handover, pending)) = &self.handover else { return false };
        let mut handover = handover.lock().expect("kafka handover");
        if handover.closing || self.shared.stop.is_stopped() {
            return false;
        }
        if let Err(e) = consumer.pause(tpl) {
            tracing::warn!(reader = self.reader, error = %e, "cannot pause revoked partitions");
        }
        handover.revoked.extend(tpl.elements().iter().map(|e| e.partition()));
        pending.store(true, Ordering::Release);
        true
    }

    /// Records where the reader is in the partitions being revoked from it: the offset after
    /// the last message it polled (all of them go down the pipeline), if it polled any since
    /// it got them.
    ///
    /// Not `Consumer::position`: it first asks the consumer group thread for the assignment
    /// and waits for the answer without a timeout, and such a request made in the revocation
    /// of a closing consumer can hang the close (librdkafka #4041 reports it for the rebalance
    /// protocol request). `rd_kafka_position` only reads the partitions' state.
    fn hand_over(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        let mut positions = TopicPartitionList::new();
        for e in revoked.elements() {
            positions.add_partition(e.topic(), e.partition());
        }
        // SAFETY: both pointers are valid for the call (the client outlives the callback, the
        // list is owned here); librdkafka only sets the offsets of the list's elements.
        let err = unsafe { rdkafka::bindings::rd_kafka_position(consumer.client().native_ptr(), positions.ptr()) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            tracing::error!(reader = self.reader, error = ?err, "cannot read the positions of revoked partitions");
            return;
        }
        let mut handover = self.shared.handover.lock().expect("kafka handover positions");
        for e in positions.elements() {
            if let Offset::Offset(next) = e.offset() {
                let at = handover.entry((e.topic().to_string(), e.partition())).or_insert(next);
                *at = (*at).max(next);
            }
        }
    }

    fn apply_start_offsets(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let mut started = self.shared.started.lock().expect("kafka started partitions");
        let mut by_time = TopicPartitionList::new();
        let assigned: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        let handover = self.shared.handover.lock().expect("kafka handover positions");
        for (topic, partition) in assigned {
            let first = started.insert((topic.clone(), partition));
            // With checkpoints, where this run left the partition (or the restored position)
            // wins over the committed offset, and a partition this run never read starts at
            // the start offset again. Without, a partition another reader of this run gave up
            // resumes where that reader left it (its messages are in the pipeline: the
            // committed offset lags behind them, and resuming there would process them
            // twice); other later assignments resume from the committed offsets.
            let resume = if self.checkpointing {
                handover.get(&(topic.clone(), partition))
            } else if first {
                self.shared.restored.get(&(topic.clone(), partition))
            } else {
                match handover.get(&(topic.clone(), partition)) {
                    Some(next) => Some(next),
                    None => continue,
                }
            };
            let offset = match (resume, self.start) {
                (Some(next), _) => Offset::Offset(*next),
                (None, start) => match start {
                    StartOffset::Committed => continue,
                    StartOffset::Earliest => Offset::Beginning,
                    StartOffset::Latest => Offset::End,
                    StartOffset::Timestamp(ms) => {
                        let _ = by_time.add_partition_offset(&topic, partition, Offset::Offset(ms));
                        continue;
                    }
                },
            };
            let _ = tpl.set_partition_offset(&topic, partition, offset);
        }
        drop((started, handover));
        if by_time.count() > 0 {
            match consumer.offsets_for_times(by_time, METADATA_TIMEOUT) {
                Ok(found) => {
                    for e in found.elements() {
                        // No message at or after the time: start at the end.
                        let offset = match e.offset() {
                            Offset::Offset(o) => Offset::Offset(o),
                            _ => Offset::End,
                        };
                        let _ = tpl.set_partition_offset(e.topic(), e.partition(), offset);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot look up start offsets by timestamp"),
            }
        }
    }
}

/// Per-partition progress of a reader.
struct PartitionState {
    /// The offset after the last message read.
    next_offset: i64,
    /// Bounded reads: the offset to stop at.
    end: Option<i64>,
    generator: Option<Box<dyn WatermarkGenerator>>,
    watermark: Option<i64>,
    last_active: Instant,
}

/// A reader: polls its consumer and yields batches, watermarks and barriers.
pub(crate) struct KafkaReader {
    plan: Arc<ReaderPlan>,
    index: usize,
    consumer: Arc<ReaderConsumer>,
    decoder: Box<dyn Decoder>,
    partitions: HashMap<(Arc<str>, i32), PartitionState>,
    topic_names: HashMap<String, Arc<str>>,
    out: VecDeque<Message>,
    bounded: bool,
    last_barrier: u64,
    emitted_watermark: Option<i64>,
    finished: bool,
    /// Reused across polls: the payloads of one batch, back to back.
    arena: Vec<u8>,
    /// With key groups: rebalance work shared with the consumer's callback, and whether
    /// partitions are being given back (their messages are no longer read).
    handover: Arc<std::sync::Mutex<Handover>>,
    revoke_pending: Arc<std::sync::atomic::AtomicBool>,
    /// Following another source's partitions: the leader's steps, and the partitions paused
    /// for a handover (their messages are no longer read).
    following: Option<Arc<CoPartitioning>>,
    paused: hashbrown::HashSet<i32>,
}

/// The assignment of a bounded scan: per reader, `(topic, partition, start, end)`.
pub(crate) type BoundedAssignment = Vec<(String, i32, Offset, i64)>;

/// Splits the partitions of a bounded source over `readers`, with the offsets to read.
pub(crate) fn bounded_assignments(source: &KafkaSource, readers: usize) -> Result<Vec<BoundedAssignment>> {
    let consumer: BaseConsumer = source
        .config
        .client_config(&[("group.id", &source.group_id()), ("enable.auto.commit", "false")])
        .create()
        .map_err(|e| SabotError::kafka("create a consumer", e))?;
    let mut all = Vec::new();
    for topic in &source.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| SabotError::kafka(format!("read the metadata of '{topic}'"), e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(SabotError::kafka(format!("read '{topic}'"), "the topic does not exist or has no partitions"));
        }
        for partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                .map_err(|e| SabotError::kafka(format!("read the offsets of '{topic}' partition {partition}"), e))?;
            let start = match source.start {
                StartOffset::Earliest => Offset::Offset(low),
                StartOffset::Latest => Offset::Offset(high),
                StartOffset::Committed => {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(topic, partition);
                    let committed = consumer
                        .committed_offsets(tpl, METADATA_TIMEOUT)
                        .map_err(|e| SabotError::kafka(format!("read the committed offsets of '{topic}'"), e))?;
                    match committed.find_partition(topic, partition).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => Offset::Offset(o.max(low)),
                        _ => Offset::Offset(low),
                    }
                }
                StartOffset::Timestamp(ms) => {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
                        .map_err(|e| SabotError::kafka(format!("read '{topic}'"), e))?;
                    let found = consumer
                        .offsets_for_times(tpl, METADATA_TIMEOUT)
                        .map_err(|e| SabotError::kafka(format!("look up offsets by time in '{topic}'"), e))?;
                    match found.find_partition(topic, partition).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => Offset::Offset(o),
                        _ => Offset::Offset(high),
                    }
                }
            };
            all.push((topic.clone(), partition, start, high));
        }
    }
    let mut per_reader = vec![Vec::new(); readers];
    for (i, assignment) in all.into_iter().enumerate() {
        per_reader[i % readers].push(assignment);
    }
    Ok(per_reader)
}

impl KafkaReader {
    pub(crate) fn open(plan: Arc<ReaderPlan>, index: usize, assignment: Option<BoundedAssignment>) -> Result<Self> {
        let handover: Arc<std::sync::Mutex<Handover>> = Arc::default();
        let revoke_pending: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let following = match (&plan.co_partitioning, &assignment) {
            (Some(CoPartitioned::Follows(co)), None) => Some(co.clone()),
            _ => None,
        };
        // A follower does not join the group: its leader's rebalances drive it.
        let with_key_groups = plan.key_groups.is_some() && assignment.is_none() && following.is_none();
        let context = ConsumerContext {
            reader: index,
            start: plan.start,
            checkpointing: plan.checkpointing && assignment.is_none(),
            shared: plan.shared.clone(),
            handover: with_key_groups.then(|| (handover.clone(), revoke_pending.clone())),
            key_groups: with_key_groups.then(|| plan.clone()),
        };
        let consumer: BaseConsumer<ConsumerContext> = plan
            .config
            .consumer_config(&[
                ("group.id", &plan.group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                // Brokers answer a fetch as soon as data arrives or after this wait: Kafka's
                // 500 ms default adds that much latency to a quiet stream.
                ("fetch.wait.max.ms", "20"),
                ("client.id", &format!("sabot-{}-{index}", plan.group)),
            ])
            .create_with_context(context)
            .map_err(|e| SabotError::kafka(format!("create a consumer for '{}'", plan.topics.join(", ")), e))?;
        let consumer = Arc::new(ReaderConsumer(Some(consumer)));
        let bounded = assignment.is_some();
        let mut reader = KafkaReader {
            decoder: plan.format.decoder()?,
            plan: plan.clone(),
            index,
            consumer: consumer.clone(),
            partitions: HashMap::new(),
            topic_names: HashMap::new(),
            out: VecDeque::new(),
            bounded,
            last_barrier: 0,
            emitted_watermark: None,
            finished: false,
            arena: Vec::new(),
            handover,
            revoke_pending,
            following: following.clone(),
            paused: hashbrown::HashSet::new(),
        };
        match assignment {
            Some(assignment) => {
                let mut tpl = TopicPartitionList::new();
                for (topic, partition, start, end) in &assignment {
                    let start_offset = match start {
                        Offset::Offset(o) => *o,
                        _ => 0,
                    };
                    if start_offset >= *end {
                        continue;
                    }
                    tpl.add_partition_offset(topic, *partition, *start)
                        .map_err(|e| SabotError::kafka(format!("assign '{topic}'"), e))?;
                    let state = reader.partition_state(topic, *partition);
                    state.end = Some(*end);
                    state.next_offset = start_offset;
                }
                if tpl.count() == 0 {
                    reader.finish();
                } else {
                    consumer.assign(&tpl).map_err(|e| SabotError::kafka("assign partitions", e))?;
                }
            }
            None if following.is_some() => {
                tracing::info!(reader = index, topic = %plan.topics[0], "follows the partitions of the source it is joined with");
            }
            None => {
                let topics: Vec<&str> = plan.topics.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&topics)
                    .map_err(|e| SabotError::kafka(format!("subscribe to '{}'", plan.topics.join(", ")), e))?;
            }
        }
        plan.shared.consumers.lock().expect("kafka consumers")[index] = Some(consumer);
        Ok(reader)
    }

    fn partition_state(&mut self, topic: &str, partition: i32) -> &mut PartitionState {
        let name = self.topic_names.entry_ref(topic).or_insert_with(|| Arc::from(topic)).clone();
        let generator = self.plan.watermarks.as_ref().map(|(_, strategy)| strategy.create());
        self.partitions.entry((name, partition)).or_insert_with(|| PartitionState {
            next_offset: 0,
            end: None,
            generator,
            watermark: None,
            last_active: Instant::now(),
        })
    }

    /// Polls one batch of messages (up to `max_batch_messages`, or what arrives within the
    /// linger time) and queues what comes of them.
    fn poll_batch(&mut self) -> Result<()> {
        let plan = self.plan.clone();
        let mut payloads: Vec<(usize, usize)> = Vec::with_capacity(plan.max_batch_messages);
        let mut metas: Vec<MessageMeta> = Vec::with_capacity(plan.max_batch_messages);
        self.arena.clear();
        let deadline = Instant::now() + plan.linger;
        // The first poll waits longer, so an idle reader does not spin.
        let mut timeout = plan.linger.max(Duration::from_millis(100));
        while payloads.len() < plan.max_batch_messages {
            let polled = self.consumer.poll(timeout);
            timeout = deadline.saturating_duration_since(Instant::now());
            match polled {
                None => break,
                Some(Ok(message)) if self.is_revoked(message.partition()) => {
                    // Given back to the group once the checkpoint completes: the new owner
                    // reads it from the position recorded there.
                }
                Some(Ok(message)) => {
                    // Payloads and keys go to one arena: no allocation per message.
                    let start = self.arena.len();
                    let has_payload = message.payload().is_some();
                    self.arena.extend_from_slice(message.payload().unwrap_or_default());
                    payloads.push((start, self.arena.len()));
                    let key = message.key().map(|key| {
                        let start = self.arena.len();
                        self.arena.extend_from_slice(key);
                        (start, self.arena.len())
                    });
                    let topic = self
                        .topic_names
                        .entry_ref(message.topic())
                        .or_insert_with(|| Arc::from(message.topic()))
                        .clone();
                    metas.push(MessageMeta {
                        topic,
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp: message.timestamp().to_millis(),
                        key,
                        has_payload,
                    });
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        return Err(SabotError::kafka(
                            format!("consume '{}'", plan.topics.join(", ")),
                            format!("{code:?}: {reason}"),
                        ));
                    }
                    // librdkafka retries transient errors (a broker down, a leader moving) itself.
                    tracing::warn!(reader = self.index, error = %e, "kafka consumer error; retrying");
                    break;
                }
            }
            if timeout.is_zero() {
                break;
            }
        }
        // State of newly assigned key groups is loaded ahead of their rows.
        self.emit_acquired();
        if metas.is_empty() {
            return Ok(());
        }
        tracing::trace!(reader = self.index, messages = metas.len(), "polled");
        self.process(&payloads, &metas)
    }

    /// Decodes polled messages, diverts the malformed ones, and updates partition progress.
    fn process(&mut self, payloads: &[(usize, usize)], metas: &[MessageMeta]) -> Result<()> {
        let plan = self.plan.clone();
        plan.shared.metrics.messages.fetch_add(metas.len() as u64, Ordering::Relaxed);
        // Messages without a payload (tombstones) cannot be rows of a stream.
        let mut empty: Vec<usize> = Vec::new();
        let mut slices: Vec<&[u8]> = Vec::with_capacity(payloads.len());
        let mut slice_to_message: Vec<usize> = Vec::with_capacity(payloads.len());
        for (i, (start, end)) in payloads.iter().enumerate() {
            if metas[i].has_payload {
                slices.push(&self.arena[*start..*end]);
                slice_to_message.push(i);
            } else {
                empty.push(i);
            }
        }
        let decoded = self.decoder.decode(&slices)?;
        let mut bad: Vec<(usize, String)> =
            decoded.rejected.iter().map(|r| (slice_to_message[r.index], r.reason.clone())).collect();
        bad.extend(empty.into_iter().map(|i| (i, "the message has no payload".to_string())));
        bad.sort_by_key(|(i, _)| *i);
        for (i, reason) in &bad {
            let meta = &metas[*i];
            let (start, end) = payloads[*i];
            let Some(dead_letters) = &plan.shared.dead_letters else {
                return Err(SabotError::MalformedMessage {
                    topic: meta.topic.to_string(),
                    partition: meta.partition,
                    offset: meta.offset,
                    reason: reason.clone(),
                });
            };
            tracing::warn!(topic = %meta.topic, partition = meta.partition, offset = meta.offset, %reason, "malformed message sent to the dead-letter topic");
            dead_letters.send(&DeadLetter {
                topic: &meta.topic,
                partition: meta.partition,
                offset: meta.offset,
                key: meta.key.map(|(s, e)| &self.arena[s..e]),
                payload: &self.arena[start..end],
                reason,
            })?;
            plan.shared.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
        }
        // Accepted messages, in order, with their row counts.
        let mut accepted: Vec<(usize, usize)> = Vec::with_capacity(decoded.rows_per_payload.len());
        let mut bad_iter = bad.iter().map(|(i, _)| *i).peekable();
        let mut rows = decoded.rows_per_payload.iter();
        for i in 0..metas.len() {
            if bad_iter.peek() == Some(&i) {
                bad_iter.next();
                continue;
            }
            accepted.push((i, *rows.next().unwrap_or(&0)));
        }
        let batch = decoded.batch;
        plan.shared.metrics.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.track_event_time(&batch, &accepted, metas)?;
        for meta in metas {
            let state = self.partition_state(&meta.topic, meta.partition);
            state.next_offset = state.next_offset.max(meta.offset + 1);
            state.last_active = Instant::now();
        }
        let batch = if plan.metadata_columns { with_metadata(batch, &accepted, metas, &self.arena)? } else { batch };
        let batch = match &plan.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        if batch.num_rows() > 0 {
            self.out.push_back(Message::Batch(batch));
        }
        Ok(())
    }

    /// Feeds each partition's largest event time in the batch to its watermark generator.
    fn track_event_time(
        &mut self,
        batch: &RecordBatch,
        accepted: &[(usize, usize)],
        metas: &[MessageMeta],
    ) -> Result<()> {
        let Some((column, _)) = &self.plan.watermarks else { return Ok(()) };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = crate::operator::event_times(batch, column)?;
        let mut row = 0;
        let mut per_partition: HashMap<(&str, i32), i64> = HashMap::new();
        for (i, count) in accepted {
            if *count > 0 {
                let slice = times.slice(row, *count);
                if let Some(m) = max(&slice) {
                    let meta = &metas[*i];
                    let entry = per_partition.entry((meta.topic.as_ref(), meta.partition)).or_insert(m);
                    *entry = (*entry).max(m);
                }
            }
            row += count;
        }
        let updates: Vec<(String, i32, i64)> =
            per_partition.into_iter().map(|((t, p), m)| (t.to_string(), p, m)).collect();
        for (topic, partition, max_time) in updates {
            let state = self.partition_state(&topic, partition);
            if let Some(w) = state.generator.as_mut().and_then(|g| g.on_batch(max_time)) {
                state.watermark = Some(state.watermark.map_or(w, |old| old.max(w)));
            }
        }
        Ok(())
    }

    /// The minimum watermark over partitions that are not idle, if it advanced.
    fn advance_watermark(&mut self) {
        if self.plan.watermarks.is_none() {
            return;
        }
        let now = Instant::now();
        let idle_timeout = self.plan.idle_timeout;
        let assigned: Option<Vec<(String, i32)>> = if self.bounded {
            None
        } else {
            self.consumer
                .assignment()
                .ok()
                .map(|tpl| tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect())
        };
        // A partition assigned but not read yet holds the watermark back like one that is
        // read (until it is idle): otherwise its first rows would all be late.
        for (topic, partition) in assigned.iter().flatten() {
            self.partition_state(topic, *partition);
        }
        let mut min: Option<i64> = None;
        for ((topic, partition), state) in &self.partitions {
            let owned = assigned.as_ref().is_none_or(|a| a.iter().any(|(t, p)| t == topic.as_ref() && p == partition));
            let done = state.end.is_some_and(|end| state.next_offset >= end);
            if !owned || done || now.duration_since(state.last_active) >= idle_timeout {
                continue;
            }
            let Some(w) = state.watermark else { return };
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        if let Some(w) = min
            && self.emitted_watermark.is_none_or(|e| w > e)
        {
            self.emitted_watermark = Some(w);
            self.out.push_back(Message::Watermark(Watermark(w)));
        }
    }

    /// Emits a barrier when a new commit interval has begun, recording the positions.
    fn maybe_barrier(&mut self) -> Result<()> {
        let interval = self.plan.commit_interval.as_millis().max(1) as u64;
        if self.plan.checkpointing && self.plan.shared.stop.is_stopped() {
            return Ok(()); // the stop barrier comes next
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        // Ids are aligned to the interval, so readers of every source agree on them; a
        // requested checkpoint has the id every reader finds in the trigger.
        let requested = self.plan.shared.trigger.as_ref().map_or(0, |t| t.requested());
        // A leader pauses partitions before it requests their handover checkpoint: seen now,
        // the pause comes before that checkpoint's barrier.
        self.follow_leader()?;
        let id = if self.plan.checkpointing && requested > self.last_barrier {
            requested
        } else {
            now / interval * interval
        };
        if id <= self.last_barrier {
            return Ok(());
        }
        self.emit_barrier(id);
        Ok(())
    }

    fn is_revoked(&self, partition: i32) -> bool {
        self.paused.contains(&partition)
            || (self.revoke_pending.load(Ordering::Acquire)
                && self.handover.lock().expect("kafka handover").revoked.contains(&partition))
    }

    /// A follower takes the steps its leaders took since the last call: partitions to read,
    /// to pause, to release or to give up, with the key group changes that go with them (the
    /// same changes the leaders send, for this source's topic).
    fn follow_leader(&mut self) -> Result<()> {
        let plan = self.plan.clone();
        let (Some(co), Some(key_groups)) = (self.following.clone(), &plan.key_groups) else { return Ok(()) };
        let topic = key_groups.topic.clone();
        let followers = self.plan.shared.consumers.lock().expect("kafka consumers").len();
        let list = |ps: &[i32]| {
            let mut tpl = TopicPartitionList::new();
            ps.iter().for_each(|p| {
                tpl.add_partition(&topic, *p);
            });
            tpl
        };
        for step in co.take(self.index, followers) {
            match step {
                FollowerStep::Assign { partitions: assigned, acquire } => {
                    let mut tpl = TopicPartitionList::new();
                    let acquired = acquire.as_ref().map_or(&[][..], |c| &c.acquired[..]);
                    for &p in &assigned {
                        // The position in the checkpoint the leader loads the group's state
                        // from. Without one there (this partition was not read while that
                        // state was built, or the checkpoint has just been retired), the
                        // newest checkpoint holding this partition; without any, the start
                        // offset.
                        let from = acquired.iter().find(|(g, _)| *g == p as u32).map(|(_, dir)| dir);
                        let position = match from.map(|dir| key_groups.store.position_in(dir, &topic, p)) {
                            Some(Ok(Some(position))) => Some(position),
                            _ => key_groups.store.locate(&topic, p)?.map(|holder| holder.position),
                        };
                        let offset = match (position, self.plan.start) {
                            (Some(position), _) => Offset::Offset(position),
                            (None, StartOffset::Earliest) => Offset::Beginning,
                            (None, StartOffset::Latest) => Offset::End,
                            (None, StartOffset::Committed | StartOffset::Timestamp(_)) => Offset::Stored,
                        };
                        tpl.add_partition_offset(&topic, p, offset)
                            .map_err(|e| SabotError::kafka(format!("assign '{topic}'"), e))?;
                    }
                    self.consumer
                        .incremental_assign(&tpl)
                        .map_err(|e| SabotError::kafka(format!("follow the partitions of '{topic}'"), e))?;
                    assigned.iter().for_each(|p| {
                        self.paused.remove(p);
                    });
                    // A partition paused while it was handed over stays paused when it comes back.
                    if let Err(e) = self.consumer.resume(&tpl) {
                        tracing::error!(reader = self.index, error = %e, "cannot resume followed partitions");
                    }
                    self.plan.shared.metrics.assigned.fetch_add(assigned.len() as u64, Ordering::Relaxed);
                    tracing::info!(reader = self.index, %topic, partitions = ?assigned, key_groups = ?acquired, "partitions followed");
                    if let Some(change) = acquire {
                        self.out.push_back(Message::KeyGroups(Arc::new(change.twin(&topic))));
                    }
                }
                FollowerStep::Pause(paused) => {
                    if let Err(e) = self.consumer.pause(&list(&paused)) {
                        tracing::warn!(reader = self.index, error = %e, "cannot pause followed partitions");
                    }
                    self.paused.extend(paused);
                }
                FollowerStep::Release { partitions, change } => self.give_up(&topic, &partitions, Some(change)),
                FollowerStep::Unassign(partitions) => self.give_up(&topic, &partitions, None),
            }
        }
        Ok(())
    }

    /// A follower gives `released` partitions of `topic` up, releasing their key groups with
    /// its leader's `change` (none: the leader is closing, nothing is handed over).
    fn give_up(&mut self, topic: &str, released: &[i32], change: Option<crate::checkpoint::KeyGroupChange>) {
        if released.is_empty() {
            return;
        }
        let hand_over = change.is_some();
        if let Some(change) = change {
            self.out.push_back(Message::KeyGroups(Arc::new(change.twin(topic))));
        }
        let gone: Vec<(String, i32)> = released.iter().map(|p| (topic.to_string(), *p)).collect();
        self.plan.shared.forget(self.index, &gone);
        self.plan.shared.metrics.assigned.fetch_sub(gone.len() as u64, Ordering::Relaxed);
        self.partitions.retain(|(t, p), _| !(t.as_ref() == topic && released.contains(p)));
        released.iter().for_each(|p| {
            self.paused.remove(p);
        });
        let mut tpl = TopicPartitionList::new();
        released.iter().for_each(|p| {
            tpl.add_partition(topic, *p);
        });
        if let Err(e) = self.consumer.incremental_unassign(&tpl) {
            tracing::error!(reader = self.index, error = %e, "cannot give followed partitions up");
        }
        tracing::info!(reader = self.index, %topic, partitions = ?released, hand_over, "followed partitions given up");
    }

    /// Queues the loading of newly assigned key groups.
    fn emit_acquired(&mut self) {
        if self.plan.key_groups.is_none() {
            return;
        }
        let acquired = std::mem::take(&mut self.handover.lock().expect("kafka handover").acquired);
        for change in acquired {
            self.out.push_back(Message::KeyGroups(Arc::new(change)));
        }
    }

    /// Gives revoked partitions back: first a checkpoint that holds their state (requested
    /// from every source), then, once it completed, their state is released down the
    /// pipeline and the partitions go back to the group.
    fn serve_revocation(&mut self) {
        if !self.revoke_pending.load(Ordering::Acquire) {
            return;
        }
        let Some(key_groups) = &self.plan.key_groups else { return };
        let shared = &self.plan.shared;
        let mut handover = self.handover.lock().expect("kafka handover");
        let (checkpoint, since) = match handover.revoke_checkpoint {
            Some(pending) => pending,
            None => {
                let after = self.last_barrier.max(shared.max_barrier.load(Ordering::Acquire));
                // A follower must not have emitted this checkpoint's barrier before it saw the
                // pause queued for it: a leader's id is one it writes itself.
                let leads = matches!(self.plan.co_partitioning, Some(CoPartitioned::Leads(_)));
                let id = shared
                    .trigger
                    .as_ref()
                    .map_or(after + 1, |t| if leads { t.request_fresh(after) } else { t.request(after) });
                tracing::info!(reader = self.index, partitions = ?handover.revoked, checkpoint = id, "checkpointing key groups before giving them back");
                handover.revoke_checkpoint = Some((id, Instant::now()));
                return; // the barrier goes out with the next poll
            }
        };
        let done = shared.completed.load(Ordering::Acquire) >= checkpoint;
        if !done && since.elapsed() < key_groups.handover_timeout {
            return;
        }
        if !done {
            tracing::error!(
                reader = self.index,
                checkpoint,
                "the checkpoint before a handover did not complete: giving the partitions back anyway"
            );
        }
        let revoked = std::mem::take(&mut handover.revoked);
        handover.revoke_checkpoint = None;
        self.revoke_pending.store(false, Ordering::Release);
        drop(handover);
        let change = crate::checkpoint::KeyGroupChange::release(
            &key_groups.topic,
            key_groups.partitions,
            revoked.iter().map(|p| *p as u32).collect(),
        );
        {
            // A reader of this process that is assigned one of them later says so.
            let mut released = shared.released.lock().expect("kafka released partitions");
            revoked.iter().for_each(|p| {
                released.insert(*p, change.sequence);
            });
        }
        if let Some(CoPartitioned::Leads(co)) = &self.plan.co_partitioning {
            co.push(self.index, FollowerStep::Release { partitions: revoked.clone(), change: change.clone() });
        }
        self.out.push_back(Message::KeyGroups(Arc::new(change)));
        let lost: Vec<(String, i32)> = revoked.iter().map(|p| (key_groups.topic.clone(), *p)).collect();
        shared.forget(self.index, &lost);
        shared.metrics.assigned.fetch_sub(lost.len() as u64, Ordering::Relaxed);
        self.partitions.retain(|(t, p), _| !(t.as_ref() == key_groups.topic && revoked.contains(p)));
        if let Err(e) = self.consumer.unassign() {
            tracing::error!(reader = self.index, error = %e, "cannot give the revoked partitions back");
        }
        tracing::info!(reader = self.index, partitions = ?revoked, checkpoint, "key groups handed over");
    }

    fn emit_barrier(&mut self, id: u64) {
        self.last_barrier = id;
        self.plan.shared.max_barrier.fetch_max(id, Ordering::Relaxed);
        self.record_positions(id);
        self.out.push_back(Message::Barrier(CheckpointBarrier { id }));
    }

    fn record_positions(&mut self, id: u64) {
        // For the checkpoint: every partition read before the barrier, also one lost since
        // the last barrier (the pipeline's state holds what was read of it).
        let read = self
            .partitions
            .iter()
            .filter(|(_, s)| s.next_offset > 0)
            .map(|((t, p), s)| (t.as_ref(), *p, s.next_offset));
        self.plan.shared.reached_at(id, read);
        // For the commit: only partitions this reader still owns: a partition taken away in a
        // rebalance is committed by its new owner, and a stale commit from here would move it
        // backwards.
        if !self.bounded {
            let owned: hashbrown::HashSet<(String, i32)> = self
                .consumer
                .assignment()
                .map(|tpl| tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect())
                .unwrap_or_default();
            self.partitions.retain(|(t, p), _| owned.contains(&(t.to_string(), *p)));
            self.plan.shared.owned_at.lock().expect("kafka owned partitions").entry(id).or_default().extend(owned);
        }
        let positions: Vec<Position> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.next_offset > 0)
            .map(|((t, p), s)| (t.clone(), *p, s.next_offset))
            .collect();
        let mut pending = self.plan.shared.pending.lock().expect("kafka pending offsets");
        pending[self.index].push((id, positions));
    }

    fn finish(&mut self) {
        self.finished = true;
        if self.plan.checkpointing && !self.bounded {
            // Stopping a checkpointed pipeline: a last checkpoint covers everything read,
            // and event time is not completed (windows stay open in the saved state).
            let shared = &self.plan.shared;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
            let id = *shared.stop_barrier.get_or_init(|| now.max(shared.max_barrier.load(Ordering::Relaxed) + 1));
            if id > self.last_barrier {
                self.emit_barrier(id);
            }
            return;
        }
        self.record_positions(u64::MAX);
        if self.plan.watermarks.is_some() {
            self.out.push_back(Message::Watermark(Watermark(i64::MAX)));
        }
    }

    fn reached_end(&self) -> bool {
        self.bounded && self.partitions.values().all(|s| s.end.is_none_or(|end| s.next_offset >= end))
    }
}

impl Iterator for KafkaReader {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(message) = self.out.pop_front() {
                return Some(Ok(message));
            }
            if self.finished {
                return None;
            }
            if self.plan.shared.stop.is_stopped() || self.reached_end() {
                self.finish();
                continue;
            }
            if let Err(e) = self.follow_leader().and_then(|()| self.poll_batch()) {
                self.finished = true;
                return Some(Err(e));
            }
            self.advance_watermark();
            if !self.bounded {
                self.serve_revocation();
                if let Err(e) = self.maybe_barrier() {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        // Closing the consumer revokes its partitions: they go back at once, also those whose
        // handover was under way (the consumer group waits for them).
        self.handover.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closing = true;
        if self.revoke_pending.load(Ordering::Acquire)
            && let Err(e) = self.consumer.unassign()
        {
            tracing::warn!(reader = self.index, error = %e, "cannot give revoked partitions back on close");
        }
    }
}

struct MessageMeta {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    /// The key's bytes in the reader's arena.
    key: Option<(usize, usize)>,
    has_payload: bool,
}

/// Appends the `_topic`, `_partition`, `_offset`, `_timestamp` and `_key` columns.
fn with_metadata(
    batch: RecordBatch,
    accepted: &[(usize, usize)],
    metas: &[MessageMeta],
    arena: &[u8],
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let (mut topics, mut partitions, mut offsets, mut timestamps) =
        (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
    let mut keys = BinaryBuilder::new();
    for (i, count) in accepted {
        let meta = &metas[*i];
        for _ in 0..*count {
            topics.push(meta.topic.as_ref());
            partitions.push(meta.partition);
            offsets.push(meta.offset);
            timestamps.push(meta.timestamp);
            keys.append_option(meta.key.map(|(s, e)| &arena[s..e]));
        }
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(topics)));
    columns.push(Arc::new(Int32Array::from(partitions)));
    columns.push(Arc::new(Int64Array::from(offsets)));
    columns.push(Arc::new(TimestampMillisecondArray::from(timestamps)));
    columns.push(Arc::new(keys.finish()));
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    fields.extend(super::source::metadata_fields().into_iter().map(Arc::new));
    let schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(fields, batch.schema().metadata().clone()));
    Ok(RecordBatch::try_new(schema, columns)?)
}
