//! Vectorized per-group accumulators.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, PrimitiveArray, StringArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Float64Type, Int64Type, UInt64Type};
use arrow::row::{RowConverter, SortField};

use crate::expr::AggFunc;
use crate::{Result, SabotError};

/// Per-group state of one aggregate; group ids come from [`super::groups::GroupKeys`].
pub(crate) trait Accumulator: Send {
    /// Adds the rows of `values`; row `i` belongs to group `ids[i]`, and `ids < num_groups`.
    fn update(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()>;
    /// Adds partial states (columns as produced by [`Accumulator::state`]).
    fn merge(&mut self, states: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()>;
    /// Makes room for `num_groups` groups (groups that saw no value yet).
    fn resize(&mut self, num_groups: usize);
    /// The partial state, one row per group.
    fn state(&mut self) -> Result<Vec<ArrayRef>>;
    /// The final value, one row per group.
    fn finish(&mut self) -> Result<ArrayRef>;

    /// A copy of the state of groups `0..num_groups` for a checkpoint, one row per group,
    /// leaving the accumulator as it was. Two-phase aggregates give their partial-state
    /// columns (as [`Accumulator::state`]); single-phase ones columns of their own.
    ///
    /// The default goes through the partial-state path: it takes [`Accumulator::state`] and
    /// merges it back into the emptied accumulator, which is exact for any aggregate that
    /// two-phase aggregation can compute (merging a partial state into an empty one gives it
    /// back). User-defined aggregates use it: their states travel as postcard bytes.
    fn snapshot(&mut self, num_groups: usize) -> Result<Vec<ArrayRef>> {
        self.resize(num_groups);
        let states = self.state()?;
        let ids: Vec<u32> = (0..num_groups as u32).collect();
        self.merge(&states, &ids, num_groups)?;
        Ok(states)
    }

    /// Loads what [`Accumulator::snapshot`] returned into an empty accumulator, as groups
    /// `0..num_groups`.
    fn restore(&mut self, columns: &[ArrayRef], num_groups: usize) -> Result<()> {
        let ids: Vec<u32> = (0..num_groups as u32).collect();
        self.merge_saved(columns, &ids, num_groups)
    }

    /// Merges what [`Accumulator::snapshot`] returned, row `i` into group `ids[i]`, as if
    /// the rows it summarizes came after those this accumulator saw. The default merges the
    /// partial states.
    fn merge_saved(&mut self, columns: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()> {
        self.merge(columns, ids, num_groups)?;
        self.resize(num_groups);
        Ok(())
    }
}

/// Whether `func` can be computed in two phases (partial per partition, then merged).
pub(crate) fn supports_two_phase(func: AggFunc) -> bool {
    !matches!(func, AggFunc::CountDistinct | AggFunc::First | AggFunc::Last)
}

/// The partial-state fields of an aggregate named `name` over `input` values.
pub(crate) fn state_fields(func: AggFunc, name: &str, input: &DataType, output: &DataType) -> Vec<Field> {
    match func {
        AggFunc::CountAll | AggFunc::Count => vec![Field::new(format!("{name}[count]"), DataType::Int64, false)],
        AggFunc::Avg => vec![
            Field::new(format!("{name}[sum]"), DataType::Float64, true),
            Field::new(format!("{name}[count]"), DataType::Int64, false),
        ],
        AggFunc::Min | AggFunc::Max => vec![Field::new(format!("{name}[{func}]"), min_max_kind(input).0, true)],
        AggFunc::Udaf => vec![Field::new(format!("{name}[state]"), DataType::Binary, true)],
        _ => vec![Field::new(format!("{name}[{func}]"), output.clone(), true)],
    }
}

/// Creates the accumulator of `func` over values of `input` type producing `output` type.
pub(crate) fn new_accumulator(func: AggFunc, input: &DataType, output: &DataType) -> Result<Box<dyn Accumulator>> {
    Ok(match func {
        AggFunc::CountAll => Box::new(CountAcc { counts: vec![], count_nulls: true }),
        AggFunc::Count => Box::new(CountAcc { counts: vec![], count_nulls: false }),
        AggFunc::Sum => match output {
            DataType::Int64 => Box::new(SumAcc::<Int64Type>::new(output.clone())),
            DataType::UInt64 => Box::new(SumAcc::<UInt64Type>::new(output.clone())),
            _ => Box::new(SumAcc::<Float64Type>::new(output.clone())),
        },
        AggFunc::Avg => Box::new(AvgAcc { sums: vec![], counts: vec![] }),
        AggFunc::Min | AggFunc::Max => {
            let (kind, supported) = min_max_kind(input);
            if !supported {
                return Err(SabotError::plan(format!("{func} is not supported for {input}")));
            }
            let is_max = func == AggFunc::Max;
            match kind {
                DataType::Int64 => Box::new(MinMaxAcc::<Int64Type>::new(is_max, input.clone())),
                DataType::UInt64 => Box::new(MinMaxAcc::<UInt64Type>::new(is_max, input.clone())),
                DataType::Float64 => Box::new(MinMaxAcc::<Float64Type>::new(is_max, input.clone())),
                _ => Box::new(MinMaxStringAcc { is_max, values: vec![], output: input.clone() }),
            }
        }
        AggFunc::CountDistinct => Box::new(CountDistinctAcc {
            input: input.clone(),
            converter: RowConverter::new(vec![SortField::new(input.clone())])?,
            seen: HashSet::new(),
            counts: vec![],
        }),
        AggFunc::Udaf => {
            return Err(SabotError::plan("a user-defined aggregate brings its own accumulator"));
        }
        AggFunc::First | AggFunc::Last => Box::new(FirstLastAcc {
            is_last: func == AggFunc::Last,
            chosen: vec![],
            arrays: vec![arrow::array::new_null_array(input, 1)],
        }),
    })
}

/// The type min/max accumulate in, and whether the input type is supported.
fn min_max_kind(input: &DataType) -> (DataType, bool) {
    match input {
        t if t.is_signed_integer() => (DataType::Int64, true),
        t if t.is_unsigned_integer() => (DataType::UInt64, true),
        t if t.is_floating() => (DataType::Float64, true),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Boolean => (DataType::Int64, true),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => (DataType::Utf8, true),
        other => (other.clone(), false),
    }
}

fn grow<T: Clone>(v: &mut Vec<T>, n: usize, fill: T) {
    if v.len() < n {
        v.resize(n, fill);
    }
}

struct CountAcc {
    counts: Vec<i64>,
    count_nulls: bool,
}

impl Accumulator for CountAcc {
    fn resize(&mut self, n: usize) {
        grow(&mut self.counts, n, 0);
    }

    fn update(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.counts, num_groups, 0);
        match values.logical_nulls() {
            Some(nulls) if !self.count_nulls => {
                for (i, &g) in ids.iter().enumerate() {
                    self.counts[g as usize] += i64::from(nulls.is_valid(i));
                }
            }
            _ => ids.iter().for_each(|&g| self.counts[g as usize] += 1),
        }
        Ok(())
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.counts, num_groups, 0);
        let partial = states[0].as_primitive::<Int64Type>();
        for (i, &g) in ids.iter().enumerate() {
            self.counts[g as usize] += partial.value(i);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.finish()?])
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from(std::mem::take(&mut self.counts))))
    }

    fn snapshot(&mut self, num_groups: usize) -> Result<Vec<ArrayRef>> {
        self.resize(num_groups);
        Ok(vec![Arc::new(Int64Array::from(self.counts[..num_groups].to_vec()))])
    }
}

