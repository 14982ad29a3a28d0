//! `InferenceRule`: puts an [`InferenceExec`] wherever a plan calls a model.
//!
//! DataFusion plans every async scalar function (Quiver's model functions:
//! `embed_text`, `classify_image`, `transcribe`, …, and `url_download`)
//! into an `AsyncFuncExec` below the projection, filter or aggregate that
//! uses it. This rule swaps such a node for an `InferenceExec` with the
//! same output, configured from the session's `quiver.inference.*`
//! settings, when it calls a model ([`InferenceRule::for_models`]: the
//! [`ModelHint`] knows the call) or always
//! ([`InferenceRule::for_every_async_function`]). Where
//! `quiver.inference.batch_size` is 0 the batch size comes from the hint
//! (the model registry's per-model `batch_size`), else from the function's
//! own `ideal_batch_size`, else 32; where `quiver.inference.replicas` is 0,
//! the replicas from the hint (the model's `replicas`), else 1. Other
//! async functions (downloads) keep
//! DataFusion's per-partition operator, whose concurrency is per
//! partition.
//!
//! DataFusion plans a filter that calls a model as one `FilterExec` over
//! the model's operator: every row goes through the model, even those a
//! cheap condition beside it drops (`WHERE status = 'open' AND
//! cosine_similarity(embed_text(…), …) > 0.8` embeds every ticket). The
//! rule moves the conditions of such a filter that read no model column
//! into a `FilterExec` below the `InferenceExec`, so the model sees only
//! the rows that pass them.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::async_scalar_function::AsyncFuncExpr;
use datafusion::physical_expr::utils::{collect_columns, conjunction, split_conjunction};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::async_func::AsyncFuncExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};
use quiver_settings::QuiverSettings;

use crate::inference::{InferenceConfig, InferenceExec};

/// What a model call's model was registered with: its defaults where
/// the session leaves a knob at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDefaults {
    /// Rows per call.
    pub batch_size: usize,
    /// Forward passes at once.
    pub replicas: usize,
}

/// The defaults of a model call's model (for Quiver's model functions:
/// what the model was registered with), or `None` for a call that is not
/// a model's.
pub type ModelHint = Arc<dyn Fn(&ScalarFunctionExpr) -> Option<ModelDefaults> + Send + Sync>;

/// Batch size when neither the session, the hint nor the function says.
const DEFAULT_BATCH_SIZE: usize = 32;

/// The physical optimizer rule of the module documentation.
#[derive(Clone)]
pub struct InferenceRule {
    hint: ModelHint,
    every_async: bool,
}

impl std::fmt::Debug for InferenceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InferenceRule")
    }
}

impl Default for InferenceRule {
    fn default() -> Self {
        Self::for_every_async_function()
    }
}

impl InferenceRule {
    /// Swaps the async operators that call a model: a call `hint` knows
    /// (and whose defaults it gives).
    pub fn for_models(hint: ModelHint) -> Self {
        Self {
            hint,
            every_async: false,
        }
    }

    /// Swaps every async operator.
    pub fn for_every_async_function() -> Self {
        Self {
            hint: Arc::new(|_| None),
            every_async: true,
        }
    }

    fn calls_a_model(&self, exprs: &[Arc<AsyncFuncExpr>]) -> bool {
        self.hinted(exprs).any(|(_, defaults)| defaults.is_some())
    }

    /// Each call of `exprs` with its model's defaults, if it is a model's.
    fn hinted<'a>(
        &'a self,
        exprs: &'a [Arc<AsyncFuncExpr>],
    ) -> impl Iterator<Item = (&'a Arc<AsyncFuncExpr>, Option<ModelDefaults>)> + 'a {
        exprs.iter().map(|e| {
            let defaults = e
                .func
                .downcast_ref::<ScalarFunctionExpr>()
                .and_then(|f| (self.hint)(f));
            (e, defaults)
        })
    }

    fn batch_size(&self, exprs: &[Arc<AsyncFuncExpr>], settings: usize) -> usize {
        if settings > 0 {
            return settings;
        }
        self.hinted(exprs)
            .filter_map(|(e, defaults)| {
                defaults
                    .map(|d| d.batch_size)
                    .or_else(|| e.ideal_batch_size().ok().flatten())
            })
            .max()
            .unwrap_or(DEFAULT_BATCH_SIZE)
    }
}

