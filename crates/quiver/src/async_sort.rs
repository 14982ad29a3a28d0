//! Lets `ORDER BY` use async functions (model functions such as
//! `embed_text`): DataFusion 55 evaluates async functions in projections,
//! filters and aggregates only. This analyzer rule computes each sort key
//! that calls one in a projection below the sort, sorts by that column and
//! projects it away again:
//!
//! ```text
//! Sort: f(embed_text(…)) DESC, fetch=k        Projection: <input columns>
//!   <input>                              →      Sort: __quiver_sort_0 DESC, fetch=k
//!                                                 Projection: <input columns>, f(embed_text(…)) AS __quiver_sort_0
//!                                                   <input>
//! ```
//!
//! `ORDER BY cosine_similarity(e, embed_text('m', 'query')) DESC LIMIT k`
//! then still runs as a top-k sort.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::expr::Sort as SortExpr;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, Sort};
use datafusion::optimizer::AnalyzerRule;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AsyncSortKeys;

fn calls_async(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.func.as_async().is_some())))
        .unwrap_or(false)
}

impl AnalyzerRule for AsyncSortKeys {
    fn name(&self) -> &str {
        "quiver_async_sort_keys"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up(|node| {
            let LogicalPlan::Sort(sort) = &node else {
                return Ok(Transformed::no(node));
            };
            if !sort.expr.iter().any(|s| calls_async(&s.expr)) {
                return Ok(Transformed::no(node));
            }
            let input = sort.input.clone();
            let columns: Vec<Expr> = input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            let mut below = columns.clone();
            let mut keys = Vec::with_capacity(sort.expr.len());
            for (i, s) in sort.expr.iter().enumerate() {
                if calls_async(&s.expr) {
                    let name = format!("__quiver_sort_{i}");
                    below.push(s.expr.clone().alias(&name));
                    keys.push(SortExpr {
                        expr: Expr::Column(name.as_str().into()),
                        ..s.clone()
                    });
                } else {
                    keys.push(s.clone());
                }
            }
            let projected = LogicalPlan::Projection(Projection::try_new(below, input)?);
            let sorted = LogicalPlan::Sort(Sort {
                expr: keys,
                input: Arc::new(projected),
                fetch: sort.fetch,
            });
            let restored = LogicalPlan::Projection(Projection::try_new(columns, Arc::new(sorted))?);
            Ok(Transformed::yes(restored))
        })
        .map(|t| t.data)
    }
}
