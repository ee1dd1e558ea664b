//! Where an event-time join (interval, window) buffers the rows of one input: on the heap
//! ([`TimeBuckets`]) or in the keyed state backend ([`StoredBuckets`]). Both keep rows in
//! event-time buckets with an index by join key, and drop whole buckets once the watermark
//! makes them useless.

mod stored_buckets;
mod time_buckets;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

pub(crate) use stored_buckets::StoredBuckets;
pub(crate) use time_buckets::TimeBuckets;

use super::join_state::{EncodedKeys, JoinKeys, JoinOutput, JoinProgress, Side};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::state::StateBackend;

/// One lookup in a join buffer: the buffered rows of `key` with event times in `[low, high]`,
/// for row `row` of the arriving batch.
pub(crate) struct Probe<'a> {
    pub(crate) row: u32,
    pub(crate) key: &'a [u8],
    pub(crate) low: i64,
    pub(crate) high: i64,
}

/// What a batch of probes found: for every match, the probing row (`probe_rows`) and the
/// buffered row, as `(source, row)` into `sources` (the form `arrow::compute::interleave`
/// takes, as [`Picks::Interleave`](super::join_state::Picks) reads it).
#[derive(Default)]
pub(crate) struct Matches {
    pub(crate) probe_rows: Vec<u32>,
    pub(crate) sources: Vec<RecordBatch>,
    pub(crate) rows: Vec<Option<(usize, usize)>>,
}

/// The buffered rows of a range of buckets by join key: per key, `(source, row)` into
/// `sources`, in bucket order, then arrival order.
#[derive(Default)]
pub(crate) struct KeyedRows {
    pub(crate) sources: Vec<RecordBatch>,
    pub(crate) by_key: hashbrown::HashMap<Box<[u8]>, Vec<(usize, usize)>>,
}

impl KeyedRows {
    /// The rows of `key` so far, to add to.
    pub(crate) fn rows_of(&mut self, key: &[u8]) -> &mut Vec<(usize, usize)> {
        if !self.by_key.contains_key(key) {
            self.by_key.insert(Box::from(key), vec![]);
        }
        self.by_key.get_mut(key).expect("inserted above")
    }
}

/// The keys to take from a snapshot: all (`None`), or those the function accepts.
pub(crate) type KeepKeys<'a> = Option<&'a dyn Fn(&[u8]) -> bool>;

/// The buffered rows of one input of an event-time join.
pub(crate) trait JoinBuffer: Send {
    /// Buffers the rows `selected` of `batch`, whose event times and keys are `times` and
    /// `keys` (one per row of `batch`); every selected row must have a key.
    fn insert(&mut self, batch: &RecordBatch, times: &[i64], keys: &EncodedKeys, selected: &[u32]) -> Result<()>;

