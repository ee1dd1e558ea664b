//! Execution: physical planning, parallel partitions, exchanges, and the job graph.
//!
//! The engine is morsel-driven: a scan is cut into morsels that the partitions of a pipeline
//! pull from a shared counter; each partition chains its operators in one thread; threads meet
//! only at exchanges (gathers, join builds), through bounded channels that propagate
//! backpressure and bound memory.

mod barrier;
mod co_stream;
mod config;
mod exchange;
mod graph;
mod physical;
mod stream;

pub(crate) use config::Coordinator;
pub use config::{ExecConfig, OptimizerConfig};
pub use graph::{EdgeKind, JobGraph, JobNode};
pub use physical::{PhysicalPlan, create_physical_plan};
pub use stream::{PartitionStream, Sequenced};

/// Merges partitions into one stream, in source order when `ordered` (threads start here).
pub(crate) fn gather(streams: Vec<PartitionStream>, ordered: bool, capacity: usize) -> PartitionStream {
    exchange::gather("sink", streams, ordered, capacity, None, exchange::NO_HEARTBEAT)
}
