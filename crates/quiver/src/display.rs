//! How printers show media: an encoded image as `<jpeg 640x480 52.1 KB>`,
//! decoded pixels as `<pixels 224x224 rgb>`, never raw bytes. Binary
//! columns without the media tag (read from a file that lost it, or built
//! by hand) show each value that is an image the same way and others in
//! hex, as DataFusion does. Used by the
//! CLI's tables, the shell and the test runner; CSV, JSON and Parquet
//! output keep the bytes.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringBuilder, StructArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::datatypes::{UInt8Type, UInt32Type};
use datafusion::common::Result;
use quiver_media::arrow_types::{
    MEDIA_IMAGE, MEDIA_KEY, describe_image, describe_pixels, is_pixels,
};

fn is_image(field: &Field) -> bool {
    matches!(
        field.data_type(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn tagged_image(field: &Field) -> bool {
    field.metadata().get(MEDIA_KEY).map(String::as_str) == Some(MEDIA_IMAGE)
}

/// One binary value as a printer shows it.
fn describe_binary(bytes: &[u8], tagged: bool) -> String {
    if tagged || quiver_media::detect_image_format(bytes).is_some() {
        describe_image(bytes)
    } else {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether any column of `schema` is shown differently by
/// [`media_for_display`].
pub fn has_media(schema: &Schema) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| is_image(f) || is_pixels(f.data_type()))
}

/// The schema [`media_for_display`] produces.
pub fn display_schema(schema: &SchemaRef) -> SchemaRef {
    if !has_media(schema) {
        return Arc::clone(schema);
    }
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if is_image(f) || is_pixels(f.data_type()) {
                    Arc::new(Field::new(f.name(), DataType::Utf8, true))
                } else {
                    Arc::clone(f)
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// Replaces image and pixel columns by their one-line descriptions.
pub fn media_for_display(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !has_media(&schema) {
        return Ok(batch.clone());
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let shown: ArrayRef = if is_image(field) {
            let bytes = cast(column, &DataType::Binary)?;
            let mut out = StringBuilder::new();
            if let Some(bytes) = bytes.as_any().downcast_ref::<BinaryArray>() {
                let tagged = tagged_image(field);
                for v in bytes.iter() {
                    out.append_option(v.map(|v| describe_binary(v, tagged)));
                }
            }
            Arc::new(out.finish())
        } else if is_pixels(field.data_type()) {
            let mut out = StringBuilder::new();
            if let Some(s) = column.as_any().downcast_ref::<StructArray>() {
                // The pixels struct's fields are UInt32, UInt32, UInt8 by type.
                let w = s.column(0).as_primitive::<UInt32Type>();
                let h = s.column(1).as_primitive::<UInt32Type>();
                let c = s.column(2).as_primitive::<UInt8Type>();
                for row in 0..s.len() {
                    if s.is_null(row) {
                        out.append_null();
                    } else {
                        out.append_value(describe_pixels(w.value(row), h.value(row), c.value(row)));
                    }
                }
            }
            Arc::new(out.finish())
        } else {
            Arc::clone(column)
        };
        columns.push(shown);
    }
    Ok(RecordBatch::try_new(display_schema(&schema), columns)?)
}
