//! Typed records: Rust structs that know their Arrow schema.
//!
//! `#[derive(Record)]` (from `sabot-macros`) implements [`Record`] for a struct. See the
//! derive's documentation for the attributes it accepts.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::Result;

/// A Rust struct whose values are rows of a [`RecordBatch`] with a fixed schema.
///
/// Implemented by `#[derive(Record)]`; implementing it by hand is possible but rarely useful.
pub trait Record: Sized + Send + Sync + 'static {
    /// A borrowed, zero-copy view of one row (`&'a str` for strings, nested views for nested records).
    type View<'a>;
    /// The batch's columns, downcast to their concrete array types once per batch.
    type Arrays<'a>;
    /// Typed column handles that build compile-time checked expressions.
    type Columns;

    /// The Arrow schema of this record type.
    fn schema() -> SchemaRef;
    /// Converts rows into one batch of [`Record::schema`].
    fn to_batch(rows: &[Self]) -> RecordBatch;
    /// Converts a batch back into rows; columns are found by name, extra columns are ignored.
    ///
    /// A missing column, a column of another type, or a null in a non-optional field is an
    /// error naming the column (and, for types, both types).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>>;
    /// Downcasts the batch's columns once, for [`Record::view`].
    fn arrays(batch: &RecordBatch) -> Result<Self::Arrays<'_>>;
    /// The view of row `row`; `row` must be below the batch's length.
    fn view<'a>(arrays: &Self::Arrays<'a>, row: usize) -> Self::View<'a>;
    /// The typed column handles (`Trade::cols().price.gt(100.0)`).
    fn cols() -> Self::Columns;
    /// The name of the `#[record(event_time)]` column, if any.
    fn event_time_column() -> Option<&'static str> {
        None
    }
}
