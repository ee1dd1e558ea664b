//! Building blocks shared by the streaming joins: join keys in Arrow's row format, buffered
//! rows in event-time buckets, and the assembly of output batches from rows of both sides.

use std::collections::BTreeMap;

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

/// Saves both sides' buffered rows (Arrow IPC, `left` and `right`) and `progress`.
pub(crate) fn snapshot_buffers(
    snapshot: &mut crate::checkpoint::StateSnapshot,
    output: &JoinOutput,
    left: &TimeBuckets,
    right: &TimeBuckets,
    progress: JoinProgress,
) -> Result<()> {
    snapshot.put_batches("left", output.input_schema(Side::Left), &left.snapshot())?;
    snapshot.put_batches("right", output.input_schema(Side::Right), &right.snapshot())?;
    snapshot.put_value("progress", &progress)
}

/// Loads what [`snapshot_buffers`] saved into empty stores: all of it, or, when the
/// parallelism changed, the rows of every old instance whose keys the exchanges now route to
/// this instance (with the lowest progress of the old ones). `None` when nothing was saved.
pub(crate) fn restore_buffers(
    restored: &crate::checkpoint::RestoredState,
    operator: &str,
    keys: &JoinKeys,
    (left, left_time): (&mut TimeBuckets, &str),
    (right, right_time): (&mut TimeBuckets, &str),
) -> Result<Option<JoinProgress>> {
    left.clear();
    right.clear();
    if restored.rescale().is_none() {
        return merge_buffers(restored, keys, (left, left_time), (right, right_time), &|_| true);
    }
    let saved = super::merge_rescaled(restored, operator, &keys.types, |old, keep| {
        merge_buffers(old, keys, (&mut *left, left_time), (&mut *right, right_time), keep)
    })?;
    Ok(saved.into_iter().fold(None, JoinProgress::merge))
}

/// Adds what [`snapshot_buffers`] saved to the stores, the rows whose keys `keep` accepts.
/// `None` when nothing was saved.
fn merge_buffers(
    restored: &crate::checkpoint::RestoredState,
    keys: &JoinKeys,
    (left, left_time): (&mut TimeBuckets, &str),
    (right, right_time): (&mut TimeBuckets, &str),
    keep: &dyn Fn(&[u8]) -> bool,
) -> Result<Option<JoinProgress>> {
    let Some(progress) = restored.value::<JoinProgress>("progress")? else { return Ok(None) };
    for (store, side, time, name) in [(left, Side::Left, left_time, "left"), (right, Side::Right, right_time, "right")]
    {
        let batches = restored.batches(name)?.iter().map(|b| keys.filter(b, side, keep)).collect::<Result<Vec<_>>>()?;
        store.extend(&batches, keys, side, time)?;
    }
    Ok(Some(progress))
}

/// The event times of `column` in `batch` (ms), as a plain vector.
pub(crate) fn times_of(batch: &RecordBatch, column: &str) -> Result<Vec<i64>> {
    Ok(super::event_times(batch, column)?.values().to_vec())
}

/// A row buffered in a [`TimeBuckets`] store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RowRef {
    bucket: i64,
    batch: u32,
    row: u32,
}

/// The rows of one bucket: batches in arrival order and an index of their rows by key.
#[derive(Default)]
pub(crate) struct Bucket {
    batches: Vec<RecordBatch>,
    times: Vec<Vec<i64>>,
    /// Key → `(batch, row)` of every row with that key, in arrival order.
    index: hashbrown::HashMap<Box<[u8]>, Vec<(u32, u32)>>,
    max_time: i64,
    rows: usize,
}

/// Buffered rows of one join input, by event time: rows are kept in buckets of `width` ms
/// (a bucket holds whole batches of its rows, columnar) with an index by key. Rows leave in
/// whole buckets once the watermark makes every row of the bucket useless, which bounds
/// the state by event time.
pub(crate) struct TimeBuckets {
    width: i64,
    buckets: BTreeMap<i64, Bucket>,
    rows: usize,
}

