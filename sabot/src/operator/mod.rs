//! Physical operators: the code that processes batches.
//!
//! Every operator implements the one [`Operator`] trait, whose hooks have defaults so that a
//! simple operator implements only [`Operator::process_batch`]. The same operators run bounded
//! (batch) and unbounded (streaming) inputs: a bounded input simply ends with
//! [`Operator::on_close`].
//!
//! ```
//! use arrow::array::RecordBatch;
//! use sabot::operator::{Operator, Output};
//!
//! /// Passes batches through and counts rows.
//! struct CountRows(usize);
//!
//! impl Operator for CountRows {
//!     fn name(&self) -> &str { "count_rows" }
//!     fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> sabot::Result<()> {
//!         self.0 += batch.num_rows();
//!         out.emit(batch);
//!         Ok(())
//!     }
//! }
//! ```

mod aggregate;
mod count_window;
mod filter;
mod global_window;
mod hash_join;
#[cfg(feature = "jit")]
mod jit_calc;
mod keyed_process;
mod limit;
mod map_batches;
mod project;
mod row_codec;
mod row_lists;
mod session_window;
mod sort;
mod timed_rows;
mod watermark_assigner;
mod window_aggregate;
// Streaming joins: two-input operators.
mod asof_join;
mod interval_join;
mod join_buffer;
mod join_state;
mod table_join;
mod two_input;
mod window_join;

use std::collections::VecDeque;

use arrow::record_batch::RecordBatch;

use crate::Result;

pub(crate) use aggregate::Accumulator as AggregateAccumulator;
pub(crate) use aggregate::supports_two_phase as aggregate_supports_two_phase;
pub use aggregate::{AggregateMode, AggregateOperator};
pub(crate) use aggregate::{hash_bytes, hash_u64};
pub use count_window::CountWindowOperator;
pub use filter::FilterOperator;
pub use global_window::GlobalWindowOperator;
pub use hash_join::{HashJoinProbe, JoinBuild, JoinColumn, JoinTable};
#[cfg(feature = "jit")]
pub use jit_calc::JitCalcOperator;
pub use keyed_process::{KeyedProcessFunction, KeyedProcessOperator, ProcessContext};
pub use limit::LimitOperator;
pub use map_batches::MapBatchesOperator;
pub use project::ProjectOperator;
pub use session_window::SessionWindowOperator;
pub use sort::SortOperator;
pub use watermark_assigner::WatermarkAssigner;
pub(crate) use watermark_assigner::event_times;
pub use window_aggregate::WindowAggregateOperator;
pub(crate) use window_aggregate::window_output_schema;
// Streaming joins.
pub use asof_join::AsofJoinOperator;
pub use interval_join::IntervalJoinOperator;
pub(crate) use join_state::{JoinKeys, JoinOutput};
pub use table_join::TableJoinOperator;
pub(crate) use two_input::CoWatermarks;
pub use two_input::{TwoInputOperator, TwoInputOperatorFactory};
pub use window_join::WindowJoinOperator;

/// Event time, in milliseconds since the Unix epoch, below which no more events are expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub i64);

/// A numbered checkpoint barrier flowing with the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckpointBarrier {
    /// The checkpoint's number.
    pub id: u64,
}

/// What flows between operators.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows.
    Batch(RecordBatch),
    /// Event-time progress.
    Watermark(Watermark),
    /// A checkpoint barrier.
    Barrier(CheckpointBarrier),
    /// The worker's key groups changed (a Kafka rebalance moved partitions): keyed operators
    /// drop or load the state of those groups. It reaches every parallel instance.
    KeyGroups(std::sync::Arc<crate::checkpoint::KeyGroupChange>),
}

/// Where an operator puts what it produces.
#[derive(Debug, Default)]
pub struct Output {
    queue: VecDeque<Message>,
}

impl Output {
    /// Emits a batch downstream (empty batches are dropped).
    pub fn emit(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.queue.push_back(Message::Batch(batch));
        }
    }

    /// Emits a watermark downstream.
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.queue.push_back(Message::Watermark(watermark));
    }

    /// Forwards a checkpoint barrier downstream.
    pub fn emit_barrier(&mut self, barrier: CheckpointBarrier) {
        self.queue.push_back(Message::Barrier(barrier));
    }

    /// Forwards a message as it is (the drivers pass control messages on).
    pub(crate) fn forward(&mut self, message: Message) {
        self.queue.push_back(message);
    }

    pub(crate) fn pop(&mut self) -> Option<Message> {
        self.queue.pop_front()
    }
}

