//! Late materialization: joins move paths, not media bytes.
//!
//! A media table's bytes column (`image`, `audio`) that a join only carries
//! through — its condition does not use it — is taken out of the scan below
//! and fetched above, with `media_fetch(path, kind, on_error)`
//! ([`crate::fetch`]), for the rows that come out. The scan then reads
//! listings (and headers where other columns need them) instead of every
//! file whole, and a join that keeps 1% of the rows reads 1% of the files.
//! What is computed from the bytes alone below the join (decoded pixels,
//! `image_decode(image)`, a tensor: a subquery, view or CTE that decodes
//! before the join) moves up with them, and runs on the fetched bytes of
//! the rows that come out.
//!
//! The rule runs bottom-up over the logical plan. Below the join it looks
//! through aliases (`FROM read_images(…) i`), projections that pass the
//! bytes column on (also renamed) or compute a column from it alone, and
//! filters that use neither, down to the media table's scan; above, one
//! projection puts each column back under its original name. An outer
//! join's missing rows have no path and read NULL bytes, as they did; a
//! computed column stays below on the side an outer join pads with NULLs
//! (computed above from no bytes, `image IS NULL` would not be NULL).
//! Model calls (asynchronous functions) stay below too: above a join that
//! repeats a row they would run once per repeat. What moves runs once per
//! row the join outputs. Where a join sits over another join, the fetch
//! moves up again, so bytes are read once, after the last.
//!
//! Sorts are left alone: DataFusion 55 runs an asynchronous call above a
//! sort in partitions of its own, and the order would be lost.

use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::logical_expr::expr::{Alias, ScalarFunction};
use datafusion::logical_expr::logical_plan::{
    Filter, Projection, SubqueryAlias, TableScan, TableScanBuilder,
};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, ScalarUDF, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::fetch::MEDIA_FETCH;
use crate::media_scan::MediaTable;

/// See the module docs.
#[derive(Debug)]
pub struct LateMaterialization {
    fetch: Arc<ScalarUDF>,
}

impl LateMaterialization {
    /// The rule, planning `fetch` (the session's `media_fetch`).
    pub fn new(fetch: Arc<ScalarUDF>) -> Self {
        Self { fetch }
    }
}

/// Stands for the fetched bytes in [`Deferred::value`].
const FETCHED: &str = "__quiver_fetched_bytes";

/// The column that stands for the fetched bytes.
fn fetched() -> Expr {
    Expr::Column(Column::from_name(FETCHED))
}

/// A column taken out of a plan: where its path is, what it was called,
/// and how to compute it back from the fetched bytes.
#[derive(Debug, Clone)]
struct Deferred {
    /// The column as the stripped plan's parent knew it.
    column: Column,
    /// What it holds, in terms of the fetched bytes ([`fetched`]): those
    /// bytes for the bytes column itself, `image_decode(…)` of them for
    /// decoded pixels.
    value: Expr,
    /// The path column in the stripped plan's output.
    path: Column,
    /// `image` or `audio`.
    kind: String,
    /// The table's `on_error`.
    on_error: String,
}

impl Deferred {
    fn requalify(self, qualifier: &datafusion::common::TableReference) -> Self {
        Self {
            column: Column::new(Some(qualifier.clone()), self.column.name),
            path: Column::new(Some(qualifier.clone()), self.path.name),
            ..self
        }
    }
}

/// Whether `expr` uses any of the deferred bytes columns.
fn uses(expr: &Expr, deferred: &[Deferred]) -> bool {
    let columns = expr.column_refs();
    deferred.iter().any(|d| columns.contains(&d.column))
}

/// `expr` with every `column` in it replaced by `by`.
fn replace_column(expr: Expr, column: &Column, by: &Expr) -> Result<Expr> {
    expr.transform(|e| match e {
        Expr::Column(c) if &c == column => Ok(Transformed::yes(by.clone())),
        other => Ok(Transformed::no(other)),
    })
    .data()
}

