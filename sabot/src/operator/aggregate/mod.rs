//! Grouped aggregation, in one phase or as partial + final phases.

mod accumulator;
mod groups;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};

use super::{Operator, Output};
use crate::Result;
use crate::expr::{AggExpr, Expr};
pub(crate) use accumulator::Accumulator;
use accumulator::{new_accumulator, state_fields};
use groups::{GroupKeys, new_group_keys};

pub(crate) use accumulator::supports_two_phase;
pub(crate) use groups::{hash_bytes, hash_u64};

/// Which part of a (possibly two-phase) aggregation an [`AggregateOperator`] performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateMode {
    /// Raw rows in, final values out.
    Single,
    /// Raw rows in, partial states out (one row per group seen by this partition).
    Partial,
    /// Partial states in, final values out.
    Final,
}

/// Groups rows by key expressions and computes aggregates per group; emits when the input ends.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch, StringArray};
/// use sabot::expr::{col, sum};
/// use sabot::operator::{AggregateMode, AggregateOperator, Operator, Output};
/// let batch = RecordBatch::try_from_iter([
///     ("k", Arc::new(StringArray::from(vec!["a", "b", "a"])) as _),
///     ("v", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
/// ]).unwrap();
/// let mut op = AggregateOperator::try_new(
///     AggregateMode::Single, &batch.schema(), vec![col("k")], vec![sum(col("v"))]).unwrap();
/// let mut out = Output::default();
/// op.process_batch(batch, &mut out).unwrap();
/// op.on_close(&mut out).unwrap();
/// ```
pub struct AggregateOperator {
    mode: AggregateMode,
    group_by: Vec<Expr>,
    aggregates: Vec<AggExpr>,
    /// Number of state columns each aggregate reads in `Final` mode.
    state_widths: Vec<usize>,
    output_schema: SchemaRef,
    groups: Option<Box<dyn GroupKeys>>,
    accumulators: Vec<Box<dyn Accumulator>>,
    ids: Vec<u32>,
}

impl AggregateOperator {
    /// An aggregation of `input` rows (in `Final` mode, `input` is the *raw* input schema, the
    /// one the partial phase read) grouped by `group_by`.
    pub fn try_new(mode: AggregateMode, input: &Schema, group_by: Vec<Expr>, aggregates: Vec<AggExpr>) -> Result<Self> {
        let key_fields = group_by.iter().map(|e| e.to_field(input)).collect::<Result<Vec<Field>>>()?;
        let mut accumulators = vec![];
        let mut state_widths = vec![];
        let mut value_fields = vec![];
        for a in &aggregates {
            let input_type = a.input.data_type(input)?;
            let out = a.to_field(input)?;
            accumulators.push(match &a.udaf {
                Some(udaf) => udaf.accumulator(),
                None => new_accumulator(a.func, &input_type, out.data_type())?,
            });
            let states = state_fields(a.func, &a.output_name(), &input_type, out.data_type());
            state_widths.push(states.len());
            match mode {
                AggregateMode::Partial => value_fields.extend(states),
                _ => value_fields.push(out),
            }
        }
        let groups = if group_by.is_empty() {
            None
        } else {
            let types: Vec<_> = key_fields.iter().map(|f| f.data_type().clone()).collect();
            Some(new_group_keys(&types)?)
        };
        let mut fields = key_fields;
        fields.extend(value_fields);
        // In the final phase the keys are the partial output's first columns, by name.
        let group_by = match mode {
            AggregateMode::Final => fields[..group_by.len()].iter().map(|f| crate::expr::col(f.name())).collect(),
            _ => group_by,
        };
        Ok(AggregateOperator {
            mode,
            group_by,
            aggregates,
            state_widths,
            output_schema: Arc::new(Schema::new(fields)),
            groups,
            accumulators,
            ids: vec![],
        })
    }

    /// The schema of the batches this operator emits.
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    fn num_groups(&self) -> usize {
        self.groups.as_ref().map_or(1, |g| g.len())
    }
}

impl Operator for AggregateOperator {
    fn name(&self) -> &str {
        match self.mode {
            AggregateMode::Single => "aggregate",
            AggregateMode::Partial => "aggregate(partial)",
            AggregateMode::Final => "aggregate(final)",
        }
    }

    fn process_batch(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        self.ids.clear();
        match self.groups.as_mut() {
            Some(groups) => {
                let keys = self.group_by.iter().map(|e| e.evaluate(&batch)).collect::<Result<Vec<_>>>()?;
                groups.intern(&keys, &mut self.ids)?;
            }
            None => self.ids.resize(batch.num_rows(), 0),
        }
        let num_groups = self.num_groups();
        let mut state_column = self.group_by.len();
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            if self.mode == AggregateMode::Final {
                let width = self.state_widths[i];
                acc.merge(&batch.columns()[state_column..state_column + width], &self.ids, num_groups)?;
                state_column += width;
            } else {
                let values = self.aggregates[i].input.evaluate(&batch)?;
                acc.update(&values, &self.ids, num_groups)?;
            }
        }
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        let num_groups = self.num_groups();
        let mut columns: Vec<ArrayRef> = match self.groups.as_mut() {
            Some(groups) => groups.emit()?,
            None => vec![],
        };
        for acc in &mut self.accumulators {
            acc.resize(num_groups);
            match self.mode {
                AggregateMode::Partial => columns.extend(acc.state()?),
                _ => columns.push(acc.finish()?),
            }
        }
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(num_groups));
        out.emit(RecordBatch::try_new_with_options(self.output_schema.clone(), columns, &options)?);
        Ok(())
    }
}
