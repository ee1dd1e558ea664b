//! Grouped aggregation, in one phase or as partial + final phases.

mod accumulator;
mod groups;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};

use super::{Operator, Output};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::{Result, SabotError};
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

    /// Makes room for about `groups` groups, so that the group table does not grow step by
    /// step (for instance when a window pane can expect as many groups as the previous one).
    pub(crate) fn reserve_groups(&mut self, groups: usize) {
        if let Some(keys) = self.groups.as_mut() {
            keys.reserve(groups);
        }
    }

    /// The number of groups so far (1 without keys).
    pub(crate) fn num_groups(&self) -> usize {
        self.groups.as_ref().map_or(1, |g| g.len())
    }

    /// A copy of the groups and their aggregate states, for a checkpoint: one row per group,
    /// in group order, with the key columns (`key{i}`) then each aggregate's state columns
    /// (`agg{i}[{j}]`); the aggregation goes on as if nothing happened. Two-phase aggregates
    /// save their partial states (user-defined ones as postcard bytes), `count_distinct` its
    /// distinct values and `first`/`last` the chosen value. `operator` names the operator in
    /// errors.
    pub(crate) fn snapshot_batch(&mut self, operator: &str) -> Result<RecordBatch> {
        let num_groups = self.num_groups();
        let mut columns = match self.groups.as_ref() {
            Some(groups) => groups.keys()?,
            None => vec![],
        };
        let mut fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("key{i}"), c.data_type().clone(), true))
            .collect();
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            let aggregate = &self.aggregates[i];
            let states = acc.snapshot(num_groups).map_err(|e| SabotError::State {
                state: format!("{operator}/{}", aggregate.output_name()),
                message: format!("the state of aggregate {aggregate} cannot be snapshotted: {e}"),
            })?;
            for (j, c) in states.into_iter().enumerate() {
                fields.push(Field::new(format!("agg{i}[{j}]"), c.data_type().clone(), true));
                columns.push(c);
            }
        }
        let options = RecordBatchOptions::new().with_row_count(Some(num_groups));
        Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?)
    }

    /// Loads a batch [`AggregateOperator::snapshot_batch`] gave into this operator, which must
    /// be new (no rows seen) and built like the one that was snapshotted.
    pub(crate) fn restore_batch(&mut self, batch: &RecordBatch, operator: &str) -> Result<()> {
        let corrupt = |message: String| SabotError::State { state: operator.to_string(), message };
        let num_keys = self.group_by.len();
        let num_groups = match self.groups.as_mut() {
            Some(groups) => {
                if groups.len() > 0 || batch.num_columns() < num_keys {
                    return Err(corrupt("aggregate state restored into a used aggregation".into()));
                }
                let mut ids = vec![];
                groups.intern(&batch.columns()[..num_keys], &mut ids)?;
                if groups.len() != batch.num_rows() {
                    return Err(corrupt(format!(
                        "saved aggregate state has {} rows for {} distinct groups",
                        batch.num_rows(),
                        groups.len()
                    )));
                }
                batch.num_rows()
            }
            None => 1,
        };
        let schema = batch.schema();
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            let columns = saved_states(&schema, batch, i);
            if columns.is_empty() {
                return Err(corrupt(format!("saved aggregate state lacks aggregate {}", self.aggregates[i])));
            }
            acc.restore(&columns, num_groups).map_err(|e| SabotError::State {
                state: format!("{operator}/{}", self.aggregates[i].output_name()),
                message: format!("the saved state of aggregate {} cannot be loaded: {e}", self.aggregates[i]),
            })?;
        }
        Ok(())
    }
}

impl AggregateOperator {
    /// Merges groups saved by [`AggregateOperator::snapshot_batch`] of an aggregation built
    /// like this one into this one's groups (adding the groups it does not have yet), as if
    /// the rows they summarize came after those this aggregation saw.
    pub(crate) fn merge_saved_batch(&mut self, batch: &RecordBatch, operator: &str) -> Result<()> {
        let num_keys = self.group_by.len();
        if batch.num_columns() < num_keys {
            return Err(SabotError::State {
                state: operator.to_string(),
                message: "saved aggregate state lacks key columns".into(),
            });
        }
        let mut ids = vec![];
        match self.groups.as_mut() {
            Some(groups) => groups.intern(&batch.columns()[..num_keys], &mut ids)?,
            None => ids.resize(batch.num_rows(), 0),
        }
        let num_groups = self.num_groups();
        let schema = batch.schema();
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            let columns = saved_states(&schema, batch, i);
            acc.merge_saved(&columns, &ids, num_groups).map_err(|e| SabotError::State {
                state: format!("{operator}/{}", self.aggregates[i].output_name()),
                message: format!("the saved state of aggregate {} cannot be merged: {e}", self.aggregates[i]),
            })?;
        }
        Ok(())
    }
}

/// The state columns of aggregate `index` in a batch of [`AggregateOperator::snapshot_batch`].
fn saved_states(schema: &Schema, batch: &RecordBatch, index: usize) -> Vec<ArrayRef> {
    let prefix = format!("agg{index}[");
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| f.name().starts_with(&prefix))
        .map(|(_, c)| c.clone())
        .collect()
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
        let options = RecordBatchOptions::new().with_row_count(Some(num_groups));
        out.emit(RecordBatch::try_new_with_options(self.output_schema.clone(), columns, &options)?);
        Ok(())
    }

    /// Saves the groups and their states as one Arrow IPC batch.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let name = self.name().to_string();
        let batch = self.snapshot_batch(&name)?;
        snapshot.put_batches("groups", &batch.schema(), &[batch])
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        let name = self.name().to_string();
        for batch in restored.batches("groups")? {
            self.restore_batch(&batch, &name)?;
        }
        Ok(())
    }
}
