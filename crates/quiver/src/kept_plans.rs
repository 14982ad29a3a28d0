//! Physical plans kept per session, as Postgres keeps a prepared
//! statement's generic plan.
//!
//! Optimising and physically planning a small statement (`SELECT 1`, what
//! connection pools send to check a connection; a point query on a table
//! held in memory) was most of the CPU it took. A session keeps the
//! physical plan of a statement (by logical plan, for the session state it
//! was made with) and runs a fresh copy of it when the statement comes
//! again, provided the plan
//!
//! - reads no table, or only memory tables (`CREATE TABLE … AS`, the
//!   config's `in_memory` tables) whose batches are still the ones it was
//!   made with: an `INSERT`, `UPDATE` or `DELETE` replaces or adds batches,
//!   and the statement is planned again;
//! - calls only immutable functions (`now()`, `random()`,
//!   `current_setting`, model calls are evaluated per statement) and has
//!   only the operators of [`REEXECUTABLE`], which start afresh in a
//!   reset copy;
//! - takes parameters (`$1`) only where their type is known, and uses them
//!   only in filters and projections: such a statement is planned once
//!   with a marker for each parameter (a *generic* plan: the optimiser
//!   cannot use the values) and each execution puts the values it is bound
//!   to in a fresh copy. A statement whose generic plan cannot be made
//!   (`LIMIT $1`) is planned with its values every time.
//!
//! A kept plan holds the batches of the memory tables it read until it is
//! made again, the session writes to a table (which drops them all), its
//! state changes (`SET`, DDL), it ends, or more than [`MAX_KEPT`]
//! statements are kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ParamValues, Result, ScalarValue, TableReference};
use datafusion::datasource::{MemTable, source_as_provider};
use datafusion::logical_expr::expr::{Placeholder, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;

use crate::shapes::{Mapping, Shape};

/// Plans kept per session at most; past it the session starts over.
pub(crate) const MAX_KEPT: usize = 64;

/// The operators a kept plan may have: ones that hold no state across
/// executions, or whose state a reset copy starts afresh.
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
    "LookupExec",
    "ConstantExec",
];

/// What a memory table held when a plan read it: the table's address,
/// then per partition its number of batches and each batch's first column
/// (the kept plan holds those batches, so no other batch can take their
/// address while it is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableVersions(Vec<usize>);

/// A statement a session may keep the plan of.
#[derive(Debug)]
pub(crate) struct Keepable {
    /// Whether it takes parameters.
    pub has_parameters: bool,
    /// The memory tables it reads.
    tables: Vec<Arc<dyn TableProvider>>,
}

impl Keepable {
    /// The plan to plan physically for `plan` (this statement's): with
    /// parameters, each typed `$n` a parameter marker reading the slots
    /// returned with it (`None` when one's type is unknown).
    pub fn generic(&self, plan: &LogicalPlan) -> Option<(LogicalPlan, Arc<Slots>)> {
        let slots = Arc::new(Slots::default());
        let generic = if self.has_parameters {
            with_markers(plan, &slots)?
        } else {
            plan.clone()
        };
        Some((generic, slots))
    }

    /// What the statement's tables hold now; `None` while one is being
    /// written.
    pub fn versions(&self) -> Option<TableVersions> {
        let mut out = Vec::new();
        for table in &self.tables {
            let memory = table.downcast_ref::<MemTable>()?;
            out.push(address(table));
            out.push(memory.batches.len());
            for partition in &memory.batches {
                let batches = partition.try_read().ok()?;
                out.push(batches.len());
                out.extend(batches.iter().map(|b| {
                    b.columns()
                        .first()
                        .map_or(0, |c| Arc::as_ptr(c) as *const () as usize)
                }));
            }
        }
        Some(TableVersions(out))
    }
}

/// What the engine learns of a statement at one execution and uses at
/// the next (see [`crate::Quiver::execute_prepared`]): whether its plan
/// may be kept, and where the session keeps it. A prepared statement
/// holds one; it holds nothing the statement's plan does not (the kept
/// plan, by a weak reference).
#[derive(Default)]
pub struct PlanMemo(Mutex<Option<Memo>>);

struct Memo {
    /// Whether it was learned for an execution with parameters.
    bound: bool,
    keepable: Option<Arc<Keepable>>,
    /// Its plan has no constant to make a parameter of.
    plain: bool,
    entry: std::sync::Weak<Entry>,
}

impl std::fmt::Debug for PlanMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanMemo").finish_non_exhaustive()
    }
}

impl Clone for PlanMemo {
    /// A memo that knows nothing yet.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PlanMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Memo>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`keepable`] of `plan`, learned at its first execution.
    pub(crate) fn keepable(&self, plan: &LogicalPlan, bound: bool) -> Option<Arc<Keepable>> {
        let mut memo = self.lock();
        match &*memo {
            Some(m) if m.bound == bound => m.keepable.clone(),
            _ => {
                let keepable = keepable(plan, bound).map(Arc::new);
                *memo = Some(Memo {
                    bound,
                    keepable: keepable.clone(),
                    plain: false,
                    entry: std::sync::Weak::new(),
                });
                keepable
            }
        }
    }

    /// What the session keeps for the statement, when it is still kept.
    pub(crate) fn entry(&self) -> Option<Arc<Entry>> {
        self.lock().as_ref()?.entry.upgrade()
    }

    /// Whether the statement's plan was found to have no constant to make
    /// a parameter of (see [`with_constants_as_parameters`]).
    pub(crate) fn plain(&self) -> bool {
        self.lock().as_ref().is_some_and(|m| m.plain)
    }

    /// Notes that the statement's plan has no such constant.
    pub(crate) fn note_plain(&self) {
        if let Some(m) = &mut *self.lock() {
            m.plain = true;
        }
    }

    /// Notes where the session keeps the statement.
    pub(crate) fn remember(&self, entry: &Arc<Entry>) {
        if let Some(m) = &mut *self.lock() {
            m.entry = Arc::downgrade(entry);
        }
    }
}

