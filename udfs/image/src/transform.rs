//! The image functions that decode: `image_decode`, `image_encode`,
//! `image_resize`, `image_crop`, `image_thumbnail`, `image_convert`,
//! `image_rotate`, `image_flip`, `image_auto_orient`, `image_to_tensor`,
//! `image_phash`/`image_dhash`/`image_ahash` and `image_exif`, each with a
//! `try_` twin. One implementation: they share argument handling, the
//! choice between encoded and decoded input, decode limits, DCT-scaled
//! decoding and the error policy, and differ in one match arm.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, FixedSizeListArray, Float32Array, StructArray,
    UInt64Builder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};
use quiver_media::arrow_types::{
    exif_array, exif_data_type, image_field, is_pixels, pixels_array, pixels_field, read_pixels,
    tensor_field,
};
use quiver_media::exif::{ExifInfo, read_exif};
use quiver_media::hash::{HashKind, image_hash};
use quiver_media::pixels::{
    self, ColorMode, EncodeFormat, ResizeFilter, decode_with, thumbnail_size,
};
use quiver_media::{DecodeLimits, MediaError, Pixels};
use quiver_settings::QuiverSettings;

use quiver_settings::args::{
    check_arity, columnar_result, is_binary, is_integer, rest_args, row_error, scalar_int,
    scalar_text,
};

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageOp {
    /// `image_decode(img)`.
    Decode,
    /// `image_encode(img, format [, quality])`.
    Encode,
    /// `image_resize(img, w, h [, filter])`.
    Resize,
    /// `image_crop(img, x, y, w, h)`.
    Crop,
    /// `image_thumbnail(img, max_side)`.
    Thumbnail,
    /// `image_convert(img, mode)`.
    Convert,
    /// `image_rotate(img, degrees)`.
    Rotate,
    /// `image_flip(img [, direction])`.
    Flip,
    /// `image_auto_orient(img)`.
    AutoOrient,
    /// `image_to_tensor(img, w, h [, mean, std])`.
    ToTensor,
    /// `image_ahash`, `image_dhash`, `image_phash`.
    Hash(HashKind),
    /// `image_exif(img)`.
    Exif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Int,
    Text,
    Floats,
}

struct Spec {
    base: &'static str,
    /// Name, kind, optional.
    params: &'static [(&'static str, Param, bool, &'static str)],
    returns: &'static str,
    description: &'static str,
    example: &'static str,
}

impl ImageOp {
    /// Every function.
    pub const ALL: [ImageOp; 14] = [
        ImageOp::Decode,
        ImageOp::Encode,
        ImageOp::Resize,
        ImageOp::Crop,
        ImageOp::Thumbnail,
        ImageOp::Convert,
        ImageOp::Rotate,
        ImageOp::Flip,
        ImageOp::AutoOrient,
        ImageOp::ToTensor,
        ImageOp::Hash(HashKind::Average),
        ImageOp::Hash(HashKind::Difference),
        ImageOp::Hash(HashKind::Perceptual),
        ImageOp::Exif,
    ];