/// A number type that sums without silent overflow.
trait Summable: ArrowPrimitiveType {
    fn add_checked(a: Self::Native, b: Self::Native) -> Option<Self::Native>;
}
impl Summable for Int64Type {
    fn add_checked(a: i64, b: i64) -> Option<i64> {
        a.checked_add(b)
    }
}
impl Summable for UInt64Type {
    fn add_checked(a: u64, b: u64) -> Option<u64> {
        a.checked_add(b)
    }
}
impl Summable for Float64Type {
    fn add_checked(a: f64, b: f64) -> Option<f64> {
        Some(a + b)
    }
}

struct SumAcc<T: Summable> {
    sums: Vec<T::Native>,
    seen: Vec<bool>,
    output: DataType,
}

impl<T: Summable> SumAcc<T> {
    fn new(output: DataType) -> Self {
        SumAcc { sums: vec![], seen: vec![], output }
    }

    fn add(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.sums, num_groups, T::Native::default());
        grow(&mut self.seen, num_groups, false);
        let values = cast(values, &self.output)?;
        let values: &PrimitiveArray<T> = values.as_primitive();
        let overflow = || SabotError::Execution(format!("sum overflowed {}", self.output));
        if values.null_count() == 0 {
            for (&v, &g) in values.values().iter().zip(ids) {
                let g = g as usize;
                self.sums[g] = T::add_checked(self.sums[g], v).ok_or_else(overflow)?;
                self.seen[g] = true;
            }
        } else {
            for (i, &g) in ids.iter().enumerate() {
                if values.is_valid(i) {
                    let g = g as usize;
                    self.sums[g] = T::add_checked(self.sums[g], values.value(i)).ok_or_else(overflow)?;
                    self.seen[g] = true;
                }
            }
        }
        Ok(())
    }
}