/// An operator: one instance runs per parallel partition, on one thread at a time.
pub trait Operator: Send {
    /// The operator's name, for plans, logs and errors.
    fn name(&self) -> &str;

    /// Called once before the first message.
    fn on_start(&mut self) -> Result<()> {
        Ok(())
    }

    /// Processes one batch of rows.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()>;

    /// Reacts to event-time progress; forwards the watermark by default.
    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        out.emit_watermark(watermark);
        Ok(())
    }

    /// Copies the operator's state into `snapshot` for the checkpoint whose barrier just
    /// arrived, before the barrier is forwarded. Keep it to a copy: the checkpoint writes
    /// the files in the background. Stateless operators keep the default (nothing saved).
    fn snapshot_state(&mut self, _snapshot: &mut crate::checkpoint::StateSnapshot) -> Result<()> {
        Ok(())
    }

    /// Loads what [`snapshot_state`](Self::snapshot_state) saved, when the pipeline restores a
    /// checkpoint; called before [`on_start`](Self::on_start).
    fn restore_state(&mut self, _restored: &crate::checkpoint::RestoredState) -> Result<()> {
        Ok(())
    }

    /// Loads state saved by a run with another parallelism
    /// ([`RestoredState::rescale`](crate::checkpoint::RestoredState::rescale)): keyed
    /// operators keep the keys that the hash exchange now routes to this instance. By default
    /// the operator cannot change parallelism and restoring fails.
    fn restore_rescaled_state(&mut self, restored: &crate::checkpoint::RestoredState) -> Result<()> {
        Err(cannot_rescale(self.name(), restored))
    }

    /// Whether this operator's state moves between workers per key group when a source's
    /// partitions are key groups ([`crate::checkpoint::KeyGroupStore`]): it is then loaded by
    /// [`hand_over_key_groups`](Self::hand_over_key_groups) as partitions are assigned, not
    /// restored from this worker's last checkpoint. Keyed process operators do.
    fn follows_key_groups(&self) -> bool {
        false
    }

    /// Drops the state of released key groups and loads that of acquired ones (see
    /// [`follows_key_groups`](Self::follows_key_groups)); called when a
    /// [`Message::KeyGroups`] arrives, which is then forwarded. Nothing by default.
    fn hand_over_key_groups(&mut self, _handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        Ok(())
    }

    /// Reacts to a checkpoint barrier after the state was snapshotted; forwards it by default.
    fn handle_checkpoint(&mut self, barrier: CheckpointBarrier, out: &mut Output) -> Result<()> {
        out.emit_barrier(barrier);
        Ok(())
    }

    /// Called once after the last message of a bounded input; blocking operators emit here.
    fn on_close(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// True once the operator needs no more input (e.g. a limit that is full).
    fn is_finished(&self) -> bool {
        false
    }
}

/// The error of an operator that cannot restore state saved with another parallelism.
pub(crate) fn cannot_rescale(operator: &str, restored: &crate::checkpoint::RestoredState) -> crate::SabotError {
    let rescale = restored.rescale().map(|r| (r.from, r.to)).unwrap_or_default();
    crate::SabotError::State {
        state: operator.to_string(),
        message: format!(
            "saved with parallelism {} and restored with {}: this operator cannot change parallelism; restart with \
             the checkpoint's parallelism",
            rescale.0, rescale.1
        ),
    }
}

/// Creates one operator instance per partition.
pub type OperatorFactory = std::sync::Arc<dyn Fn(usize) -> Result<Box<dyn Operator>> + Send + Sync>;

/// The keys that the hash exchange in front of a keyed operator routes to `partition` of
/// `partitions`, from their encoded key columns (the exchange hashes the same encoding, or
/// the value of a single integer key).
pub(crate) fn key_router(
    keys: &[crate::expr::Expr],
    schema: &arrow::datatypes::Schema,
    partitions: usize,
    partition: usize,
) -> Result<crate::state::KeyPredicate> {
    key_router_of_types(&key_types(keys, schema)?, partitions, partition)
}