    fn spec(self) -> Spec {
        use Param::*;
        match self {
            ImageOp::Decode => Spec {
                base: "image_decode",
                params: &[],
                returns: "decoded pixels",
                description: "Decodes an encoded image to 8-bit pixels (grey, grey+alpha, RGB or RGBA, as stored; 16-bit images are reduced to 8 bits; a GIF gives its first frame).",
                example: "SELECT image_decode(image).width FROM read_images('photos/')",
            },
            ImageOp::Encode => Spec {
                base: "image_encode",
                params: &[
                    (
                        "format",
                        Text,
                        false,
                        "'png', 'jpeg' or 'webp' (WebP is written lossless)",
                    ),
                    ("quality", Int, true, "JPEG quality 1-100, default 85"),
                ],
                returns: "encoded image bytes",
                description: "Encodes an image (encoded or decoded) as PNG, JPEG or WebP. JPEG drops an alpha channel.",
                example: "SELECT image_encode(image_thumbnail(image, 128), 'jpeg', 80) FROM read_images('photos/')",
            },
            ImageOp::Resize => Spec {
                base: "image_resize",
                params: &[
                    ("width", Int, false, "target width in pixels"),
                    ("height", Int, false, "target height in pixels"),
                    (
                        "filter",
                        Text,
                        true,
                        "'nearest', 'bilinear' (default), 'bicubic' or 'lanczos3'",
                    ),
                ],
                returns: "decoded pixels",
                description: "Resizes to exactly width x height with SIMD convolution. A JPEG shrunk to half its size or less is decoded in the DCT domain at a reduced scale first.",
                example: "SELECT image_resize(image, 224, 224, 'lanczos3') FROM read_images('photos/')",
            },
            ImageOp::Crop => Spec {
                base: "image_crop",
                params: &[
                    ("x", Int, false, "left edge"),
                    ("y", Int, false, "top edge"),
                    ("width", Int, false, "width of the rectangle"),
                    ("height", Int, false, "height of the rectangle"),
                ],
                returns: "decoded pixels",
                description: "Cuts out the rectangle at (x, y) of width x height; it must lie inside the image.",
                example: "SELECT image_crop(image, 0, 0, 100, 100) FROM read_images('photos/')",
            },
            ImageOp::Thumbnail => Spec {
                base: "image_thumbnail",
                params: &[("max_side", Int, false, "longest side of the result")],
                returns: "decoded pixels",
                description: "Shrinks to fit max_side x max_side keeping the aspect ratio (never enlarges), with DCT-scaled JPEG decoding.",
                example: "SELECT image_encode(image_thumbnail(image, 256), 'jpeg') FROM read_images('photos/')",
            },
            ImageOp::Convert => Spec {
                base: "image_convert",
                params: &[("mode", Text, false, "'rgb', 'rgba', 'l' (grey) or 'la'")],
                returns: "decoded pixels",
                description: "Converts the colour layout (grey uses the ITU-R 601 weights).",
                example: "SELECT image_convert(image, 'l') FROM read_images('photos/')",
            },
            ImageOp::Rotate => Spec {
                base: "image_rotate",
                params: &[("degrees", Int, false, "90, 180 or 270, clockwise")],
                returns: "decoded pixels",
                description: "Rotates clockwise by 90, 180 or 270 degrees.",
                example: "SELECT image_rotate(image, 90) FROM read_images('photos/')",
            },
            ImageOp::Flip => Spec {
                base: "image_flip",
                params: &[(
                    "direction",
                    Text,
                    true,
                    "'horizontal' (left-right, default) or 'vertical'",
                )],
                returns: "decoded pixels",
                description: "Mirrors the image left-right or top-bottom.",
                example: "SELECT image_flip(image, 'vertical') FROM read_images('photos/')",
            },
            ImageOp::AutoOrient => Spec {
                base: "image_auto_orient",
                params: &[],
                returns: "decoded pixels",
                description: "Decodes and applies the EXIF orientation so the image shows upright; decoded input and images without EXIF are returned as they are.",
                example: "SELECT image_auto_orient(image) FROM read_images('photos/')",
            },
            ImageOp::ToTensor => Spec {
                base: "image_to_tensor",
                params: &[
                    ("width", Int, false, "tensor width (a constant)"),
                    ("height", Int, false, "tensor height (a constant)"),
                    (
                        "mean",
                        Floats,
                        true,
                        "per-channel mean, e.g. [0.485, 0.456, 0.406]; default 0",
                    ),
                    (
                        "std",
                        Floats,
                        true,
                        "per-channel standard deviation, e.g. [0.229, 0.224, 0.225]; default 1",
                    ),
                ],
                returns: "FixedSizeList<Float32, 3*height*width>",
                description: "Resizes to width x height (bilinear, DCT-scaled JPEG decoding), converts to RGB and returns a CHW float tensor (v/255 - mean)/std, the input of vision models.",
                example: "SELECT image_to_tensor(image, 224, 224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) FROM read_images('photos/')",
            },
            ImageOp::Hash(HashKind::Average) => Spec {
                base: "image_ahash",
                params: &[],
                returns: "uint64",
                description: "Average hash (64 bits): 8x8 grey, one bit per pixel above the mean. Compare with hamming_distance.",
                example: "SELECT path, image_ahash(image) FROM read_images('photos/')",
            },
            ImageOp::Hash(HashKind::Difference) => Spec {
                base: "image_dhash",
                params: &[],
                returns: "uint64",
                description: "Difference hash (64 bits): 9x8 grey, one bit per pixel whose right-hand neighbour is brighter. Compare with hamming_distance.",
                example: "SELECT path, image_dhash(image) FROM read_images('photos/')",
            },
            ImageOp::Hash(HashKind::Perceptual) => Spec {
                base: "image_phash",
                params: &[],
                returns: "uint64",
                description: "Perceptual hash (64 bits): 32x32 grey, 2-D DCT, one bit per low frequency above their median (as the Python imagehash package). Near-duplicates differ in a few bits: compare with hamming_distance.",
                example: "SELECT a.path, b.path FROM h a JOIN h b ON a.path < b.path AND hamming_distance(a.hash, b.hash) <= 6",
            },
            ImageOp::Exif => Spec {
                base: "image_exif",
                params: &[],
                returns: "struct{make, model, taken_at, orientation, gps_latitude, gps_longitude, gps_altitude}",
                description: "The EXIF metadata of an encoded image (JPEG, PNG, WebP, TIFF): camera make and model, time taken (camera local time), orientation 1-8, GPS position. NULL when the image has none; a damaged EXIF block gives NULL, not an error.",
                example: "SELECT image_exif(image).taken_at FROM read_images('photos/')",
            },
        }
    }
}

