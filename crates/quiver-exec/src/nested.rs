//! `NestedAsyncRule`: asynchronous calls inside asynchronous calls, such as
//! `embed_image('clip', url_download(url))`, run in stacked operators.
//!
//! DataFusion 55 plans every asynchronous call of a projection or filter
//! into one `AsyncFuncExec`, each call a column of its output; a call
//! nested in another's arguments is evaluated synchronously there, which
//! fails ("async functions should not be called directly"). This rule
//! rewrites such an operator into a stack: the innermost calls first, then
//! the calls that use their results (as columns), each level its own
//! `AsyncFuncExec` — so a model call over downloaded bytes still gets an
//! `InferenceExec` of its own, and the download its own concurrency —
//! topped by a projection that restores the original column order. The
//! projection, filter or aggregate above, which DataFusion left calling the outer
//! function synchronously over the inner one's column, reads the outer
//! call's column instead.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::async_scalar_function::AsyncFuncExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::async_func::AsyncFuncExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

/// See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct NestedAsyncRule;

/// Replaces, in `expr`, every strict sub-expression equal to one of
/// `calls` (other than `own`) by the column `columns` gives it; returns the
/// rewritten expression and the calls it needs.
fn replace_nested(
    expr: &Arc<dyn PhysicalExpr>,
    own: usize,
    calls: &[Arc<AsyncFuncExpr>],
    columns: &HashMap<usize, usize>,
) -> Result<(Arc<dyn PhysicalExpr>, Vec<usize>)> {
    let mut needs = Vec::new();
    let rewritten = Arc::clone(expr).transform_down(|e| {
        if Arc::ptr_eq(&e, expr) {
            return Ok(Transformed::no(e));
        }
        let found = calls
            .iter()
            .enumerate()
            .find(|(i, c)| *i != own && c.func.eq(&e));
        let Some((i, call)) = found else {
            return Ok(Transformed::no(e));
        };
        needs.push(i);
        let column: Arc<dyn PhysicalExpr> = match columns.get(&i) {
            Some(index) => Arc::new(Column::new(call.name(), *index)),
            // Not computed yet: the caller only wants to know the needs.
            None => e,
        };
        Ok(Transformed::new(column, true, TreeNodeRecursion::Jump))
    })?;
    Ok((rewritten.data, needs))
}

/// A call's result in the original operator's output: the call as the
/// operator's parent sees it (nested calls already columns) and its column.
type Resolved = Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>;

/// The stack for `exec` and how its parent finds the calls' results, or
/// `None` when no call is nested in another.
fn split(exec: &AsyncFuncExec) -> Result<Option<(Arc<dyn ExecutionPlan>, Resolved)>> {
    #[expect(deprecated, reason = "the only way to read an AsyncFuncExec's calls")]
    let calls = exec.async_exprs().to_vec();
    let none = HashMap::new();
    let needs = calls
        .iter()
        .enumerate()
        .map(|(i, c)| replace_nested(&c.func, i, &calls, &none).map(|(_, n)| n))
        .collect::<Result<Vec<_>>>()?;
    if needs.iter().all(Vec::is_empty) {
        return Ok(None);
    }
    let input = Arc::clone(exec.input());
    let width = input.schema().fields().len();
    // The parent replaces the inner calls by their columns first, then
    // meets the outer calls over those columns.
    let original: HashMap<usize, usize> = (0..calls.len()).map(|i| (i, width + i)).collect();
    let mut resolved: Resolved = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let (seen, _) = replace_nested(&call.func, i, &calls, &original)?;
        resolved.push((seen, Arc::new(Column::new(call.name(), width + i))));
    }
    // Where each call's result is in the stack's output, once computed.
    let mut columns: HashMap<usize, usize> = HashMap::new();
    let mut plan = input;
    while columns.len() < calls.len() {
        let level: Vec<usize> = (0..calls.len())
            .filter(|i| !columns.contains_key(i))
            .filter(|i| needs[*i].iter().all(|n| columns.contains_key(n)))
            .collect();
        if level.is_empty() {
            // A cycle cannot come from an expression tree; keep the plan.
            return Ok(None);
        }
        let schema = plan.schema();
        let mut exprs = Vec::with_capacity(level.len());
        for i in &level {
            let (func, _) = replace_nested(&calls[*i].func, *i, &calls, &columns)?;
            exprs.push(Arc::new(AsyncFuncExpr::try_new(
                calls[*i].name(),
                func,
                &schema,
            )?));
        }
        let base = schema.fields().len();
        for (k, i) in level.iter().enumerate() {
            columns.insert(*i, base + k);
        }
        plan = Arc::new(AsyncFuncExec::try_new(exprs, plan)?);
    }
    // The original columns, in the original order.
    let schema = plan.schema();
    let order = (0..width)
        .chain((0..calls.len()).map(|i| columns.get(&i).copied().unwrap_or(width + i)))
        .map(|index| {
            let name = schema.field(index).name().clone();
            ProjectionExpr::new(Arc::new(Column::new(&name, index)), name)
        })
        .collect::<Vec<_>>();
    let stack = Arc::new(ProjectionExec::try_new(order, plan)?);
    Ok(Some((stack, resolved)))
}

