//! Sources and sinks: where batches come from and where they go.
//!
//! A [`Source`] describes a table (its schema, size, and what it can do inside the scan), and
//! [`Source::scan`] plans a [`Scan`]: the table cut into *morsels* (row groups, byte ranges of a
//! CSV file, IPC record batches…) that worker threads read in parallel and in any order. Morsel
//! numbers give the order of the data, so order-preserving sinks can restore it.
//!
//! A [`Sink`] opens one [`SinkWriter`] that receives every batch of the result in order.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::Result;
use crate::expr::Expr;
use crate::operator::Message;

/// How much of a pushed-down filter a source applies itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterSupport {
    /// The source ignores the filter.
    Unsupported,
    /// The source uses the filter to skip data (e.g. Parquet row-group statistics) but may
    /// still return rows that fail it: the engine keeps its own filter above the scan.
    Inexact,
}

/// What the engine asks of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    /// Indices into [`Source::schema`] of the columns to read, in output order; `None` reads all.
    pub projection: Option<Vec<usize>>,
    /// Conjuncts of a filter the source may use to skip data (see [`Source::filter_support`]).
    pub filters: Vec<Expr>,
    /// Preferred number of rows per output batch.
    pub batch_size: usize,
    /// The number of parallel partitions that will read the scan (sources that are not cut
    /// into morsels, such as a Kafka consumer group, open this many readers).
    pub partitions: usize,
    /// When the pipeline checkpoints: how often unbounded sources emit barriers. They then
    /// also emit a last barrier when asked to stop, and no final watermark.
    pub checkpoint_interval: Option<std::time::Duration>,
    /// When the pipeline checkpoints: lets a source ask for a checkpoint now (before it
    /// gives partitions back in a rebalance).
    pub checkpoint_trigger: Option<crate::checkpoint::CheckpointTrigger>,
    /// When the app's workers share a checkpoint store whose keyed state follows key groups
    /// ([`Source::partitions_are_key_groups`]): the store's root.
    pub key_group_store: Option<std::path::PathBuf>,
}

/// An iterator of batches read from one morsel.
pub type BatchIter<'a> = Box<dyn Iterator<Item = Result<RecordBatch>> + Send + 'a>;

/// An iterator of messages read from one morsel: batches, and for unbounded sources also
/// watermarks and checkpoint barriers.
pub type MessageIter<'a> = Box<dyn Iterator<Item = Result<Message>> + Send + 'a>;

/// A table that Sabot can read.
pub trait Source: Send + Sync + fmt::Debug {
    /// The kind of source, e.g. `"parquet"`.
    fn name(&self) -> &'static str;

    /// Whether the source's partitions are key groups of the keyed state downstream, so
    /// that state moves between workers with them (see [`crate::checkpoint::KeyGroupStore`]).
    fn partitions_are_key_groups(&self) -> bool {
        false
    }

    /// With key groups: a handle through which another source of the pipeline reads the
    /// same partitions as this one (see [`follow_partitions_of`](Self::follow_partitions_of)).
    /// `None` by default.
    fn partition_leader(&self) -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> {
        None
    }

