//! Logical plans: what a [`crate::Stream`] computes, independent of how it runs.
//!
//! A [`LogicalPlan`] is a tree of relational operators with a known output schema at every
//! node. [`crate::optimizer`] rewrites it; [`crate::exec`] turns it into physical operators.

mod display;
mod logical;
mod stream_join;

pub(crate) use logical::join_output_columns;
pub use logical::{BatchFn, JoinType, LogicalPlan, ProcessFactory, SortKey, join_schema};
pub use stream_join::StreamJoinKind;
pub(crate) use stream_join::{rebuild_stream_join, stream_join_input_columns, stream_join_output};
