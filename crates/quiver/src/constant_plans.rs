//! Physical plans of constant statements, kept per session.
//!
//! A statement that reads no table and calls only immutable functions
//! (`SELECT 1`, what connection pools send to check a connection, `SELECT
//! 'a' || 'b'`, `VALUES (1), (2)`) has the same physical plan and the same
//! result every time; optimising and physically planning it again was
//! most of the CPU it took. A session keeps such plans (by logical plan,
//! for the session state they were made with) and runs a fresh copy of the
//! kept one (`reset_plan_states`). Anything that reads a table, takes a
//! parameter, or calls a function that is not immutable (`now()`,
//! `random()`, `current_setting`, model calls) is planned every time, as
//! is a plan with an operator not known to run again from a reset copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;

/// Plans kept per session at most; past it the session starts over.
const MAX_KEPT: usize = 64;

/// The operators a constant statement's plan may have to be kept: ones
/// that hold no state across executions, or whose state a reset copy
/// (`with_new_children`) starts afresh.
const REEXECUTABLE: &[&str] = &[
    "ProjectionExec",
    "PlaceholderRowExec",
    "EmptyExec",
    "DataSourceExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "GlobalLimitExec",
    "LocalLimitExec",
    "SortExec",
    "SortPreservingMergeExec",
    "AggregateExec",
    "UnionExec",
    "RepartitionExec",
];

/// The physical plan of each constant logical plan, with the generation
/// of the session state it was made with.
type Kept = HashMap<LogicalPlan, (u64, Arc<dyn ExecutionPlan>)>;

/// A session's kept plans.
#[derive(Debug, Default)]
pub(crate) struct ConstantPlans(Mutex<Kept>);

impl ConstantPlans {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh copy of the plan kept for `plan`, made with the session
    /// state of `generation`.
    pub fn get(
        &self,
        plan: &LogicalPlan,
        generation: u64,
    ) -> datafusion::common::Result<Option<Arc<dyn ExecutionPlan>>> {
        let kept = match self.lock().get(plan) {
            Some((made_with, physical)) if *made_with == generation => Arc::clone(physical),
            _ => return Ok(None),
        };
        datafusion::physical_plan::execution_plan::reset_plan_states(kept).map(Some)
    }

    /// Keeps `physical` for `plan` when `plan` is constant and every
    /// operator of `physical` can run again from a reset copy.
    pub fn keep(&self, plan: &LogicalPlan, generation: u64, physical: &Arc<dyn ExecutionPlan>) {
        if !is_constant(plan) || !reexecutable(physical) {
            return;
        }
        let mut kept = self.lock();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(plan.clone(), (generation, Arc::clone(physical)));
    }
}

/// Whether `plan` (its subqueries included) is a query that reads no
/// table, takes no parameter and calls only immutable functions.
pub(crate) fn is_constant(plan: &LogicalPlan) -> bool {
    let mut constant = true;
    let _ = plan.apply_with_subqueries(|node| {
        let allowed = matches!(
            node,
            LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::EmptyRelation(_)
                | LogicalPlan::Values(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Union(_)
                | LogicalPlan::SubqueryAlias(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::Subquery(_)
        );
        if !allowed {
            constant = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            e.apply(|x| {
                let fixed = match x {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    Expr::Placeholder(_) | Expr::ScalarVariable(..) => false,
                    _ => true,
                };
                if fixed {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    constant = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })?;
        Ok(if constant {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    constant
}

/// Whether every operator of `plan` is one of [`REEXECUTABLE`].
fn reexecutable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    REEXECUTABLE.contains(&plan.name()) && plan.children().into_iter().all(reexecutable)
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn plan(ctx: &SessionContext, sql: &str) -> LogicalPlan {
        ctx.state().create_logical_plan(sql).await.expect(sql)
    }

    #[tokio::test]
    async fn only_constant_statements_are_kept() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1)").await.expect("t");
        for sql in [
            "SELECT 1",
            "SELECT 'a' || 'b' AS ab, abs(-2)",
            "VALUES (1), (2)",
            "SELECT x FROM (VALUES (3), (1)) AS v(x) ORDER BY x LIMIT 1",
            "SELECT count(*) FROM (VALUES (1), (2)) AS v(x)",
        ] {
            assert!(is_constant(&plan(&ctx, sql).await), "{sql}");
        }
        for sql in [
            "SELECT * FROM t",
            "SELECT now()",
            "SELECT random()",
            "SELECT $1::int",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM t)",
            "EXPLAIN SELECT 1",
        ] {
            assert!(!is_constant(&plan(&ctx, sql).await), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_kept_plan_runs_again_and_belongs_to_its_generation() {
        let ctx = SessionContext::new();
        let kept = ConstantPlans::default();
        let sql = "SELECT x * 2 AS y FROM (VALUES (3), (1), (2)) AS v(x) ORDER BY y";
        let logical = plan(&ctx, sql).await;
        let physical = ctx
            .state()
            .create_physical_plan(&logical)
            .await
            .expect("physical");
        kept.keep(&logical, 7, &physical);
        for _ in 0..3 {
            let again = kept.get(&logical, 7).expect("reset").expect("kept");
            let batches = datafusion::physical_plan::collect(again, ctx.task_ctx())
                .await
                .expect("run");
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .expect("format")
                .to_string();
            assert!(text.contains("| 2 |") && text.contains("| 6 |"), "{text}");
        }
        assert!(kept.get(&logical, 8).expect("other").is_none());
        // A table scan is never kept.
        ctx.sql("CREATE TABLE t AS VALUES (1)").await.expect("t");
        let scan = plan(&ctx, "SELECT * FROM t").await;
        let physical = ctx.state().create_physical_plan(&scan).await.expect("scan");
        kept.keep(&scan, 7, &physical);
        assert!(kept.get(&scan, 7).expect("scan").is_none());
    }
}
