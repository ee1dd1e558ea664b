//! Moves filters towards the sources.

use std::collections::HashMap;
use std::sync::Arc;

use super::{OptimizerRule, map_children};
use crate::Result;
use crate::expr::Expr;
use crate::io::FilterSupport;
use crate::plan::{JoinType, LogicalPlan};

/// Pushes each conjunct of a filter as deep as it can go without changing results:
/// below sorts, unions and projections (when it reads only plain columns of the projection),
/// below aggregations (when it reads only group keys), into the side of a join it reads (for
/// inner joins, a conjunct on a shared key goes to both sides), and into scans that can skip
/// data with it (the filter itself stays above such scans). Filters never cross a limit or a
/// user function.
#[derive(Debug, Default)]
pub struct FilterPushdown;

impl OptimizerRule for FilterPushdown {
    fn name(&self) -> &'static str {
        "filter_pushdown"
    }

    fn rewrite(&self, plan: Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>> {
        push(&plan, vec![])
    }
}

/// Returns `plan` with `predicates` (conjuncts over `plan`'s output) applied.
fn push(plan: &Arc<LogicalPlan>, mut predicates: Vec<Expr>) -> Result<Arc<LogicalPlan>> {
    match plan.as_ref() {
        LogicalPlan::Filter { input, predicate } => {
            // The lower filter's conjuncts come first, as written.
            let mut all: Vec<Expr> = predicate.split_conjunction().into_iter().cloned().collect();
            all.append(&mut predicates);
            push(input, all)
        }
        LogicalPlan::Sort { input, keys, fetch: None } => {
            let input = push(input, predicates)?;
            Ok(Arc::new(LogicalPlan::Sort { input, keys: keys.clone(), fetch: None }))
        }
        LogicalPlan::Union { inputs, .. } => {
            let inputs = inputs.iter().map(|i| push(i, predicates.clone())).collect::<Result<Vec<_>>>()?;
            Ok(Arc::new(LogicalPlan::union(inputs)?))
        }
        LogicalPlan::Project { input, exprs, .. } => {
            // name -> input column, for outputs that are plain (possibly renamed) columns.
            let plain: HashMap<String, Expr> = exprs
                .iter()
                .filter(|e| e.as_column().is_some())
                .map(|e| (e.output_name(), e.clone().unalias()))
                .collect();
            let (below, above): (Vec<Expr>, Vec<Expr>) =
                predicates.into_iter().partition(|p| p.columns().iter().all(|c| plain.contains_key(c)));
            let below = below.into_iter().map(|p| p.substitute(&|name| plain.get(name).cloned())).collect();
            let input = push(input, below)?;
            apply(Arc::new(plan.with_new_inputs(vec![input])), above)
        }
        LogicalPlan::Aggregate { input, group_by, .. } => {
            let keys: HashMap<String, Expr> = group_by
                .iter()
                .filter(|e| e.as_column().is_some())
                .map(|e| (e.output_name(), e.clone().unalias()))
                .collect();
            let (below, above): (Vec<Expr>, Vec<Expr>) = predicates
                .into_iter()
                .partition(|p| !group_by.is_empty() && p.columns().iter().all(|c| keys.contains_key(c)));
            let below = below.into_iter().map(|p| p.substitute(&|name| keys.get(name).cloned())).collect();
            let input = push(input, below)?;
            apply(Arc::new(plan.with_new_inputs(vec![input])), above)
        }
        LogicalPlan::Join { left, right, on, join_type, .. } => {
            push_join(plan, left, right, on, *join_type, predicates)
        }
        LogicalPlan::Scan { source, projection, filters, schema } => {
            let mut filters = filters.clone();
            for p in &predicates {
                if source.filter_support(p) == FilterSupport::Inexact && !filters.contains(p) {
                    filters.push(p.clone());
                }
            }
            let scan = Arc::new(LogicalPlan::Scan {
                source: source.clone(),
                projection: projection.clone(),
                filters,
                schema: schema.clone(),
            });
            apply(scan, predicates)
        }
        // Limits, top-k sorts and user functions are barriers; push inside them separately.
        _ => {
            let rewritten = map_children(plan, |c| push(c, vec![]))?;
            apply(rewritten, predicates)
        }
    }
}

fn push_join(
    plan: &Arc<LogicalPlan>,
    left: &Arc<LogicalPlan>,
    right: &Arc<LogicalPlan>,
    on: &[(String, String)],
    join_type: JoinType,
    predicates: Vec<Expr>,
) -> Result<Arc<LogicalPlan>> {
    let (ls, rs) = (left.schema(), right.schema());
    let out = plan.schema();
    let (left_cols, right_cols) = crate::plan::join_output_columns(&ls, &rs, on, join_type);
    // Output name -> input column name, per side.
    let mut to_left: HashMap<String, Expr> = HashMap::new();
    let mut to_right: HashMap<String, Expr> = HashMap::new();
    for (i, &c) in left_cols.iter().enumerate() {
        let name = ls.field(c).name();
        to_left.insert(out.field(i).name().clone(), crate::expr::col(name));
        if let Some((_, r)) = on.iter().find(|(l, r)| l == name && l == r) {
            // A shared key equals the right key on every output row of an inner join.
            if join_type == JoinType::Inner {
                to_right.insert(out.field(i).name().clone(), crate::expr::col(r));
            }
        }
    }
    for (j, &c) in right_cols.iter().enumerate() {
        to_right.insert(out.field(left_cols.len() + j).name().clone(), crate::expr::col(rs.field(c).name()));
    }
    // Which sides' rows a predicate may filter before the join without changing the result.
    let left_ok = matches!(join_type, JoinType::Inner | JoinType::Left | JoinType::Semi | JoinType::Anti);
    let right_ok = matches!(join_type, JoinType::Inner | JoinType::Right);
    let (mut to_l, mut to_r, mut above) = (vec![], vec![], vec![]);
    for p in predicates {
        let cols = p.columns();
        let on_left = left_ok && cols.iter().all(|c| to_left.contains_key(c));
        let on_right = right_ok && cols.iter().all(|c| to_right.contains_key(c));
        if on_left {
            to_l.push(p.clone().substitute(&|n| to_left.get(n).cloned()));
        }
        if on_right {
            to_r.push(p.clone().substitute(&|n| to_right.get(n).cloned()));
        }
        if !on_left && !on_right {
            above.push(p);
        }
    }
    let new_left = push(left, to_l)?;
    let new_right = push(right, to_r)?;
    apply(Arc::new(plan.with_new_inputs(vec![new_left, new_right])), above)
}

fn apply(plan: Arc<LogicalPlan>, predicates: Vec<Expr>) -> Result<Arc<LogicalPlan>> {
    match Expr::conjunction(predicates) {
        Some(p) => Ok(Arc::new(LogicalPlan::filter(plan, p)?)),
        None => Ok(plan),
    }
}