impl<T: Summable> Accumulator for SumAcc<T> {
    fn resize(&mut self, n: usize) {
        grow(&mut self.sums, n, T::Native::default());
        grow(&mut self.seen, n, false);
    }

    fn update(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        self.add(values, ids, num_groups)
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()> {
        self.add(&states[0], ids, num_groups)
    }

    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.finish()?])
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let sums = std::mem::take(&mut self.sums);
        let seen = std::mem::take(&mut self.seen);
        let array: PrimitiveArray<T> = sums.into_iter().zip(seen).map(|(s, seen)| seen.then_some(s)).collect();
        Ok(Arc::new(array))
    }

    fn snapshot(&mut self, num_groups: usize) -> Result<Vec<ArrayRef>> {
        self.resize(num_groups);
        let array: PrimitiveArray<T> =
            self.sums.iter().zip(&self.seen).take(num_groups).map(|(&s, &seen)| seen.then_some(s)).collect();
        Ok(vec![Arc::new(array)])
    }
}

struct AvgAcc {
    sums: Vec<f64>,
    counts: Vec<i64>,
}

impl Accumulator for AvgAcc {
    fn resize(&mut self, n: usize) {
        grow(&mut self.sums, n, 0.0);
        grow(&mut self.counts, n, 0);
    }

    fn update(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.sums, num_groups, 0.0);
        grow(&mut self.counts, num_groups, 0);
        let values = cast(values, &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        if values.null_count() == 0 {
            for (&v, &g) in values.values().iter().zip(ids) {
                self.sums[g as usize] += v;
                self.counts[g as usize] += 1;
            }
            return Ok(());
        }
        for (i, &g) in ids.iter().enumerate() {
            if values.is_valid(i) {
                self.sums[g as usize] += values.value(i);
                self.counts[g as usize] += 1;
            }
        }
        Ok(())
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.sums, num_groups, 0.0);
        grow(&mut self.counts, num_groups, 0);
        let (sums, counts) = (states[0].as_primitive::<Float64Type>(), states[1].as_primitive::<Int64Type>());
        for (i, &g) in ids.iter().enumerate() {
            if sums.is_valid(i) {
                self.sums[g as usize] += sums.value(i);
            }
            self.counts[g as usize] += counts.value(i);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        let sums = Float64Array::from(std::mem::take(&mut self.sums));
        let counts = Int64Array::from(std::mem::take(&mut self.counts));
        Ok(vec![Arc::new(sums), Arc::new(counts)])
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let out: Float64Array =
            self.sums.iter().zip(&self.counts).map(|(&s, &c)| (c > 0).then(|| s / c as f64)).collect();
        Ok(Arc::new(out))
    }