/// As [`key_router`], for keys of `types` (already evaluated and cast).
pub(crate) fn key_router_of_types(
    types: &[arrow::datatypes::DataType],
    partitions: usize,
    partition: usize,
) -> Result<crate::state::KeyPredicate> {
    let (n, me) = (partitions.max(1) as u64, partition as u64);
    match types {
        // Without keys everything runs in one instance.
        [] => Ok(std::sync::Arc::new(|_: &[u8]| true)),
        [single] if single.is_integer() => {
            let converter = arrow::row::RowConverter::new(vec![arrow::row::SortField::new(single.clone())])?;
            let parser = converter.parser();
            Ok(std::sync::Arc::new(move |key: &[u8]| {
                let value = converter
                    .convert_rows([parser.parse(key)])
                    .ok()
                    .and_then(|arrays| integer_key_bits(arrays[0].as_ref()).ok())
                    .and_then(|bits| bits.first().copied().flatten());
                let hash = value.map_or(0, hash_u64);
                hash % n == me
            }))
        }
        _ => Ok(std::sync::Arc::new(move |key: &[u8]| hash_bytes(key) % n == me)),
    }
}

/// The values of a single integer key column as the `u64` the hash exchange hashes: signed
/// values by their two's-complement bits, unsigned ones as they are (so `UInt64` keys above
/// `i64::MAX` stay distinct); `None` for nulls.
pub(crate) fn integer_key_bits(array: &dyn arrow::array::Array) -> Result<Vec<Option<u64>>> {
    use arrow::datatypes::DataType;
    let unsigned =
        matches!(array.data_type(), DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64);
    Ok(if unsigned {
        let values = arrow::compute::cast(array, &DataType::UInt64)?;
        let values = values.as_any().downcast_ref::<arrow::array::UInt64Array>().expect("cast to UInt64");
        values.iter().collect()
    } else {
        let values = arrow::compute::cast(array, &DataType::Int64)?;
        let values = values.as_any().downcast_ref::<arrow::array::Int64Array>().expect("cast to Int64");
        values.iter().map(|v| v.map(|v| v as u64)).collect()
    })
}

/// The rows of `batch` whose key (its first `keys` columns, encoded as the hash exchange and
/// Sabot's Kafka partitioner encode them) `keep` accepts.
pub(crate) fn filter_keys(batch: &RecordBatch, keys: usize, keep: &dyn Fn(&[u8]) -> bool) -> Result<RecordBatch> {
    filter_encoded_keys(batch, &batch.columns()[..keys.min(batch.num_columns())], keep)
}

/// The rows of `batch` whose key (`keys` evaluated on it, encoded as the hash exchange
/// encodes them) `keep` accepts.
pub(crate) fn filter_rows_by_key(
    batch: &RecordBatch,
    keys: &[crate::expr::Expr],
    keep: &dyn Fn(&[u8]) -> bool,
) -> Result<RecordBatch> {
    let arrays = keys.iter().map(|k| k.evaluate(batch)).collect::<Result<Vec<_>>>()?;
    filter_encoded_keys(batch, &arrays, keep)
}

/// The rows of `batch` whose key columns `key_columns`, row-encoded, `keep` accepts.
fn filter_encoded_keys(
    batch: &RecordBatch,
    key_columns: &[arrow::array::ArrayRef],
    keep: &dyn Fn(&[u8]) -> bool,
) -> Result<RecordBatch> {
    if batch.num_rows() == 0 || key_columns.is_empty() {
        return Ok(batch.clone());
    }
    let fields = key_columns.iter().map(|c| arrow::row::SortField::new(c.data_type().clone())).collect();
    let rows = arrow::row::RowConverter::new(fields)?.convert_columns(key_columns)?;
    let mask: arrow::array::BooleanArray = rows.iter().map(|row| Some(keep(row.as_ref()))).collect();
    Ok(arrow::compute::filter_record_batch(batch, &mask)?)
}

