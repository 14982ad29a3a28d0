//! SQL functions over models and vectors.
//!
//! | function | returns |
//! |---|---|
//! | `embed_text(model, text)` | embedding: `FixedSizeList<Float32, dim>` tagged `quiver.embedding` |
//! | `classify_image(model, image [, top_k])`, `try_classify_image` | `List<Struct{label, score}>`, most probable first |
//! | `transcribe(model, audio [, language])`, `try_transcribe` | text |
//! | `embed_image(model, image)` (CLIP), `try_embed_image` | embedding, in the space of `embed_text` on the same model |
//! | `clip_classify(model, image, labels [, top_k])`, `try_clip_classify` | `List<Struct{label, score}>` over the label texts |
//! | `cosine_similarity(a, b)`, `inner_product(a, b)`, `l2_distance(a, b)` | `float64` |
//!
//! `model` names a model of the engine's [`ModelRegistry`] (`CREATE MODEL`)
//! and must be a constant. Model functions run one forward pass per
//! `batch_size` rows on the model's own thread, never on the async
//! runtime's workers; NULL in gives NULL out.

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::logical_expr::async_udf::AsyncScalarUDF;
use datafusion::prelude::SessionContext;
use quiver_models::ModelRegistry;

mod classify_image;
mod clip;
mod embed_text;
mod transcribe;
mod vectors;

pub use classify_image::{ClassifyImage, classification_type};
pub use clip::{ClipOp, ClipUdf};
pub use embed_text::{EmbedText, embedding_field};
pub use transcribe::Transcribe;
pub use vectors::{VectorOp, VectorUdf};

/// The engine's model registry, as a function holds it: two functions are
/// the same function only when bound to the same registry (compared and
/// hashed by address, as DataFusion compares UDFs).
#[derive(Debug, Clone)]
pub(crate) struct Registry(Arc<ModelRegistry>);

impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Registry {}
impl std::hash::Hash for Registry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state);
    }
}
impl Registry {
    /// The model `function`'s constant first argument names, if `pick`
    /// takes it (`pick` returns `None` for a model of another kind, which
    /// is an error saying the function wants `kind`): its registered name
    /// and what `pick` made of it.
    pub(crate) fn model_of<T>(
        &self,
        function: &str,
        arg: Option<&datafusion::common::ScalarValue>,
        kind: &str,
        pick: impl FnOnce(quiver_models::ModelInfo) -> Option<T>,
    ) -> datafusion::common::Result<(String, T)> {
        let Some(name) = arg.and_then(quiver_settings::args::scalar_text) else {
            return datafusion::common::plan_err!(
                "{function}: the model must be a constant string naming a model (SHOW MODELS), written as a literal without a cast"
            );
        };
        let (spec, info) = self.describe(&name).map_err(embed_text::model_error)?;
        match pick(info) {
            Some(t) => Ok((spec.name, t)),
            None => datafusion::common::plan_err!(
                "{function}: model '{name}' is a {} model, not {kind}",
                spec.architecture.task()
            ),
        }
    }
}

impl std::ops::Deref for Registry {
    type Target = ModelRegistry;
    fn deref(&self) -> &ModelRegistry {
        &self.0
    }
}

/// Every model and vector function, the model functions bound to `registry`.
pub fn functions(registry: &Arc<ModelRegistry>) -> Vec<Arc<ScalarUDF>> {
    let mut out = vec![
        Arc::new(AsyncScalarUDF::new(Arc::new(EmbedText::new(registry.clone()))).into_scalar_udf()),
        Arc::new(
            AsyncScalarUDF::new(Arc::new(ClassifyImage::new(registry.clone(), false)))
                .into_scalar_udf(),
        ),
        Arc::new(
            AsyncScalarUDF::new(Arc::new(ClassifyImage::new(registry.clone(), true)))
                .into_scalar_udf(),
        ),
        Arc::new(
            AsyncScalarUDF::new(Arc::new(Transcribe::new(registry.clone(), false)))
                .into_scalar_udf(),
        ),
        Arc::new(
            AsyncScalarUDF::new(Arc::new(Transcribe::new(registry.clone(), true)))
                .into_scalar_udf(),
        ),
    ];
    for op in [ClipOp::EmbedImage, ClipOp::Classify] {
        for lenient in [false, true] {
            out.push(Arc::new(
                AsyncScalarUDF::new(Arc::new(ClipUdf::new(op, lenient, registry.clone())))
                    .into_scalar_udf(),
            ));
        }
    }
    for op in VectorOp::ALL {
        out.push(Arc::new(ScalarUDF::new_from_impl(VectorUdf::new(op))));
    }
    out
}

/// Registers [`functions`] with `ctx`.
pub fn register_all(ctx: &SessionContext, registry: &Arc<ModelRegistry>) {
    for f in functions(registry) {
        ctx.register_udf(f.as_ref().clone());
    }
}
