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

use super::join_state::{EncodedKeys, JoinKeys, Side};
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

/// An empty buffer for the rows of input `side` (of `schema`, event times in `time_column`),
/// in buckets of `width` ms, in `backend`: the heap for [`StateBackend::Memory`].
pub(crate) fn open(
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
