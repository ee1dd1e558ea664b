//! Where a window aggregation keeps its panes: the groups of each pane with their aggregate
//! states, on the heap ([`HeapPanes`](super::heap_panes::HeapPanes)) or in the keyed state
//! backend ([`StoredPanes`](super::stored_panes::StoredPanes)).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::operator::{AggregateMode, AggregateOperator};

/// How one pane is aggregated; shared by the pane stores.
#[derive(Clone)]
pub(super) struct PaneAggregation {
    pub(super) input_schema: SchemaRef,
    pub(super) keys: Vec<Expr>,
    pub(super) aggregates: Vec<AggExpr>,
    /// Tumbling windows without lateness: a window is one pane and fires once, so panes
    /// aggregate to final values directly (no partial states, no merge).
    pub(super) single_pane: bool,
}

impl PaneAggregation {
    /// The aggregation of a new pane: final values on the single-pane path, else partial states.
    pub(super) fn new_pane(&self) -> Result<AggregateOperator> {
        let mode = if self.single_pane { AggregateMode::Single } else { AggregateMode::Partial };
        AggregateOperator::try_new(mode, &self.input_schema, self.keys.clone(), self.aggregates.clone())
    }

    /// The aggregation merging the partial states of a window's panes into final values.
    pub(super) fn new_merge(&self) -> Result<AggregateOperator> {
        AggregateOperator::try_new(AggregateMode::Final, &self.input_schema, self.keys.clone(), self.aggregates.clone())
    }
}

/// The panes of one window-aggregation instance. Keys are the encoded key columns, as the
/// hash exchange and key groups encode them.
pub(super) trait PaneStore: Send {
    /// Aggregates `rows`, all in the pane starting at `pane`, into that pane.
    fn add(&mut self, pane: i64, rows: RecordBatch) -> Result<()>;

    /// Holds at most about `groups` groups in memory where the store keeps them elsewhere
    /// (the heap holds every group anyway).
    fn limit_buffer(&mut self, _groups: usize) {}

    /// The starts of the panes holding groups, in order.
    fn starts(&self) -> Vec<i64>;

    /// Single-pane path: removes the pane starting at `start` and returns its groups' final
    /// values (keys, then aggregates).
    fn take_final(&mut self, start: i64) -> Result<Vec<RecordBatch>>;

    /// The partial states of the groups of every pane starting in `from..to`, in the layout
    /// the merging (`Final`) aggregation reads.
    fn partials(&mut self, from: i64, to: i64) -> Result<Vec<RecordBatch>>;

    /// Drops the panes whose start `expired` accepts.
    fn expire(&mut self, expired: &dyn Fn(i64) -> bool) -> Result<()>;

    /// Drops the groups whose key `keep` rejects, from every pane.
    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<()>;

    /// Saves every pane into `snapshot`.
    fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()>;

    /// Loads the panes saved in `restored` into this empty store.
    fn restore(&mut self, restored: &RestoredState) -> Result<()>;

    /// Adds the groups whose key `keep` accepts from a snapshot of another instance; its
    /// groups are disjoint from this instance's.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()>;
}
