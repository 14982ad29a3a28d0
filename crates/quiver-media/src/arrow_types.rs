//! The Arrow types of media (ARCHITECTURE.md, "Arrow types of media"):
//! encoded images, decoded pixels, tensors and EXIF, with the builders and
//! readers every part uses, so that a scan, a function and a printer agree.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, Float64Builder, StringBuilder, StructArray,
    TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};

use crate::exif::ExifInfo;
use crate::{MediaError, Pixels};

/// Field-metadata key naming the kind of media a column holds.
pub const MEDIA_KEY: &str = "quiver.media";
/// [`MEDIA_KEY`] value of encoded image bytes.
pub const MEDIA_IMAGE: &str = "image";
/// [`MEDIA_KEY`] value of decoded pixels.
pub const MEDIA_PIXELS: &str = "image_pixels";

fn media_metadata(kind: &str) -> HashMap<String, String> {
    [(MEDIA_KEY.to_string(), kind.to_string())].into()
}

/// A `Binary` field of encoded images, tagged `quiver.media = image`.
pub fn image_field(name: &str) -> Field {
    Field::new(name, DataType::Binary, true).with_metadata(media_metadata(MEDIA_IMAGE))
}

/// `Struct{width u32, height u32, channels u8, data Binary}`.
pub fn pixels_data_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
        Field::new("channels", DataType::UInt8, false),
        Field::new("data", DataType::Binary, false),
    ]))
}

/// A field of decoded pixels, tagged `quiver.media = image_pixels`.
pub fn pixels_field(name: &str) -> Field {
    Field::new(name, pixels_data_type(), true).with_metadata(media_metadata(MEDIA_PIXELS))
}

/// Whether `data_type` is the decoded-pixels struct.
pub fn is_pixels(data_type: &DataType) -> bool {
    data_type == &pixels_data_type()
}

/// Builds a decoded-pixels column; `None` is NULL.
pub fn pixels_array(values: &[Option<Pixels>]) -> StructArray {
    let mut w = UInt32Builder::with_capacity(values.len());
    let mut h = UInt32Builder::with_capacity(values.len());
    let mut c = UInt8Builder::with_capacity(values.len());
    let bytes: usize = values.iter().flatten().map(|p| p.data.len()).sum();
    let mut d = BinaryBuilder::with_capacity(values.len(), bytes);
    for v in values {
        match v {
            Some(p) => {
                w.append_value(p.width);
                h.append_value(p.height);
                c.append_value(p.channels);
                d.append_value(&p.data);
            }
            None => {
                w.append_value(0);
                h.append_value(0);
                c.append_value(0);
                d.append_value([]);
            }
        }
    }
    let nulls = NullBuffer::from(values.iter().map(Option::is_some).collect::<Vec<_>>());
    let DataType::Struct(fields) = pixels_data_type() else {
        unreachable!("pixels_data_type is a struct")
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(w.finish()),
        Arc::new(h.finish()),
        Arc::new(c.finish()),
        Arc::new(d.finish()),
    ];
    StructArray::new(fields, columns, Some(nulls))
}

/// Reads row `row` of a decoded-pixels column (`None` when NULL).
pub fn read_pixels(array: &StructArray, row: usize) -> Result<Option<Pixels>, MediaError> {
    if array.is_null(row) {
        return Ok(None);
    }
    let bad = || MediaError::Invalid("not a decoded-image struct".to_string());
    let col = |i: usize| array.columns().get(i).ok_or_else(bad);
    let width = col(0)?
        .as_any()
        .downcast_ref::<arrow::array::UInt32Array>()
        .ok_or_else(bad)?
        .value(row);
    let height = col(1)?
        .as_any()
        .downcast_ref::<arrow::array::UInt32Array>()
        .ok_or_else(bad)?
        .value(row);
    let channels = col(2)?
        .as_any()
        .downcast_ref::<arrow::array::UInt8Array>()
        .ok_or_else(bad)?
        .value(row);
    let data = col(3)?
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .ok_or_else(bad)?
        .value(row);
    if !(1..=4).contains(&channels)
        || data.len() != width as usize * height as usize * channels as usize
    {
        return Err(MediaError::Invalid(format!(
            "decoded image of {width}x{height}x{channels} holds {} bytes",
            data.len()
        )));
    }
    Ok(Some(Pixels {
        width,
        height,
        channels,
        data: data.to_vec(),
    }))
}

