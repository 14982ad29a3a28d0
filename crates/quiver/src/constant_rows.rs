//! Constant rows, for kept plans.
//!
//! A kept plan's projection of literals over the placeholder row (`SELECT
//! 1`, `SELECT 'a' AS x, 2.5`: after constant folding, what a connection
//! pool's check and many clients' probes are) makes the same row at every
//! execution: it is made once, when the plan is kept, and each execution
//! sends that row ([`ConstantExec`]) instead of setting up a projection
//! (its metrics, its expressions) to compute it again.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// `plan` with each projection of literals over the placeholder row
/// replaced by a [`ConstantExec`] of its row.
pub(crate) fn with_constant_rows(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(match ConstantExec::over(&node)? {
            Some(constant) => Transformed::yes(Arc::new(constant) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

/// The row of a projection of literals over the placeholder row, made
/// once: each of its partitions sends it, as the projection would.
#[derive(Debug)]
pub(crate) struct ConstantExec {
    /// The projection it stands for (its properties).
    projection: Arc<dyn ExecutionPlan>,
    row: RecordBatch,
}

impl ConstantExec {
    fn over(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Self>> {
        let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
            return Ok(None);
        };
        if projection
            .input()
            .downcast_ref::<PlaceholderRowExec>()
            .is_none()
        {
            return Ok(None);
        }
        let Some(literals) = projection
            .expr()
            .iter()
            .map(|p| p.expr.downcast_ref::<Literal>())
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let columns = literals
            .iter()
            .map(|l| l.value().to_array_of_size(1))
            .collect::<Result<Vec<_>>>()?;
        let row = RecordBatch::try_new_with_options(
            projection.schema(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        Ok(Some(Self {
            projection: Arc::clone(node),
            row,
        }))
    }
}

impl DisplayAs for ConstantExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ConstantExec: {} columns", self.row.num_columns())
    }
}

impl ExecutionPlan for ConstantExec {
    fn name(&self) -> &str {
        "ConstantExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.projection.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "ConstantExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties().partitioning.partition_count();
        if partition >= partitions {
            return Err(DataFusionError::Internal(format!(
                "ConstantExec has {partitions} partitions, not {partition}"
            )));
        }
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.row.schema(),
            futures::stream::iter([Ok(self.row.clone())]),
        )))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use futures::TryStreamExt;

    use super::*;
    use crate::Quiver;

    #[tokio::test]
    async fn kept_projections_of_literals_send_the_row_made_once() {
        let quiver = Quiver::builder().build().expect("engine");
        let sql = "SELECT 1 AS one, 'a' || 'b' AS ab, CAST(NULL AS INT) AS nothing, 2.5 AS half";
        let plan = quiver.create_logical_plan(sql).await.expect("plan");
        let mut seen = vec![];
        for _ in 0..3 {
            let batches: Vec<RecordBatch> = quiver
                .execute_bound(plan.clone(), None)
                .await
                .expect("run")
                .try_collect()
                .await
                .expect("rows");
            seen.push(pretty_format_batches(&batches).expect("format").to_string());
        }
        assert!(seen[0].contains("| 1   | ab | "), "{}", seen[0]);
        assert!(seen[0].contains("| 2.5  |"), "{}", seen[0]);
        assert!(seen.iter().all(|s| *s == seen[0]));
        let kept = quiver.kept.physical_plans();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].name(), "ConstantExec");
        // A projection that calls a function each time is left as it is.
        let plan = quiver
            .create_logical_plan("SELECT random() AS r")
            .await
            .expect("plan");
        let physical = quiver
            .context()
            .state()
            .create_physical_plan(&plan)
            .await
            .expect("physical");
        let same = with_constant_rows(Arc::clone(&physical)).expect("rewrite");
        assert_eq!(same.name(), "ProjectionExec");
    }
}
