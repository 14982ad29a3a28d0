//! Late materialization: joins move paths, not media bytes.
//!
//! A media table's bytes column (`image`, `audio`) that a join only carries
//! through — its condition does not use it — is taken out of the scan below
//! and fetched above, with `media_fetch(path, kind, on_error)`
//! ([`crate::fetch`]), for the rows that come out. The scan then reads
//! listings (and headers where other columns need them) instead of every
//! file whole, and a join that keeps 1% of the rows reads 1% of the files.
//!
//! The rule runs bottom-up over the logical plan. Below the join it looks
//! through aliases (`FROM read_images(…) i`), projections that pass the
//! bytes column on (also renamed) and filters that do not use it, down to
//! the media table's scan; above, one projection puts the bytes back under
//! their original name. An outer join's missing rows have no path and read
//! NULL bytes, as they did. Where a join sits over another join, the fetch
//! moves up again, so bytes are read once, after the last.
//!
//! Sorts are left alone: DataFusion 55 runs an asynchronous call above a
//! sort in partitions of its own, and the order would be lost.

use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema, Result};
use datafusion::logical_expr::expr::{Alias, ScalarFunction};
use datafusion::logical_expr::logical_plan::{
    Filter, Projection, SubqueryAlias, TableScan, TableScanBuilder,
};
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF, lit};
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

/// A bytes column taken out of a plan: where its path is, what it was
/// called, and how to fetch it back.
#[derive(Debug, Clone)]
struct Deferred {
    /// The bytes column as the stripped plan's parent knew it.
    bytes: Column,
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
            bytes: Column::new(Some(qualifier.clone()), self.bytes.name),
            path: Column::new(Some(qualifier.clone()), self.path.name),
            ..self
        }
    }
}

/// Whether `expr` uses any of the deferred bytes columns.
fn uses(expr: &Expr, deferred: &[Deferred]) -> bool {
    let columns = expr.column_refs();
    deferred.iter().any(|d| columns.contains(&d.bytes))
}

impl LateMaterialization {
    /// `media_fetch(path, kind, on_error)` named as the bytes column was.
    fn fetch_expr(&self, d: &Deferred) -> Expr {
        Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::clone(&self.fetch),
            vec![
                Expr::Column(d.path.clone()),
                lit(d.kind.clone()),
                lit(d.on_error.clone()),
            ],
        ))
        .alias_qualified(d.bytes.relation.clone(), d.bytes.name.clone())
    }

    /// A deferred fetch planned by this rule further down: `media_fetch(p,
    /// kind, on_error) AS name`.
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
        let Expr::ScalarFunction(call) = expr.as_ref() else {
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
        Some(Deferred {
            bytes: Column::new(relation.clone(), name.clone()),
            path: path.clone(),
            kind: quiver_settings::args::scalar_text(kind)?,
            on_error: quiver_settings::args::scalar_text(on_error)?,
        })
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
                Expr::Column(c) => below.iter().find(|d| &d.bytes == c).cloned(),
                Expr::Alias(Alias {
                    expr,
                    relation,
                    name,
                    ..
                }) => match expr.as_ref() {
                    Expr::Column(c) => below.iter().find(|d| &d.bytes == c).map(|d| Deferred {
                        bytes: Column::new(relation.clone(), name.clone()),
                        ..d.clone()
                    }),
                    _ => None,
                },
                _ => None,
            };
            match passed {
                Some(d) => deferred.push(d),
                // The bytes are used here: they must be read below.
                None if uses(expr, &below) => return Ok(None),
                None => exprs.push(expr.clone()),
            }
        }
        if deferred.is_empty() {
            return Ok(None);
        }
        // The paths travel on.
        for d in &deferred {
            let path = Expr::Column(d.path.clone());
            if !exprs.contains(&path) {
                exprs.push(path);
            }
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
        for input in plan.inputs() {
            match self.strip(input)? {
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
            .any(|d| !schema.has_column(&d.path) || schema.has_column(&d.bytes))
        {
            return Ok(Transformed::no(plan));
        }
        let outer = plan
            .schema()
            .iter()
            .map(|(qualifier, field)| {
                let column = Column::new(qualifier.cloned(), field.name());
                match deferred.iter().find(|d| d.bytes == column) {
                    Some(d) => self.fetch_expr(d),
                    None => Expr::Column(column),
                }
            })
            .collect();
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
        bytes: Column::new(qualifier.cloned(), field.name()),
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
