//! Lets `ORDER BY`, `GROUP BY`, aggregates, window functions and join
//! conditions call async functions (model functions such as
//! `embed_text`).
//!
//! DataFusion 55 evaluates async functions in projections and filters.
//! Elsewhere they fail at run time ("async functions should not be called
//! directly": `GROUP BY classify_image(…)`, a window's or a join's
//! arguments), or, in aggregates, give wrong answers: each aggregate's
//! first async call is planned as the same column, so
//! `avg(f(embed_text('m', a))), avg(f(embed_text('m', b)))` averages
//! `embed_text('m', a)` twice.
//!
//! This analyzer rule computes those calls in a projection below the node
//! (where `InferenceExec` runs them, batched) and has the node read them
//! as columns; a projection above gives the node's output its original
//! names again:
//!
//! ```text
//! Aggregate: avg(f(embed_text(…a))), avg(f(embed_text(…b)))
//!   <input>
//!            ↓
//! Projection: <the aggregate's names>
//!   Aggregate: avg(f(__quiver_async_0)), avg(f(__quiver_async_1))
//!     Projection: <input columns>, embed_text(…a) AS __quiver_async_0, embed_text(…b) AS __quiver_async_1
//!       <input>
//! ```
//!
//! What the optimizer makes of a query later (a `WHERE` condition that
//! becomes a join's, a decorrelated subquery, `DISTINCT ON` turned into
//! an aggregate) DataFusion plans with the calls in a projection already
//! (tested in `models/inference.slt`).
//!
//! A sort key that calls one is computed below whole, so that
//! `ORDER BY cosine_similarity(e, embed_text('m', 'query')) DESC LIMIT k`
//! still runs as a top-k sort on a column. A join computes each call
//! below the side whose columns it takes; one that takes columns of both
//! sides is refused with a message that says how to write it.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result, internal_err, plan_err};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use datafusion::optimizer::AnalyzerRule;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AsyncCallsBelow;

fn is_async_call(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(f) if f.func.as_async().is_some())
}

fn calls_async(expr: &Expr) -> bool {
    expr.exists(|e| Ok(is_async_call(e))).unwrap_or(false)
}

impl AnalyzerRule for AsyncCallsBelow {
    fn name(&self) -> &str {
        "quiver_async_calls_below"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        move_every_call_below(plan).map(|t| t.data)
    }
}

/// The prefix of the columns this rule adds.
const PREFIX: &str = "__quiver_async_";

fn move_every_call_below(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    // Names are numbered across the whole plan, after any it carries
    // already: a node's input may carry the columns added below it.
    let mut named = 0usize;
    plan.apply_with_subqueries(|node| {
        for field in node.schema().fields() {
            if let Some(n) = field
                .name()
                .strip_prefix(PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
            {
                named = named.max(n + 1);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    plan.transform_up_with_subqueries(|node| move_calls_below(node, &mut named))
}

/// What one input of a node computes for it below: each expression with
/// the name the node reads it by.
#[derive(Default)]
struct Below {
    exprs: Vec<(Expr, String)>,
}

impl Below {
    /// The column that reads `expr`, computed once per input however
    /// often the node uses it (a volatile one each time).
    fn column(&mut self, expr: Expr, named: &mut usize) -> Expr {
        let found = (!expr.is_volatile())
            .then(|| self.exprs.iter().find(|(e, _)| *e == expr))
            .flatten();
        let name = match found {
            Some((_, name)) => name.clone(),
            None => {
                let name = format!("{PREFIX}{named}");
                *named += 1;
                self.exprs.push((expr, name.clone()));
                name
            }
        };
        Expr::Column(Column::from_name(name))
    }
}

fn move_calls_below(node: LogicalPlan, named: &mut usize) -> Result<Transformed<LogicalPlan>> {
    let sort = match &node {
        LogicalPlan::Sort(_) => true,
        LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) | LogicalPlan::Join(_) => false,
        _ => return Ok(Transformed::no(node)),
    };
    let exprs = node.expressions();
    if !exprs.iter().any(calls_async) {
        return Ok(Transformed::no(node));
    }
    let inputs: Vec<LogicalPlan> = node.inputs().into_iter().cloned().collect();
    let mut below: Vec<Below> = inputs.iter().map(|_| Below::default()).collect();
    let mut rewritten = Vec::with_capacity(exprs.len());
    for expr in exprs {
        if sort {
            // A sort key is computed whole, to sort on a column.
            rewritten.push(if calls_async(&expr) {
                below[0].column(expr, named)
            } else {
                expr
            });
            continue;
        }
        let expr = expr.transform_down(|e| {
            // A call with outer references stays: its subquery is
            // decorrelated later, and the projection could not hold it.
            if !is_async_call(&e) || e.contains_outer() {
                return Ok(Transformed::no(e));
            }
            let side = side_of(&e, &inputs)?;
            let column = below[side].column(e, named);
            // Its arguments (async calls too) are computed with it.
            Ok(Transformed::new(column, true, TreeNodeRecursion::Jump))
        })?;
        rewritten.push(expr.data);
    }
    let extra: Vec<usize> = below.iter().map(|b| b.exprs.len()).collect();
    let inputs = inputs
        .into_iter()
        .zip(below)
        .map(|(input, below)| {
            if below.exprs.is_empty() {
                return Ok(input);
            }
            let mut exprs: Vec<Expr> = input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            exprs.extend(below.exprs.into_iter().map(|(e, name)| e.alias(name)));
            Projection::try_new(exprs, Arc::new(input)).map(LogicalPlan::Projection)
        })
        .collect::<Result<Vec<_>>>()?;
    let original = Arc::clone(node.schema());
    let new = node.with_new_exprs(rewritten, inputs)?;
    // Where an output of the original node is not found by its name in
    // the new one (an aggregate's or window function's, named after its
    // rewritten expression), it is at the same place, after the columns
    // added to the input (which a window passes on).
    let shift = match &new {
        LogicalPlan::Window(_) => extra[0],
        _ => 0,
    };
    restore(&original, new, shift).map(Transformed::yes)
}

/// Which input of a node computes `call`: the one whose columns it takes
/// (the first where it takes none).
fn side_of(call: &Expr, inputs: &[LogicalPlan]) -> Result<usize> {
    let columns = call.column_refs();
    let side = inputs
        .iter()
        .position(|input| columns.iter().all(|c| input.schema().has_column(c)));
    match side {
        Some(side) => Ok(side),
        None => plan_err!(
            "{call}: a model function in a join condition can take the columns of one side of the \
             join only; compute it in a subquery of that side, or above the join"
        ),
    }
}

/// `new` with the output fields of `original`, in its order and with its
/// names, and without the columns added below.
fn restore(original: &DFSchema, new: LogicalPlan, shift: usize) -> Result<LogicalPlan> {
    let schema = Arc::clone(new.schema());
    let mut exprs = Vec::with_capacity(original.fields().len());
    for (i, (qualifier, field)) in original.iter().enumerate() {
        let column = Column::new(qualifier.cloned(), field.name());
        let expr = if schema.has_column(&column) {
            Expr::Column(column)
        } else if i + shift < schema.fields().len() {
            let (q, f) = schema.qualified_field(i + shift);
            Expr::Column(Column::new(q.cloned(), f.name()))
                .alias_qualified(qualifier.cloned(), field.name())
        } else {
            return internal_err!("no output of the rewritten plan for {column}");
        };
        exprs.push(expr);
    }
    Projection::try_new(exprs, Arc::new(new)).map(LogicalPlan::Projection)
}
