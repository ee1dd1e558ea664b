//! Building blocks shared by the streaming joins: join keys in Arrow's row format, the
//! snapshots of their buffers, and the assembly of output batches from rows of both sides.

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array, new_null_array};
use arrow::buffer::NullBuffer;
use arrow::compute::{cast, interleave, take};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};

use crate::plan::JoinType;
use crate::{Result, SabotError};

/// One input of a two-input operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Left,
    Right,
}

impl Side {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// The join keys of both sides, encoded in one row format: each side's key columns are cast
/// to the common type of the pair, so equal values of different types encode alike.
pub(crate) struct JoinKeys {
    left: Vec<usize>,
    right: Vec<usize>,
    types: Vec<DataType>,
    converter: Option<RowConverter>,
}

impl JoinKeys {
    /// Resolves `left_keys` and `right_keys` (pairwise equal columns) in the two schemas.
    pub(crate) fn try_new(left: &Schema, right: &Schema, left_keys: &[&str], right_keys: &[&str]) -> Result<Self> {
        if left_keys.len() != right_keys.len() {
            return Err(SabotError::plan(format!(
                "a join needs as many left keys as right keys, got {} and {}",
                left_keys.len(),
                right_keys.len()
            )));
        }
        let index = |schema: &Schema, name: &str, side: Side| {
            schema.index_of(name).map_err(|_| {
                let available: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                SabotError::plan(format!(
                    "join key '{name}' not found on the {} side; available columns: [{}]",
                    side.name(),
                    available.join(", ")
                ))
            })
        };
        let left_idx = left_keys.iter().map(|k| index(left, k, Side::Left)).collect::<Result<Vec<_>>>()?;
        let right_idx = right_keys.iter().map(|k| index(right, k, Side::Right)).collect::<Result<Vec<_>>>()?;
        let types = left_idx
            .iter()
            .zip(&right_idx)
            .map(|(&l, &r)| {
                let (lt, rt) = (left.field(l).data_type(), right.field(r).data_type());
                crate::expr::common_type(lt, rt).ok_or_else(|| {
                    SabotError::plan(format!(
                        "join keys {} ({lt}) and {} ({rt}) cannot be compared",
                        left.field(l).name(),
                        right.field(r).name()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let converter = if types.is_empty() {
            None
        } else {
            Some(RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?)
        };
        Ok(JoinKeys { left: left_idx, right: right_idx, types, converter })
    }

    /// The keys of every row of `batch`, a batch of input `side`.
    pub(crate) fn encode(&self, batch: &RecordBatch, side: Side) -> Result<EncodedKeys> {
        let Some(converter) = &self.converter else {
            return Ok(EncodedKeys { rows: None, valid: None });
        };
        let indices = if side == Side::Left { &self.left } else { &self.right };
        let arrays = indices
            .iter()
            .zip(&self.types)
            .map(|(&i, t)| {
                let array = batch.column(i);
                Ok(if array.data_type() == t { array.clone() } else { cast(array, t)? })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let mut valid: Option<NullBuffer> = None;
        for a in &arrays {
            valid = NullBuffer::union(valid.as_ref(), a.logical_nulls().as_ref());
        }
        Ok(EncodedKeys { rows: Some(converter.convert_columns(&arrays)?), valid })
    }
}

impl JoinKeys {
    /// The rows of `batch` (of input `side`) whose encoded key `keep` accepts; rows with a
    /// null key are encoded too, as the hash exchange in front of the join encodes them.
    pub(crate) fn filter(&self, batch: &RecordBatch, side: Side, keep: &dyn Fn(&[u8]) -> bool) -> Result<RecordBatch> {
        match self.mask(batch, side, keep)? {
            Some(mask) => Ok(arrow::compute::filter_record_batch(batch, &mask)?),
            None => Ok(batch.clone()),
        }
    }

    /// Which rows of `batch` [`filter`](Self::filter) keeps; `None` for all (no keys).
    pub(crate) fn mask(
        &self,
        batch: &RecordBatch,
        side: Side,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Option<arrow::array::BooleanArray>> {
        let Some(rows) = self.encode(batch, side)?.rows else { return Ok(None) };
        Ok(Some(rows.iter().map(|row| Some(keep(row.as_ref()))).collect()))
    }

    /// The keys' common types, as both sides' exchanges hash them.
    pub(crate) fn types(&self) -> &[DataType] {
        &self.types
    }
}

/// The encoded keys of one batch.
pub(crate) struct EncodedKeys {
    /// `None` when the join has no keys (every row has the empty key).
    rows: Option<Rows>,
    valid: Option<NullBuffer>,
}

impl EncodedKeys {
    /// The key of `row`, or `None` when one of its key values is null (nulls never match).
    pub(crate) fn get(&self, row: usize) -> Option<&[u8]> {
        if self.valid.as_ref().is_some_and(|v| v.is_null(row)) {
            return None;
        }
        Some(self.rows.as_ref().map_or(&[][..], |r| r.row(row).data()))
    }
}

/// What an event-time join saves besides its buffered rows.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct JoinProgress {
    pub(crate) watermark: i64,
    pub(crate) forwarded: Option<i64>,
    pub(crate) late_rows: usize,
}

impl JoinProgress {
    /// The progress of instances merged into one: the lowest watermarks, the late rows of
    /// all.
    pub(crate) fn merge(a: Option<JoinProgress>, b: Option<JoinProgress>) -> Option<JoinProgress> {
        match (a, b) {
            (Some(a), Some(b)) => Some(JoinProgress {
                watermark: a.watermark.min(b.watermark),
                forwarded: match (a.forwarded, b.forwarded) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    _ => None,
                },
                late_rows: a.late_rows + b.late_rows,
            }),
            (one, None) | (None, one) => one,
        }
    }
}

/// The event times of `column` in `batch` (ms), as a plain vector.
pub(crate) fn times_of(batch: &RecordBatch, column: &str) -> Result<Vec<i64>> {
    Ok(super::event_times(batch, column)?.values().to_vec())
}

/// Rows picked from one side for the output: a plain batch with row indices, or rows from
/// several buffered batches as `(batch, row)` pairs, `None` being a row of nulls.
pub(crate) enum Picks<'a> {
    /// Rows of one batch.
    Take(&'a RecordBatch, &'a [u32]),
    /// Rows of several batches; `None` for nulls (outer joins).
    Interleave(&'a [&'a RecordBatch], &'a [Option<(usize, usize)>]),
}

impl Picks<'_> {
    fn len(&self) -> usize {
        match self {
            Picks::Take(_, rows) => rows.len(),
            Picks::Interleave(_, rows) => rows.len(),
        }
    }

    /// Column `column` (of the side's schema `schema`) at the picked rows.
    fn column(&self, schema: &Schema, column: usize) -> Result<ArrayRef> {
        match self {
            Picks::Take(batch, rows) => {
                let indices = UInt32Array::from(rows.to_vec());
                Ok(take(batch.column(column), &indices, None)?)
            }
            Picks::Interleave(batches, rows) => {
                let data_type = schema.field(column).data_type();
                if batches.is_empty() {
                    return Ok(new_null_array(data_type, rows.len()));
                }
                // A one-row null array is the source of every `None` pick.
                let nulls = new_null_array(data_type, 1);
                let mut arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(column).as_ref()).collect();
                arrays.push(nulls.as_ref());
                let null_source = arrays.len() - 1;
                let indices: Vec<(usize, usize)> = rows.iter().map(|p| p.unwrap_or((null_source, 0))).collect();
                Ok(interleave(&arrays, &indices)?)
            }
        }
    }
}

/// The output of a stream join: every left column, then the right columns except right keys
/// named like their left key (other clashing names get the suffix `_right`), see
/// [`crate::plan::join_schema`], then optional extra columns (window bounds).
pub(crate) struct JoinOutput {
    left_schema: SchemaRef,
    right_schema: SchemaRef,
    right_columns: Vec<usize>,
    schema: SchemaRef,
}

impl JoinOutput {
    /// The output of joining `left` and `right` on the pairs of keys; `extra` fields are
    /// appended after the joined columns.
    pub(crate) fn new(
        left: SchemaRef,
        right: SchemaRef,
        left_keys: &[&str],
        right_keys: &[&str],
        join_type: JoinType,
        extra: Vec<arrow::datatypes::Field>,
    ) -> Result<Self> {
        let on: Vec<(String, String)> =
            left_keys.iter().zip(right_keys).map(|(l, r)| (l.to_string(), r.to_string())).collect();
        let joined = crate::plan::join_schema(&left, &right, &on, join_type);
        let (_, right_columns) = crate::plan::join_output_columns(&left, &right, &on, join_type);
        let mut fields: Vec<arrow::datatypes::Field> = joined.fields().iter().map(|f| f.as_ref().clone()).collect();
        for f in extra {
            if fields.iter().any(|x| x.name() == f.name()) {
                return Err(SabotError::plan(format!(
                    "the join's output already has a column named '{}'; rename it first",
                    f.name()
                )));
            }
            fields.push(f);
        }
        Ok(JoinOutput {
            left_schema: left,
            right_schema: right,
            right_columns,
            schema: std::sync::Arc::new(Schema::new(fields)),
        })
    }

    /// The output schema.
    pub(crate) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The schema of the input `side`.
    pub(crate) fn input_schema(&self, side: Side) -> &SchemaRef {
        match side {
            Side::Left => &self.left_schema,
            Side::Right => &self.right_schema,
        }
    }

    /// One output batch from the picked rows of each side (equally many) and extra columns.
    pub(crate) fn build(&self, left: Picks<'_>, right: Picks<'_>, extra: Vec<ArrayRef>) -> Result<RecordBatch> {
        let rows = left.len();
        debug_assert_eq!(rows, right.len(), "both sides pick one row per output row");
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for c in 0..self.left_schema.fields().len() {
            columns.push(left.column(&self.left_schema, c)?);
        }
        for &c in &self.right_columns {
            columns.push(right.column(&self.right_schema, c)?);
        }
        columns.extend(extra);
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }
}

/// A column of `rows` copies of the time `value` (ms), as `data_type` (`Int64` or a timestamp).
pub(crate) fn time_column(value: i64, rows: usize, data_type: &DataType) -> Result<ArrayRef> {
    Ok(cast(&Int64Array::from(vec![value; rows]), data_type)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array};
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn keys_of_different_integer_types_encode_alike_and_nulls_have_none() {
        let left = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let right = Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, true)]));
        let keys = JoinKeys::try_new(&left, &right, &["a"], &["b"]).unwrap();
        let lb = RecordBatch::try_new(left, vec![Arc::new(Int32Array::from(vec![Some(7), None]))]).unwrap();
        let rb = RecordBatch::try_new(right, vec![Arc::new(Int64Array::from(vec![Some(7)]))]).unwrap();
        let (l, r) = (keys.encode(&lb, Side::Left).unwrap(), keys.encode(&rb, Side::Right).unwrap());
        assert_eq!(l.get(0), r.get(0));
        assert_eq!(l.get(1), None);
    }

    #[test]
    fn incomparable_keys_and_missing_columns_are_plan_errors() {
        let left = Arc::new(Schema::new(vec![Field::new("a", DataType::Boolean, true)]));
        let right = Arc::new(Schema::new(vec![Field::new("b", DataType::Utf8, true)]));
        let err = JoinKeys::try_new(&left, &right, &["a"], &["b"]).err().unwrap();
        assert!(err.to_string().contains("cannot be compared"), "{err}");
        let err = JoinKeys::try_new(&left, &right, &["a"], &["zz"]).err().unwrap();
        assert!(err.to_string().contains("'zz' not found on the right side"), "{err}");
    }
}