/// Whether `value`, an expression of the fetched bytes alone, may be
/// computed above a join rather than below: not volatile (it would run for
/// other rows), no subquery (whose plan may refer to columns below), no
/// asynchronous call (a model's, run once per row the join outputs).
fn movable(value: &Expr) -> Result<bool> {
    let fetched = Column::from_name(FETCHED);
    if value.is_volatile() || value.column_refs().iter().any(|c| **c != fetched) {
        return Ok(false);
    }
    let blocked = value.exists(|e| {
        Ok(match e {
            Expr::ScalarSubquery(_)
            | Expr::Exists(_)
            | Expr::InSubquery(_)
            | Expr::SetComparison(_)
            | Expr::OuterReferenceColumn(..) => true,
            Expr::ScalarFunction(call) => call.func.as_async().is_some(),
            _ => false,
        })
    })?;
    Ok(!blocked)
}

/// The column that stands for `fetch`'s bytes, when `fetch` is a
/// `media_fetch(path, kind, on_error)` call (its path, kind and on_error).
fn fetch_call(fetch: &Expr) -> Option<(Column, String, String)> {
    let Expr::ScalarFunction(call) = fetch else {
        return None;
    };
    if call.func.name() != MEDIA_FETCH {
        return None;
    }
    let [
        Expr::Column(path),
        Expr::Literal(kind, _),
        Expr::Literal(on_error, _),
    ] = call.args.as_slice()
    else {
        return None;
    };
    Some((
        path.clone(),
        quiver_settings::args::scalar_text(kind)?,
        quiver_settings::args::scalar_text(on_error)?,
    ))
}

