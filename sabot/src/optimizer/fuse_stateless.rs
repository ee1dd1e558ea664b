//! Fuses adjacent filters, and adjacent projections, into one operator each.

use std::sync::Arc;

use super::{OptimizerRule, map_children};
use crate::Result;
use crate::expr::Expr;
use crate::plan::LogicalPlan;

/// `Filter(Filter(x, a), b)` becomes `Filter(x, a AND b)`: one mask, one copy of the rows.
/// `Project(Project(x, inner), outer)` becomes one projection when no computed inner column
/// is used more than once by `outer` (inlining it twice would compute it twice).
/// A projection that returns its input unchanged is removed.
#[derive(Debug, Default)]
pub struct FuseStateless;

impl OptimizerRule for FuseStateless {
    fn name(&self) -> &'static str {
        "fuse_stateless"
    }

    fn rewrite(&self, plan: Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>> {
        let plan = map_children(&plan, |c| self.rewrite(c.clone()))?;
        match plan.as_ref() {
            LogicalPlan::Filter { input, predicate } => {
                if let LogicalPlan::Filter { input: inner, predicate: first } = input.as_ref() {
                    let merged = first.clone().and(predicate.clone());
                    return Ok(Arc::new(LogicalPlan::Filter { input: inner.clone(), predicate: merged }));
                }
                Ok(plan)
            }
            LogicalPlan::Project { input, exprs, schema } => {
                let is_identity = input.schema().fields() == schema.fields()
                    && exprs
                        .iter()
                        .zip(input.schema().fields())
                        .all(|(e, f)| matches!(e, Expr::Column(c) if c == f.name()));
                if is_identity {
                    return Ok(input.clone());
                }
                if let LogicalPlan::Project { input: inner_input, exprs: inner, .. } = input.as_ref()
                    && can_inline(inner, exprs)
                {
                    {
                        let lookup = |name: &str| inner.iter().find(|e| e.output_name() == name).cloned();
                        let merged: Vec<Expr> = exprs
                            .iter()
                            .map(|e| {
                                let name = e.output_name();
                                let inlined = e.clone().unalias().substitute(&lookup);
                                if inlined.output_name() == name { inlined } else { inlined.alias(name) }
                            })
                            .collect();
                        return Ok(Arc::new(LogicalPlan::project(inner_input.clone(), merged)?));
                    }
                }
                Ok(plan)
            }
            _ => Ok(plan),
        }
    }
}

/// Whether every computed column of `inner` is referenced at most once by `outer`.
fn can_inline(inner: &[Expr], outer: &[Expr]) -> bool {
    inner.iter().all(|e| {
        if e.as_column().is_some() {
            return true;
        }
        let name = e.output_name();
        let mut uses = 0;
        for o in outer {
            o.visit(&mut |n| {
                if matches!(n, Expr::Column(c) if *c == name) {
                    uses += 1;
                }
            });
        }
        uses <= 1
    })
}
