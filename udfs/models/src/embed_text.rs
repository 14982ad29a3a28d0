//! `embed_text(model, text)`: a sentence embedding per row.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use quiver_models::{Model, ModelError, ModelRegistry};

use crate::Registry;
use datafusion::common::config::ConfigOptions;
use quiver_settings::QuiverSettings;
use quiver_settings::args::scalar_text;

/// An embedding column: `FixedSizeList<Float32, dim>` tagged
/// `quiver.embedding = {"model": …, "dim": …, "normalized": …}`.
pub fn embedding_field(name: &str, model: &str, dim: usize, normalized: bool) -> Field {
    let len = i32::try_from(dim).unwrap_or(i32::MAX);
    Field::new(
        name,
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), len),
        true,
    )
    .with_metadata(
        [(
            "quiver.embedding".to_string(),
            serde_json::json!({"model": model, "dim": dim, "normalized": normalized}).to_string(),
        )]
        .into(),
    )
}

pub(crate) fn model_error(e: ModelError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The loaded model `name` (loading it on first use, off the async
/// runtime), with as many worker threads as the session's
/// `quiver.inference.replicas` asks for, or where that is 0, the model's
/// own `replicas`.
pub(crate) async fn load_model(
    registry: &Arc<ModelRegistry>,
    name: &str,
    options: &ConfigOptions,
) -> Result<Arc<Model>> {
    let settings = QuiverSettings::from_options(options).inference;
    let registry = registry.clone();
    let name = name.to_string();
    let model = tokio::task::spawn_blocking(move || registry.get(&name))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(model_error)?;
    model
        .ensure_replicas(settings.replicas_or(model.spec().replicas))
        .map_err(model_error)?;
    Ok(model)
}

/// `embed_text(model, text)`.
#[derive(Debug)]
pub struct EmbedText {
    signature: Signature,
    registry: Registry,
    /// The last constant text embedded, so that `embed_text('m', 'query')`
    /// runs the model once per query, not once per batch.
    constant: Mutex<Option<(String, String, ScalarValue)>>,
}

impl PartialEq for EmbedText {
    fn eq(&self, other: &Self) -> bool {
        self.registry == other.registry
    }
}
impl Eq for EmbedText {}
impl Hash for EmbedText {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "embed_text".hash(state);
        self.registry.hash(state);
    }
}

impl EmbedText {
    pub fn new(registry: Arc<ModelRegistry>) -> Self {
        Self {
            // Any string type as it is, each argument on its own (checked in
            // `return_field_from_args`; the wrapper DataFusion puts around
            // async functions does not forward `coerce_types`): a common
            // type for both would cast the model's name to a `text`
            // column's `Utf8View`, and a cast name is no longer a constant
            // the planner can read.
            signature: Signature::variadic_any(Volatility::Immutable),
            registry: Registry(registry),
            constant: Mutex::new(None),
        }
    }

    fn model_name(&self, arg: Option<&ScalarValue>) -> Result<String> {
        match arg.and_then(scalar_text) {
            Some(name) => Ok(name),
            None => plan_err!(
                "embed_text: the model must be a constant string naming a model (SHOW MODELS), written as a literal without a cast"
            ),
        }
    }

    /// Embeds the non-null rows of `texts`: tokenised on the blocking pool
    /// (while the model's thread runs another call), then grouped by length
    /// into `batch_size` passes on the model's thread; dropping this future,
    /// as a cancelled query does, stops it before its next pass.
    async fn embed(
        &self,
        model: &Arc<Model>,
        texts: &StringArray,
        field: &FieldRef,
    ) -> Result<ArrayRef> {
        let DataType::FixedSizeList(item, dim) = field.data_type() else {
            return exec_err!("embed_text: unexpected return type {}", field.data_type());
        };
        let width = usize::try_from(*dim).unwrap_or(0);
        let rows: Vec<usize> = (0..texts.len()).filter(|&i| texts.is_valid(i)).collect();
        // The array itself goes to the blocking pool (its buffers are
        // shared, not copied), and the texts are read there in place.
        let (tokenizer, array, valid) = (Arc::clone(model), texts.clone(), rows.clone());
        let tokens = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = valid.iter().map(|&i| array.value(i)).collect();
            tokenizer.tokenize(&refs)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(model_error)?;
        let vectors = model.embed_tokens(tokens).await.map_err(model_error)?;
        if vectors.len() != rows.len() * width {
            return exec_err!(
                "embed_text: the model returned {} values for {} rows of dimension {width}",
                vectors.len(),
                rows.len()
            );
        }
        // NULL rows keep zeros under the null bit.
        let values = if rows.len() == texts.len() {
            vectors
        } else {
            let mut values = vec![0f32; texts.len() * width];
            for (&row, v) in rows.iter().zip(vectors.chunks(width.max(1))) {
                values[row * width..(row + 1) * width].copy_from_slice(v);
            }
            values
        };
        Ok(Arc::new(FixedSizeListArray::try_new(
            item.clone(),
            *dim,
            Arc::new(Float32Array::from(values)),
            texts.nulls().cloned(),
        )?))
    }
}

impl ScalarUDFImpl for EmbedText {
    fn name(&self) -> &str {
        "embed_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("embed_text: return_field_from_args is used instead")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let [model, text] = args.arg_fields else {
            return plan_err!(
                "embed_text(model, text) takes 2 arguments, got {}",
                args.arg_fields.len()
            );
        };
        for (what, field) in [("model", model), ("text", text)] {
            let t = field.data_type();
            let string = match t {
                DataType::Dictionary(_, v) => v.is_string(),
                t => t.is_string() || t.is_null(),
            };
            if !string {
                return plan_err!("embed_text: the {what} must be text, got {t}");
            }
        }
        let name = self.model_name(args.scalar_arguments.first().copied().flatten())?;
        let (spec, info) = self.registry.describe(&name).map_err(model_error)?;
        let Some(dim) = info.embedding_dim() else {
            return plan_err!(
                "embed_text: model '{name}' is a {} model, which makes no text embeddings",
                spec.architecture.task()
            );
        };
        Ok(Arc::new(embedding_field(
            self.name(),
            &spec.name,
            dim,
            info.normalized(),
        )))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("embed_text runs asynchronously")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for EmbedText {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [model_arg, text_arg] = args.args.as_slice() else {
            return exec_err!("embed_text(model, text) takes 2 arguments");
        };
        let ColumnarValue::Scalar(model_name) = model_arg else {
            return plan_err!(
                "embed_text: the model must be a constant string naming a model, written as a literal without a cast"
            );
        };
        let name = self.model_name(Some(model_name))?;
        if let ColumnarValue::Scalar(text) = text_arg {
            let Some(text) = scalar_text(text) else {
                return Ok(ColumnarValue::Array(
                    datafusion::arrow::array::new_null_array(
                        args.return_field.data_type(),
                        args.number_rows,
                    ),
                ));
            };
            if let Ok(cache) = self.constant.lock()
                && let Some((m, t, v)) = cache.as_ref()
                && *m == name
                && *t == text
            {
                return Ok(ColumnarValue::Array(v.to_array_of_size(args.number_rows)?));
            }
            let model = load_model(&self.registry.0, &name, &args.config_options).await?;
            let array = self
                .embed(
                    &model,
                    &StringArray::from(vec![text.clone()]),
                    &args.return_field,
                )
                .await?;
            let value = ScalarValue::try_from_array(&array, 0)?;
            if let Ok(mut cache) = self.constant.lock() {
                *cache = Some((name, text, value.clone()));
            }
            // As an array: DataFusion's async operator takes a scalar result
            // for one row.
            return Ok(ColumnarValue::Array(
                value.to_array_of_size(args.number_rows)?,
            ));
        }
        let texts = text_arg.to_array(args.number_rows)?;
        let texts = cast(&texts, &DataType::Utf8)?;
        let Some(texts) = texts.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("embed_text: the text must be text");
        };
        if texts.null_count() == texts.len() {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_null_array(
                    args.return_field.data_type(),
                    texts.len(),
                ),
            ));
        }
        let model = load_model(&self.registry.0, &name, &args.config_options).await?;
        Ok(ColumnarValue::Array(
            self.embed(&model, texts, &args.return_field).await?,
        ))
    }
}