impl LateMaterialization {
    /// The deferred column computed from `media_fetch(path, kind,
    /// on_error)`, named as it was.
    fn fetch_expr(&self, d: &Deferred) -> Result<Expr> {
        let fetch = Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::clone(&self.fetch),
            vec![
                Expr::Column(d.path.clone()),
                lit(d.kind.clone()),
                lit(d.on_error.clone()),
            ],
        ));
        let value = replace_column(d.value.clone(), &Column::from_name(FETCHED), &fetch)?;
        Ok(value.alias_qualified(d.column.relation.clone(), d.column.name.clone()))
    }

    /// A deferred column planned by this rule further down: `media_fetch(p,
    /// kind, on_error) AS name`, or an expression of that call and nothing
    /// else (`image_decode(media_fetch(…)) AS name`).
    fn planned_fetch(expr: &Expr) -> Option<Deferred> {
        let Expr::Alias(Alias {
            expr,
            relation,
            name,
            ..
        }) = expr
        else {
            return None;
        };
        let mut found = None;
        let mut calls = 0;
        let value = expr
            .as_ref()
            .clone()
            .transform(|e| match fetch_call(&e) {
                Some(call) => {
                    calls += 1;
                    found = Some(call);
                    Ok(Transformed::yes(fetched()))
                }
                None => Ok(Transformed::no(e)),
            })
            .ok()?
            .data;
        let (path, kind, on_error) = found?;
        // One fetch, and nothing that cannot move: the value moves up with
        // the path.
        if calls != 1 || !movable(&value).ok()? {
            return None;
        }
        Some(Deferred {
            column: Column::new(relation.clone(), name.clone()),
            value,
            path,
            kind,
            on_error,
        })
    }

    /// `expr`, a projection's column computed from one deferred column of
    /// `below` and nothing else, deferred in its turn: it is then computed
    /// above the join, for the rows that come out. `None` where it cannot
    /// move (other columns, see [`movable`]), or where another of `exprs`
    /// uses the same bytes (they would be fetched twice).
    fn defer_computed(expr: &Expr, below: &[Deferred], exprs: &[Expr]) -> Result<Option<Deferred>> {
        let columns = expr.column_refs();
        let [column] = columns.into_iter().collect::<Vec<_>>()[..] else {
            return Ok(None);
        };
        let Some(from) = below.iter().find(|d| &d.column == column) else {
            return Ok(None);
        };
        let shared = exprs
            .iter()
            .filter(|e| e.column_refs().contains(&from.column))
            .count()
            > 1;
        if shared {
            return Ok(None);
        }
        let (relation, name) = expr.qualified_name();
        let value = replace_column(expr.clone().unalias(), &from.column, &from.value)?;
        if !movable(&value)? {
            return Ok(None);
        }
        Ok(Some(Deferred {
            column: Column::new(relation, name),
            value,
            ..from.clone()
        }))
    }

    /// `plan` without the bytes columns it carries up, and what was taken
    /// out; `None` when nothing can be.
    fn strip(&self, plan: &LogicalPlan) -> Result<Option<(LogicalPlan, Vec<Deferred>)>> {
        match plan {
            LogicalPlan::TableScan(scan) => strip_scan(scan),
            LogicalPlan::SubqueryAlias(alias) => {
                let Some((input, deferred)) = self.strip(&alias.input)? else {
                    return Ok(None);
                };
                let rebuilt = SubqueryAlias::try_new(Arc::new(input), alias.alias.clone())?;
                let deferred = deferred
                    .into_iter()
                    .map(|d| d.requalify(&alias.alias))
                    .collect();
                Ok(Some((LogicalPlan::SubqueryAlias(rebuilt), deferred)))
            }
            LogicalPlan::Filter(filter) => {
                let Some((input, deferred)) = self.strip(&filter.input)? else {
                    return Ok(None);
                };
                if uses(&filter.predicate, &deferred) {
                    return Ok(None);
                }
                let rebuilt = Filter::try_new(filter.predicate.clone(), Arc::new(input))?;
                Ok(Some((LogicalPlan::Filter(rebuilt), deferred)))
            }
            LogicalPlan::Projection(projection) => self.strip_projection(projection),
            _ => Ok(None),
        }
    }

    /// A projection that passes bytes columns on (also renamed), or holds
    /// fetches planned below.
    fn strip_projection(
        &self,
        projection: &Projection,
    ) -> Result<Option<(LogicalPlan, Vec<Deferred>)>> {
        let (input, below) = match self.strip(&projection.input)? {
            Some((input, below)) => (Arc::new(input), below),
            None => (Arc::clone(&projection.input), vec![]),
        };
        let mut deferred = Vec::new();
        let mut exprs = Vec::with_capacity(projection.expr.len());
        for expr in &projection.expr {
            if let Some(d) = Self::planned_fetch(expr) {
                deferred.push(d);
                continue;
            }
            let passed = match expr {
                Expr::Column(c) => below.iter().find(|d| &d.column == c).cloned(),
                Expr::Alias(Alias {
                    expr,
                    relation,
                    name,
                    ..
                }) => match expr.as_ref() {
                    Expr::Column(c) => below.iter().find(|d| &d.column == c).map(|d| Deferred {
                        column: Column::new(relation.clone(), name.clone()),
                        ..d.clone()
                    }),
                    _ => None,
                },
                _ => None,
            };
            match passed {
                Some(d) => deferred.push(d),
                None if uses(expr, &below) => {
                    match Self::defer_computed(expr, &below, &projection.expr)? {
                        Some(d) => deferred.push(d),
                        // The bytes are used here: they must be read below.
                        None => return Ok(None),
                    }
                }
                None => exprs.push(expr.clone()),
            }
        }
        if deferred.is_empty() {
            return Ok(None);
        }
        // The paths travel on, unless another column has taken the name.
        for d in &deferred {
            let path = Expr::Column(d.path.clone());
            if exprs.contains(&path) {
                continue;
            }
            if exprs.iter().any(|e| e.qualified_name().1 == d.path.name) {
                return Ok(None);
            }
            exprs.push(path);
        }
        let rebuilt = Projection::try_new(exprs, input)?;
        Ok(Some((LogicalPlan::Projection(rebuilt), deferred)))
    }

    /// A join with its inputs stripped and the bytes fetched above.
    fn materialize_late(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        let exprs = plan.expressions();
        let mut deferred = Vec::new();
        let mut inputs = Vec::new();
        let mut changed = false;
        // An outer join gives a side's missing rows NULL in every column.
        // A fetch of no path is NULL too, but a value computed from it need
        // not be (`image IS NULL`): such values stay below on that side.
        let padded = |side: usize| match &plan {
            LogicalPlan::Join(join) => match join.join_type {
                JoinType::Left => side == 1,
                JoinType::Right => side == 0,
                JoinType::Full => true,
                _ => false,
            },
            _ => true,
        };
        for (side, input) in plan.inputs().into_iter().enumerate() {
            match self.strip(input)? {
                Some((_, taken)) if padded(side) && taken.iter().any(|d| d.value != fetched()) => {
                    inputs.push(input.clone())
                }
                Some((stripped, taken)) if !exprs.iter().any(|e| uses(e, &taken)) => {
                    inputs.push(stripped);
                    deferred.extend(taken);
                    changed = true;
                }
                _ => inputs.push(input.clone()),
            }
        }
        if !changed {
            return Ok(Transformed::no(plan));
        }
        let rebuilt = plan.with_new_exprs(exprs, inputs)?;
        let schema: &DFSchema = rebuilt.schema();
        // Semi and anti joins drop a side: its bytes were not wanted above.
        if deferred
            .iter()
            .any(|d| !schema.has_column(&d.path) || schema.has_column(&d.column))
        {
            return Ok(Transformed::no(plan));
        }
        let outer = plan
            .schema()
            .iter()
            .map(|(qualifier, field)| {
                let column = Column::new(qualifier.cloned(), field.name());
                match deferred.iter().find(|d| d.column == column) {
                    Some(d) => self.fetch_expr(d),
                    None => Ok(Expr::Column(column)),
                }
            })
            .collect::<Result<_>>()?;
        let wrapped = Projection::try_new(outer, Arc::new(rebuilt))?;
        Ok(Transformed::yes(LogicalPlan::Projection(wrapped)))
    }
}

