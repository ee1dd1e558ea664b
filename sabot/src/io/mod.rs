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
}

/// An iterator of batches read from one morsel.
pub type BatchIter<'a> = Box<dyn Iterator<Item = Result<RecordBatch>> + Send + 'a>;

/// A table that Sabot can read.
pub trait Source: Send + Sync + fmt::Debug {
    /// The kind of source, e.g. `"parquet"`.
    fn name(&self) -> &'static str;
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
}

/// A destination for the result of a pipeline.
pub trait Sink: Send + Sync + fmt::Debug {
    /// A one-line description for `explain()`.
    fn describe(&self) -> String;
    /// Opens the destination for batches of `schema`.
    fn open(&self, schema: SchemaRef) -> Result<Box<dyn SinkWriter>>;
}

/// An open destination; receives the batches of a result in order.
pub trait SinkWriter: Send {
    /// Writes one batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Flushes and closes the destination (e.g. writes a Parquet footer).
    fn finish(self: Box<Self>) -> Result<()>;
}

pub mod channel;
pub mod csv;
pub mod ipc;
pub mod json;
pub mod memory;
pub mod parquet;
