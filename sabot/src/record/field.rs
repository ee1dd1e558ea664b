//! [`RecordField`]: the Rust types a `#[derive(Record)]` struct may hold, and how each maps to
//! an Arrow column.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, LargeBinaryArray, LargeStringArray, PrimitiveArray,
    StringArray, StringViewArray, TimestampMillisecondArray,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};

use super::{Record, Timestamp};
use crate::{Result, SabotError};

/// A Rust type that can be a field of a `#[derive(Record)]` struct: it knows its Arrow type,
/// how to build a column from values, and how to read values (owned or borrowed) back.
///
/// Implemented for `i8`..`i64`, `u8`..`u64`, `f32`, `f64`, `bool`, `String` (`Utf8`),
/// `Vec<u8>` (`Binary`), [`Timestamp`] (`Timestamp(Millisecond, None)`), `Option<T>` (the same
/// column, nullable) and every `#[derive(Record)]` struct (a `Struct` column).
///
/// Reading accepts a few equivalent Arrow encodings: `LargeUtf8`/`Utf8View` for `String`,
/// `LargeBinary`/`BinaryView` for `Vec<u8>`, and millisecond timestamps with any time zone.
///
/// ```
/// use arrow::datatypes::DataType;
/// use sabot::record::RecordField;
///
/// assert_eq!(<f64 as RecordField>::data_type(), DataType::Float64);
/// assert!(!<f64 as RecordField>::nullable());
/// assert!(<Option<String> as RecordField>::nullable());
///
/// let column = <String as RecordField>::from_values(["a".to_string(), "βγ".to_string()].iter());
/// let strings = <String as RecordField>::downcast("name", column.as_ref()).unwrap();
/// assert_eq!(<String as RecordField>::view_value(&strings, 1), "βγ");
/// ```
///
/// A field of any other type is a compile error on that field (the trait is not implemented):
///
/// ```compile_fail
/// struct NotARecord;
///
/// #[derive(sabot::Record)]
/// struct Wrapper {
///     inner: NotARecord,
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a `#[derive(Record)]` struct",
    label = "unsupported field type",
    note = "supported: integers, f32, f64, bool, String, Vec<u8>, sabot::record::Timestamp, Option<T> of these, \
            and other #[derive(Record)] structs (use #[record(skip)] for fields that are not columns)"
)]
pub trait RecordField: Sized + Send + Sync + 'static {
    /// The type without its `Option`s: `Self` for all but `Option<T>`, which has `T::NonNull`.
    /// Typed expressions over the column have this type.
    type NonNull: RecordField;
    /// The column downcast to its concrete array type (done once per batch).
    type Array<'a>;
    /// A borrowed value: `&'a str` for `String`, `&'a [u8]` for `Vec<u8>`, `Option<_>` for
    /// `Option<_>`, the generated view struct for records, the value itself otherwise.
    type View<'a>: Copy + fmt::Debug + PartialEq;

    /// The Arrow type of the column.
    fn data_type() -> DataType;

    /// Whether the column may hold nulls (`true` only for `Option<T>`).
    fn nullable() -> bool {
        false
    }

    /// The schema field of a column called `name`.
    fn field(name: &str) -> Field {
        Field::new(name, Self::data_type(), Self::nullable())
    }

    /// Builds a column without nulls from `values`.
    fn from_values<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = &'v Self> + Clone;

    /// Builds a column from `values`, with a null for each `None`.
    fn from_options<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = Option<&'v Self>> + Clone;

    /// Downcasts `array`, the column `column`, or fails with [`SabotError::TypeMismatch`].
    fn downcast<'a>(column: &str, array: &'a dyn Array) -> Result<Self::Array<'a>>;

    /// Whether row `row` holds a value (is not null).
    fn is_valid(array: &Self::Array<'_>, row: usize) -> bool;

    /// The borrowed value of row `row`; unspecified (but safe) for a null row of a non-`Option` type.
    fn view_value<'a>(array: &Self::Array<'a>, row: usize) -> Self::View<'a>;

    /// The owned value of row `row` of column `column`; a null row is
    /// [`SabotError::UnexpectedNull`] unless `Self` is an `Option`.
    fn read_value(column: &str, array: &Self::Array<'_>, row: usize) -> Result<Self>;
}