/// A media table's scan without its bytes column, with its path.
fn strip_scan(scan: &TableScan) -> Result<Option<(LogicalPlan, Vec<Deferred>)>> {
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(None);
    };
    let Some(table) = provider.downcast_ref::<MediaTable>() else {
        return Ok(None);
    };
    let reader = table.reader();
    let bytes = reader.bytes_column();
    let Some(projection) = &scan.projection else {
        return Ok(None);
    };
    let Some(at) = projection.iter().position(|c| *c == bytes) else {
        return Ok(None);
    };
    let mut kept: Vec<usize> = projection.iter().copied().filter(|c| *c != bytes).collect();
    // The listing's first column is the path.
    if !kept.contains(&0) {
        kept.push(0);
    }
    let (qualifier, field) = scan.projected_schema.qualified_field(at);
    let schema = reader.schema();
    let path_name = schema.field(0).name().clone();
    let deferred = Deferred {
        column: Column::new(qualifier.cloned(), field.name()),
        value: fetched(),
        path: Column::new(qualifier.cloned(), path_name),
        kind: reader.kind().to_string(),
        on_error: table.on_error().name().to_string(),
    };
    let rebuilt = TableScanBuilder::from(scan.clone())
        .with_projection(Some(kept))
        .build()?;
    Ok(Some((LogicalPlan::TableScan(rebuilt), vec![deferred])))
}

impl OptimizerRule for LateMaterialization {
    fn name(&self) -> &str {
        "quiver_late_materialization"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match plan {
            LogicalPlan::Join(_) => self.materialize_late(plan),
            other => Ok(Transformed::no(other)),
        }
    }
}
