//! Rule-based rewrites of logical plans. Each rule keeps results identical; they change only
//! how much work a plan does. Every rule can be switched off through
//! [`crate::exec::OptimizerConfig`].

mod filter_pushdown;
mod fuse_stateless;
mod projection_pushdown;

use std::sync::Arc;

use crate::Result;
use crate::exec::OptimizerConfig;
use crate::plan::LogicalPlan;

pub use filter_pushdown::FilterPushdown;
pub use fuse_stateless::FuseStateless;
pub use projection_pushdown::ProjectionPushdown;

/// One rewrite of a logical plan.
pub trait OptimizerRule: Send + Sync {
    /// The rule's name, as shown in traces.
    fn name(&self) -> &'static str;
    /// Rewrites the whole plan; the root's output schema must not change.
    fn rewrite(&self, plan: Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>>;
}

/// Applies the enabled rules in order: filters move down first (so that projection pruning
/// sees where every column is used), adjacent stateless operators are fused, then unused
/// columns are pruned.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::exec::OptimizerConfig;
/// use sabot::expr::{col, lit};
/// use sabot::optimizer::optimize;
/// use sabot::Stream;
/// let batch = RecordBatch::try_from_iter([
///     ("a", Arc::new(Int64Array::from(vec![1, 2])) as _),
///     ("b", Arc::new(Int64Array::from(vec![3, 4])) as _),
/// ]).unwrap();
/// let s = Stream::from_batches(vec![batch]).unwrap()
///     .filter(col("a").gt(lit(0))).unwrap()
///     .filter(col("a").lt(lit(9))).unwrap()
///     .select(["a"]).unwrap();
/// let plan = optimize(s.logical_plan().clone(), &OptimizerConfig::default()).unwrap();
/// assert_eq!(plan.display_indent(), "Project: a\n  Filter: a > 0 AND a < 9\n    Scan: memory: 1 batches, 2 rows projection=[a]\n");
/// ```
pub fn optimize(plan: Arc<LogicalPlan>, config: &OptimizerConfig) -> Result<Arc<LogicalPlan>> {
    let mut rules: Vec<Box<dyn OptimizerRule>> = vec![];
    if config.filter_pushdown {
        rules.push(Box::new(FilterPushdown));
    }
    if config.fuse_stateless {
        rules.push(Box::new(FuseStateless));
    }
    if config.projection_pushdown {
        rules.push(Box::new(ProjectionPushdown));
    }
    let schema = plan.schema();
    let mut plan = plan;
    for rule in rules {
        plan = rule.rewrite(plan)?;
        tracing::trace!(rule = rule.name(), plan = %plan.display_indent(), "optimizer rule applied");
    }
    debug_assert_eq!(plan.schema().fields(), schema.fields(), "optimizer changed the output schema");
    Ok(plan)
}

/// Rebuilds `plan` with each child replaced by `f(child)`.
pub(crate) fn map_children(
    plan: &Arc<LogicalPlan>,
    mut f: impl FnMut(&Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>>,
) -> Result<Arc<LogicalPlan>> {
    let inputs = plan.inputs();
    if inputs.is_empty() {
        return Ok(plan.clone());
    }
    let new = inputs.into_iter().map(&mut f).collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(plan.with_new_inputs(new)))
}
