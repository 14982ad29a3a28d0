//! CLIP's functions: `embed_image(model, image)` (an embedding in the
//! space of `embed_text` on the same model) and `clip_classify(model,
//! image, labels [, top_k])` (zero-shot: the label texts most like the
//! image). Images are prepared as CLIP's processor does: the centred
//! square of the shorter side, resized to the model's input size.
//! `try_embed_image` and `try_clip_classify` give NULL for an image that
//! does not decode, where the others fail the query naming it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, ListArray, StringArray, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use quiver_media::arrow_types::is_pixels;
use quiver_models::clip::ClipInfo;
use quiver_models::{ModelInfo, ModelRegistry};
use quiver_settings::QuiverSettings;
use quiver_settings::args::check_arity;

use crate::Registry;
use crate::classify_image::{ImageInput, classification_type, decode_images, rankings_array};
use crate::embed_text::{embedding_field, load_model, model_error};

/// Which CLIP function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClipOp {
    EmbedImage,
    Classify,
}

/// `embed_image` or `clip_classify` (or, lenient, their `try_` twins).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ClipUdf {
    op: ClipOp,
    lenient: bool,
    signature: Signature,
    registry: Registry,
}

fn check_image_type(function: &str, image: &DataType) -> Result<()> {
    let fits = matches!(
        image,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
    ) || is_pixels(image);
    if fits {
        Ok(())
    } else {
        plan_err!(
            "{function}: the image must be encoded bytes (bytea) or image_decode's pixels, not {image}"
        )
    }
}

impl ClipUdf {
    /// `op`'s function, or its `try_` twin when `lenient`.
    pub fn new(op: ClipOp, lenient: bool, registry: Arc<ModelRegistry>) -> Self {
        Self {
            op,
            lenient,
            signature: Signature::variadic_any(Volatility::Immutable),
            registry: Registry(registry),
        }
    }

    fn usage(&self) -> (&'static str, usize, usize) {
        match self.op {
            ClipOp::EmbedImage => ("embed_image(model, image)", 2, 2),
            ClipOp::Classify => ("clip_classify(model, image, labels [, top_k])", 3, 4),
        }
    }

    fn clip_model(&self, arg: Option<&ScalarValue>) -> Result<(String, ClipInfo)> {
        self.registry
            .model_of(self.name(), arg, "a CLIP model", |info| match info {
                ModelInfo::Clip(i) => Some(i),
                _ => None,
            })
    }

    /// The constant list of label texts.
    fn labels(&self, arg: &ColumnarValue) -> Result<Vec<String>> {
        let ColumnarValue::Scalar(value) = arg else {
            return plan_err!(
                "{}: the labels must be a constant array of text",
                self.name()
            );
        };
        let array = value.to_array()?;
        let list = cast(
            &array,
            &DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new(
                "item",
                DataType::Utf8,
                true,
            ))),
        )
        .ok()
        .and_then(|a| a.as_any().downcast_ref::<ListArray>().map(|l| l.value(0)));
        let Some(values) = list else {
            return plan_err!(
                "{}: the labels must be an array of text, like ['a cat', 'a dog']",
                self.name()
            );
        };
        let Some(texts) = values.as_any().downcast_ref::<StringArray>() else {
            return plan_err!("{}: the labels must be an array of text", self.name());
        };
        let labels: Vec<String> = texts.iter().flatten().map(str::to_string).collect();
        if labels.is_empty() {
            return plan_err!("{}: give at least one label", self.name());
        }
        Ok(labels)
    }
}

impl ScalarUDFImpl for ClipUdf {
    fn name(&self) -> &str {
        match (self.op, self.lenient) {
            (ClipOp::EmbedImage, false) => "embed_image",
            (ClipOp::EmbedImage, true) => "try_embed_image",
            (ClipOp::Classify, false) => "clip_classify",
            (ClipOp::Classify, true) => "try_clip_classify",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("{}: return_field_from_args is used instead", self.name())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let (usage, min, max) = self.usage();
        check_arity(self.name(), usage, min, max, args.arg_fields.len())?;
        let (name, info) = self.clip_model(args.scalar_arguments.first().copied().flatten())?;
        check_image_type(self.name(), args.arg_fields[1].data_type())?;
        Ok(Arc::new(match self.op {
            ClipOp::EmbedImage => embedding_field(self.name(), &name, info.dim, true),
            ClipOp::Classify => {
                datafusion::arrow::datatypes::Field::new(self.name(), classification_type(), true)
            }
        }))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{} runs asynchronously", self.name())
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for ClipUdf {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (usage, min, max) = self.usage();
        check_arity(self.name(), usage, min, max, args.args.len())?;
        let ColumnarValue::Scalar(model_arg) = &args.args[0] else {
            return plan_err!("{}: the model must be a constant string", self.name());
        };
        let (name, info) = self.clip_model(Some(model_arg))?;
        let rows = args.number_rows;
        let images = args.args[1].to_array(rows)?;
        let labels = match self.op {
            ClipOp::Classify => self.labels(&args.args[2])?,
            ClipOp::EmbedImage => vec![],
        };
        if images.logical_null_count() == rows {
            return Ok(ColumnarValue::Array(new_null_array(
                args.return_field.data_type(),
                rows,
            )));
        }
        let limits = QuiverSettings::from_options(&args.config_options).decode_limits;
        let input = ImageInput {
            size: info.image_size,
            crop_fraction: 1.0,
        };
        let (rgb, present) =
            decode_images(&images, input, limits, self.lenient, self.name()).await?;
        let model = load_model(&self.registry.0, &name, &args.config_options).await?;
        match self.op {
            ClipOp::EmbedImage => {
                let DataType::FixedSizeList(item, dim) = args.return_field.data_type() else {
                    return exec_err!("embed_image: unexpected return type");
                };
                let width = info.dim;
                let vectors = if rgb.is_empty() {
                    vec![]
                } else {
                    model.embed_images(rgb).await.map_err(model_error)?
                };
                let mut values = vec![0f32; rows * width];
                let mut next = vectors.chunks(width.max(1));
                for (row, ok) in present.iter().enumerate() {
                    if *ok && let Some(v) = next.next() {
                        values[row * width..(row + 1) * width].copy_from_slice(v);
                    }
                }
                let array: ArrayRef = Arc::new(FixedSizeListArray::try_new(
                    item.clone(),
                    *dim,
                    Arc::new(Float32Array::from(values)),
                    Some(present.clone().into()),
                )?);
                Ok(ColumnarValue::Array(array))
            }
            ClipOp::Classify => {
                let top_k = match args.args.get(3) {
                    None => labels.len(),
                    Some(ColumnarValue::Scalar(v)) => match v.cast_to(&DataType::Int64)? {
                        ScalarValue::Int64(Some(k)) if k >= 1 => (k as usize).min(labels.len()),
                        _ => {
                            return plan_err!(
                                "clip_classify: top_k must be a whole number of at least 1"
                            );
                        }
                    },
                    Some(_) => return plan_err!("clip_classify: top_k must be a constant"),
                };
                let ranked = if rgb.is_empty() {
                    vec![]
                } else {
                    model
                        .clip_classify(rgb, labels.clone(), top_k)
                        .await
                        .map_err(model_error)?
                };
                Ok(ColumnarValue::Array(rankings_array(
                    self.name(),
                    ranked,
                    &present,
                    &labels,
                )?))
            }
        }
    }
}