/// What a session keeps for one statement.
pub(crate) struct Entry {
    /// The session state it was planned with.
    generation: u64,
    /// What its tables held.
    versions: TableVersions,
    /// `None`: its generic plan cannot be used (planned with its values).
    physical: Option<Arc<dyn ExecutionPlan>>,
    /// Where its markers read the parameters' values.
    slots: Arc<Slots>,
}

/// What a session knows of a statement's plan.
pub(crate) enum Lookup {
    /// A fresh copy of its kept plan, parameters bound, and the hold on
    /// the slots its markers read (its stream must keep it).
    Ready(Arc<dyn ExecutionPlan>, Option<Hold>),
    /// Plan it with its values.
    PlanBound,
    /// Not kept (or stale): make its generic plan and offer it to
    /// [`KeptPlans::keep`].
    Missing,
}

/// A session's kept plans, by logical plan (before parameters are bound),
/// and the logical plans of its constant statements, by SQL text.
#[derive(Default)]
pub(crate) struct KeptPlans {
    plans: Mutex<HashMap<LogicalPlan, Arc<Entry>>>,
    texts: Mutex<HashMap<String, (u64, LogicalPlan)>>,
    shapes: Mutex<HashMap<String, Shaped>>,
}

/// What a session knows of statements of one shape.
pub(crate) enum Shaping {
    /// The generic plan, this statement's values for its parameters, and
    /// the tables it read (the caller must find they are still those).
    #[allow(clippy::type_complexity)]
    Plan(Box<(LogicalPlan, Vec<ScalarValue>, Vec<(TableReference, usize)>)>),
    /// Plan it as written, and learn the shape.
    Unknown,
    /// Plan it as written; the shape cannot be learned.
    AsWritten,
}

/// The generic plan kept for a statement's shape (see `shapes`).
struct Shaped {
    /// The session state it was planned with.
    generation: u64,
    /// Which literals give its parameters; `None`: that could not be
    /// learned, statements of the shape are planned as written.
    mapping: Option<Mapping>,
    /// The plan, with parameters.
    plan: LogicalPlan,
    /// The tables it reads, with the address each had.
    tables: Vec<(TableReference, usize)>,
}

/// The tables `plan` scans, each with its provider's address.
pub(crate) fn scanned_tables(plan: &LogicalPlan) -> Vec<(TableReference, usize)> {
    let mut out = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
        {
            out.push((scan.table_name.clone(), address(&provider)));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// A table's address, to tell whether a name still means that table.
pub(crate) fn address(table: &Arc<dyn TableProvider>) -> usize {
    Arc::as_ptr(table) as *const () as usize
}

impl std::fmt::Debug for KeptPlans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptPlans")
            .field("kept", &self.lock().len())
            .finish()
    }
}

