//! Literal values of expressions.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array,
    StringArray, TimestampMillisecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array, new_null_array,
};
use arrow::datatypes::{DataType, TimeUnit};

/// A single typed value, possibly null: the payload of [`crate::expr::lit`].
///
/// ```
/// use sabot::expr::ScalarValue;
/// use arrow::datatypes::DataType;
/// assert_eq!(ScalarValue::from(2.5).data_type(), DataType::Float64);
/// assert_eq!(ScalarValue::from("A").to_string(), "'A'");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarValue {
    /// An untyped null.
    Null,
    /// A boolean.
    Boolean(Option<bool>),
    /// An `i8`.
    Int8(Option<i8>),
    /// An `i16`.
    Int16(Option<i16>),
    /// An `i32`.
    Int32(Option<i32>),
    /// An `i64`.
    Int64(Option<i64>),
    /// A `u8`.
    UInt8(Option<u8>),
    /// A `u16`.
    UInt16(Option<u16>),
    /// A `u32`.
    UInt32(Option<u32>),
    /// A `u64`.
    UInt64(Option<u64>),
    /// An `f32`.
    Float32(Option<f32>),
    /// An `f64`.
    Float64(Option<f64>),
    /// A UTF-8 string.
    Utf8(Option<String>),
    /// Bytes.
    Binary(Option<Vec<u8>>),
    /// Milliseconds since the Unix epoch.
    TimestampMillis(Option<i64>),
}

impl ScalarValue {
    /// The Arrow type of this value.
    pub fn data_type(&self) -> DataType {
        match self {
            ScalarValue::Null => DataType::Null,
            ScalarValue::Boolean(_) => DataType::Boolean,
            ScalarValue::Int8(_) => DataType::Int8,
            ScalarValue::Int16(_) => DataType::Int16,
            ScalarValue::Int32(_) => DataType::Int32,
            ScalarValue::Int64(_) => DataType::Int64,
            ScalarValue::UInt8(_) => DataType::UInt8,
            ScalarValue::UInt16(_) => DataType::UInt16,
            ScalarValue::UInt32(_) => DataType::UInt32,
            ScalarValue::UInt64(_) => DataType::UInt64,
            ScalarValue::Float32(_) => DataType::Float32,
            ScalarValue::Float64(_) => DataType::Float64,
            ScalarValue::Utf8(_) => DataType::Utf8,
            ScalarValue::Binary(_) => DataType::Binary,
            ScalarValue::TimestampMillis(_) => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    /// Whether the value is null.
    pub fn is_null(&self) -> bool {
        match self {
            ScalarValue::Null => true,
            ScalarValue::Boolean(v) => v.is_none(),
            ScalarValue::Int8(v) => v.is_none(),
            ScalarValue::Int16(v) => v.is_none(),
            ScalarValue::Int32(v) => v.is_none(),
            ScalarValue::Int64(v) => v.is_none(),
            ScalarValue::UInt8(v) => v.is_none(),
            ScalarValue::UInt16(v) => v.is_none(),
            ScalarValue::UInt32(v) => v.is_none(),
            ScalarValue::UInt64(v) => v.is_none(),
            ScalarValue::Float32(v) => v.is_none(),
            ScalarValue::Float64(v) => v.is_none(),
            ScalarValue::Utf8(v) => v.is_none(),
            ScalarValue::Binary(v) => v.is_none(),
            ScalarValue::TimestampMillis(v) => v.is_none(),
        }
    }

    /// The value as `f64`, if it is a non-null number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            ScalarValue::Int8(Some(v)) => Some(v as f64),
            ScalarValue::Int16(Some(v)) => Some(v as f64),
            ScalarValue::Int32(Some(v)) => Some(v as f64),
            ScalarValue::Int64(Some(v)) => Some(v as f64),
            ScalarValue::UInt8(Some(v)) => Some(v as f64),
            ScalarValue::UInt16(Some(v)) => Some(v as f64),
            ScalarValue::UInt32(Some(v)) => Some(v as f64),
            ScalarValue::UInt64(Some(v)) => Some(v as f64),
            ScalarValue::Float32(Some(v)) => Some(v as f64),
            ScalarValue::Float64(Some(v)) => Some(v),
            ScalarValue::TimestampMillis(Some(v)) => Some(v as f64),
            _ => None,
        }
    }

    /// An array of `len` copies of this value.
    pub fn to_array(&self, len: usize) -> ArrayRef {
        fn repeat<T: Clone>(v: &Option<T>, len: usize) -> Vec<Option<T>> {
            vec![v.clone(); len]
        }
        match self {
            ScalarValue::Null => new_null_array(&DataType::Null, len),
            ScalarValue::Boolean(v) => Arc::new(BooleanArray::from(repeat(v, len))),
            ScalarValue::Int8(v) => Arc::new(Int8Array::from(repeat(v, len))),
            ScalarValue::Int16(v) => Arc::new(Int16Array::from(repeat(v, len))),
            ScalarValue::Int32(v) => Arc::new(Int32Array::from(repeat(v, len))),
            ScalarValue::Int64(v) => Arc::new(Int64Array::from(repeat(v, len))),
            ScalarValue::UInt8(v) => Arc::new(UInt8Array::from(repeat(v, len))),
            ScalarValue::UInt16(v) => Arc::new(UInt16Array::from(repeat(v, len))),
            ScalarValue::UInt32(v) => Arc::new(UInt32Array::from(repeat(v, len))),
            ScalarValue::UInt64(v) => Arc::new(UInt64Array::from(repeat(v, len))),
            ScalarValue::Float32(v) => Arc::new(Float32Array::from(repeat(v, len))),
            ScalarValue::Float64(v) => Arc::new(Float64Array::from(repeat(v, len))),
            ScalarValue::Utf8(v) => Arc::new(StringArray::from(repeat(v, len))),
            ScalarValue::Binary(v) => Arc::new(BinaryArray::from_iter(std::iter::repeat_n(v.as_deref(), len))),
            ScalarValue::TimestampMillis(v) => Arc::new(TimestampMillisecondArray::from(repeat(v, len))),
        }
    }