impl TimeBuckets {
    pub(crate) fn new(width: i64) -> Self {
        TimeBuckets { width: width.max(1), buckets: BTreeMap::new(), rows: 0 }
    }

    fn bucket_of(&self, time: i64) -> i64 {
        time.div_euclid(self.width).saturating_mul(self.width)
    }

    /// Buffers the rows `selected` of `batch`, whose event times and keys are `times` and `keys`
    /// (one per row of `batch`); every selected row must have a key.
    pub(crate) fn insert(
        &mut self,
        batch: &RecordBatch,
        times: &[i64],
        keys: &EncodedKeys,
        selected: &[u32],
    ) -> Result<()> {
        if selected.is_empty() {
            return Ok(());
        }
        let mut per_bucket: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for &row in selected {
            per_bucket.entry(self.bucket_of(times[row as usize])).or_default().push(row);
        }
        for (start, rows) in per_bucket {
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                arrow::compute::take_record_batch(batch, &UInt32Array::from(rows.clone()))?
            };
            let bucket =
                self.buckets.entry(start).or_insert_with(|| Bucket { max_time: i64::MIN, ..Bucket::default() });
            let batch_no = u32::try_from(bucket.batches.len())
                .map_err(|_| SabotError::Execution("too many buffered batches in one join bucket".into()))?;
            let mut part_times = Vec::with_capacity(rows.len());
            for (position, &row) in rows.iter().enumerate() {
                let row = row as usize;
                let key =
                    keys.get(row).ok_or_else(|| SabotError::Execution("a buffered join row has a null key".into()))?;
                let time = times[row];
                part_times.push(time);
                bucket.max_time = bucket.max_time.max(time);
                let entry = (batch_no, position as u32);
                match bucket.index.get_mut(key) {
                    Some(list) => list.push(entry),
                    None => {
                        bucket.index.insert(Box::from(key), vec![entry]);
                    }
                }
            }
            bucket.rows += rows.len();
            self.rows += rows.len();
            bucket.batches.push(part);
            bucket.times.push(part_times);
        }
        Ok(())
    }

    /// Calls `f` with every buffered row of `key` whose event time is in `[low, high]`, in
    /// bucket order, then arrival order.
    pub(crate) fn probe(&self, key: &[u8], low: i64, high: i64, mut f: impl FnMut(RowRef, i64)) {
        if low > high {
            return;
        }
        for (&start, bucket) in self.buckets.range(self.bucket_of(low)..=high) {
            let Some(list) = bucket.index.get(key) else { continue };
            for &(batch, row) in list {
                let time = bucket.times[batch as usize][row as usize];
                if time >= low && time <= high {
                    f(RowRef { bucket: start, batch, row }, time);
                }
            }
        }
    }

    /// Every bucket whose start is in `[from, to)`, in order.
    pub(crate) fn buckets_in(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, &Bucket)> {
        self.buckets.range(from..to.max(from)).map(|(s, b)| (*s, b))
    }

    /// The starts of every bucket, in order.
    pub(crate) fn starts(&self) -> Vec<i64> {
        self.buckets.keys().copied().collect()
    }

    /// Drops every bucket for which `dead(start, max event time)` holds.
    pub(crate) fn expire(&mut self, dead: impl Fn(i64, i64) -> bool) {
        let mut removed = 0;
        self.buckets.retain(|&start, b| {
            let drop = dead(start, b.max_time);
            if drop {
                removed += b.rows;
            }
            !drop
        });
        self.rows -= removed;
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
        self.rows = 0;
    }

    /// The number of buffered rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Every buffered batch, by bucket then arrival, for a checkpoint (each holds rows of one
    /// bucket only, every one of them buffered): inserting them again in this order into an
    /// empty store rebuilds the same buckets and key index, see [`TimeBuckets::extend`].
    pub(crate) fn snapshot(&self) -> Vec<RecordBatch> {
        self.buckets.values().flat_map(|b| b.batches.iter().cloned()).collect()
    }

    /// Buffers again the batches [`TimeBuckets::snapshot`] returned, rows of input `side`
    /// with event times in `time_column`.
    pub(crate) fn extend(
        &mut self,
        batches: &[RecordBatch],
        keys: &JoinKeys,
        side: Side,
        time_column: &str,
    ) -> Result<()> {
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            let times = times_of(batch, time_column)?;
            let encoded = keys.encode(batch, side)?;
            let all: Vec<u32> = (0..batch.num_rows() as u32).collect();
            self.insert(batch, &times, &encoded, &all)?;
        }
        Ok(())
    }

    /// The rows `refs` point to, as the batches holding them and `(batch, row)` pairs.
    pub(crate) fn gather<'a>(&'a self, refs: &[RowRef]) -> Result<Gathered<'a>> {
        let mut batches: Vec<&RecordBatch> = vec![];
        let mut seen: hashbrown::HashMap<(i64, u32), usize> = hashbrown::HashMap::new();
        let mut rows = Vec::with_capacity(refs.len());
        for r in refs {
            let source = match seen.get(&(r.bucket, r.batch)) {
                Some(&i) => i,
                None => {
                    let batch = self
                        .buckets
                        .get(&r.bucket)
                        .and_then(|b| b.batches.get(r.batch as usize))
                        .ok_or_else(|| SabotError::Execution("a join row points to dropped state".into()))?;
                    batches.push(batch);
                    seen.insert((r.bucket, r.batch), batches.len() - 1);
                    batches.len() - 1
                }
            };
            rows.push(Some((source, r.row as usize)));
        }
        Ok(Gathered { batches, rows })
    }
}