    /// The buffered rows every probe finds, probe by probe, each probe's rows in bucket
    /// order, then arrival order.
    fn probe(&mut self, probes: &[Probe<'_>]) -> Result<Matches>;

    /// Every buffered row in the buckets starting in `[from, to)` whose key `wanted` accepts.
    fn rows_in(&mut self, from: i64, to: i64, wanted: &dyn Fn(&[u8]) -> bool) -> Result<KeyedRows>;

    /// The starts of the buckets holding rows, in order.
    fn starts(&self) -> Vec<i64>;

    /// Drops every bucket for which `dead(start, max event time)` holds.
    fn expire(&mut self, dead: &dyn Fn(i64, i64) -> bool) -> Result<()>;

    /// Drops everything.
    fn clear(&mut self) -> Result<()>;

    /// Drops the rows whose keys `keep` rejects (key groups handed to another worker), and
    /// returns how many; the others stay in their buckets, in arrival order.
    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<usize>;

    /// The number of buffered rows.
    fn rows(&self) -> usize;

    /// Holds at most about `rows` rows in memory where the buffer keeps them elsewhere (the
    /// heap holds every row anyway).
    fn limit_memory(&mut self, _rows: usize) {}

    /// Saves the buffered rows into `snapshot` under `name`.
    fn snapshot(&mut self, snapshot: &mut StateSnapshot, name: &str) -> Result<()>;

    /// Adds the rows saved under `name` in `restored` whose keys `keep` accepts (all when
    /// `None`); they are disjoint from the rows buffered here.
    fn merge_snapshot(
        &mut self,
        restored: &RestoredState,
        name: &str,
        keys: &JoinKeys,
        keep: KeepKeys<'_>,
    ) -> Result<()>;
}

/// Both inputs' buffers of an event-time join, in buckets of one width.
pub(crate) struct JoinBuffers {
    pub(crate) left: Box<dyn JoinBuffer>,
    pub(crate) right: Box<dyn JoinBuffer>,
    /// Each input's event-time column.
    times: [String; 2],
    width: i64,
    /// The memory limit set, kept when the buffers are reopened.
    memory_limit: Option<usize>,
}

impl JoinBuffers {
    /// Empty heap buffers for the inputs of `output`, with event times in `left_time` and
    /// `right_time`, in buckets of `width` ms.
    pub(crate) fn new(output: &JoinOutput, left_time: &str, right_time: &str, width: i64) -> Result<Self> {
        Self::open_in(&StateBackend::Memory, output, [left_time.to_string(), right_time.to_string()], width)
    }

    /// Empty buffers in `backend`.
    fn open_in(backend: &StateBackend, output: &JoinOutput, times: [String; 2], width: i64) -> Result<Self> {
        let open = |side: Side, time: &str| open(backend, side, output.input_schema(side).clone(), time, width);
        let (left, right) = (open(Side::Left, &times[0])?, open(Side::Right, &times[1])?);
        Ok(JoinBuffers { left, right, times, width, memory_limit: None })
    }

    /// Replaces both buffers by empty ones in `backend`.
    pub(crate) fn reopen(&mut self, backend: &StateBackend, output: &JoinOutput) -> Result<()> {
        let limit = self.memory_limit;
        *self = Self::open_in(backend, output, self.times.clone(), self.width)?;
        if let Some(rows) = limit {
            self.limit_memory(rows);
        }
        Ok(())
    }

    /// See [`JoinBuffer::limit_memory`].
    pub(crate) fn limit_memory(&mut self, rows: usize) {
        self.memory_limit = Some(rows);
        self.left.limit_memory(rows);
        self.right.limit_memory(rows);
    }

    /// The rows buffered on both sides.
    pub(crate) fn rows(&self) -> usize {
        self.left.rows() + self.right.rows()
    }

    /// The event-time column of input `side`.
    pub(crate) fn time_column(&self, side: Side) -> &str {
        &self.times[usize::from(side == Side::Right)]
    }

    /// The buffer of input `side`, then the other one.
    pub(crate) fn own_and_other(&mut self, side: Side) -> (&mut dyn JoinBuffer, &mut dyn JoinBuffer) {
        match side {
            Side::Left => (self.left.as_mut(), self.right.as_mut()),
            Side::Right => (self.right.as_mut(), self.left.as_mut()),
        }
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.left.clear()?;
        self.right.clear()
    }

    /// Hands key groups over: drops both sides' rows of the released groups, then adds the
    /// rows of the acquired ones from the snapshots that hold them (those the exchanges route
    /// to this instance). The operator's own progress (watermark) stays: it comes from its
    /// inputs, which the acquired partitions join at their checkpointed positions.
    pub(crate) fn hand_over(
        &mut self,
        handover: &crate::checkpoint::KeyGroupHandover,
        operator: &str,
        keys: &JoinKeys,
    ) -> Result<()> {
        if !handover.released.is_empty() {
            let keep = |key: &[u8]| !handover.releases(key);
            let dropped = self.left.retain_keys(&keep)? + self.right.retain_keys(&keep)?;
            tracing::info!(operator, groups = ?handover.released, rows = dropped, "released key groups");
        }
        crate::operator::merge_acquired(handover, operator, keys.types(), |snapshot, keep| {
            if snapshot.value::<JoinProgress>("progress")?.is_none() {
                return Ok(());
            }
            self.left.merge_snapshot(snapshot, "left", keys, Some(keep))?;
            self.right.merge_snapshot(snapshot, "right", keys, Some(keep))
        })
    }

    /// Saves both sides' buffered rows (as `left` and `right`) and `progress`.
    pub(crate) fn snapshot(&mut self, snapshot: &mut StateSnapshot, progress: JoinProgress) -> Result<()> {
        self.left.snapshot(snapshot, "left")?;
        self.right.snapshot(snapshot, "right")?;
        snapshot.put_value("progress", &progress)
    }

    /// Loads what [`snapshot`](Self::snapshot) saved into the emptied buffers: all of it,
    /// or, when the parallelism changed, the rows of every old instance whose keys the
    /// exchanges now route to this instance (with the lowest progress of the old ones).
    /// `None` when nothing was saved.
    pub(crate) fn restore(
        &mut self,
        restored: &RestoredState,
        operator: &str,
        keys: &JoinKeys,
    ) -> Result<Option<JoinProgress>> {
        self.clear()?;
        if restored.rescale().is_none() {
            return self.merge(restored, keys, None);
        }
        let saved = crate::operator::merge_rescaled(restored, operator, keys.types(), |old, keep| {
            self.merge(old, keys, Some(keep))
        })?;
        Ok(saved.into_iter().fold(None, JoinProgress::merge))
    }

    /// Adds what [`snapshot`](Self::snapshot) saved, the rows whose keys `keep` accepts.
    fn merge(&mut self, restored: &RestoredState, keys: &JoinKeys, keep: KeepKeys<'_>) -> Result<Option<JoinProgress>> {
        let Some(progress) = restored.value::<JoinProgress>("progress")? else { return Ok(None) };
        self.left.merge_snapshot(restored, "left", keys, keep)?;
        self.right.merge_snapshot(restored, "right", keys, keep)?;
        Ok(Some(progress))
    }
}

/// An empty buffer for the rows of input `side` (of `schema`, event times in `time_column`),
/// in buckets of `width` ms, in `backend`: the heap for [`StateBackend::Memory`].
fn open(
    backend: &StateBackend,
    side: Side,
    schema: SchemaRef,
    time_column: &str,
    width: i64,
) -> Result<Box<dyn JoinBuffer>> {
    Ok(match backend {
        StateBackend::Memory => Box::new(TimeBuckets::new(width, side, schema, time_column)),
        #[allow(unreachable_patterns)]
        _ => Box::new(StoredBuckets::open(backend, side, schema, time_column, width)?),
    })
}