    /// Reads row `row` of `array` as a scalar (used by aggregates and tests).
    pub fn try_from_array(array: &dyn arrow::array::Array, row: usize) -> crate::Result<ScalarValue> {
        use arrow::array::AsArray;
        use arrow::datatypes::*;
        let valid = array.is_valid(row);
        macro_rules! prim {
            ($variant:ident, $t:ty) => {
                ScalarValue::$variant(valid.then(|| array.as_primitive::<$t>().value(row)))
            };
        }
        Ok(match array.data_type() {
            DataType::Null => ScalarValue::Null,
            DataType::Boolean => ScalarValue::Boolean(valid.then(|| array.as_boolean().value(row))),
            DataType::Int8 => prim!(Int8, Int8Type),
            DataType::Int16 => prim!(Int16, Int16Type),
            DataType::Int32 => prim!(Int32, Int32Type),
            DataType::Int64 => prim!(Int64, Int64Type),
            DataType::UInt8 => prim!(UInt8, UInt8Type),
            DataType::UInt16 => prim!(UInt16, UInt16Type),
            DataType::UInt32 => prim!(UInt32, UInt32Type),
            DataType::UInt64 => prim!(UInt64, UInt64Type),
            DataType::Float32 => prim!(Float32, Float32Type),
            DataType::Float64 => prim!(Float64, Float64Type),
            DataType::Timestamp(TimeUnit::Millisecond, _) => prim!(TimestampMillis, TimestampMillisecondType),
            DataType::Utf8 => ScalarValue::Utf8(valid.then(|| array.as_string::<i32>().value(row).to_string())),
            DataType::LargeUtf8 => ScalarValue::Utf8(valid.then(|| array.as_string::<i64>().value(row).to_string())),
            DataType::Utf8View => ScalarValue::Utf8(valid.then(|| array.as_string_view().value(row).to_string())),
            DataType::Binary => ScalarValue::Binary(valid.then(|| array.as_binary::<i32>().value(row).to_vec())),
            other => {
                let cast = arrow::compute::cast(&array.slice(row, 1), &DataType::Utf8)
                    .map_err(|_| crate::SabotError::plan(format!("no scalar representation for type {other}")))?;
                ScalarValue::Utf8(valid.then(|| cast.as_string::<i32>().value(0).to_string()))
            }
        })
    }
}

impl fmt::Display for ScalarValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: &Option<T>) -> fmt::Result {
            match v {
                Some(v) => write!(f, "{v}"),
                None => f.write_str("NULL"),
            }
        }
        match self {
            ScalarValue::Null => f.write_str("NULL"),
            ScalarValue::Boolean(v) => opt(f, v),
            ScalarValue::Int8(v) => opt(f, v),
            ScalarValue::Int16(v) => opt(f, v),
            ScalarValue::Int32(v) => opt(f, v),
            ScalarValue::Int64(v) => opt(f, v),
            ScalarValue::UInt8(v) => opt(f, v),
            ScalarValue::UInt16(v) => opt(f, v),
            ScalarValue::UInt32(v) => opt(f, v),
            ScalarValue::UInt64(v) => opt(f, v),
            ScalarValue::Float32(v) => opt(f, v),
            ScalarValue::Float64(v) => opt(f, &v.map(|x| format!("{x:?}"))),
            ScalarValue::Utf8(Some(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            ScalarValue::Utf8(None) => f.write_str("NULL"),
            ScalarValue::Binary(Some(b)) => write!(f, "<{} bytes>", b.len()),
            ScalarValue::Binary(None) => f.write_str("NULL"),
            ScalarValue::TimestampMillis(v) => opt(f, &v.map(|ms| format!("{ms}ms"))),
        }
    }
}

macro_rules! impl_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for ScalarValue {
            fn from(v: $t) -> Self { ScalarValue::$variant(Some(v)) }
        }
        impl From<Option<$t>> for ScalarValue {
            fn from(v: Option<$t>) -> Self { ScalarValue::$variant(v) }
        }
    )*};
}
impl_from!(bool => Boolean, i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64, u8 => UInt8, u16 => UInt16,
    u32 => UInt32, u64 => UInt64, f32 => Float32, f64 => Float64, String => Utf8, Vec<u8> => Binary);

impl From<&str> for ScalarValue {
    fn from(v: &str) -> Self {
        ScalarValue::Utf8(Some(v.to_string()))
    }
}
impl From<Option<&str>> for ScalarValue {
    fn from(v: Option<&str>) -> Self {
        ScalarValue::Utf8(v.map(str::to_string))
    }
}