/// Buffered rows picked for an output: the batches holding them and, per output row,
/// `(batch, row)` into them (the form `arrow::compute::interleave` takes).
pub(crate) struct Gathered<'a> {
    batches: Vec<&'a RecordBatch>,
    rows: Vec<Option<(usize, usize)>>,
}

impl Gathered<'_> {
    /// The rows, as one side of an output.
    pub(crate) fn picks(&self) -> Picks<'_> {
        Picks::Interleave(&self.batches, &self.rows)
    }
}

impl Bucket {
    /// Every key of the bucket with its rows.
    pub(crate) fn keys(&self, start: i64) -> impl Iterator<Item = (&[u8], impl Iterator<Item = RowRef> + '_)> {
        self.index.iter().map(move |(k, rows)| {
            (k.as_ref(), rows.iter().map(move |&(batch, row)| RowRef { bucket: start, batch, row }))
        })
    }
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

    use arrow::array::{Int32Array, Int64Array, StringArray};
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

    #[test]
    fn buckets_find_rows_by_key_and_time_and_expire_whole_buckets() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["a", "b", "a", "a"])), Arc::new(Int64Array::from(vec![5, 6, 15, 25]))],
        )
        .unwrap();
        let keys = JoinKeys::try_new(&schema, &schema, &["k"], &["k"]).unwrap();
        let encoded = keys.encode(&batch, Side::Left).unwrap();
        let mut store = TimeBuckets::new(10);
        store.insert(&batch, &[5, 6, 15, 25], &encoded, &[0, 1, 2, 3]).unwrap();
        assert_eq!(store.rows(), 4);
        let mut found = vec![];
        store.probe(encoded.get(0).unwrap(), 4, 20, |_, t| found.push(t));
        assert_eq!(found, vec![5, 15]);
        store.expire(|_, max| max < 10);
        assert_eq!(store.rows(), 2, "the bucket [0, 10) is gone");
        let mut found = vec![];
        store.probe(encoded.get(0).unwrap(), i64::MIN, i64::MAX, |_, t| found.push(t));
        assert_eq!(found, vec![15, 25]);
    }
}