    /// Reads the partitions that the source behind `leader` (a
    /// [`partition_leader`](Self::partition_leader) handle) is assigned, and hands them over
    /// in step with it: the right side of a stream join whose two topics are partitioned
    /// alike. Sources that cannot refuse.
    fn follow_partitions_of(&self, _leader: std::sync::Arc<dyn std::any::Any + Send + Sync>) -> Result<()> {
        Err(crate::SabotError::plan(format!("a {} source cannot follow another source's partitions", self.name())))
    }
    /// The full schema, before projection.
    fn schema(&self) -> SchemaRef;
    /// A one-line description for `explain()` (e.g. the path).
    fn describe(&self) -> String;
    /// The number of rows, when known without reading the data.
    fn num_rows(&self) -> Option<usize> {
        None
    }
    /// Whether this source can use `filter` to skip data.
    fn filter_support(&self, _filter: &Expr) -> FilterSupport {
        FilterSupport::Unsupported
    }
    /// Plans a scan: opens files, reads footers, and cuts the data into morsels.
    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>>;
    /// Whether the source never ends by itself (a topic, a channel). Merges of unbounded
    /// inputs take batches as they come instead of restoring a source order.
    fn is_unbounded(&self) -> bool {
        false
    }
    /// The event-time column of the watermarks this source emits itself (e.g. per Kafka
    /// partition), if it does; windows then need no `with_watermarks`.
    fn event_time_column(&self) -> Option<String> {
        None
    }
    /// Called once every record read before checkpoint barrier `id` has been processed and
    /// written by the sink (Flink's `notifyCheckpointComplete`): a Kafka source commits its
    /// offsets here. `id` is `u64::MAX` after a bounded run has finished.
    fn checkpoint_complete(&self, _id: u64) -> Result<()> {
        Ok(())
    }
    /// Where this source's readers were at checkpoint barrier `id` (e.g. the next offset of
    /// every Kafka partition), recorded in the checkpoint's metadata; `None` when the source
    /// cannot resume from a position (a bounded file is simply read again).
    fn checkpoint_positions(&self, _id: u64) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }
    /// Resumes reading from positions that [`checkpoint_positions`](Self::checkpoint_positions)
    /// returned, when a pipeline restores a checkpoint. Called before the scan is planned.
    fn restore_positions(&self, _positions: &serde_json::Value) -> Result<()> {
        Ok(())
    }
    /// When an unbounded source of a checkpointed pipeline was asked to stop (see
    /// [`StopHandle`](crate::kafka::StopHandle)): the id of the last barrier it emits. Output
    /// after that checkpoint is not delivered: a restart re-creates it from the state.
    fn stop_barrier(&self) -> Option<u64> {
        None
    }
    /// The pipeline has ended without a final commit (a checkpointed pipeline stops at its
    /// last checkpoint): release connections (a Kafka consumer leaves its group at once).
    fn close(&self) -> Result<()> {
        Ok(())
    }
    /// Before checkpoint `id` completes, when the source's partitions are key groups:
    /// confirms with the source's system that this worker still owns what it read, so that a
    /// worker that lost its partitions without noticing (a zombie: stalled past its session
    /// timeout while another worker took over) fails instead of completing a checkpoint and
    /// publishing output for them. A Kafka source commits offsets synchronously: the group
    /// coordinator rejects a member that was expelled. Default: nothing to check.
    fn fence(&self, _id: u64) -> Result<()> {
        Ok(())
    }
    /// What the pipeline consumed from this source up to checkpoint barrier `id`, for a sink
    /// that commits it in one transaction with its output ([`Sink::add_consumed_offsets`]):
    /// a Kafka source gives its consumer group's offsets. Default: nothing.
    fn consumed_offsets(&self, _id: u64) -> Result<ConsumedOffsets> {
        Ok(ConsumedOffsets::default())
    }
    /// On recovery with a sink that takes the consumed offsets: whether the transaction of
    /// the checkpoint that recorded `positions` committed, as far as this source can tell
    /// (a Kafka source compares its group's committed offsets with the partitions that
    /// advanced since `previous`, the positions of the checkpoint before). A checkpoint
    /// whose transaction did not commit is not restored: its output was aborted. Default:
    /// committed (nothing to check).
    fn transaction_committed(
        &self,
        _positions: &serde_json::Value,
        _previous: Option<&serde_json::Value>,
    ) -> Result<bool> {
        Ok(true)
    }
}

/// Input that a pipeline consumed up to a checkpoint, collected from its sources
/// ([`Source::consumed_offsets`]) for a sink that commits it atomically with its output, as
/// Kafka's `sendOffsetsToTransaction` does (see [`Sink::add_consumed_offsets`]).
///
/// ```
/// use sabot::io::ConsumedOffsets;
/// let mut consumed = ConsumedOffsets::default();
/// consumed.extend(ConsumedOffsets::default());
/// assert!(consumed.is_empty());
/// ```
#[derive(Default)]
pub struct ConsumedOffsets {
    /// Per Kafka consumer: its group membership and the next offset of its partitions.
    #[cfg(feature = "kafka")]
    pub(crate) kafka: Vec<crate::kafka::GroupOffsets>,
}

impl ConsumedOffsets {
    /// Adds the offsets of another source.
    pub fn extend(&mut self, other: ConsumedOffsets) {
        #[cfg(feature = "kafka")]
        self.kafka.extend(other.kafka);
        #[cfg(not(feature = "kafka"))]
        let _ = other;
    }

    /// Whether no source consumed anything it can commit this way.
    pub fn is_empty(&self) -> bool {
        #[cfg(feature = "kafka")]
        return self.kafka.is_empty();
        #[cfg(not(feature = "kafka"))]
        true
    }
}