/// `expr` with every call of `resolved` replaced by its column.
fn resolve(expr: &Arc<dyn PhysicalExpr>, resolved: &Resolved) -> Result<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|e| {
            Ok(match resolved.iter().find(|(call, _)| call.eq(&e)) {
                Some((_, column)) => Transformed::yes(Arc::clone(column)),
                None => Transformed::no(e),
            })
        })
        .map(|t| t.data)
}

/// The stacked form of `node`, a projection, filter or aggregate over an
/// `AsyncFuncExec` with nested calls.
fn restack(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
        let Some(exec) = projection.input().downcast_ref::<AsyncFuncExec>() else {
            return Ok(None);
        };
        let Some((stack, resolved)) = split(exec)? else {
            return Ok(None);
        };
        let exprs = projection
            .expr()
            .iter()
            .map(|p| Ok(ProjectionExpr::new(resolve(&p.expr, &resolved)?, &p.alias)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Some(Arc::new(ProjectionExec::try_new(exprs, stack)?)));
    }
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        let Some(exec) = filter.input().downcast_ref::<AsyncFuncExec>() else {
            return Ok(None);
        };
        let Some((stack, resolved)) = split(exec)? else {
            return Ok(None);
        };
        let rebuilt = FilterExecBuilder::from(filter)
            .with_predicate(resolve(filter.predicate(), &resolved)?)
            .with_input(stack)
            .build()?;
        return Ok(Some(Arc::new(rebuilt)));
    }
    if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
        let Some(exec) = aggregate.input().downcast_ref::<AsyncFuncExec>() else {
            return Ok(None);
        };
        let Some((stack, resolved)) = split(exec)? else {
            return Ok(None);
        };
        let mut aggregates = Vec::with_capacity(aggregate.aggr_expr().len());
        for function in aggregate.aggr_expr() {
            let args = function
                .expressions()
                .iter()
                .map(|e| resolve(e, &resolved))
                .collect::<Result<Vec<_>>>()?;
            let order = function
                .order_bys()
                .iter()
                .map(|o| resolve(&o.expr, &resolved))
                .collect::<Result<Vec<_>>>()?;
            let Some(rebuilt) = function.with_new_expressions(args, order) else {
                return Ok(None);
            };
            aggregates.push(Arc::new(rebuilt));
        }
        let rebuilt: Arc<dyn ExecutionPlan> = Arc::new(aggregate.with_new_aggr_exprs(aggregates));
        return Ok(Some(replace_children_if_necessary(rebuilt, vec![stack])?));
    }
    Ok(None)
}

impl PhysicalOptimizerRule for NestedAsyncRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match restack(&node)? {
                Some(stack) => Transformed::yes(stack),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "quiver_nested_async"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
