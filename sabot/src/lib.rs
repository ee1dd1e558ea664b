//! # Sabot
//!
//! Stream and batch data processing on Apache Arrow.
//!
//! Pipelines are built with the lazy [`Stream`] API over typed [`Record`]s or plain Arrow
//! batches, planned into a [`plan::LogicalPlan`], optimized, and executed by a morsel-driven,
//! partition-parallel engine.
#![warn(missing_docs)]

#[cfg(feature = "kafka")]
pub mod app;
pub mod checkpoint;
pub mod error;
pub mod exec;
pub mod expr;
pub mod io;
#[cfg(feature = "jit")]
pub mod jit;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod operator;
pub mod optimizer;
pub mod plan;
pub mod record;
pub mod state;
pub mod stream;
pub mod testing;
pub mod window;

pub use error::{Result, SabotError};
pub use record::Record;
pub use sabot_macros::Record;
pub use sabot_macros::udf;
#[cfg(feature = "kafka")]
pub use sabot_macros::{agent, app};
pub use stream::{GroupedStream, Stream, Untyped};

// Lets `#[derive(Record)]` refer to `::sabot` from inside this crate's own tests too.
extern crate self as sabot;

/// Re-exports of the crates whose types appear in Sabot's API.
pub mod deps {
    pub use arrow;
    pub use parquet;
    #[cfg(feature = "kafka")]
    pub use rdkafka;
}

/// The names most pipelines need: `use sabot::prelude::*;`.
pub mod prelude {
    pub use crate::exec::ExecConfig;
    pub use crate::expr::{
        Expr, avg, coalesce, col, concat, count, count_all, count_distinct, first, last, lit, max, min, sum, when,
    };
    pub use crate::plan::{JoinType, SortKey};
    pub use crate::record::{Col, Timestamp};
    pub use crate::stream::{GroupedStream, KeyedStream, Stream, Untyped, WindowedStream};
    pub use crate::window::{LateData, WatermarkStrategy, WindowSpec};
    pub use crate::{Record, Result, SabotError};
}

/// Compiles the README's code blocks, so the tour stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
