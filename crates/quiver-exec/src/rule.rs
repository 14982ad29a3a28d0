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

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::async_scalar_function::AsyncFuncExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::async_func::AsyncFuncExec;
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