impl KeptPlans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LogicalPlan, Arc<Entry>>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn texts(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, LogicalPlan)>> {
        self.texts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shapes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shaped>> {
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the session knows of statements of `shape` planned with the
    /// session state of `generation`.
    pub fn shaped(&self, shape: &Shape, generation: u64) -> Shaping {
        let shapes = self.shapes();
        let Some(kept) = shapes
            .get(&shape.key)
            .filter(|k| k.generation == generation)
        else {
            return Shaping::Unknown;
        };
        let Some(mapping) = &kept.mapping else {
            return Shaping::AsWritten;
        };
        match shape.values(mapping) {
            Some(values) => {
                Shaping::Plan(Box::new((kept.plan.clone(), values, kept.tables.clone())))
            }
            None => Shaping::Unknown,
        }
    }

    /// Keeps `plan`, the generic plan of statements of `shape`, its
    /// parameters given by `mapping` (`None`: statements of the shape are
    /// planned as written).
    pub fn remember_shape(
        &self,
        shape: &Shape,
        generation: u64,
        mapping: Option<Mapping>,
        plan: &LogicalPlan,
    ) {
        let mut shapes = self.shapes();
        if shapes.len() >= MAX_KEPT || shapes.values().any(|s| s.generation != generation) {
            shapes.clear();
        }
        shapes.insert(
            shape.key.clone(),
            Shaped {
                generation,
                mapping,
                tables: scanned_tables(plan),
                plan: plan.clone(),
            },
        );
    }

    /// The logical plan of constant statement `sql`, when it was planned
    /// with the session state of `generation`.
    pub fn statement(&self, sql: &str, generation: u64) -> Option<LogicalPlan> {
        match self.texts().get(sql) {
            Some((made_with, plan)) if *made_with == generation => Some(plan.clone()),
            _ => None,
        }
    }

    /// Keeps the logical plan of `sql` when it is a constant statement (a
    /// query that reads no table, takes no parameter and calls only
    /// immutable functions: its plan depends on the session state alone).
    pub fn remember_statement(&self, sql: &str, generation: u64, plan: &LogicalPlan) {
        if !keepable(plan, false).is_some_and(|k| k.tables.is_empty()) {
            return;
        }
        let mut texts = self.texts();
        if texts.len() >= MAX_KEPT || texts.values().any(|(g, _)| *g != generation) {
            texts.clear();
        }
        texts.insert(sql.to_string(), (generation, plan.clone()));
    }

    /// What the session keeps for `plan`.
    pub fn find(&self, plan: &LogicalPlan) -> Option<Arc<Entry>> {
        self.lock().get(plan).cloned()
    }

    /// The plan kept in `entry`, when it was made with the session state
    /// of `generation` and tables holding `versions`, as a fresh copy with
    /// `params` bound.
    pub fn ready(
        entry: Option<&Entry>,
        generation: u64,
        versions: &TableVersions,
        params: Option<&ParamValues>,
    ) -> Result<Lookup> {
        let e = match entry {
            Some(e) if e.generation == generation && e.versions == *versions => e,
            _ => return Ok(Lookup::Missing),
        };
        let Some(physical) = &e.physical else {
            return Ok(Lookup::PlanBound);
        };
        if params.is_none() {
            return Ok(Lookup::Ready(fresh_copy(physical, Values::InSlots)?, None));
        }
        match e.slots.hold(params) {
            // The markers read the values this execution put in the slots.
            Some(hold) => Ok(Lookup::Ready(
                fresh_copy(physical, Values::InSlots)?,
                Some(hold?),
            )),
            // Another execution of the statement is running (a cursor):
            // a copy with the values in the markers' place.
            None => Ok(Lookup::Ready(
                fresh_copy(physical, Values::Literals(params))?,
                None,
            )),
        }
    }

    /// Keeps `physical`, the plan of `statement.generic(plan)`, and
    /// returns a fresh copy with `params` bound; `None` when it cannot be
    /// kept (an operator that would not run again, a parameter where it
    /// cannot be bound): a statement with parameters is then planned with
    /// its values, now and at each later execution.
    #[allow(clippy::too_many_arguments)]
    pub fn keep(
        &self,
        plan: &LogicalPlan,
        statement: &Keepable,
        generation: u64,
        versions: TableVersions,
        physical: &Arc<dyn ExecutionPlan>,
        slots: Arc<Slots>,
        params: Option<&ParamValues>,
    ) -> (Option<Arc<dyn ExecutionPlan>>, Option<Arc<Entry>>) {
        // Equality filters over memory tables become index lookups, and
        // projections of literals their row; a plan that cannot take them
        // is kept as it is.
        let physical = &crate::lookup::with_lookups(Arc::clone(physical))
            .and_then(crate::constant_rows::with_constant_rows)
            .unwrap_or_else(|_| Arc::clone(physical));
        let copy = reexecutable(physical)
            .then(|| fresh_copy(physical, Values::Literals(params)).ok())
            .flatten();
        let mut entry = None;
        if copy.is_some() || statement.has_parameters {
            let physical = copy.as_ref().map(|_| Arc::clone(physical));
            entry = Some(self.insert(plan, generation, versions, physical, slots));
        }
        (copy, entry)
    }

    /// The kept physical plans.
    #[cfg(test)]
    pub(crate) fn physical_plans(&self) -> Vec<Arc<dyn ExecutionPlan>> {
        self.lock()
            .values()
            .filter_map(|e| e.physical.clone())
            .collect()
    }

    /// Notes that the generic plan of `plan` cannot be made.
    pub fn refuse(
        &self,
        plan: &LogicalPlan,
        generation: u64,
        versions: TableVersions,
    ) -> Arc<Entry> {
        self.insert(plan, generation, versions, None, Arc::default())
    }

    /// Forgets every kept plan (and the batches they hold): the session
    /// wrote to a table.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Keeps `physical` for `plan`; plans of an earlier session state are
    /// dropped (they would never be used again), as are all of them past
    /// [`MAX_KEPT`].
    fn insert(
        &self,
        plan: &LogicalPlan,
        generation: u64,
        versions: TableVersions,
        physical: Option<Arc<dyn ExecutionPlan>>,
        slots: Arc<Slots>,
    ) -> Arc<Entry> {
        let mut kept = self.lock();
        if kept.len() >= MAX_KEPT || kept.values().any(|e| e.generation != generation) {
            kept.clear();
        }
        let entry = Arc::new(Entry {
            generation,
            versions,
            physical,
            slots,
        });
        kept.insert(plan.clone(), Arc::clone(&entry));
        entry
    }
}

/// `plan` as a statement whose plan a session may keep: a query (its
/// subqueries included) of the operators below, reading only memory
/// tables, calling only immutable functions, its parameters typed; `None`
/// otherwise. With `bound` false a plan with parameters is not keepable
/// (it fails as DataFusion makes it fail).
pub(crate) fn keepable(plan: &LogicalPlan, bound: bool) -> Option<Keepable> {
    let mut ok = true;
    let mut tables = Vec::new();
    let mut has_parameters = false;
    let _ = plan.apply_with_subqueries(|node| {
        let allowed = match node {
            LogicalPlan::TableScan(scan) => match source_as_provider(&scan.source) {
                Ok(p) if p.downcast_ref::<MemTable>().is_some() => {
                    tables.push(p);
                    true
                }
                _ => false,
            },
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::EmptyRelation(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Subquery(_) => true,
            // A parameter in VALUES types its column.
            LogicalPlan::Values(_) => {
                node.apply_expressions(|e| {
                    if e.exists(|x| Ok(matches!(x, Expr::Placeholder(_))))? {
                        ok = false;
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
                true
            }
            _ => false,
        };
        if !allowed {
            ok = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            e.apply(|x| {
                let fixed = match x {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    Expr::Placeholder(_) => {
                        has_parameters = true;
                        bound
                    }
                    Expr::ScalarVariable(..) => false,
                    _ => true,
                };
                if fixed {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    ok = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })?;
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok.then_some(Keepable {
        has_parameters,
        tables,
    })
}

/// `plan` (a statement without parameters) with the constants its filters
/// compare with (`id = 42`, `price < 9.5`) as typed parameters, and their
/// values; `None` when it has none. Statements that differ only in those
/// constants then share one generic plan, as Postgres' prepared statements
/// do; NULLs, constants compared with constants, and constants anywhere
/// else (a projection, `LIMIT`) stay as written.
pub(crate) fn with_constants_as_parameters(
    plan: &LogicalPlan,
) -> Option<(LogicalPlan, Vec<ScalarValue>)> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    // Most statements have no filter (`SELECT 1`): nothing to rewrite.
    let mut filtered = false;
    let _ = plan.apply_with_subqueries(|node| {
        filtered = matches!(node, LogicalPlan::Filter(_));
        Ok(if filtered {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if !filtered {
        return None;
    }
    let mut values: Vec<ScalarValue> = Vec::new();
    let mut lift = |side: &mut Box<Expr>| {
        if let Expr::Literal(value, None) = side.as_ref()
            && !value.is_null()
        {
            let field = datafusion::arrow::datatypes::Field::new("", value.data_type(), true);
            values.push(value.clone());
            **side = Expr::Placeholder(Placeholder {
                id: format!("${}", values.len()),
                field: Some(Arc::new(field)),
            });
        }
    };
    let rewritten = plan
        .clone()
        .transform_up_with_subqueries(|node| {
            if !matches!(node, LogicalPlan::Filter(_)) {
                return Ok(Transformed::no(node));
            }
            node.map_expressions(|e| {
                e.transform_up(|x| match x {
                    Expr::BinaryExpr(BinaryExpr {
                        mut left,
                        op,
                        mut right,
                    }) if matches!(
                        op,
                        Operator::Eq
                            | Operator::NotEq
                            | Operator::Lt
                            | Operator::LtEq
                            | Operator::Gt
                            | Operator::GtEq
                    ) && (matches!(*left, Expr::Literal(..))
                        != matches!(*right, Expr::Literal(..))) =>
                    {
                        lift(&mut left);
                        lift(&mut right);
                        Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                            left,
                            op,
                            right,
                        })))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .ok()?
        .data;
    (!values.is_empty()).then_some((rewritten, values))
}

/// `plan` with each `$n` a parameter marker of its type (inferred as
/// DataFusion infers it when binding values); `None` when one's type
/// stays unknown.
fn with_markers(plan: &LogicalPlan, slots: &Arc<Slots>) -> Option<LogicalPlan> {
    let mut parameters = Vec::new();
    let mut typed = true;
    let marked = plan
        .clone()
        .transform_up_with_subqueries(|node| {
            let schema = Arc::clone(node.schema());
            let names = NamePreserver::new(&node);
            node.map_expressions(|e| {
                let (e, has_placeholder) = e.infer_placeholder_types(&schema)?;
                if !has_placeholder {
                    return Ok(Transformed::no(e));
                }
                let name = names.save(&e);
                let marked = e.transform_up(|x| match x {
                    Expr::Placeholder(Placeholder {
                        id,
                        field: Some(field),
                    }) => {
                        parameters.push((id.clone(), field.data_type().clone()));
                        Ok(Transformed::yes(Expr::ScalarFunction(
                            ScalarFunction::new_udf(
                                Arc::new(ScalarUDF::new_from_impl(Parameter::new(
                                    id,
                                    field.data_type().clone(),
                                    Arc::clone(slots),
                                ))),
                                vec![],
                            ),
                        )))
                    }
                    Expr::Placeholder(_) => {
                        typed = false;
                        Ok(Transformed::no(x))
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(marked.update_data(|x| name.restore(x)))
            })?
            .map_data(|node| node.recompute_schema())
        })
        .ok()?
        .data;
    parameters.sort();
    parameters.dedup();
    *slots.parameters.lock().unwrap_or_else(|e| e.into_inner()) = parameters;
    typed.then_some(marked)
}

/// The values of a generic plan's parameters, for the one execution that
/// holds them (see [`Hold`]): the plan's markers read them, so that the
/// kept plan runs as it is, without a copy of its filters made with the
/// values.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    /// Whether an execution holds the slots.
    held: AtomicBool,
    /// The values, by parameter (`$1`).
    values: RwLock<HashMap<String, ScalarValue>>,
    /// The parameters of the plan and their types.
    parameters: Mutex<Vec<(String, DataType)>>,
}

impl Slots {
    /// The slots with `params` put in, for as long as the [`Hold`] lives;
    /// `None` while another execution holds them.
    fn hold(self: &Arc<Self>, params: Option<&ParamValues>) -> Option<Result<Hold>> {
        self.held
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let hold = Hold(Arc::clone(self));
        let parameters = self.parameters.lock().unwrap_or_else(|e| e.into_inner());
        let values = parameters
            .iter()
            .map(|(id, data_type)| Ok(value_of(id, data_type, params)?.0))
            .collect::<Result<Vec<_>>>();
        Some(values.map(|values| {
            // In place: the ids stay, the values change.
            let mut slots = self.values.write().unwrap_or_else(|e| e.into_inner());
            for ((id, _), value) in parameters.iter().zip(values) {
                match slots.get_mut(id) {
                    Some(slot) => *slot = value,
                    None => {
                        slots.insert(id.clone(), value);
                    }
                }
            }
            hold
        }))
    }

    fn value(&self, id: &str) -> Option<ScalarValue> {
        self.values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// An execution's hold on a kept plan's [`Slots`]: the stream of the
/// execution keeps it, and dropping it lets the next execution put its
/// values in.
#[derive(Debug)]
pub(crate) struct Hold(Arc<Slots>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.held.store(false, Ordering::Release);
    }
}

/// The value of parameter `id` of type `data_type` in `params`, cast to
/// that type as DataFusion casts it when binding.
fn value_of(
    id: &str,
    data_type: &DataType,
    params: Option<&ParamValues>,
) -> Result<(
    ScalarValue,
    Option<datafusion::common::metadata::FieldMetadata>,
)> {
    let params =
        params.ok_or_else(|| DataFusionError::Plan(format!("parameter {id} has no value")))?;
    let (value, metadata) = params.get_placeholders_with_values(id)?.into_inner();
    let value = if value.data_type() == *data_type {
        value
    } else {
        value.cast_to(data_type)?
    };
    Ok((value, metadata))
}

/// The marker that stands for parameter `id` in a generic plan. It is
/// volatile, so that the optimiser neither evaluates nor moves it; it
/// evaluates to the value the execution holding its plan's [`Slots`] put
/// there, and a copy of the plan made while another execution holds them
/// has the value in its place.
#[derive(Debug)]
struct Parameter {
    id: String,
    data_type: DataType,
    signature: Signature,
    slots: Arc<Slots>,
}

impl PartialEq for Parameter {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.data_type == other.data_type
            && Arc::ptr_eq(&self.slots, &other.slots)
    }
}

impl Eq for Parameter {}

impl std::hash::Hash for Parameter {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.data_type.hash(state);
    }
}

impl Parameter {
    fn new(id: String, data_type: DataType, slots: Arc<Slots>) -> Self {
        Self {
            id,
            data_type,
            signature: Signature::nullary(Volatility::Volatile),
            slots,
        }
    }
}

impl ScalarUDFImpl for Parameter {
    fn name(&self) -> &str {
        "quiver_parameter"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let value = self.slots.value(&self.id).ok_or_else(|| {
            DataFusionError::Execution(format!("parameter {} has no value", self.id))
        })?;
        Ok(ColumnarValue::Scalar(value))
    }
}

/// The parameter `expr` stands for, when it is a marker.
fn marker(expr: &Arc<dyn PhysicalExpr>) -> Option<&Parameter> {
    expr.downcast_ref::<ScalarFunctionExpr>()?
        .fun()
        .inner()
        .downcast_ref::<Parameter>()
}

/// Whether `expr` is a parameter's marker.
pub(crate) fn is_marker(expr: &Arc<dyn PhysicalExpr>) -> bool {
    marker(expr).is_some()
}

/// The value of `expr` when it is a literal or a parameter's marker
/// (what the marker would evaluate to, without a batch to evaluate it on).
pub(crate) fn constant_value(expr: &Arc<dyn PhysicalExpr>) -> Option<ScalarValue> {
    match marker(expr) {
        Some(parameter) => parameter.slots.value(&parameter.id),
        None => expr.downcast_ref::<Literal>().map(|l| l.value().clone()),
    }
}

fn has_marker(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.exists(|e| Ok(marker(e).is_some())).unwrap_or(true)
}

/// `expr` with its markers replaced by the values in `params`.
pub(crate) fn bind(
    expr: &Arc<dyn PhysicalExpr>,
    params: Option<&ParamValues>,
) -> Result<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform_up(|e| {
            let Some(parameter) = marker(&e) else {
                return Ok(Transformed::no(e));
            };
            let (value, metadata) = value_of(&parameter.id, &parameter.data_type, params)?;
            Ok(Transformed::yes(
                Arc::new(Literal::new_with_metadata(value, metadata)) as Arc<dyn PhysicalExpr>,
            ))
        })
        .map(|t| t.data)
}

/// The expressions of an operator other than a filter or a projection,
/// which may not hold a parameter (they are not rebuilt with values).
fn other_expressions(plan: &dyn ExecutionPlan) -> Vec<Arc<dyn PhysicalExpr>> {
    let any = plan;
    if let Some(sort) = any.downcast_ref::<SortExec>() {
        return sort.expr().iter().map(|s| Arc::clone(&s.expr)).collect();
    }
    if let Some(merge) = any.downcast_ref::<SortPreservingMergeExec>() {
        return merge.expr().iter().map(|s| Arc::clone(&s.expr)).collect();
    }
    if let Some(repartition) = any.downcast_ref::<RepartitionExec>() {
        return match repartition.partitioning() {
            datafusion::physical_plan::Partitioning::Hash(exprs, _) => exprs.clone(),
            _ => vec![],
        };
    }
    if let Some(aggregate) = any.downcast_ref::<AggregateExec>() {
        let mut out: Vec<_> = aggregate
            .group_expr()
            .expr()
            .iter()
            .map(|(e, _)| Arc::clone(e))
            .collect();
        for a in aggregate.aggr_expr() {
            out.extend(a.expressions());
        }
        out.extend(aggregate.filter_expr().iter().flatten().cloned());
        return out;
    }
    vec![]
}

/// Where a copy of a kept plan finds its parameters' values.
#[derive(Clone, Copy)]
enum Values<'a> {
    /// The markers read them from the plan's slots.
    InSlots,
    /// In the markers' place (the filters and projections with markers
    /// made again).
    Literals(Option<&'a ParamValues>),
}

/// A copy of `plan` that runs afresh (each operator's state reset, as
/// `reset_plan_states` does, without computing the properties again),
/// finding its parameters' values where `values` says; an error where a
/// marker is in an operator that cannot take a value.
fn fresh_copy(plan: &Arc<dyn ExecutionPlan>, values: Values) -> Result<Arc<dyn ExecutionPlan>> {
    let children = plan
        .children()
        .into_iter()
        .map(|c| fresh_copy(c, values))
        .collect::<Result<Vec<_>>>()?;
    let any = plan.as_ref();
    let params = match values {
        Values::InSlots => None,
        Values::Literals(params) => Some(params),
    };
    if let Some(params) = params
        && let Some(filter) = any.downcast_ref::<FilterExec>()
        && has_marker(filter.predicate())
    {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("a filter has one input".into()))?;
        let predicate = bind(filter.predicate(), params)?;
        let built = FilterExecBuilder::from(filter)
            .with_input(input)
            .with_predicate(predicate)
            .build()?;
        return Ok(Arc::new(built));
    }
    if let Some(params) = params
        && let Some(projection) = any.downcast_ref::<ProjectionExec>()
        && projection.expr().iter().any(|p| has_marker(&p.expr))
    {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("a projection has one input".into()))?;
        let exprs = projection
            .expr()
            .iter()
            .map(|p| {
                Ok(ProjectionExpr {
                    expr: bind(&p.expr, params)?,
                    alias: p.alias.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Arc::new(ProjectionExec::try_new(exprs, input)?));
    }
    if let Some(params) = params
        && let Some(lookup) = any.downcast_ref::<crate::lookup::LookupExec>()
    {
        return lookup.with_values(params);
    }
    if params.is_some() && other_expressions(plan.as_ref()).iter().any(has_marker) {
        return Err(DataFusionError::Plan(format!(
            "{} cannot take a parameter's value",
            plan.name()
        )));
    }
    Arc::clone(plan)
        .replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )?
        .reset_state()
}

/// Whether every operator of `plan` is one of [`REEXECUTABLE`].
fn reexecutable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    REEXECUTABLE.contains(&plan.name()) && plan.children().into_iter().all(reexecutable)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::common::ScalarValue;
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;

    use super::*;
    use crate::Quiver;

    async fn plan(ctx: &SessionContext, sql: &str) -> LogicalPlan {
        ctx.state().create_logical_plan(sql).await.expect(sql)
    }

    #[tokio::test]
    async fn which_statements_may_be_kept() {
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_information_schema(true),
        );
        ctx.sql("CREATE TABLE t AS VALUES (1)").await.expect("t");
        for sql in [
            "SELECT 1",
            "SELECT 'a' || 'b' AS ab, abs(-2)",
            "VALUES (1), (2)",
            "SELECT x FROM (VALUES (3), (1)) AS v(x) ORDER BY x LIMIT 1",
            "SELECT count(*) FROM (VALUES (1), (2)) AS v(x)",
            "SELECT * FROM t",
            "SELECT column1 + 1 FROM t WHERE column1 > 0 ORDER BY 1",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM t)",
        ] {
            let keepable = keepable(&plan(&ctx, sql).await, false).expect(sql);
            assert!(!keepable.has_parameters, "{sql}");
        }
        for sql in [
            "SELECT now()",
            "SELECT random()",
            "SELECT * FROM t WHERE column1 = $1",
            "EXPLAIN SELECT 1",
            "SELECT * FROM t JOIN t AS u ON t.column1 = u.column1",
            "SELECT * FROM information_schema.tables",
        ] {
            assert!(keepable(&plan(&ctx, sql).await, false).is_none(), "{sql}");
        }
        // With values to bind, a typed parameter becomes a marker.
        let filtered = plan(&ctx, "SELECT column1 FROM t WHERE column1 = $1").await;
        let keepable = keepable(&filtered, true).expect("typed parameter");
        assert!(keepable.has_parameters);
        let (generic, _) = keepable.generic(&filtered).expect("generic");
        let text = generic.display_indent().to_string();
        assert!(text.contains("quiver_parameter()"), "{text}");
        assert!(!text.contains("$1"), "{text}");
    }

    /// Rows of `plan` run on `quiver` with `params`, as text.
    async fn rows(quiver: &Quiver, plan: &LogicalPlan, params: Vec<ScalarValue>) -> String {
        let params = (!params.is_empty()).then(|| ParamValues::from(params));
        let batches: Vec<_> = quiver
            .execute_bound(plan.clone(), params)
            .await
            .expect("run")
            .try_collect()
            .await
            .expect("rows");
        pretty_format_batches(&batches).expect("format").to_string()
    }

    /// Rows of `plan` (taking `$1` and a BIGINT `$2`) with those values.
    async fn two_values(
        quiver: &Quiver,
        plan: &LogicalPlan,
        first: ScalarValue,
        second: Option<i64>,
    ) -> String {
        rows(quiver, plan, vec![first, ScalarValue::Int64(second)]).await
    }

    fn kept(quiver: &Quiver) -> usize {
        quiver
            .kept
            .lock()
            .values()
            .filter(|e| e.physical.is_some())
            .count()
    }

    #[tokio::test]
    async fn a_generic_plan_runs_with_each_execution_values() {
        let quiver = Quiver::builder().build().expect("engine");
        quiver
            .collect("CREATE TABLE people (id BIGINT, name VARCHAR) AS VALUES (1, 'ada'), (2, 'bob'), (3, 'cy')")
            .await
            .expect("table");
        let statement = quiver
            .create_logical_plan(
                "SELECT name, id * $2 AS scaled FROM people WHERE id >= $1 ORDER BY id",
            )
            .await
            .expect("plan");
        let two = two_values(&quiver, &statement, ScalarValue::Int64(Some(2)), Some(10)).await;
        assert!(
            two.contains("| bob  | 20     |") && two.contains("| cy   | 30     |"),
            "{two}"
        );
        assert!(!two.contains("ada"), "{two}");
        assert_eq!(kept(&quiver), 1);
        // The same kept plan with other values.
        let one = two_values(&quiver, &statement, ScalarValue::Int64(Some(1)), Some(-1)).await;
        assert!(
            one.contains("| ada  | -1     |") && one.contains("| cy   | -3     |"),
            "{one}"
        );
        // A value of another type is cast to the parameter's, as when bound.
        let cast = two_values(&quiver, &statement, ScalarValue::Int32(Some(3)), Some(1)).await;
        assert!(
            cast.contains("| cy   | 3      |") && !cast.contains("bob"),
            "{cast}"
        );
        // NULL matches nothing.
        let none = rows(
            &quiver,
            &statement,
            vec![ScalarValue::Int64(None), ScalarValue::Int64(Some(1))],
        )
        .await;
        assert!(!none.contains("ada") && !none.contains("cy"), "{none}");
        assert_eq!(kept(&quiver), 1);
        // Rows written since are read: the table's batches changed, so the
        // statement is planned again.
        quiver
            .collect("INSERT INTO people VALUES (4, 'dee')")
            .await
            .expect("insert");
        let after = two_values(&quiver, &statement, ScalarValue::Int64(Some(3)), Some(1)).await;
        assert!(
            after.contains("| dee  | 4      |") && after.contains("| cy   | 3      |"),
            "{after}"
        );
        // Written another way (a frame, as another session's statement
        // would): the kept plan sees the table's batches changed.
        assert_eq!(kept(&quiver), 1);
        quiver
            .sql("DELETE FROM people WHERE id = 3")
            .await
            .expect("delete")
            .collect()
            .await
            .expect("deleted");
        assert_eq!(kept(&quiver), 1);
        let deleted = two_values(&quiver, &statement, ScalarValue::Int64(Some(3)), Some(1)).await;
        assert!(
            deleted.contains("dee") && !deleted.contains("cy"),
            "{deleted}"
        );
        // Missing values fail as DataFusion fails them.
        let err = quiver
            .execute_bound(
                statement.clone(),
                Some(ParamValues::from(vec![ScalarValue::Int64(Some(1))])),
            )
            .await
            .err()
            .expect("one value for two parameters");
        assert!(err.to_string().contains("$2"), "{err}");
    }

    /// Rows of simple statement `sql`, planned by its shape when it may.
    async fn simple(quiver: &Quiver, sql: &str) -> String {
        let (plan, values) = quiver.plan_statement(sql).await.expect(sql);
        let batches: Vec<_> = quiver
            .execute_bound(plan, values)
            .await
            .expect(sql)
            .try_collect()
            .await
            .expect(sql);
        pretty_format_batches(&batches).expect("format").to_string()
    }

    fn shapes(quiver: &Quiver) -> Vec<bool> {
        quiver
            .kept
            .shapes()
            .values()
            .map(|s| s.mapping.is_some())
            .collect()
    }

    #[tokio::test]
    async fn statements_of_one_shape_are_planned_once() {
        let quiver = Quiver::builder().build().expect("engine");
        quiver
            .collect("CREATE TABLE t (id BIGINT, name VARCHAR, score DOUBLE) AS VALUES (1, 'ada', 1.5), (2, 'bob', 2.5), (3, 'it''s', 3.5)")
            .await
            .expect("table");
        let got = simple(
            &quiver,
            "SELECT name FROM t WHERE id = 1 AND name <> 'x' LIMIT 5",
        )
        .await;
        assert!(got.contains("ada") && !got.contains("bob"), "{got}");
        assert_eq!(shapes(&quiver), vec![true]);
        // Same shape, other values: the kept plan, with this statement's.
        let (plan, values) = quiver
            .plan_statement("select name from t\n where id = 2 and name <> 'x' -- bob\n LIMIT 5")
            .await
            .expect("plan");
        assert!(plan.display_indent().to_string().contains("$1"), "{plan:?}");
        assert_eq!(format!("{values:?}").matches("Int64(2)").count(), 1);
        let got = simple(
            &quiver,
            "SELECT name FROM t WHERE id = 3 AND name <> 'x' LIMIT 5",
        )
        .await;
        assert!(got.contains("it's"), "{got}");
        let got = simple(
            &quiver,
            "SELECT name FROM t WHERE id = 3 AND name <> 'it''s' LIMIT 5",
        )
        .await;
        assert!(!got.contains("it's"), "{got}");
        // Another LIMIT is another statement; a float where the shape took
        // an integer is read as DataFusion reads it.
        let got = simple(
            &quiver,
            "SELECT name FROM t WHERE id = 1 AND name <> 'x' LIMIT 0",
        )
        .await;
        assert!(!got.contains("ada"), "{got}");
        let got = simple(
            &quiver,
            "SELECT name FROM t WHERE id = 1.0 AND name <> 'x' LIMIT 5",
        )
        .await;
        assert!(got.contains("ada"), "{got}");
        let got = simple(&quiver, "SELECT name FROM t WHERE score > 2.0").await;
        assert!(got.contains("bob") && !got.contains("ada"), "{got}");
        let got = simple(&quiver, "SELECT name FROM t WHERE score > 3.0").await;
        assert!(got.contains("it's") && !got.contains("bob"), "{got}");
        // One literal could give the value (`3` twice): planned as written,
        // and right.
        let got = simple(&quiver, "SELECT 3 AS k, name FROM t WHERE id = 3").await;
        assert!(got.contains("| 3 | it's |"), "{got}");
        let got = simple(&quiver, "SELECT 3 AS k, name FROM t WHERE id = 1").await;
        assert!(got.contains("| 3 | ada  |"), "{got}");
        // The name given to another table: planned again.
        let other = datafusion::arrow::record_batch::RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![2])) as _,
            ),
            (
                "name",
                Arc::new(datafusion::arrow::array::StringArray::from(vec!["new"])) as _,
            ),
            (
                "score",
                Arc::new(datafusion::arrow::array::Float64Array::from(vec![0.0])) as _,
            ),
        ])
        .expect("batch");
        quiver.context().deregister_table("t").expect("drop");
        quiver.register_batch("t", other).expect("replace");
        let got = simple(
            &quiver,
            "SELECT name FROM t WHERE id = 2 AND name <> 'x' LIMIT 5",
        )
        .await;
        assert!(got.contains("new") && !got.contains("bob"), "{got}");
        // Rows written since: seen.
        quiver
            .collect("INSERT INTO t VALUES (4, 'dee', 4.5)")
            .await
            .expect("insert");
        let got = simple(
            &quiver,
            "SELECT name FROM t WHERE id = 4 AND name <> 'x' LIMIT 5",
        )
        .await;
        assert!(got.contains("dee"), "{got}");
    }

    #[tokio::test]
    async fn executions_of_one_statement_running_at_once_keep_their_values() {
        let quiver = Quiver::builder().build().expect("engine");
        quiver
            .collect(
                "CREATE TABLE n AS SELECT value AS id FROM generate_series(1, 20000) AS s(value)",
            )
            .await
            .expect("table");
        let statement = quiver
            .create_logical_plan("SELECT id FROM n WHERE id <= $1")
            .await
            .expect("plan");
        let run = |limit: i64| {
            quiver.execute_bound(
                statement.clone(),
                Some(ParamValues::from(vec![ScalarValue::Int64(Some(limit))])),
            )
        };
        let count = |batches: Vec<RecordBatch>| batches.iter().map(|b| b.num_rows()).sum::<usize>();
        // Planned and kept; then run from the kept plan's slots.
        let first: Vec<RecordBatch> = run(5)
            .await
            .expect("run")
            .try_collect()
            .await
            .expect("rows");
        assert_eq!(count(first), 5);
        // Started and not read (a cursor), while another execution runs
        // with another value: each reads its own.
        let mut open = run(15000).await.expect("open");
        let first_batch = open.try_next().await.expect("batch").expect("a batch");
        let other: Vec<RecordBatch> = run(3)
            .await
            .expect("run")
            .try_collect()
            .await
            .expect("rows");
        assert_eq!(count(other), 3);
        let rest: Vec<RecordBatch> = open.try_collect().await.expect("rest");
        assert_eq!(first_batch.num_rows() + count(rest), 15000);
        // The open one finished: the next takes the slots again.
        let last: Vec<RecordBatch> = run(7)
            .await
            .expect("run")
            .try_collect()
            .await
            .expect("rows");
        assert_eq!(count(last), 7);
        let slots = quiver
            .kept
            .lock()
            .values()
            .map(|e| Arc::clone(&e.slots))
            .next()
            .expect("kept");
        assert!(!slots.held.load(Ordering::Acquire));
        assert_eq!(slots.value("$1"), Some(ScalarValue::Int64(Some(7))));
        // A value that cannot be cast leaves the slots free.
        let bad = quiver
            .execute_bound(
                statement.clone(),
                Some(ParamValues::from(vec![ScalarValue::Utf8(Some(
                    "many".into(),
                ))])),
            )
            .await
            .err()
            .expect("not a number");
        assert!(bad.to_string().contains("many"), "{bad}");
        assert!(!slots.held.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn statements_that_differ_in_filter_constants_share_a_plan() {
        let quiver = Quiver::builder().build().expect("engine");
        quiver
            .collect("CREATE TABLE t (id BIGINT, day DATE, name VARCHAR) AS VALUES (1, DATE '2024-01-01', 'ada'), (2, DATE '2024-02-01', 'bob'), (3, DATE '2024-03-01', 'cy')")
            .await
            .expect("table");
        let text = |batches: Vec<RecordBatch>| {
            pretty_format_batches(&batches).expect("format").to_string()
        };
        for (id, name) in [(1, "ada"), (2, "bob"), (3, "cy")] {
            let got = text(
                quiver
                    .collect(&format!("SELECT name FROM t WHERE id = {id}"))
                    .await
                    .expect("point"),
            );
            assert!(got.contains(name) && got.lines().count() == 5, "{got}");
        }
        assert_eq!(kept(&quiver), 1);
        let (generic, values) = with_constants_as_parameters(
            &quiver
                .create_logical_plan("SELECT name, 7 AS seven FROM t WHERE id >= 2 AND day < '2024-03-01' AND 1 = 1 LIMIT 5")
                .await
                .expect("plan"),
        )
        .expect("constants");
        let shown = generic.display_indent().to_string();
        assert!(
            shown.contains("t.id >= $1") && shown.contains("$2"),
            "{shown}"
        );
        assert!(
            shown.contains("Int64(1) = Int64(1)") && shown.contains("Int64(7)"),
            "{shown}"
        );
        assert_eq!(values.len(), 2);
        // A string compared with a date is read as a date, as written.
        let got = text(
            quiver
                .collect("SELECT name FROM t WHERE id >= 2 AND day < '2024-03-01'")
                .await
                .expect("dates"),
        );
        assert!(
            got.contains("bob") && !got.contains("cy") && !got.contains("ada"),
            "{got}"
        );
        let bad = quiver
            .collect("SELECT name FROM t WHERE day < 'not a date'")
            .await
            .expect_err("not a date");
        assert!(bad.to_string().contains("not a date"), "{bad}");
        // NULL stays as written (and matches nothing).
        assert!(
            with_constants_as_parameters(
                &quiver
                    .create_logical_plan("SELECT * FROM t WHERE id = NULL")
                    .await
                    .expect("null")
            )
            .is_none()
        );
        let none = quiver
            .collect("SELECT name FROM t WHERE id = NULL")
            .await
            .expect("null");
        assert_eq!(none.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }

    #[tokio::test]
    async fn a_parameter_the_generic_plan_cannot_take_is_bound_every_time() {
        let quiver = Quiver::builder().build().expect("engine");
        quiver
            .collect("CREATE TABLE n AS SELECT * FROM generate_series(1, 10) AS g(x)")
            .await
            .expect("table");
        let statement = quiver
            .create_logical_plan("SELECT x FROM n ORDER BY x LIMIT $1")
            .await
            .expect("plan");
        for limit in [2_i64, 3, 1] {
            let text = rows(&quiver, &statement, vec![ScalarValue::Int64(Some(limit))]).await;
            let lines = text
                .lines()
                .filter(|l| l.starts_with("| ") && !l.contains(" x "))
                .count();
            assert_eq!(lines as i64, limit, "{text}");
        }
        assert_eq!(kept(&quiver), 0);
        // A constant statement and a memory table's scan are kept.
        let constant = quiver
            .create_logical_plan("SELECT 1 + 1 AS two")
            .await
            .expect("constant");
        assert!(rows(&quiver, &constant, vec![]).await.contains("| 2   |"));
        let scan = quiver
            .create_logical_plan("SELECT count(*) AS c FROM n")
            .await
            .expect("scan");
        assert!(rows(&quiver, &scan, vec![]).await.contains("| 10 |"));
        assert_eq!(kept(&quiver), 2);
        assert!(rows(&quiver, &scan, vec![]).await.contains("| 10 |"));
        // The constant statement's text is kept with its logical plan, the
        // scan's is not (a table of that name may be another by then).
        let texts: Vec<String> = quiver.kept.texts().keys().cloned().collect();
        assert_eq!(texts, vec!["SELECT 1 + 1 AS two".to_string()]);
        let again = quiver
            .create_logical_plan("SELECT 1 + 1 AS two")
            .await
            .expect("again");
        assert_eq!(again, constant);
        // A setting starts the session's plans over.
        quiver
            .collect("SET datafusion.execution.batch_size = 1000")
            .await
            .expect("set");
        assert!(rows(&quiver, &scan, vec![]).await.contains("| 10 |"));
        assert!(kept(&quiver) == 1, "plans of the earlier state are dropped");
        let state = quiver.states.take(&quiver.ctx);
        assert!(
            quiver
                .kept
                .statement("SELECT 1 + 1 AS two", state.generation)
                .is_none()
        );
        quiver.states.put(state);
    }
}
