//! Typed records: Rust structs that know their Arrow schema.
//!
//! `#[derive(Record)]` (from `sabot-macros`) implements [`Record`] for a struct. See the
//! derive's documentation for the attributes it accepts.
//!
//! - [`RecordField`]: the field types a record may hold and their Arrow columns.
//! - [`Timestamp`]: event times, milliseconds since the epoch.
//! - [`Col`] / [`TypedExpr`]: typed column handles and expressions (`Trade::cols()`).
//!
//! ```
//! use sabot::Record;
//! use sabot::record::Timestamp;
//!
//! #[derive(Record, Debug, Clone, PartialEq)]
//! struct Trade {
//!     symbol: String,
//!     price: f64,
//!     #[record(rename = "quantity")]
//!     qty: Option<i64>,
//!     #[record(event_time)]
//!     ts: Timestamp,
//! }
//!
//! let trades = vec![
//!     Trade { symbol: "ABC".into(), price: 101.5, qty: Some(3), ts: Timestamp::from_millis(1) },
//!     Trade { symbol: "XYZ".into(), price: 99.0, qty: None, ts: Timestamp::from_millis(2) },
//! ];
//! let batch = Trade::to_batch(&trades);
//! assert_eq!(batch.schema().field(2).name(), "quantity");
//! assert_eq!(Trade::from_batch(&batch).unwrap(), trades);
//!
//! // Zero-copy views.
//! let arrays = Trade::arrays(&batch).unwrap();
//! let view = Trade::view(&arrays, 1);
//! assert_eq!((view.symbol, view.qty), ("XYZ", None));
//!
//! assert_eq!(Trade::event_time_column(), Some("ts"));
//! assert_eq!(Trade::cols().price.gt(100.0).to_string(), "price > 100.0");
//! ```

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
mod column;
mod field;
mod timestamp;

pub use column::{Col, Numeric, Operand, TypedExpr};
pub use field::{BinaryColumn, RecordField, StringColumn, StructColumn};
pub use timestamp::Timestamp;

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