impl fmt::Debug for ConsumedOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("ConsumedOffsets");
        #[cfg(feature = "kafka")]
        out.field("kafka_consumers", &self.kafka.len());
        out.finish()
    }
}

/// A planned scan, cut into morsels that may be read concurrently.
pub trait Scan: Send + Sync {
    /// The schema of the batches this scan yields (after projection).
    fn schema(&self) -> SchemaRef;
    /// The number of morsels.
    fn morsel_count(&self) -> usize;
    /// Reads morsel `index` (in `0..morsel_count()`). The iterator owns what it needs (clone
    /// the `Arc`s of the scan into it), so worker threads can keep it across calls.
    fn read_morsel(&self, index: usize) -> Result<BatchIter<'static>>;
    /// Reads morsel `index` as messages; sources that emit watermarks or barriers override
    /// this, the others yield their batches.
    fn read_morsel_messages(&self, index: usize) -> Result<MessageIter<'static>> {
        Ok(Box::new(self.read_morsel(index)?.map(|batch| batch.map(Message::Batch))))
    }
}

/// What a sink writer prepared at a checkpoint barrier and publishes once the checkpoint is
/// complete (Flink's committable): for instance the names of pending files. It is stored in
/// the checkpoint's metadata, so a restarted worker can finish publishing it.
pub type Committable = Vec<u8>;

/// A destination for the result of a pipeline.
///
/// Exactly-once sinks take part in checkpoints in two phases: at a barrier the writer makes
/// its output durable but invisible ([`SinkWriter::prepare_commit`]); once every operator has
/// saved its state and the checkpoint's metadata is written, [`Sink::commit`] publishes it.
/// After a crash the restored checkpoint's committables are committed again, so `commit`
/// must be idempotent, and [`Sink::abort_uncommitted`] discards what was prepared after it.
pub trait Sink: Send + Sync + fmt::Debug {
    /// A one-line description for `explain()`.
    fn describe(&self) -> String;
    /// Opens the destination for batches of `schema`.
    fn open(&self, schema: SchemaRef) -> Result<Box<dyn SinkWriter>>;
    /// Publishes what writers prepared for checkpoint `checkpoint` and every earlier one
    /// (`committables`, in order). Called when the checkpoint is complete, and again with
    /// the restored checkpoint's committables on recovery: publishing twice must change
    /// nothing. Default: nothing to publish (at-least-once sinks).
    fn commit(&self, _checkpoint: u64, _committables: &[Committable]) -> Result<()> {
        Ok(())
    }
    /// On start, after recovery: discards output prepared for checkpoints that never
    /// completed, i.e. after `restored` (everything prepared, if `None`).
    fn abort_uncommitted(&self, _restored: Option<u64>) -> Result<()> {
        Ok(())
    }
    /// Whether this sink's commit carries the sources' consumed offsets
    /// ([`add_consumed_offsets`](Self::add_consumed_offsets)), so that output and input
    /// positions commit together, as Kafka Streams' exactly-once does. The commit is then the
    /// pipeline's commit point: on recovery a checkpoint counts only if its commit went
    /// through (see [`Source::transaction_committed`]). Default: false.
    fn takes_consumed_offsets(&self) -> bool {
        false
    }
    /// Called right before [`commit`](Self::commit) of checkpoint `checkpoint`, when
    /// [`takes_consumed_offsets`](Self::takes_consumed_offsets): adds what the sources
    /// consumed up to it to the transaction that `commit` commits.
    fn add_consumed_offsets(&self, _checkpoint: u64, _consumed: &ConsumedOffsets) -> Result<()> {
        Ok(())
    }
}

/// An open destination; receives the batches of a result in order.
pub trait SinkWriter: Send {
    /// Writes one batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes everything written so far durable (e.g. waits for Kafka delivery reports);
    /// called at checkpoint barriers, before sources commit what the batches came from.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Checkpoint `checkpoint`'s barrier reached the sink: everything written before it must
    /// become durable. Two-phase sinks keep it invisible and return what
    /// [`Sink::commit`] needs to publish it; the default flushes and returns nothing
    /// (at-least-once: the output is already visible).
    fn prepare_commit(&mut self, _checkpoint: u64) -> Result<Option<Committable>> {
        self.flush()?;
        Ok(None)
    }
    /// Flushes and closes the destination (e.g. writes a Parquet footer).
    fn finish(self: Box<Self>) -> Result<()>;
}

pub mod channel;
pub mod csv;
pub mod ipc;
pub mod json;
pub mod memory;
pub mod parquet;
pub mod transactional_file;
