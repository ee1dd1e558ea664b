//! Filters and projections run by JIT-compiled kernels (feature `jit`).
//!
//! [`JitCalcOperator`] evaluates an optional predicate and the computed columns of a projection
//! in one native pass over the input buffers (see [`crate::jit`]); columns the projection passes
//! through unchanged are filtered (or cloned) with Arrow's kernels. Results are identical to
//! [`super::FilterOperator`] followed by [`super::ProjectOperator`].

use arrow::array::ArrayRef;
use arrow::compute::{FilterBuilder, filter_record_batch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::{Operator, Output};
use crate::Result;
use crate::expr::Expr;
use crate::jit::JitExprs;

/// Where an output column comes from.
#[derive(Debug, Clone)]
enum Column {
    /// An input column, passed through.
    Input(usize),
    /// Output `k` of the kernel.
    Computed(usize),
}

/// A compiled filter, projection, or fused filter + projection.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Float64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use sabot::expr::{col, lit};
/// use sabot::operator::{JitCalcOperator, Operator, Output};
/// let batch = RecordBatch::try_from_iter([("x", Arc::new(Float64Array::from(vec![1.0, 5.0])) as _)]).unwrap();
/// let out_schema = Arc::new(Schema::new(vec![Field::new("y", DataType::Float64, false)]));
/// let mut op = JitCalcOperator::try_new(
///     batch.schema_ref(),
///     Some(&col("x").gt(lit(2.0))),
///     Some((&[(col("x") * lit(2.0)).alias("y")], out_schema)),
/// )
/// .expect("compiles");
/// let mut out = Output::default();
/// op.process_batch(batch, &mut out).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct JitCalcOperator {
    jit: JitExprs,
    has_predicate: bool,
    /// `None`: a filter that keeps the input's columns.
    projection: Option<(Vec<Column>, SchemaRef)>,
}

impl JitCalcOperator {
    /// Compiles `predicate` and/or the projection `(exprs, output schema)` over `input`;
    /// `None` (logged at debug level) when the JIT does not handle an expression.
    pub fn try_new(
        input: &Schema,
        predicate: Option<&Expr>,
        projection: Option<(&[Expr], SchemaRef)>,
    ) -> Option<JitCalcOperator> {
        let mut computed = vec![];
        let projection = projection.map(|(exprs, schema)| {
            let columns = exprs
                .iter()
                .map(|e| match e.as_column().and_then(|name| input.index_of(name).ok()) {
                    Some(i) => Column::Input(i),
                    None => {
                        computed.push(e.clone());
                        Column::Computed(computed.len() - 1)
                    }
                })
                .collect::<Vec<_>>();
            (columns, schema)
        });
        if predicate.is_none() && computed.is_empty() {
            // Nothing to compile: a projection of input columns only.
            return None;
        }
        let jit = JitExprs::try_new(input, predicate, &computed)?;
        Some(JitCalcOperator { jit, has_predicate: predicate.is_some(), projection })
    }

    fn assemble(
        &self,
        columns: &[Column],
        schema: &SchemaRef,
        pick: impl Fn(usize) -> Result<ArrayRef>,
        computed: Vec<ArrayRef>,
        rows: usize,
    ) -> Result<RecordBatch> {
        let arrays = columns
            .iter()
            .map(|c| match c {
                Column::Input(i) => pick(*i),
                Column::Computed(k) => Ok(computed[*k].clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(schema.clone(), arrays, &options)?)
    }
}

impl Operator for JitCalcOperator {
    fn name(&self) -> &str {
        match (self.has_predicate, self.projection.is_some()) {
            (true, true) => "filter_project[jit]",
            (true, false) => "filter[jit]",
            _ => "project[jit]",
        }
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        if !self.has_predicate {
            let computed = self.jit.project(&batch)?;
            let (columns, schema) = self.projection.as_ref().expect("a projection");
            let rows = batch.num_rows();
            out.emit(self.assemble(columns, schema, |i| Ok(batch.column(i).clone()), computed, rows)?);
            return Ok(());
        }
        let (selection, computed) = self.jit.filter_project(&batch)?;
        let kept = selection.true_count();
        let Some((columns, schema)) = &self.projection else {
            match kept {
                0 => {}
                n if n == batch.num_rows() => out.emit(batch),
                _ => out.emit(filter_record_batch(&batch, &selection)?),
            }
            return Ok(());
        };
        if kept == 0 {
            return Ok(());
        }
        let all = kept == batch.num_rows();
        let filter = FilterBuilder::new(&selection).optimize().build();
        let pick = |i: usize| -> Result<ArrayRef> {
            let column = batch.column(i);
            if all { Ok(column.clone()) } else { Ok(filter.filter(column)?) }
        };
        out.emit(self.assemble(columns, schema, pick, computed, kept)?);
        Ok(())
    }
}