/// A `FixedSizeList<Float32, c·h·w>` field tagged as an Arrow fixed-shape
/// tensor of shape `[c, h, w]`.
pub fn tensor_field(name: &str, c: usize, h: usize, w: usize) -> Field {
    let len = i32::try_from(c * h * w).unwrap_or(i32::MAX);
    Field::new(name, tensor_data_type(len), true).with_metadata(
        [
            (
                "ARROW:extension:name".to_string(),
                "arrow.fixed_shape_tensor".to_string(),
            ),
            (
                "ARROW:extension:metadata".to_string(),
                format!("{{\"shape\":[{c},{h},{w}]}}"),
            ),
        ]
        .into(),
    )
}

/// `FixedSizeList<Float32, len>`.
pub fn tensor_data_type(len: i32) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), len)
}

/// `Struct{make, model, taken_at, orientation, gps_latitude, gps_longitude,
/// gps_altitude}`.
pub fn exif_data_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("make", DataType::Utf8, true),
        Field::new("model", DataType::Utf8, true),
        Field::new(
            "taken_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("orientation", DataType::UInt16, true),
        Field::new("gps_latitude", DataType::Float64, true),
        Field::new("gps_longitude", DataType::Float64, true),
        Field::new("gps_altitude", DataType::Float64, true),
    ]))
}

/// Builds an EXIF column; `None` (no EXIF) is NULL.
pub fn exif_array(values: &[Option<ExifInfo>]) -> StructArray {
    let n = values.len();
    let mut make = StringBuilder::with_capacity(n, 0);
    let mut model = StringBuilder::with_capacity(n, 0);
    let mut taken = TimestampMicrosecondBuilder::with_capacity(n);
    let mut orientation = UInt16Builder::with_capacity(n);
    let mut lat = Float64Builder::with_capacity(n);
    let mut lon = Float64Builder::with_capacity(n);
    let mut alt = Float64Builder::with_capacity(n);
    for v in values {
        let e = v.clone().unwrap_or_default();
        make.append_option(e.make);
        model.append_option(e.model);
        taken.append_option(e.taken_at);
        orientation.append_option(e.orientation);
        lat.append_option(e.gps_latitude);
        lon.append_option(e.gps_longitude);
        alt.append_option(e.gps_altitude);
    }
    let DataType::Struct(fields) = exif_data_type() else {
        unreachable!("exif_data_type is a struct")
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(make.finish()),
        Arc::new(model.finish()),
        Arc::new(taken.finish()),
        Arc::new(orientation.finish()),
        Arc::new(lat.finish()),
        Arc::new(lon.finish()),
        Arc::new(alt.finish()),
    ];
    let nulls = NullBuffer::from(values.iter().map(Option::is_some).collect::<Vec<_>>());
    StructArray::new(fields, columns, Some(nulls))
}

/// How a printer shows one encoded image: `<jpeg 640x480 52.1 KB>`, or
/// `<unreadable image 12 B>` when the header cannot be read.
pub fn describe_image(bytes: &[u8]) -> String {
    match crate::probe_image(bytes) {
        Ok(info) => format!(
            "<{} {}x{} {}>",
            info.format.name(),
            info.width,
            info.height,
            human_size(bytes.len())
        ),
        Err(_) => format!("<unreadable image {}>", human_size(bytes.len())),
    }
}

/// How a printer shows decoded pixels: `<pixels 224x224 rgb>`.
pub fn describe_pixels(width: u32, height: u32, channels: u8) -> String {
    let mode = crate::pixels::ColorMode::from_channels(channels)
        .map(|m| m.name())
        .unwrap_or("?");
    format!("<pixels {width}x{height} {mode}>")
}

/// `52.1 KB`, `1.4 MB`, `812 B` (decimal units, as file browsers show).
pub fn human_size(bytes: usize) -> String {
    let b = bytes as f64;
    if bytes < 1000 {
        format!("{bytes} B")
    } else if b < 1e6 {
        format!("{:.1} KB", b / 1e3)
    } else if b < 1e9 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} GB", b / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_round_trip_through_arrow() {
        let p = Pixels {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let arr = pixels_array(&[Some(p.clone()), None]);
        assert_eq!(read_pixels(&arr, 0).unwrap(), Some(p));
        assert_eq!(read_pixels(&arr, 1).unwrap(), None);
        assert_eq!(human_size(52_100), "52.1 KB");
        assert_eq!(human_size(812), "812 B");
    }
}