/// One image function; see the module docs.
#[derive(Debug)]
pub struct ImageUdf {
    name: String,
    op: ImageOp,
    lenient: bool,
    signature: Signature,
    doc: Documentation,
}

impl PartialEq for ImageUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for ImageUdf {}
impl std::hash::Hash for ImageUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ImageUdf {
    /// The function for `op`; `lenient` makes the `try_` twin.
    pub fn new(op: ImageOp, lenient: bool) -> Self {
        let spec = op.spec();
        let name = if lenient {
            format!("try_{}", spec.base)
        } else {
            spec.base.to_string()
        };
        let syntax = {
            let mut s = format!("{name}(image");
            for (p, _, optional, _) in spec.params {
                if *optional {
                    s.push_str(&format!(" [, {p}]"));
                } else {
                    s.push_str(&format!(", {p}"));
                }
            }
            s.push(')');
            s
        };
        let on_bad = if lenient {
            "NULL when the image cannot be read or the arguments do not fit it".to_string()
        } else {
            format!(
                "an error naming the row when the image cannot be read ({} returns NULL instead)",
                if lenient {
                    name.clone()
                } else {
                    format!("try_{name}")
                }
            )
        };
        let mut doc = Documentation::builder(
            DocSection {
                include: true,
                label: "Image Functions",
                description: None,
            },
            format!(
                "{} Returns {}. NULL input gives NULL; {on_bad}.",
                spec.description, spec.returns
            ),
            syntax,
        )
        .with_argument(
            "image",
            if op == ImageOp::Exif {
                "encoded image bytes (bytea)"
            } else {
                "encoded image bytes (bytea) or decoded pixels from another image function"
            },
        );
        for (p, _, _, what) in spec.params {
            doc = doc.with_argument(*p, *what);
        }
        let doc = doc
            .with_sql_example(spec.example.replace(spec.base, &name))
            .build();
        Self {
            name,
            op,
            lenient,
            signature: Signature::user_defined(Volatility::Immutable),
            doc,
        }
    }

    fn params(&self) -> &'static [(&'static str, Param, bool, &'static str)] {
        self.op.spec().params
    }

    /// Checks constant text arguments at planning time, so a typo in a
    /// filter name is an error even in a `try_` twin.
    fn check_constants(&self, scalars: &[Option<&ScalarValue>]) -> Result<()> {
        for (i, (pname, kind, _, _)) in self.params().iter().enumerate() {
            let Some(Some(value)) = scalars.get(i + 1) else {
                continue;
            };
            if *kind != Param::Text {
                continue;
            }
            let Some(text) = scalar_text(value) else {
                continue;
            };
            let checked = match (self.op, *pname) {
                (ImageOp::Encode, _) => EncodeFormat::parse(&text).map(drop),
                (ImageOp::Resize, _) => ResizeFilter::parse(&text).map(drop),
                (ImageOp::Convert, _) => ColorMode::parse(&text).map(drop),
                (ImageOp::Flip, _) => parse_direction(&text).map(drop),
                _ => Ok(()),
            };
            if let Err(e) = checked {
                return plan_err!("{}: {e}", self.name);
            }
        }
        Ok(())
    }

    fn tensor_size(&self, scalars: &[Option<&ScalarValue>]) -> Result<(usize, usize)> {
        let get = |i: usize, what: &str| -> Result<usize> {
            match scalars.get(i).copied().flatten().and_then(scalar_int) {
                Some(v) if (1..=65_535).contains(&v) => Ok(v as usize),
                Some(v) => plan_err!("{}: {what} must be between 1 and 65535, got {v}", self.name),
                None => plan_err!(
                    "{}: {what} must be a constant integer (the tensor's size is part of its type)",
                    self.name
                ),
            }
        };
        Ok((get(1, "width")?, get(2, "height")?))
    }
}