/// The error for a column of the wrong type.
pub(crate) fn type_mismatch(column: &str, expected: DataType, found: &DataType) -> SabotError {
    SabotError::TypeMismatch { column: column.to_string(), expected, found: found.clone() }
}

/// The error for a null in a non-optional field.
pub(crate) fn unexpected_null(column: &str, row: usize) -> SabotError {
    SabotError::UnexpectedNull { column: column.to_string(), row }
}

fn downcast_ref<'a, F: RecordField, A: Array + 'static>(column: &str, array: &'a dyn Array) -> Result<&'a A> {
    array.as_any().downcast_ref::<A>().ok_or_else(|| type_mismatch(column, F::data_type(), array.data_type()))
}

macro_rules! primitive {
    ($($t:ty => $arrow:ty, $dt:expr;)*) => {$(
        impl RecordField for $t {
            type NonNull = $t;
            type Array<'a> = &'a PrimitiveArray<$arrow>;
            type View<'a> = $t;

            fn data_type() -> DataType {
                $dt
            }

            fn from_values<'v, I>(values: I) -> ArrayRef
            where
                I: Iterator<Item = &'v Self> + Clone,
            {
                Arc::new(PrimitiveArray::<$arrow>::from_iter_values(values.copied()))
            }

            fn from_options<'v, I>(values: I) -> ArrayRef
            where
                I: Iterator<Item = Option<&'v Self>> + Clone,
            {
                Arc::new(values.map(|v| v.copied()).collect::<PrimitiveArray<$arrow>>())
            }

            fn downcast<'a>(column: &str, array: &'a dyn Array) -> Result<Self::Array<'a>> {
                downcast_ref::<Self, _>(column, array)
            }

            fn is_valid(array: &Self::Array<'_>, row: usize) -> bool {
                array.is_valid(row)
            }

            fn view_value<'a>(array: &Self::Array<'a>, row: usize) -> Self::View<'a> {
                array.value(row)
            }

            fn read_value(column: &str, array: &Self::Array<'_>, row: usize) -> Result<Self> {
                if array.is_valid(row) { Ok(array.value(row)) } else { Err(unexpected_null(column, row)) }
            }
        }
    )*};
}

primitive! {
    i8 => Int8Type, DataType::Int8;
    i16 => Int16Type, DataType::Int16;
    i32 => Int32Type, DataType::Int32;
    i64 => Int64Type, DataType::Int64;
    u8 => UInt8Type, DataType::UInt8;
    u16 => UInt16Type, DataType::UInt16;
    u32 => UInt32Type, DataType::UInt32;
    u64 => UInt64Type, DataType::UInt64;
    f32 => Float32Type, DataType::Float32;
    f64 => Float64Type, DataType::Float64;
}

impl RecordField for bool {
    type NonNull = bool;
    type Array<'a> = &'a BooleanArray;
    type View<'a> = bool;

    fn data_type() -> DataType {
        DataType::Boolean
    }

    fn from_values<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = &'v Self> + Clone,
    {
        Arc::new(BooleanArray::new(values.copied().collect::<BooleanBuffer>(), None))
    }

    fn from_options<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = Option<&'v Self>> + Clone,
    {
        Arc::new(values.map(|v| v.copied()).collect::<BooleanArray>())
    }

    fn downcast<'a>(column: &str, array: &'a dyn Array) -> Result<Self::Array<'a>> {
        downcast_ref::<Self, _>(column, array)
    }

    fn is_valid(array: &Self::Array<'_>, row: usize) -> bool {
        array.is_valid(row)
    }

    fn view_value<'a>(array: &Self::Array<'a>, row: usize) -> Self::View<'a> {
        array.value(row)
    }

    fn read_value(column: &str, array: &Self::Array<'_>, row: usize) -> Result<Self> {
        if array.is_valid(row) { Ok(array.value(row)) } else { Err(unexpected_null(column, row)) }
    }
}

impl RecordField for Timestamp {
    type NonNull = Timestamp;
    type Array<'a> = &'a TimestampMillisecondArray;
    type View<'a> = Timestamp;

