//! How printers show media: an encoded image as `<jpeg 640x480 52.1 KB>`,
//! decoded pixels as `<pixels 224x224 rgb>`, encoded audio as
//! `<wav 16 kHz mono 2.00 s 64.0 KB>`, decoded audio as
//! `<pcm 16 kHz mono 2.00 s>`, a spectrogram as `<tensor 80x200>`, never
//! raw bytes or sample lists. Binary columns without the media tag (read
//! from a file that lost it, or built by hand) show each value that is an
//! image or audio file the same way and others in hex, as DataFusion does. Used by the
//! CLI's tables, the shell and the test runner; CSV, JSON and Parquet
//! output keep the bytes.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, RecordBatch, StringBuilder, StructArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::datatypes::{Int32Type, UInt8Type, UInt16Type, UInt32Type};
use datafusion::common::Result;
use quiver_media::arrow_types::{
    MEDIA_AUDIO, MEDIA_IMAGE, MEDIA_KEY, describe_audio, describe_image, describe_pcm,
    describe_pixels, is_pcm, is_pixels, variable_tensor_data_type,
};

/// Whether the column is a 2-D variable-shape tensor (a spectrogram).
fn is_tensor2(t: &DataType) -> bool {
    t == &variable_tensor_data_type(2)
}

/// Whether a column is shown as one-line descriptions.
fn described(field: &Field) -> bool {
    let t = field.data_type();
    is_image(field) || is_pixels(t) || is_pcm(t) || is_tensor2(t)
}

fn is_image(field: &Field) -> bool {
    matches!(
        field.data_type(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn media_tag(field: &Field) -> Option<&str> {
    field.metadata().get(MEDIA_KEY).map(String::as_str)
}

/// One binary value as a printer shows it.
fn describe_binary(bytes: &[u8], tag: Option<&str>) -> String {
    if tag == Some(MEDIA_IMAGE) {
        describe_image(bytes)
    } else if tag == Some(MEDIA_AUDIO) {
        describe_audio(bytes)
    } else if quiver_media::detect_image_format(bytes).is_some() {
        describe_image(bytes)
    } else if quiver_media::audio::detect_audio_format(bytes).is_some() {
        describe_audio(bytes)
    } else {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether any column of `schema` is shown differently by
/// [`media_for_display`].
pub fn has_media(schema: &Schema) -> bool {
    schema.fields().iter().any(|f| described(f))
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
                if described(f) {
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
                let tag = media_tag(field);
                for v in bytes.iter() {
                    out.append_option(v.map(|v| describe_binary(v, tag)));
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
        } else if is_pcm(field.data_type()) || is_tensor2(field.data_type()) {
            let mut out = StringBuilder::new();
            if let Some(s) = column.as_any().downcast_ref::<StructArray>() {
                for row in 0..s.len() {
                    if s.is_null(row) {
                        out.append_null();
                    } else {
                        out.append_value(describe_struct(s, row));
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

/// A decoded-audio or tensor struct's row, by the struct's typed fields.
fn describe_struct(s: &StructArray, row: usize) -> String {
    if let (Some(rate), Some(channels), Some(samples)) = (
        s.column_by_name("sample_rate"),
        s.column_by_name("channels"),
        s.column_by_name("samples"),
    ) {
        let n = samples.as_list::<i32>().value_length(row);
        return describe_pcm(
            rate.as_primitive::<UInt32Type>().value(row),
            channels.as_primitive::<UInt16Type>().value(row),
            usize::try_from(n).unwrap_or(0),
        );
    }
    match s.column_by_name("shape") {
        Some(shape) => {
            let dims = shape.as_fixed_size_list().value(row);
            let dims: Vec<String> = dims
                .as_primitive::<Int32Type>()
                .values()
                .iter()
                .map(i32::to_string)
                .collect();
            format!("<tensor {}>", dims.join("x"))
        }
        None => "<struct>".to_string(),
    }
}