fn parse_direction(text: &str) -> Result<bool, MediaError> {
    match text.to_ascii_lowercase().as_str() {
        "horizontal" | "h" | "left_right" => Ok(false),
        "vertical" | "v" | "top_bottom" => Ok(true),
        other => Err(MediaError::Invalid(format!(
            "unknown flip direction '{other}'; expected 'horizontal' or 'vertical'"
        ))),
    }
}

fn scalar_floats(v: &ScalarValue) -> Option<Vec<f64>> {
    let list = match v {
        ScalarValue::List(l) => l.value(0),
        ScalarValue::LargeList(l) => l.value(0),
        ScalarValue::FixedSizeList(l) => l.value(0),
        _ => return None,
    };
    let f = cast(&list, &DataType::Float64).ok()?;
    let f = f
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()?;
    (f.null_count() == 0).then(|| f.values().to_vec())
}

/// The image of one row.
enum Input<'a> {
    Encoded(&'a [u8]),
    Decoded(Pixels),
}

/// What one row produces.
enum Out {
    Pixels(Pixels),
    Bytes(Vec<u8>),
    Tensor(Vec<f32>),
    Hash(u64),
    Exif(Option<ExifInfo>),
}

impl Input<'_> {
    fn pixels(
        self,
        limits: &DecodeLimits,
        at_least: impl FnOnce(u32, u32) -> Option<(u32, u32)>,
    ) -> Result<Pixels, MediaError> {
        match self {
            Input::Encoded(bytes) => {
                decode_with(bytes, limits, |info| at_least(info.width, info.height))
            }
            Input::Decoded(p) => Ok(p),
        }
    }
}

fn int_arg(values: &[ScalarValue], i: usize) -> i64 {
    values.get(i).and_then(scalar_int).unwrap_or(0)
}

fn text_arg(values: &[ScalarValue], i: usize) -> Option<String> {
    values.get(i).and_then(scalar_text)
}