    fn data_type() -> DataType {
        DataType::Timestamp(TimeUnit::Millisecond, None)
    }

    fn from_values<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = &'v Self> + Clone,
    {
        Arc::new(TimestampMillisecondArray::from_iter_values(values.map(|t| t.millis())))
    }

    fn from_options<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = Option<&'v Self>> + Clone,
    {
        Arc::new(values.map(|v| v.map(|t| t.millis())).collect::<TimestampMillisecondArray>())
    }

    /// Accepts millisecond timestamps in any time zone (the values are UTC either way).
    fn downcast<'a>(column: &str, array: &'a dyn Array) -> Result<Self::Array<'a>> {
        downcast_ref::<Self, _>(column, array)
    }

    fn is_valid(array: &Self::Array<'_>, row: usize) -> bool {
        array.is_valid(row)
    }

    fn view_value<'a>(array: &Self::Array<'a>, row: usize) -> Self::View<'a> {
        Timestamp::from_millis(array.value(row))
    }

    fn read_value(column: &str, array: &Self::Array<'_>, row: usize) -> Result<Self> {
        if array.is_valid(row) {
            Ok(Timestamp::from_millis(array.value(row)))
        } else {
            Err(unexpected_null(column, row))
        }
    }
}

/// A string column downcast for reading: `Utf8`, `LargeUtf8` or `Utf8View`.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::LargeStringArray;
/// use sabot::record::{RecordField, StringColumn};
///
/// let array = LargeStringArray::from(vec![Some("x"), None]);
/// let column: StringColumn<'_> = <String as RecordField>::downcast("s", &array).unwrap();
/// assert_eq!(column.value(0), "x");
/// assert!(!column.is_valid(1));
/// ```
#[derive(Debug, Clone, Copy)]
pub enum StringColumn<'a> {
    /// `Utf8`.
    Utf8(&'a StringArray),
    /// `LargeUtf8`.
    LargeUtf8(&'a LargeStringArray),
    /// `Utf8View`.
    Utf8View(&'a StringViewArray),
}

impl<'a> StringColumn<'a> {
    /// The string at `row` (empty for a null row).
    ///
    /// ```
    /// # use sabot::record::StringColumn;
    /// let array = arrow::array::StringArray::from(vec!["héllo"]);
    /// assert_eq!(StringColumn::Utf8(&array).value(0), "héllo");
    /// ```
    #[inline]
    pub fn value(&self, row: usize) -> &'a str {
        match self {
            StringColumn::Utf8(a) => a.value(row),
            StringColumn::LargeUtf8(a) => a.value(row),
            StringColumn::Utf8View(a) => a.value(row),
        }
    }

    /// Whether `row` is not null.
    ///
    /// ```
    /// # use sabot::record::StringColumn;
    /// let array = arrow::array::StringArray::from(vec![None::<&str>]);
    /// assert!(!StringColumn::Utf8(&array).is_valid(0));
    /// ```
    #[inline]
    pub fn is_valid(&self, row: usize) -> bool {
        match self {
            StringColumn::Utf8(a) => a.is_valid(row),
            StringColumn::LargeUtf8(a) => a.is_valid(row),
            StringColumn::Utf8View(a) => a.is_valid(row),
        }
    }
}

impl RecordField for String {
    type NonNull = String;
    type Array<'a> = StringColumn<'a>;
    type View<'a> = &'a str;

    fn data_type() -> DataType {
        DataType::Utf8
    }

    /// Builds a `Utf8` column; panics if the strings total more than `i32::MAX` bytes.
    fn from_values<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = &'v Self> + Clone,
    {
        Arc::new(StringArray::from_iter_values(values))
    }

    fn from_options<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = Option<&'v Self>> + Clone,
    {
        Arc::new(values.collect::<StringArray>())
    }

    fn downcast<'a>(column: &str, array: &'a dyn Array) -> Result<Self::Array<'a>> {
        let any = array.as_any();
        let found = match array.data_type() {
            DataType::Utf8 => any.downcast_ref().map(StringColumn::Utf8),
            DataType::LargeUtf8 => any.downcast_ref().map(StringColumn::LargeUtf8),
            DataType::Utf8View => any.downcast_ref().map(StringColumn::Utf8View),
            _ => None,
        };
        found.ok_or_else(|| type_mismatch(column, Self::data_type(), array.data_type()))
    }

    fn is_valid(array: &Self::Array<'_>, row: usize) -> bool {
        array.is_valid(row)
    }

    fn view_value<'a>(array: &Self::Array<'a>, row: usize) -> Self::View<'a> {
        array.value(row)
    }

    fn read_value(column: &str, array: &Self::Array<'_>, row: usize) -> Result<Self> {
        if array.is_valid(row) { Ok(array.value(row).to_owned()) } else { Err(unexpected_null(column, row)) }
    }
}

