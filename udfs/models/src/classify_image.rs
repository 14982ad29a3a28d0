//! `classify_image(model, image [, top_k])`: the `top_k` (default 5) most
//! probable classes of each image, `[{label, score}]`, most probable first.
//! `try_classify_image` gives NULL for an image that does not decode
//! instead of stopping the query.
//!
//! Preprocessing is the model's: the centred square of `crop_fraction` of
//! the shorter side (TensorFlow's evaluation crop, 0.875), resized to the
//! model's input size (bilinear), RGB. JPEGs are decoded in the DCT domain
//! at the smallest scale that still covers the crop. Images are decoded on
//! the blocking pool, several at once; forward passes run on the model's
//! own thread, `batch_size` images each.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, Float32Array, ListArray, StringArray, StructArray, new_null_array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use quiver_media::arrow_types::{is_pixels, read_pixels};
use quiver_media::pixels::{ColorMode, ResizeFilter, convert, crop, decode_with, resize};
use quiver_media::{DecodeLimits, MediaError, Pixels};
use quiver_models::vision::ImageClassifierInfo;
use quiver_models::{ModelInfo, ModelRegistry};
use quiver_settings::QuiverSettings;
use quiver_settings::args::{BinaryValues, check_arity, row_error};

use crate::Registry;
use crate::embed_text::{load_model, model_error};

const USAGE: &str = "classify_image(model, image [, top_k])";

/// Rows decoded per blocking task.
const DECODE_CHUNK: usize = 8;

/// The element type of the result: `{label: text, score: float4}`.
pub fn class_score_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ])
}

/// `List<Struct{label, score}>`.
pub fn classification_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(class_score_fields()),
        true,
    )))
}

/// `classify_image` (or, lenient, `try_classify_image`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ClassifyImage {
    name: &'static str,
    lenient: bool,
    signature: Signature,
    registry: Registry,
}

impl ClassifyImage {
    /// `classify_image`, or `try_classify_image` when `lenient`.
    pub fn new(registry: Arc<ModelRegistry>, lenient: bool) -> Self {
        Self {
            name: if lenient {
                "try_classify_image"
            } else {
                "classify_image"
            },
            lenient,
            signature: Signature::variadic_any(Volatility::Immutable),
            registry: Registry(registry),
        }
    }

    fn classifier(&self, arg: Option<&ScalarValue>) -> Result<(String, ImageClassifierInfo)> {
        self.registry
            .model_of(self.name, arg, "an image classifier", |info| match info {
                ModelInfo::ImageClassifier(i) => Some(i),
                _ => None,
            })
    }

    fn top_k(&self, arg: Option<&ColumnarValue>, classes: usize) -> Result<usize> {
        let Some(arg) = arg else {
            return Ok(5.min(classes));
        };
        let ColumnarValue::Scalar(value) = arg else {
            return plan_err!("{}: top_k must be a constant", self.name);
        };
        let k = match value.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(k)) => k,
            _ => return plan_err!("{}: top_k must be a whole number", self.name),
        };
        if k < 1 {
            return plan_err!("{}: top_k must be at least 1, got {k}", self.name);
        }
        Ok((k as usize).min(classes))
    }
}

/// How a model wants its images: the centred square of `crop_fraction` of
/// the shorter side, resized to `size`².
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageInput {
    pub size: usize,
    pub crop_fraction: f32,
}