/// The data types of `keys` evaluated over `schema`.
pub(crate) fn key_types(
    keys: &[crate::expr::Expr],
    schema: &arrow::datatypes::Schema,
) -> Result<Vec<arrow::datatypes::DataType>> {
    keys.iter().map(|k| Ok(k.to_field(schema)?.data_type().clone())).collect()
}

/// For an operator keyed by keys of `types` restored with another parallelism: calls `merge`
/// with every old instance's snapshot and the keys (encoded) the hash exchange now routes to
/// this instance; returns what each call returned.
pub(crate) fn merge_rescaled<T>(
    restored: &crate::checkpoint::RestoredState,
    operator: &str,
    types: &[arrow::datatypes::DataType],
    mut merge: impl FnMut(&crate::checkpoint::RestoredState, &dyn Fn(&[u8]) -> bool) -> Result<T>,
) -> Result<Vec<T>> {
    let rescale = restored.rescale().expect("called for rescaled state");
    if types.is_empty() {
        return Err(crate::SabotError::State {
            state: operator.to_string(),
            message: "an operator without keys runs in one instance: restart with the checkpoint's parallelism".into(),
        });
    }
    let routed_here = key_router_of_types(types, rescale.to, rescale.partition)?;
    rescale
        .snapshots
        .iter()
        .map(|dir| merge(&crate::checkpoint::RestoredState::new(restored.checkpoint_id(), dir), &*routed_here))
        .collect()
}

/// For a keyed operator that follows key groups (keys of `types`): calls `merge` with every
/// snapshot holding acquired key groups and the keys (encoded) to take from it, those of the
/// groups acquired from it that the hash exchange routes to this instance.
pub(crate) fn merge_acquired(
    handover: &crate::checkpoint::KeyGroupHandover,
    operator: &str,
    types: &[arrow::datatypes::DataType],
    mut merge: impl FnMut(&crate::checkpoint::RestoredState, &dyn Fn(&[u8]) -> bool) -> Result<()>,
) -> Result<()> {
    let (instance, parallelism) = handover.instance;
    let routed_here = key_router_of_types(types, parallelism, instance)?;
    for (acquired, snapshots) in &handover.acquired {
        let keep = |key: &[u8]| handover.acquires(acquired, key) && routed_here(key);
        for snapshot in snapshots {
            merge(snapshot, &keep)?;
        }
        tracing::info!(operator, groups = ?acquired, snapshots = snapshots.len(), "acquired key groups");
    }
    Ok(())
}

/// For a snapshot without the state an operator's store looks for: an error if a store of
/// another backend saved it (`other`: the entry that store saves, `backend`: its name), else
/// `Ok` (the snapshot holds no such state).
pub(crate) fn saved_by_another_backend(
    snapshot: &crate::checkpoint::RestoredState,
    operator: &str,
    other: &str,
    backend: &str,
) -> Result<()> {
    if snapshot.dir().join(other).exists() {
        return Err(crate::SabotError::State {
            state: operator.to_string(),
            message: format!("the checkpoint holds state of the {backend} state backend; restore it with that backend"),
        });
    }
    Ok(())
}

/// Columns of the types of `fields` from rows `converter` encoded (Arrow's row format gives a
/// dictionary column back as its values: such columns are cast back).
pub(crate) fn decode_rows<'a>(
    converter: &arrow::row::RowConverter,
    encoded: impl IntoIterator<Item = &'a [u8]>,
    fields: &[arrow::datatypes::FieldRef],
) -> Result<Vec<arrow::array::ArrayRef>> {
    let parser = converter.parser();
    let arrays = converter.convert_rows(encoded.into_iter().map(|row| parser.parse(row)))?;
    arrays
        .into_iter()
        .zip(fields)
        .map(|(array, field)| {
            Ok(if array.data_type() == field.data_type() {
                array
            } else {
                arrow::compute::cast(&array, field.data_type())?
            })
        })
        .collect()
}

/// Bytes of [`time_prefix`].
pub(crate) const TIME_PREFIX: usize = 8;

/// The stored-key prefix of a namespace starting at event time `start` (a window's pane, a
/// join's bucket): big-endian with the sign bit flipped, so that namespaces sort by start
/// and each is one range of keys.
pub(crate) fn time_prefix(start: i64) -> [u8; TIME_PREFIX] {
    ((start as u64) ^ (1 << 63)).to_be_bytes()
}
