//! Prunes columns nobody reads, down into the scans.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{OptimizerRule, map_children};
use crate::Result;
use crate::expr::{Expr, col};
use crate::plan::LogicalPlan;

/// Computes, top-down, the columns each node must produce, drops unused projection outputs,
/// and tells scans which columns to read (Parquet and IPC then skip the others entirely).
#[derive(Debug, Default)]
pub struct ProjectionPushdown;

impl OptimizerRule for ProjectionPushdown {
    fn name(&self) -> &'static str {
        "projection_pushdown"
    }

    fn rewrite(&self, plan: Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>> {
        prune(&plan, None)
    }
}

type Required = Option<BTreeSet<String>>;

fn with(required: &Required, extra: impl IntoIterator<Item = String>) -> Required {
    required.as_ref().map(|r| {
        let mut r = r.clone();
        r.extend(extra);
        r
    })
}

/// Rewrites `plan` to produce at least the `required` columns (all when `None`). Every node
/// refers to its input's columns by name, so extra columns below are harmless.
fn prune(plan: &Arc<LogicalPlan>, required: Required) -> Result<Arc<LogicalPlan>> {
    match plan.as_ref() {
        LogicalPlan::Scan { source, projection, filters, schema } => {
            let Some(required) = required else { return Ok(plan.clone()) };
            let full = source.schema();
            let current: Vec<usize> = match projection {
                Some(p) => p.clone(),
                None => (0..full.fields().len()).collect(),
            };
            let mut kept: Vec<usize> =
                current.iter().copied().filter(|&i| required.contains(full.field(i).name())).collect();
            // Batches carry their row count in their columns: never read zero columns.
            if kept.is_empty() && !current.is_empty() {
                kept.push(current[0]);
            }
            if kept.len() == schema.fields().len() {
                return Ok(plan.clone());
            }
            let projected = Arc::new(full.project(&kept)?);
            Ok(Arc::new(LogicalPlan::Scan {
                source: source.clone(),
                projection: Some(kept),
                filters: filters.clone(),
                schema: projected,
            }))
        }
        LogicalPlan::Filter { input, predicate } => {
            let input = prune(input, with(&required, predicate.columns()))?;
            Ok(Arc::new(LogicalPlan::Filter { input, predicate: predicate.clone() }))
        }
        LogicalPlan::Project { input, exprs, .. } => {
            let kept: Vec<Expr> = match &required {
                Some(r) => exprs.iter().filter(|e| r.contains(&e.output_name())).cloned().collect(),
                None => exprs.clone(),
            };
            // A projection of nothing still needs the row count: keep one input column.
            let kept = if kept.is_empty() { exprs.iter().take(1).cloned().collect() } else { kept };
            let needed: BTreeSet<String> = kept.iter().flat_map(|e| e.columns()).collect();
            let input = prune(input, Some(needed))?;
            Ok(Arc::new(LogicalPlan::project(input, kept)?))
        }
        LogicalPlan::Limit { input, skip, fetch } => {
            let input = prune(input, required)?;
            Ok(Arc::new(LogicalPlan::Limit { input, skip: *skip, fetch: *fetch }))
        }
        LogicalPlan::Sort { input, keys, fetch } => {
            let input = prune(input, with(&required, keys.iter().flat_map(|k| k.expr.columns())))?;
            Ok(Arc::new(LogicalPlan::Sort { input, keys: keys.clone(), fetch: *fetch }))
        }
        LogicalPlan::Aggregate { input, group_by, aggregates, .. } => {
            let mut needed: BTreeSet<String> = group_by.iter().flat_map(|e| e.columns()).collect();
            needed.extend(aggregates.iter().flat_map(|a| a.input.columns()));
            let input = prune(input, Some(needed))?;
            Ok(Arc::new(LogicalPlan::aggregate(input, group_by.clone(), aggregates.clone())?))
        }
        LogicalPlan::Join { left, right, on, join_type, .. } => {
            let (ls, rs) = (left.schema(), right.schema());
            let out = plan.schema();
            let (left_cols, right_cols) = crate::plan::join_output_columns(&ls, &rs, on, *join_type);
            let wanted = |i: usize| required.as_ref().is_none_or(|r| r.contains(out.field(i).name()));
            let mut left_needed: BTreeSet<String> = on.iter().map(|(l, _)| l.clone()).collect();
            let mut right_needed: BTreeSet<String> = on.iter().map(|(_, r)| r.clone()).collect();
            for (i, &c) in left_cols.iter().enumerate() {
                if wanted(i) {
                    left_needed.insert(ls.field(c).name().clone());
                }
            }
            for (j, &c) in right_cols.iter().enumerate() {
                if wanted(left_cols.len() + j) {
                    right_needed.insert(rs.field(c).name().clone());
                }
            }
            let new_left = prune(left, Some(left_needed))?;
            let new_right = prune(right, Some(right_needed))?;
            let join = Arc::new(LogicalPlan::join(new_left, new_right, on.clone(), *join_type)?);
            // Renamed clashes (`x_right`) depend on which columns exist: keep the names stable.
            let renamed = out
                .fields()
                .iter()
                .any(|f| join.schema().field_with_name(f.name()).is_err() && wanted_name(&required, f.name()));
            if renamed {
                let left = prune(left, None)?;
                let right = prune(right, None)?;
                return Ok(Arc::new(plan.with_new_inputs(vec![left, right])));
            }
            Ok(join)
        }
        LogicalPlan::Union { inputs, .. } => {
            // Every input must produce exactly the same columns in the same order.
            let schema = plan.schema();
            let names: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| required.as_ref().is_none_or(|r| r.contains(n)))
                .collect();
            let inputs = inputs
                .iter()
                .map(|i| {
                    let pruned = prune(i, Some(names.iter().cloned().collect()))?;
                    let exact = pruned.schema().fields().iter().map(|f| f.name()).eq(names.iter());
                    if exact {
                        Ok(pruned)
                    } else {
                        Ok(Arc::new(LogicalPlan::project(pruned, names.iter().map(col).collect())?))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(LogicalPlan::union(inputs)?))
        }
        LogicalPlan::Watermark { input, time_column, strategy } => {
            let input = prune(input, with(&required, [time_column.clone()]))?;
            Ok(Arc::new(LogicalPlan::Watermark { input, time_column: time_column.clone(), strategy: strategy.clone() }))
        }
        LogicalPlan::Window { input, keys, time_column, aggregates, .. } => {
            let mut needed: BTreeSet<String> = keys.iter().flat_map(|e| e.columns()).collect();
            needed.extend(aggregates.iter().flat_map(|a| a.input.columns()));
            needed.extend(time_column.iter().cloned());
            let input = prune(input, Some(needed))?;
            Ok(Arc::new(plan.with_new_inputs(vec![input])))
        }
        // A stream join keeps its keys and event times; other columns only when wanted above.
        LogicalPlan::StreamJoin { left, right, .. } => {
            if let Some(required) = &required
                && let Some((l, r)) = crate::plan::stream_join_input_columns(plan, required)
                && let Some(pruned) =
                    crate::plan::rebuild_stream_join(plan, prune(left, Some(l))?, prune(right, Some(r))?, required)?
            {
                return Ok(pruned);
            }
            map_children(plan, |c| prune(c, None))
        }
        // A user function may read any column.
        LogicalPlan::MapBatches { .. } | LogicalPlan::KeyedProcess { .. } => map_children(plan, |c| prune(c, None)),
    }
}

fn wanted_name(required: &Required, name: &str) -> bool {
    required.as_ref().is_none_or(|r| r.contains(name))
}