    fn snapshot(&mut self, num_groups: usize) -> Result<Vec<ArrayRef>> {
        self.resize(num_groups);
        let sums = Float64Array::from(self.sums[..num_groups].to_vec());
        let counts = Int64Array::from(self.counts[..num_groups].to_vec());
        Ok(vec![Arc::new(sums), Arc::new(counts)])
    }
}

/// Total order for the accumulated natives: NaN is larger than every number, as in PostgreSQL.
trait TotalOrd: ArrowPrimitiveType {
    fn greater(a: Self::Native, b: Self::Native) -> bool;
}
impl TotalOrd for Int64Type {
    fn greater(a: i64, b: i64) -> bool {
        a > b
    }
}
impl TotalOrd for UInt64Type {
    fn greater(a: u64, b: u64) -> bool {
        a > b
    }
}
impl TotalOrd for Float64Type {
    fn greater(a: f64, b: f64) -> bool {
        a.total_cmp(&b).is_gt() && !(a == 0.0 && b == 0.0)
    }
}

struct MinMaxAcc<T: TotalOrd> {
    is_max: bool,
    values: Vec<Option<T::Native>>,
    output: DataType,
}

impl<T: TotalOrd> MinMaxAcc<T> {
    fn new(is_max: bool, output: DataType) -> Self {
        MinMaxAcc { is_max, values: vec![], output }
    }

    fn add(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.values, num_groups, None);
        let widened = match values.data_type() {
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                cast(&arrow::compute::kernels::cast::cast(values, &DataType::Int64)?, &T::DATA_TYPE)?
            }
            _ => cast(values, &T::DATA_TYPE)?,
        };
        let array: &PrimitiveArray<T> = widened.as_primitive();
        if array.null_count() == 0 {
            let is_max = self.is_max;
            for (&v, &g) in array.values().iter().zip(ids) {
                let slot = &mut self.values[g as usize];
                *slot = Some(match *slot {
                    Some(cur) if (is_max && !T::greater(v, cur)) || (!is_max && !T::greater(cur, v)) => cur,
                    _ => v,
                });
            }
            return Ok(());
        }
        for (i, &g) in ids.iter().enumerate() {
            if array.is_null(i) {
                continue;
            }
            let v = array.value(i);
            let slot = &mut self.values[g as usize];
            let replace = match *slot {
                None => true,
                Some(cur) => {
                    if self.is_max {
                        T::greater(v, cur)
                    } else {
                        T::greater(cur, v)
                    }
                }
            };
            if replace {
                *slot = Some(v);
            }
        }
        Ok(())
    }

    fn take_array(&mut self) -> ArrayRef {
        let array: PrimitiveArray<T> = std::mem::take(&mut self.values).into_iter().collect();
        Arc::new(array)
    }
}

impl<T: TotalOrd> Accumulator for MinMaxAcc<T> {
    fn resize(&mut self, n: usize) {
        grow(&mut self.values, n, None);
    }

    fn update(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        self.add(values, ids, num_groups)
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()> {
        self.add(&states[0], ids, num_groups)
    }

    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.take_array()])
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let array = self.take_array();
        Ok(match &self.output {
            DataType::Boolean => cast(&array, &DataType::Boolean)?,
            t @ (DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) => {
                let narrowed = if matches!(t, DataType::Date32) { cast(&array, &DataType::Int32)? } else { array };
                cast(&narrowed, t)?
            }
            t => cast(&array, t)?,
        })
    }

    fn snapshot(&mut self, num_groups: usize) -> Result<Vec<ArrayRef>> {
        self.resize(num_groups);
        let array: PrimitiveArray<T> = self.values[..num_groups].iter().copied().collect();
        Ok(vec![Arc::new(array)])
    }
}

