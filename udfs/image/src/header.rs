//! `image_width`, `image_height`, `image_format` and their `try_` twins:
//! one implementation, since they differ only in which header field they
//! return and whether a bad image is an error or NULL.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, StringBuilder, UInt32Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_datafusion_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use quiver_media::{ImageInfo, probe_image};

use quiver_settings::args::row_error;

/// Which header field a function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderField {
    /// Width in pixels (`uint32`).
    Width,
    /// Height in pixels (`uint32`).
    Height,
    /// Format name (text).
    Format,
}

/// `image_width(bytes)` and its siblings; see the crate docs.
#[derive(Debug)]
pub struct ImageHeaderUdf {
    name: String,
    field: HeaderField,
    /// `try_` twin: NULL instead of an error.
    lenient: bool,
    signature: Signature,
    doc: Documentation,
}

// Keyed on the name: it determines the field and the error behaviour.
impl PartialEq for ImageHeaderUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for ImageHeaderUdf {}
impl std::hash::Hash for ImageHeaderUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ImageHeaderUdf {
    /// The function for `field`; `lenient` makes the `try_` twin.
    pub fn new(field: HeaderField, lenient: bool) -> Self {
        let base = match field {
            HeaderField::Width => "image_width",
            HeaderField::Height => "image_height",
            HeaderField::Format => "image_format",
        };
        let name = if lenient {
            format!("try_{base}")
        } else {
            base.to_string()
        };
        let signature = Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Binary]),
                TypeSignature::Exact(vec![DataType::LargeBinary]),
                TypeSignature::Exact(vec![DataType::BinaryView]),
            ],
            Volatility::Immutable,
        );
        let what = match field {
            HeaderField::Width => "the width in pixels (uint32)",
            HeaderField::Height => "the height in pixels (uint32)",
            HeaderField::Format => {
                "the format detected from the bytes: jpeg, png, webp, gif, bmp or tiff"
            }
        };
        let on_bad = if lenient {
            "NULL for bytes that are not a readable image".to_string()
        } else {
            format!(
                "an error naming the row for bytes that are not a readable image (try_{name} returns NULL instead)"
            )
        };
        let doc = Documentation::builder(
            DocSection {
                include: true,
                label: "Image Functions",
                description: None,
            },
            format!("Returns {what} of an encoded image, read from its header only. NULL input gives NULL; {on_bad}."),
            format!("{name}(image)"),
        )
        .with_argument("image", "encoded image bytes (bytea), e.g. the image column of read_images")
        .with_sql_example(format!("SELECT {name}(image) FROM read_images('photos/')"))
        .build();
        Self {
            name,
            field,
            lenient,
            signature,
            doc,
        }
    }

    fn probe_all(&self, bytes: &BinaryArray) -> Result<Vec<Option<ImageInfo>>> {
        (0..bytes.len())
            .map(|row| {
                if bytes.is_null(row) {
                    return Ok(None);
                }
                match probe_image(bytes.value(row)) {
                    Ok(info) => Ok(Some(info)),
                    Err(_) if self.lenient => Ok(None),
                    Err(e) => Err(row_error(&self.name, row, e)),
                }
            })
            .collect()
    }
}

impl ScalarUDFImpl for ImageHeaderUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() != 1 {
            return plan_err!("{} takes one argument, the image bytes", self.name);
        }
        Ok(match self.field {
            HeaderField::Width | HeaderField::Height => DataType::UInt32,
            HeaderField::Format => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("{} takes one argument, the image bytes", self.name);
        };
        let is_scalar = matches!(arg, ColumnarValue::Scalar(_));
        let array = arg.to_array(args.number_rows)?;
        let binary = cast(&array, &DataType::Binary)?;
        let binary = binary
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| exec_datafusion_err!("{}: expected binary input", self.name))?;
        let infos = self.probe_all(binary)?;
        let out: ArrayRef = match self.field {
            HeaderField::Format => {
                let mut b = StringBuilder::new();
                for i in &infos {
                    b.append_option(i.map(|i| i.format.name()));
                }
                Arc::new(b.finish())
            }
            HeaderField::Width | HeaderField::Height => {
                let mut b = UInt32Builder::new();
                for i in &infos {
                    b.append_option(i.map(|i| {
                        if self.field == HeaderField::Width {
                            i.width
                        } else {
                            i.height
                        }
                    }));
                }
                Arc::new(b.finish())
            }
        };
        if is_scalar {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&self.doc)
    }
}