/// One image made ready for the model: `size`² RGB bytes.
fn prepare(
    image: Input<'_>,
    input: ImageInput,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, MediaError> {
    let size = input.size as u32;
    let crop_fraction = f64::from(input.crop_fraction);
    let pixels = match image {
        Input::Encoded(bytes) => decode_with(bytes, limits, |header| {
            // The decoded image must keep a crop of at least `size`.
            let short = header.width.min(header.height).max(1);
            let scale = (f64::from(size) / crop_fraction / f64::from(short)).min(1.0);
            Some((
                (f64::from(header.width) * scale).ceil() as u32,
                (f64::from(header.height) * scale).ceil() as u32,
            ))
        })?,
        Input::Decoded(p) => p,
    };
    let rgb = convert(&pixels, ColorMode::Rgb);
    let side = ((f64::from(rgb.width.min(rgb.height)) * crop_fraction).round() as u32).max(1);
    let x = (rgb.width - side) / 2;
    let y = (rgb.height - side) / 2;
    let square = crop(&rgb, x.into(), y.into(), side.into(), side.into())?;
    let sized = resize(&square, size.into(), size.into(), ResizeFilter::Bilinear)?;
    Ok(sized.data)
}

enum Input<'a> {
    Encoded(&'a [u8]),
    Decoded(Pixels),
}

/// A row made ready: `None` for NULL, else the image's bytes or why it
/// could not be read.
type Prepared = Option<Result<Vec<u8>, MediaError>>;

/// Decodes every row of `images` to `input.size`² RGB on the blocking
/// pool, a few rows per task: the bytes of the rows that decoded, and
/// which rows those are. A row that does not decode is an error naming it,
/// or, `lenient`, left out.
pub(crate) async fn decode_images(
    images: &ArrayRef,
    input: ImageInput,
    limits: DecodeLimits,
    lenient: bool,
    function: &str,
) -> Result<(Vec<u8>, Vec<bool>)> {
    let rows = images.len();
    let mut tasks = vec![];
    for start in (0..rows).step_by(DECODE_CHUNK) {
        let images = images.clone();
        let end = (start + DECODE_CHUNK).min(rows);
        tasks.push(tokio::task::spawn_blocking(move || {
            prepare_rows(&images, start..end, input, &limits)
        }));
    }
    let per_image = input.size * input.size * 3;
    let mut rgb = Vec::with_capacity(rows * per_image);
    let mut present = vec![false; rows];
    for task in tasks {
        let prepared = task
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        for (row, result) in prepared {
            match result {
                None => {}
                Some(Ok(bytes)) => {
                    rgb.extend_from_slice(&bytes);
                    present[row] = true;
                }
                Some(Err(_)) if lenient => {}
                Some(Err(e)) => return Err(row_error(function, row, e)),
            }
        }
    }
    Ok((rgb, present))
}

/// Decodes rows `rows` of `images`, each to `size`² RGB, on this thread.
fn prepare_rows(
    images: &ArrayRef,
    rows: std::ops::Range<usize>,
    input: ImageInput,
    limits: &DecodeLimits,
) -> Vec<(usize, Prepared)> {
    let binary = BinaryValues::of(images);
    let decoded = images.as_any().downcast_ref::<StructArray>();
    rows.map(|row| {
        if images.is_null(row) {
            return (row, None);
        }
        let image = match (binary, decoded) {
            (Some(b), _) => Ok(Input::Encoded(b.value(row))),
            (None, Some(s)) => match read_pixels(s, row) {
                Ok(Some(p)) => Ok(Input::Decoded(p)),
                Ok(None) => return (row, None),
                Err(e) => Err(e),
            },
            (None, None) => Err(MediaError::Invalid(format!(
                "an image must be encoded bytes or decoded pixels, not {}",
                images.data_type()
            ))),
        };
        (row, Some(image.and_then(|i| prepare(i, input, limits))))
    })
    .collect()
}

impl ScalarUDFImpl for ClassifyImage {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(classification_type())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        check_arity(self.name, USAGE, 2, 3, args.arg_fields.len())?;
        self.classifier(args.scalar_arguments.first().copied().flatten())?;
        let image = args.arg_fields[1].data_type();
        let fits = matches!(
            image,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
        ) || is_pixels(image);
        if !fits {
            return plan_err!(
                "{}: the image must be encoded bytes (bytea) or image_decode's pixels, not {image}",
                self.name
            );
        }
        Ok(Arc::new(Field::new(self.name, classification_type(), true)))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{} runs asynchronously", self.name)
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for ClassifyImage {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        check_arity(self.name, USAGE, 2, 3, args.args.len())?;
        let ColumnarValue::Scalar(model_arg) = &args.args[0] else {
            return plan_err!("{}: the model must be a constant string", self.name);
        };
        let (name, info) = self.classifier(Some(model_arg))?;
        let top_k = self.top_k(args.args.get(2), info.num_classes)?;
        let rows = args.number_rows;
        let images = args.args[1].to_array(rows)?;
        if images.logical_null_count() == rows {
            return Ok(ColumnarValue::Array(new_null_array(
                &classification_type(),
                rows,
            )));
        }
        let limits = QuiverSettings::from_options(&args.config_options).decode_limits;
        let input = ImageInput {
            size: info.image_size,
            crop_fraction: info.crop_fraction,
        };
        let (rgb, present) = decode_images(&images, input, limits, self.lenient, self.name).await?;
        let model = load_model(&self.registry.0, &name, &args.config_options).await?;
        let ranked = if rgb.is_empty() {
            vec![]
        } else {
            model
                .classify_images(rgb, top_k)
                .await
                .map_err(model_error)?
        };

        Ok(ColumnarValue::Array(rankings_array(
            self.name,
            ranked,
            &present,
            &info.labels,
        )?))
    }
}

/// `[{label, score}]` per row: the rankings of the rows marked present, in
/// order, labels looked up in `labels`; NULL for the others.
pub(crate) fn rankings_array(
    function: &str,
    ranked: Vec<quiver_models::vision::Ranking>,
    present: &[bool],
    labels: &[String],
) -> Result<ArrayRef> {
    let mut names = vec![];
    let mut scores = vec![];
    let mut offsets = Vec::with_capacity(present.len() + 1);
    offsets.push(0i32);
    let mut ranked = ranked.into_iter();
    for &ok in present {
        if ok {
            let Some(classes) = ranked.next() else {
                return exec_err!("{function}: the model returned too few results");
            };
            for (class, score) in classes {
                names.push(labels.get(class).map_or("?", String::as_str).to_string());
                scores.push(score);
            }
        }
        offsets.push(i32::try_from(names.len()).unwrap_or(i32::MAX));
    }
    let values = StructArray::try_new(
        class_score_fields(),
        vec![
            Arc::new(StringArray::from(names)) as ArrayRef,
            Arc::new(Float32Array::from(scores)),
        ],
        None,
    )?;
    let DataType::List(item) = classification_type() else {
        return exec_err!("{function}: unexpected result type");
    };
    Ok(Arc::new(ListArray::try_new(
        item,
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        Some(NullBuffer::from(present.to_vec())),
    )?))
}