struct MinMaxStringAcc {
    is_max: bool,
    values: Vec<Option<String>>,
    output: DataType,
}

impl MinMaxStringAcc {
    fn add(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.values, num_groups, None);
        let values = cast(values, &DataType::Utf8)?;
        let strings = values.as_string::<i32>();
        for (i, &g) in ids.iter().enumerate() {
            if strings.is_null(i) {
                continue;
            }
            let v = strings.value(i);
            let slot = &mut self.values[g as usize];
            let replace = slot.as_deref().is_none_or(|cur| if self.is_max { v > cur } else { v < cur });
            if replace {
                *slot = Some(v.to_string());
            }
        }
        Ok(())
    }

    fn take_array(&mut self) -> ArrayRef {
        Arc::new(StringArray::from(std::mem::take(&mut self.values)))
    }
}

impl Accumulator for MinMaxStringAcc {
    fn resize(&mut self, n: usize) {
        grow(&mut self.values, n, None);
    }

    fn update(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        self.add(values, ids, num_groups)
    }

    fn merge(&mut self, states: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()> {
        self.add(&states[0], ids, num_groups)
    }

    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.take_array()])
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let array = self.take_array();
        Ok(cast(&array, &self.output)?)
    }

    fn snapshot(&mut self, num_groups: usize) -> Result<Vec<ArrayRef>> {
        self.resize(num_groups);
        Ok(vec![Arc::new(StringArray::from(self.values[..num_groups].to_vec()))])
    }
}

struct CountDistinctAcc {
    input: DataType,
    converter: RowConverter,
    seen: HashSet<(u32, Box<[u8]>)>,
    counts: Vec<i64>,
}

impl Accumulator for CountDistinctAcc {
    fn resize(&mut self, n: usize) {
        grow(&mut self.counts, n, 0);
    }

    fn update(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.counts, num_groups, 0);
        let rows = self.converter.convert_columns(std::slice::from_ref(values))?;
        for (i, &g) in ids.iter().enumerate() {
            if values.is_valid(i) && self.seen.insert((g, rows.row(i).as_ref().into())) {
                self.counts[g as usize] += 1;
            }
        }
        Ok(())
    }

    fn merge(&mut self, _states: &[ArrayRef], _ids: &[u32], _num_groups: usize) -> Result<()> {
        Err(SabotError::Execution("count_distinct runs in a single phase".into()))
    }

    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Err(SabotError::Execution("count_distinct runs in a single phase".into()))
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from(std::mem::take(&mut self.counts))))
    }

    /// The distinct values of each group, as a list (sorted by their encoding, so that the
    /// snapshot does not depend on the hash set's order).
    fn snapshot(&mut self, num_groups: usize) -> Result<Vec<ArrayRef>> {
        self.resize(num_groups);
        let mut per_group: Vec<Vec<&[u8]>> = vec![vec![]; num_groups];
        for (g, bytes) in &self.seen {
            // (Groups beyond `num_groups` are gone: the aggregation emitted its results.)
            if let Some(values) = per_group.get_mut(*g as usize) {
                values.push(bytes);
            }
        }
        let parser = self.converter.parser();
        let mut rows = Vec::with_capacity(self.seen.len());
        let mut lengths = Vec::with_capacity(num_groups);
        for values in &mut per_group {
            values.sort_unstable();
            lengths.push(values.len());
            rows.extend(values.iter().map(|b| parser.parse(b)));
        }
        let values = self.converter.convert_rows(rows)?.remove(0);
        let field = Arc::new(Field::new_list_field(self.input.clone(), true));
        let list = ListArray::try_new(field, OffsetBuffer::from_lengths(lengths), values, None)?;
        Ok(vec![Arc::new(list)])
    }

    fn merge_saved(&mut self, columns: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()> {
        self.resize(num_groups);
        let lists = columns[0]
            .as_list_opt::<i32>()
            .ok_or_else(|| SabotError::Execution("count_distinct: the saved state is not a list".into()))?;
        for (row, &g) in ids.iter().enumerate().take(lists.len()) {
            let values = lists.value(row);
            let rows = self.converter.convert_columns(&[values])?;
            for value in rows.iter() {
                if self.seen.insert((g, value.as_ref().into())) {
                    self.counts[g as usize] += 1;
                }
            }
        }
        Ok(())
    }
}