fn channels3(values: &[ScalarValue], i: usize, default: f32) -> Result<[f32; 3], MediaError> {
    let Some(v) = values.get(i) else {
        return Ok([default; 3]);
    };
    let floats = scalar_floats(v).ok_or_else(|| {
        MediaError::Invalid("mean and std must be lists of numbers, e.g. [0.5, 0.5, 0.5]".into())
    })?;
    match floats.as_slice() {
        [a] => Ok([*a as f32; 3]),
        [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
        other => Err(MediaError::Invalid(format!(
            "mean and std need 1 or 3 values (one per RGB channel), got {}",
            other.len()
        ))),
    }
}

impl ImageUdf {
    fn apply(
        &self,
        input: Input<'_>,
        args: &[ScalarValue],
        limits: &DecodeLimits,
    ) -> Result<Out, MediaError> {
        Ok(match self.op {
            ImageOp::Decode => Out::Pixels(input.pixels(limits, |_, _| None)?),
            ImageOp::Encode => {
                let format = EncodeFormat::parse(&text_arg(args, 0).unwrap_or_default())?;
                let quality = match args.get(1).and_then(scalar_int) {
                    None => None,
                    Some(q) => Some(u8::try_from(q).map_err(|_| {
                        MediaError::Invalid(format!(
                            "jpeg quality must be between 1 and 100, got {q}"
                        ))
                    })?),
                };
                let p = input.pixels(limits, |_, _| None)?;
                Out::Bytes(pixels::encode(&p, format, quality)?)
            }
            ImageOp::Resize => {
                let (w, h) = (int_arg(args, 0), int_arg(args, 1));
                let filter = match text_arg(args, 2) {
                    Some(f) => ResizeFilter::parse(&f)?,
                    None => ResizeFilter::Bilinear,
                };
                let hint = u32::try_from(w).ok().zip(u32::try_from(h).ok());
                let p = input.pixels(limits, |_, _| hint)?;
                Out::Pixels(pixels::resize(&p, w, h, filter)?)
            }
            ImageOp::Crop => {
                let p = input.pixels(limits, |_, _| None)?;
                Out::Pixels(pixels::crop(
                    &p,
                    int_arg(args, 0),
                    int_arg(args, 1),
                    int_arg(args, 2),
                    int_arg(args, 3),
                )?)
            }
            ImageOp::Thumbnail => {
                let side = int_arg(args, 0);
                let s = u32::try_from(side).unwrap_or(0);
                let p = input.pixels(limits, |w, h| Some(thumbnail_size(w, h, s)))?;
                Out::Pixels(pixels::thumbnail(&p, side)?)
            }
            ImageOp::Convert => {
                let mode = ColorMode::parse(&text_arg(args, 0).unwrap_or_default())?;
                Out::Pixels(pixels::convert(&input.pixels(limits, |_, _| None)?, mode))
            }
            ImageOp::Rotate => {
                let p = input.pixels(limits, |_, _| None)?;
                Out::Pixels(pixels::rotate(&p, int_arg(args, 0))?)
            }
            ImageOp::Flip => {
                let vertical = match text_arg(args, 0) {
                    Some(d) => parse_direction(&d)?,
                    None => false,
                };
                Out::Pixels(pixels::flip(&input.pixels(limits, |_, _| None)?, vertical))
            }
            ImageOp::AutoOrient => {
                let orientation = match &input {
                    Input::Encoded(bytes) => read_exif(bytes).and_then(|e| e.orientation),
                    Input::Decoded(_) => None,
                };
                let p = input.pixels(limits, |_, _| None)?;
                Out::Pixels(pixels::orient(&p, orientation.unwrap_or(1))?)
            }
            ImageOp::ToTensor => {
                let (w, h) = (int_arg(args, 0), int_arg(args, 1));
                let mean = channels3(args, 2, 0.0)?;
                let std = channels3(args, 3, 1.0)?;
                let hint = u32::try_from(w).ok().zip(u32::try_from(h).ok());
                let p = input.pixels(limits, |_, _| hint)?;
                Out::Tensor(pixels::to_tensor(&p, w, h, mean, std)?)
            }
            ImageOp::Hash(kind) => {
                let p = input.pixels(limits, |_, _| Some(kind.work_size()))?;
                Out::Hash(image_hash(&p, kind)?)
            }
            ImageOp::Exif => match input {
                Input::Encoded(bytes) => {
                    // A readable image is required; its EXIF is optional.
                    quiver_media::probe_image(bytes)?;
                    Out::Exif(read_exif(bytes))
                }
                Input::Decoded(_) => Out::Exif(None),
            },
        })
    }

    fn build(&self, outs: Vec<Option<Out>>, return_field: &Field) -> Result<ArrayRef> {
        Ok(match self.op {
            ImageOp::Encode => {
                let mut b = BinaryBuilder::new();
                for o in outs {
                    match o {
                        Some(Out::Bytes(v)) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            ImageOp::Hash(_) => {
                let mut b = UInt64Builder::with_capacity(outs.len());
                for o in outs {
                    b.append_option(match o {
                        Some(Out::Hash(h)) => Some(h),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            ImageOp::Exif => {
                let values: Vec<Option<ExifInfo>> = outs
                    .into_iter()
                    .map(|o| match o {
                        Some(Out::Exif(e)) => e,
                        _ => None,
                    })
                    .collect();
                Arc::new(exif_array(&values))
            }
            ImageOp::ToTensor => {
                let DataType::FixedSizeList(item, len) = return_field.data_type() else {
                    return exec_err!("{}: unexpected return type", self.name);
                };
                let len = *len as usize;
                let mut values = Vec::with_capacity(outs.len() * len);
                let mut valid = Vec::with_capacity(outs.len());
                for o in outs {
                    match o {
                        Some(Out::Tensor(t)) if t.len() == len => {
                            values.extend_from_slice(&t);
                            valid.push(true);
                        }
                        _ => {
                            values.resize(values.len() + len, 0.0);
                            valid.push(false);
                        }
                    }
                }
                Arc::new(FixedSizeListArray::try_new(
                    Arc::clone(item),
                    len as i32,
                    Arc::new(Float32Array::from(values)),
                    Some(valid.into()),
                )?)
            }
            _ => {
                let values: Vec<Option<Pixels>> = outs
                    .into_iter()
                    .map(|o| match o {
                        Some(Out::Pixels(p)) => Some(p),
                        _ => None,
                    })
                    .collect();
                Arc::new(pixels_array(&values))
            }
        })
    }
}

impl ScalarUDFImpl for ImageUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let params = self.params();
        let required = 1 + params.iter().filter(|p| !p.2).count();
        let usage = self.doc.syntax_example.clone();
        check_arity(
            &self.name,
            &usage,
            required,
            1 + params.len(),
            arg_types.len(),
        )?;
        let mut out = Vec::with_capacity(arg_types.len());
        let image = &arg_types[0];
        if is_binary(image) {
            out.push(DataType::Binary);
        } else if is_pixels(image) && self.op != ImageOp::Exif {
            out.push(image.clone());
        } else {
            return plan_err!(
                "{}: the image argument must be encoded image bytes (bytea){}, got {image}",
                self.name,
                if self.op == ImageOp::Exif {
                    ""
                } else {
                    " or decoded pixels"
                }
            );
        }
        for ((pname, kind, _, _), t) in params.iter().zip(&arg_types[1..]) {
            let ok = match kind {
                Param::Int => is_integer(t),
                Param::Text => matches!(
                    t,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
                ),
                Param::Floats => matches!(
                    t,
                    DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _)
                ),
            };
            if !ok {
                return plan_err!("{}: argument {pname} cannot be {t}: {usage}", self.name);
            }
            out.push(match kind {
                Param::Int => DataType::Int64,
                Param::Text => DataType::Utf8,
                Param::Floats => t.clone(),
            });
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        // return_field_from_args decides; this is never called by the planner.
        plan_err!("{}: return type depends on the arguments", self.name)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.check_constants(args.scalar_arguments)?;
        let field = match self.op {
            ImageOp::Encode => image_field(&self.name),
            ImageOp::Hash(_) => Field::new(&self.name, DataType::UInt64, true),
            ImageOp::Exif => Field::new(&self.name, exif_data_type(), true),
            ImageOp::ToTensor => {
                let (w, h) = self.tensor_size(args.scalar_arguments)?;
                tensor_field(&self.name, 3, h, w)
            }
            _ => pixels_field(&self.name),
        };
        Ok(Arc::new(field))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some(image) = args.args.first() else {
            return plan_err!("{}: missing the image argument", self.name);
        };
        let image = image.to_array(rows)?;
        let extra = rest_args(&args.args);
        let limits = QuiverSettings::from_options(&args.config_options).decode_limits;
        let encoded: Option<ArrayRef> = if is_pixels(image.data_type()) {
            None
        } else {
            Some(cast(&image, &DataType::Binary)?)
        };
        let binary = encoded
            .as_ref()
            .and_then(|a| a.as_any().downcast_ref::<BinaryArray>());
        let decoded = image.as_any().downcast_ref::<StructArray>();
        let mut outs = Vec::with_capacity(rows);
        for row in 0..rows {
            if image.is_null(row) {
                outs.push(None);
                continue;
            }
            let values = extra
                .iter()
                .map(|a| a.get(row))
                .collect::<Result<Vec<_>>>()?;
            // A NULL required argument gives NULL.
            let null_arg = self
                .params()
                .iter()
                .zip(&values)
                .any(|((_, _, optional, _), v)| !optional && v.is_null());
            if null_arg {
                outs.push(None);
                continue;
            }
            let input = match (binary, decoded) {
                (Some(b), _) => Ok(Input::Encoded(b.value(row))),
                (None, Some(s)) => read_pixels(s, row).map(|p| match p {
                    Some(p) => Input::Decoded(p),
                    None => Input::Encoded(&[]),
                }),
                (None, None) => return exec_err!("{}: unexpected input type", self.name),
            };
            match input.and_then(|input| self.apply(input, &values, &limits)) {
                Ok(out) => outs.push(Some(out)),
                Err(_) if self.lenient => outs.push(None),
                Err(e) => return Err(row_error(&self.name, row, e)),
            }
        }
        let array = self.build(outs, &args.return_field)?;
        columnar_result(&args.args, array)
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.doc)
    }
}