impl PhysicalOptimizerRule for InferenceRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let settings = QuiverSettings::from_options(config).inference;
        plan.transform_up(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                return Ok(match conditions_below_the_model(filter)? {
                    Some(split) => Transformed::yes(split),
                    None => Transformed::no(node),
                });
            }
            let Some(exec) = node.downcast_ref::<AsyncFuncExec>() else {
                return Ok(Transformed::no(node));
            };
            #[expect(deprecated, reason = "the only way to read an AsyncFuncExec's calls")]
            let exprs = exec.async_exprs().to_vec();
            if !self.every_async && !self.calls_a_model(&exprs) {
                return Ok(Transformed::no(node));
            }
            let config = InferenceConfig {
                batch_size: self.batch_size(&exprs, settings.batch_size),
                // Calls in flight for the most replicas any called model
                // runs (each model runs its own at most).
                replicas: settings.replicas_or(
                    self.hinted(&exprs)
                        .filter_map(|(_, d)| d.map(|d| d.replicas))
                        .max()
                        .unwrap_or(1),
                ),
                queue_depth: settings.queue_depth,
                max_wait: Duration::from_millis(settings.max_wait_ms),
            };
            let replaced = InferenceExec::try_new(exprs, exec.input().clone(), config)?;
            Ok(Transformed::yes(
                Arc::new(replaced) as Arc<dyn ExecutionPlan>
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "quiver_inference"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `filter` over an `InferenceExec` (rewritten already: the rule works
/// bottom up), maybe through operators that pass rows on as they are
/// (repartitioning, merging partitions), as two filters: the conditions that read
/// no model column (nor are volatile) below the `InferenceExec`, the
/// others where the filter was. `None` where there is nothing to move, or
/// nothing would stay above.
fn conditions_below_the_model(filter: &FilterExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let mut between = vec![];
    let mut node = Arc::clone(filter.input());
    let inference = loop {
        if let Some(inference) = node.downcast_ref::<InferenceExec>() {
            break inference;
        }
        // (A fetch would keep other rows once conditions ran below it.)
        let passes_rows_on = (node.is::<RepartitionExec>() || node.is::<CoalescePartitionsExec>())
            && node.fetch().is_none();
        let Some(child) = node
            .children()
            .into_iter()
            .next()
            .filter(|_| passes_rows_on)
        else {
            return Ok(None);
        };
        let child = Arc::clone(child);
        between.push(node);
        node = child;
    };
    let Some(input) = inference.children().into_iter().next() else {
        return Ok(None);
    };
    // The model's columns follow its input's, which the operator passes on
    // as they are: a condition on input columns reads the same below.
    let width = input.schema().fields().len();
    type Conditions = Vec<Arc<dyn PhysicalExpr>>;
    let (below, above): (Conditions, Conditions) = split_conjunction(filter.predicate())
        .into_iter()
        .cloned()
        .partition(|c| !is_volatile(c) && collect_columns(c).iter().all(|col| col.index() < width));
    if below.is_empty() || above.is_empty() {
        return Ok(None);
    }
    let lower = Arc::new(FilterExec::try_new(conjunction(below), Arc::clone(input))?);
    let mut rebuilt: Arc<dyn ExecutionPlan> = Arc::new(InferenceExec::try_new(
        inference.exprs().to_vec(),
        lower,
        inference.config(),
    )?);
    for node in between.into_iter().rev() {
        rebuilt = replace_children_if_necessary(node, vec![rebuilt])?;
    }
    let upper = FilterExecBuilder::from(filter)
        .with_input(rebuilt)
        .with_predicate(conjunction(above))
        .build()?;
    Ok(Some(Arc::new(upper)))
}