/// `first`/`last`: remembers, per group, which input array and row holds the value, and
/// gathers them once at the end with `interleave`.
struct FirstLastAcc {
    is_last: bool,
    chosen: Vec<Option<(usize, usize)>>,
    arrays: Vec<ArrayRef>,
}

impl Accumulator for FirstLastAcc {
    fn resize(&mut self, n: usize) {
        grow(&mut self.chosen, n, None);
    }

    fn update(&mut self, values: &ArrayRef, ids: &[u32], num_groups: usize) -> Result<()> {
        grow(&mut self.chosen, num_groups, None);
        let array_index = self.arrays.len();
        let mut used = false;
        for (i, &g) in ids.iter().enumerate() {
            let slot = &mut self.chosen[g as usize];
            if self.is_last || slot.is_none() {
                *slot = Some((array_index, i));
                used = true;
            }
        }
        if used {
            self.arrays.push(values.clone());
        }
        Ok(())
    }

    fn merge(&mut self, _states: &[ArrayRef], _ids: &[u32], _num_groups: usize) -> Result<()> {
        Err(SabotError::Execution("first/last run in a single phase".into()))
    }

    fn state(&mut self) -> Result<Vec<ArrayRef>> {
        Err(SabotError::Execution("first/last run in a single phase".into()))
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        // Array 0 is a single null: the value of a group that saw no rows (a global aggregate).
        let chosen = std::mem::take(&mut self.chosen);
        let indices: Vec<(usize, usize)> = chosen.iter().map(|c| c.unwrap_or((0, 0))).collect();
        let arrays: Vec<&dyn Array> = self.arrays.iter().map(|a| a.as_ref()).collect();
        Ok(arrow::compute::interleave(&arrays, &indices)?)
    }

    /// The chosen value of each group and whether one was chosen (a first row whose value is
    /// null is a choice too).
    fn snapshot(&mut self, num_groups: usize) -> Result<Vec<ArrayRef>> {
        self.resize(num_groups);
        let chosen = &self.chosen[..num_groups];
        let indices: Vec<(usize, usize)> = chosen.iter().map(|c| c.unwrap_or((0, 0))).collect();
        let arrays: Vec<&dyn Array> = self.arrays.iter().map(|a| a.as_ref()).collect();
        let values = arrow::compute::interleave(&arrays, &indices)?;
        let is_chosen: BooleanArray = chosen.iter().map(|c| Some(c.is_some())).collect();
        Ok(vec![values, Arc::new(is_chosen)])
    }

    /// The saved rows came later: `last` takes their choice, `first` only where it has none.
    fn merge_saved(&mut self, columns: &[ArrayRef], ids: &[u32], num_groups: usize) -> Result<()> {
        self.resize(num_groups);
        let [values, is_chosen] = columns else {
            return Err(SabotError::Execution("first/last: the saved state needs two columns".into()));
        };
        let is_chosen = is_chosen
            .as_boolean_opt()
            .ok_or_else(|| SabotError::Execution("first/last: the saved flags are not booleans".into()))?;
        let array_index = self.arrays.len();
        for (row, &g) in ids.iter().enumerate().take(is_chosen.len()) {
            let slot = &mut self.chosen[g as usize];
            if is_chosen.value(row) && (self.is_last || slot.is_none()) {
                *slot = Some((array_index, row));
            }
        }
        self.arrays.push(values.clone());
        Ok(())
    }
}
