//! Support code for `#[derive(Record)]`; not a public API.

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, StructArray};
use arrow::datatypes::{DataType, Fields};

use super::field::{type_mismatch, unexpected_null};
use super::{Record, RecordField, StructColumn, Timestamp};
use crate::{Result, SabotError};

pub use ::arrow;
pub use ::core::default::Default;
pub use ::core::option::Option::{self, None, Some};
pub use ::core::result::Result::{Err, Ok};
pub use ::std::sync::{Arc, OnceLock};
pub use ::std::vec::Vec;

/// What the derive implements beside [`Record`], so that the generic code below can do the work.
pub trait RecordImpl: Record {
    /// Downcasts the record's columns found in `source`.
    fn arrays_from<'a>(source: &Source<'a>) -> Result<Self::Arrays<'a>>;
    /// Reads row `row` into an owned record.
    fn read_row(arrays: &Self::Arrays<'_>, row: usize) -> Result<Self>;
    /// One column per (non-skipped) field, without nulls.
    fn columns_from_values<'v, I>(rows: I) -> Vec<ArrayRef>
    where
        I: Iterator<Item = &'v Self> + Clone;
    /// One column per (non-skipped) field, null where the row is `None`.
    fn columns_from_options<'v, I>(rows: I) -> Vec<ArrayRef>
    where
        I: Iterator<Item = Option<&'v Self>> + Clone;
}

/// Named columns: of a batch or of a struct array.
pub struct Source<'a> {
    fields: &'a Fields,
    columns: &'a [ArrayRef],
}

impl<'a> Source<'a> {
    /// The columns of `batch`.
    pub fn batch(batch: &'a RecordBatch) -> Self {
        Source { fields: batch.schema_ref().fields(), columns: batch.columns() }
    }

    /// The children of `array`.
    pub fn structs(array: &'a StructArray) -> Self {
        Source { fields: array.fields(), columns: array.columns() }
    }

    /// The column `name`, downcast for a field of type `F`.
    pub fn column<F: RecordField>(&self, name: &str) -> Result<F::Array<'a>> {
        match self.fields.find(name) {
            Some((index, _)) => F::downcast(name, self.columns[index].as_ref()),
            None => Err(SabotError::ColumnNotFound {
                column: name.to_string(),
                available: self.fields.iter().map(|f| f.name().clone()).collect(),
            }),
        }
    }
}

/// Prefixes the column named in `err` with `parent.` (for errors inside nested records).
pub fn nested_error(err: SabotError, parent: &str) -> SabotError {
    let prefix = |c: String| format!("{parent}.{c}");
    match err {
        SabotError::ColumnNotFound { column, available } => SabotError::ColumnNotFound {
            column: prefix(column),
            available: available.into_iter().map(prefix).collect(),
        },
        SabotError::TypeMismatch { column, expected, found } => {
            SabotError::TypeMismatch { column: prefix(column), expected, found }
        }
        SabotError::UnexpectedNull { column, row } => SabotError::UnexpectedNull { column: prefix(column), row },
        other => other,
    }
}

/// [`Record::to_batch`].
pub fn to_batch<T: RecordImpl>(rows: &[T]) -> RecordBatch {
    let columns = T::columns_from_values(rows.iter());
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(T::schema(), columns, &options)
        .expect("#[derive(Record)] built columns that do not match its schema")
}

/// [`Record::from_batch`].
pub fn from_batch<T: RecordImpl>(batch: &RecordBatch) -> Result<Vec<T>> {
    let arrays = T::arrays_from(&Source::batch(batch))?;
    (0..batch.num_rows()).map(|row| T::read_row(&arrays, row)).collect()
}

/// [`Record::arrays`].
pub fn arrays<T: RecordImpl>(batch: &RecordBatch) -> Result<T::Arrays<'_>> {
    T::arrays_from(&Source::batch(batch))
}

/// [`RecordField::data_type`] of a nested record.
pub fn struct_data_type<T: Record>() -> DataType {
    DataType::Struct(T::schema().fields().clone())
}

fn struct_array<T: Record>(columns: Vec<ArrayRef>, len: usize, nulls: Option<arrow::buffer::NullBuffer>) -> ArrayRef {
    let fields = T::schema().fields().clone();
    if fields.is_empty() {
        Arc::new(StructArray::new_empty_fields(len, nulls))
    } else {
        Arc::new(StructArray::new(fields, columns, nulls))
    }
}

/// [`RecordField::from_values`] of a nested record.
pub fn struct_from_values<'v, T, I>(rows: I) -> ArrayRef
where
    T: RecordImpl,
    I: Iterator<Item = &'v T> + Clone,
{
    let len = rows.clone().count();
    struct_array::<T>(T::columns_from_values(rows), len, None)
}

/// [`RecordField::from_options`] of a nested record.
pub fn struct_from_options<'v, T, I>(rows: I) -> ArrayRef
where
    T: RecordImpl,
    I: Iterator<Item = Option<&'v T>> + Clone,
{
    let nulls: arrow::buffer::NullBuffer = rows.clone().map(|r| r.is_some()).collect();
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    let len = rows.clone().count();
    struct_array::<T>(T::columns_from_options(rows), len, nulls)
}

/// [`RecordField::downcast`] of a nested record.
pub fn struct_downcast<'a, T: RecordImpl>(column: &str, array: &'a dyn Array) -> Result<StructColumn<'a, T>> {
    let structs = array
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| type_mismatch(column, struct_data_type::<T>(), array.data_type()))?;
    let arrays = T::arrays_from(&Source::structs(structs)).map_err(|e| nested_error(e, column))?;
    Ok(StructColumn { arrays, nulls: structs.nulls() })
}

/// [`RecordField::read`] of a nested record.
pub fn struct_read<T: RecordImpl>(column: &str, array: &StructColumn<'_, T>, row: usize) -> Result<T> {
    if !array.is_valid(row) {
        return Err(unexpected_null(column, row));
    }
    T::read_row(&array.arrays, row).map_err(|e| nested_error(e, column))
}

/// [`RecordField::view`] of a nested record.
#[inline]
pub fn struct_view<'a, T: Record>(array: &StructColumn<'a, T>, row: usize) -> T::View<'a> {
    T::view(&array.arrays, row)
}

/// The types an `#[record(event_time)]` field may have.
#[diagnostic::on_unimplemented(
    message = "an `#[record(event_time)]` field must be `sabot::record::Timestamp` or `i64`, not `{Self}`",
    label = "not a timestamp"
)]
pub trait EventTime {}
impl EventTime for Timestamp {}
impl EventTime for i64 {}

/// Compile-time check that `T` may be an event-time field.
pub const fn assert_event_time<T: EventTime>() {}

/// Compile-time check that `T` is a supported field type.
pub const fn assert_field<T: RecordField>() {}

/// Compile-time check that a skipped field can be filled in by `Default`.
pub const fn assert_default<T: Default>() {}