/// A binary column downcast for reading: `Binary`, `LargeBinary` or `BinaryView`.
///
/// ```
/// use arrow::array::BinaryArray;
/// use sabot::record::{BinaryColumn, RecordField};
///
/// let array = BinaryArray::from(vec![&b"\x00\xff"[..]]);
/// let column: BinaryColumn<'_> = <Vec<u8> as RecordField>::downcast("b", &array).unwrap();
/// assert_eq!(column.value(0), &[0u8, 255][..]);
/// ```
#[derive(Debug, Clone, Copy)]
pub enum BinaryColumn<'a> {
    /// `Binary`.
    Binary(&'a BinaryArray),
    /// `LargeBinary`.
    LargeBinary(&'a LargeBinaryArray),
    /// `BinaryView`.
    BinaryView(&'a BinaryViewArray),
}

impl<'a> BinaryColumn<'a> {
    /// The bytes at `row` (empty for a null row).
    ///
    /// ```
    /// # use sabot::record::BinaryColumn;
    /// let array = arrow::array::BinaryArray::from(vec![&b"ab"[..]]);
    /// assert_eq!(BinaryColumn::Binary(&array).value(0), b"ab");
    /// ```
    #[inline]
    pub fn value(&self, row: usize) -> &'a [u8] {
        match self {
            BinaryColumn::Binary(a) => a.value(row),
            BinaryColumn::LargeBinary(a) => a.value(row),
            BinaryColumn::BinaryView(a) => a.value(row),
        }
    }

    /// Whether `row` is not null.
    ///
    /// ```
    /// # use sabot::record::BinaryColumn;
    /// let array = arrow::array::BinaryArray::from(vec![Some(&b""[..])]);
    /// assert!(BinaryColumn::Binary(&array).is_valid(0));
    /// ```
    #[inline]
    pub fn is_valid(&self, row: usize) -> bool {
        match self {
            BinaryColumn::Binary(a) => a.is_valid(row),
            BinaryColumn::LargeBinary(a) => a.is_valid(row),
            BinaryColumn::BinaryView(a) => a.is_valid(row),
        }
    }
}

impl RecordField for Vec<u8> {
    type NonNull = Vec<u8>;
    type Array<'a> = BinaryColumn<'a>;
    type View<'a> = &'a [u8];

    fn data_type() -> DataType {
        DataType::Binary
    }

    /// Builds a `Binary` column; panics if the values total more than `i32::MAX` bytes.
    fn from_values<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = &'v Self> + Clone,
    {
        Arc::new(BinaryArray::from_iter_values(values))
    }

    fn from_options<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = Option<&'v Self>> + Clone,
    {
        Arc::new(values.collect::<BinaryArray>())
    }

    fn downcast<'a>(column: &str, array: &'a dyn Array) -> Result<Self::Array<'a>> {
        let any = array.as_any();
        let found = match array.data_type() {
            DataType::Binary => any.downcast_ref().map(BinaryColumn::Binary),
            DataType::LargeBinary => any.downcast_ref().map(BinaryColumn::LargeBinary),
            DataType::BinaryView => any.downcast_ref().map(BinaryColumn::BinaryView),
            _ => None,
        };
        found.ok_or_else(|| type_mismatch(column, Self::data_type(), array.data_type()))
    }

    fn is_valid(array: &Self::Array<'_>, row: usize) -> bool {
        array.is_valid(row)
    }

    fn view_value<'a>(array: &Self::Array<'a>, row: usize) -> Self::View<'a> {
        array.value(row)
    }

    fn read_value(column: &str, array: &Self::Array<'_>, row: usize) -> Result<Self> {
        if array.is_valid(row) { Ok(array.value(row).to_vec()) } else { Err(unexpected_null(column, row)) }
    }
}

impl<T: RecordField> RecordField for Option<T> {
    type NonNull = T::NonNull;
    type Array<'a> = T::Array<'a>;
    type View<'a> = Option<T::View<'a>>;

    fn data_type() -> DataType {
        T::data_type()
    }

    fn nullable() -> bool {
        true
    }

    fn field(name: &str) -> Field {
        T::field(name).with_nullable(true)
    }

    fn from_values<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = &'v Self> + Clone,
    {
        T::from_options(values.map(Option::as_ref))
    }

    fn from_options<'v, I>(values: I) -> ArrayRef
    where
        I: Iterator<Item = Option<&'v Self>> + Clone,
    {
        T::from_options(values.map(|v| v.and_then(Option::as_ref)))
    }

    fn downcast<'a>(column: &str, array: &'a dyn Array) -> Result<Self::Array<'a>> {
        T::downcast(column, array)
    }

    fn is_valid(array: &Self::Array<'_>, row: usize) -> bool {
        T::is_valid(array, row)
    }

    fn view_value<'a>(array: &Self::Array<'a>, row: usize) -> Self::View<'a> {
        T::is_valid(array, row).then(|| T::view_value(array, row))
    }

    fn read_value(column: &str, array: &Self::Array<'_>, row: usize) -> Result<Self> {
        if T::is_valid(array, row) { T::read_value(column, array, row).map(Some) } else { Ok(None) }
    }
}

/// A `Struct` column downcast for reading a nested record `T`: its children downcast, plus
/// the struct's own validity.
///
/// ```
/// use sabot::Record;
/// use sabot::record::{RecordField, StructColumn};
///
/// #[derive(Record, Debug, PartialEq)]
/// struct Point { x: f64, y: f64 }
///
/// let points = vec![Point { x: 1.0, y: 2.0 }];
/// let column = <Point as RecordField>::from_values(points.iter());
/// let downcast: StructColumn<'_, Point> = <Point as RecordField>::downcast("p", column.as_ref()).unwrap();
/// assert_eq!(<Point as RecordField>::view_value(&downcast, 0).y, 2.0);
/// assert_eq!(<Point as RecordField>::read_value("p", &downcast, 0).unwrap(), Point { x: 1.0, y: 2.0 });
/// ```
pub struct StructColumn<'a, T: Record> {
    pub(crate) arrays: T::Arrays<'a>,
    pub(crate) nulls: Option<&'a NullBuffer>,
}

impl<'a, T: Record> StructColumn<'a, T> {
    /// The children, downcast.
    ///
    /// ```
    /// use sabot::record::{RecordField, StructColumn};
    /// #[derive(sabot::Record)]
    /// struct P { x: i32 }
    /// let col = <P as RecordField>::from_values([P { x: 7 }].iter());
    /// let s: StructColumn<'_, P> = <P as RecordField>::downcast("p", col.as_ref()).unwrap();
    /// assert_eq!(<P as sabot::Record>::view(s.arrays(), 0).x, 7);
    /// ```
    pub fn arrays(&self) -> &T::Arrays<'a> {
        &self.arrays
    }

    /// Whether `row` is not null.
    ///
    /// ```
    /// use sabot::record::{RecordField, StructColumn};
    /// #[derive(sabot::Record)]
    /// struct P { x: i32 }
    /// let col = <Option<P> as RecordField>::from_values([None, Some(P { x: 1 })].iter());
    /// let s: StructColumn<'_, P> = <P as RecordField>::downcast("p", col.as_ref()).unwrap();
    /// assert!(!s.is_valid(0) && s.is_valid(1));
    /// ```
    #[inline]
    pub fn is_valid(&self, row: usize) -> bool {
        self.nulls.is_none_or(|n| n.is_valid(row))
    }
}
