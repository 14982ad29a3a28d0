//! The Arrow types of media (ARCHITECTURE.md, "Arrow types of media"):
//! encoded images, decoded pixels, tensors and EXIF, with the builders and
//! readers every part uses, so that a scan, a function and a printer agree.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, FixedSizeListArray, Float32Array, Float64Builder, Int32Array,
    ListArray, StringBuilder, StructArray, TimestampMicrosecondBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit};

use crate::audio::{AudioTags, Pcm, PcmRef};
use crate::exif::ExifInfo;
use crate::mel::MelSpectrogram;
use crate::{MediaError, Pixels};

/// Field-metadata key naming the kind of media a column holds.
pub const MEDIA_KEY: &str = "quiver.media";
/// [`MEDIA_KEY`] value of encoded image bytes.
pub const MEDIA_IMAGE: &str = "image";
/// [`MEDIA_KEY`] value of decoded pixels.
pub const MEDIA_PIXELS: &str = "image_pixels";
/// [`MEDIA_KEY`] value of encoded audio bytes.
pub const MEDIA_AUDIO: &str = "audio";
/// [`MEDIA_KEY`] value of decoded audio.
pub const MEDIA_PCM: &str = "audio_pcm";

fn media_metadata(kind: &str) -> HashMap<String, String> {
    [(MEDIA_KEY.to_string(), kind.to_string())].into()
}

/// A `Binary` field of encoded images, tagged `quiver.media = image`.
pub fn image_field(name: &str) -> Field {
    Field::new(name, DataType::Binary, true).with_metadata(media_metadata(MEDIA_IMAGE))
}

/// A `BinaryView` field of encoded audio, tagged `quiver.media = audio`
/// (a view per file: scans hand over the bytes they read without copying).
pub fn audio_field(name: &str) -> Field {
    Field::new(name, DataType::BinaryView, true).with_metadata(media_metadata(MEDIA_AUDIO))
}

/// The item field of a list of `f32`.
fn float_item(nullable: bool) -> FieldRef {
    Arc::new(Field::new("item", DataType::Float32, nullable))
}

fn float_list(nullable: bool) -> DataType {
    DataType::List(float_item(nullable))
}

/// `Struct{sample_rate u32, channels u16, samples List<Float32>}`, the
/// samples interleaved (`L R L R …`).
pub fn pcm_data_type() -> DataType {
    DataType::Struct(pcm_fields())
}

/// The fields of [`pcm_data_type`].
fn pcm_fields() -> Fields {
    Fields::from(vec![
        Field::new("sample_rate", DataType::UInt32, false),
        Field::new("channels", DataType::UInt16, false),
        Field::new("samples", float_list(false), false),
    ])
}

/// A field of decoded audio, tagged `quiver.media = audio_pcm`.
pub fn pcm_field(name: &str) -> Field {
    Field::new(name, pcm_data_type(), true).with_metadata(media_metadata(MEDIA_PCM))
}

/// Whether `data_type` is the decoded-audio struct.
pub fn is_pcm(data_type: &DataType) -> bool {
    data_type == &pcm_data_type()
}

/// A `List<Float32>` of the concatenated `values`, one list per row
/// (`None` is an empty list; the caller's struct carries the NULL).
fn float_lists<'a>(rows: impl Iterator<Item = Option<&'a [f32]>>, len: usize) -> ListArray {
    let mut lengths = Vec::with_capacity(len);
    let mut values: Vec<f32> = Vec::new();
    for r in rows {
        let r = r.unwrap_or_default();
        lengths.push(r.len());
        values.extend_from_slice(r);
    }
    let item = float_item(false);
    ListArray::new(
        item,
        OffsetBuffer::from_lengths(lengths),
        Arc::new(Float32Array::from(values)),
        None,
    )
}

/// Builds a decoded-audio column; `None` is NULL.
pub fn pcm_array(values: &[Option<Pcm>]) -> StructArray {
    let mut parts = PcmColumn::default();
    for v in values {
        match v {
            Some(p) => {
                parts.samples.extend_from_slice(&p.samples);
                parts.push(p.sample_rate, p.channels, p.samples.len());
            }
            None => parts.push_null(),
        }
    }
    parts.finish()
}

/// A decoded-audio column being built: every row's samples appended to one
/// buffer (decoders write straight into [`PcmColumn::samples`]), then
/// [`PcmColumn::push`] closes the row.
#[derive(Debug, Default)]
pub struct PcmColumn {
    /// The samples of all rows so far, interleaved, row after row.
    pub samples: Vec<f32>,
    rates: Vec<u32>,
    channels: Vec<u16>,
    lengths: Vec<usize>,
    valid: Vec<bool>,
}

impl PcmColumn {
    /// Closes a row whose `len` samples were appended to `samples`.
    pub fn push(&mut self, sample_rate: u32, channels: u16, len: usize) {
        self.rates.push(sample_rate);
        self.channels.push(channels);
        self.lengths.push(len);
        self.valid.push(true);
    }

    /// A NULL row.
    pub fn push_null(&mut self) {
        self.rates.push(0);
        self.channels.push(0);
        self.lengths.push(0);
        self.valid.push(false);
    }

    /// The column (the sample buffer becomes the list values, uncopied).
    pub fn finish(self) -> StructArray {
        let item = float_item(false);
        let samples = ListArray::new(
            item,
            OffsetBuffer::from_lengths(self.lengths),
            Arc::new(Float32Array::from(self.samples)),
            None,
        );
        let fields = pcm_fields();
        StructArray::new(
            fields,
            vec![
                Arc::new(arrow::array::UInt32Array::from(self.rates)),
                Arc::new(arrow::array::UInt16Array::from(self.channels)),
                Arc::new(samples),
            ],
            Some(NullBuffer::from(self.valid)),
        )
    }
}

/// Reads row `row` of a decoded-audio column (`None` when NULL), copying
/// the samples.
pub fn read_pcm(array: &StructArray, row: usize) -> Result<Option<Pcm>, MediaError> {
    Ok(read_pcm_ref(array, row)?.map(|p| p.to_pcm()))
}

/// Reads row `row` of a decoded-audio column (`None` when NULL) without
/// copying the samples.
pub fn read_pcm_ref(array: &StructArray, row: usize) -> Result<Option<PcmRef<'_>>, MediaError> {
    if array.is_null(row) {
        return Ok(None);
    }
    let bad = || MediaError::Invalid("not a decoded-audio struct".to_string());
    let rate = array
        .column_by_name("sample_rate")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::UInt32Array>())
        .ok_or_else(bad)?
        .value(row);
    let channels = array
        .column_by_name("channels")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::UInt16Array>())
        .ok_or_else(bad)?
        .value(row);
    let list = array
        .column_by_name("samples")
        .and_then(|c| c.as_any().downcast_ref::<ListArray>())
        .ok_or_else(bad)?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(bad)?
        .values();
    let offsets = list.value_offsets();
    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
    let samples = values.get(start..end).ok_or_else(bad)?;
    if channels == 0 || samples.len() % usize::from(channels) != 0 {
        return Err(MediaError::Invalid(format!(
            "decoded audio of {channels} channels holds {} samples",
            samples.len()
        )));
    }
    Ok(Some(PcmRef {
        sample_rate: rate,
        channels,
        samples,
    }))
}

/// `Struct{data List<Float32>, shape FixedSizeList<Int32, ndim>}`: the
/// storage of Arrow's canonical variable-shape tensor.
pub fn variable_tensor_data_type(ndim: i32) -> DataType {
    DataType::Struct(variable_tensor_fields(ndim))
}

/// The fields of [`variable_tensor_data_type`].
fn variable_tensor_fields(ndim: i32) -> Fields {
    Fields::from(vec![
        Field::new("data", float_list(false), false),
        Field::new(
            "shape",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int32, false)), ndim),
            false,
        ),
    ])
}

/// A field of log-mel spectrograms: an `arrow.variable_shape_tensor` of
/// shape `[n_mels, n_frames]`, row-major.
pub fn mel_field(name: &str) -> Field {
    Field::new(name, variable_tensor_data_type(2), true).with_metadata(
        [
            (
                "ARROW:extension:name".to_string(),
                "arrow.variable_shape_tensor".to_string(),
            ),
            (
                "ARROW:extension:metadata".to_string(),
                "{\"dim_names\":[\"mel\",\"frame\"]}".to_string(),
            ),
        ]
        .into(),
    )
}

/// Builds a spectrogram column; `None` is NULL.
pub fn mel_array(values: &[Option<MelSpectrogram>]) -> StructArray {
    let data = float_lists(
        values.iter().map(|v| v.as_ref().map(|m| m.data.as_slice())),
        values.len(),
    );
    let mut shape = Vec::with_capacity(values.len() * 2);
    for v in values {
        let (m, f) = v.as_ref().map_or((0, 0), |m| (m.n_mels, m.n_frames));
        shape.push(i32::try_from(m).unwrap_or(i32::MAX));
        shape.push(i32::try_from(f).unwrap_or(i32::MAX));
    }
    let shape = FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Int32, false)),
        2,
        Arc::new(Int32Array::from(shape)),
        None,
    );
    let fields = variable_tensor_fields(2);
    let nulls = NullBuffer::from(values.iter().map(Option::is_some).collect::<Vec<_>>());
    StructArray::new(fields, vec![Arc::new(data), Arc::new(shape)], Some(nulls))
}

/// `Struct{title, artist, album, album_artist, genre, date, track u32,
/// comment}`.
pub fn audio_tags_data_type() -> DataType {
    DataType::Struct(audio_tags_fields())
}

/// The fields of [`audio_tags_data_type`].
fn audio_tags_fields() -> Fields {
    Fields::from(vec![
        Field::new("title", DataType::Utf8, true),
        Field::new("artist", DataType::Utf8, true),
        Field::new("album", DataType::Utf8, true),
        Field::new("album_artist", DataType::Utf8, true),
        Field::new("genre", DataType::Utf8, true),
        Field::new("date", DataType::Utf8, true),
        Field::new("track", DataType::UInt32, true),
        Field::new("comment", DataType::Utf8, true),
    ])
}

/// Builds a tags column; `None` (no tags) is NULL.
pub fn audio_tags_array(values: &[Option<&AudioTags>]) -> StructArray {
    let n = values.len();
    let mut text: Vec<StringBuilder> = (0..7).map(|_| StringBuilder::with_capacity(n, 0)).collect();
    let mut track = UInt32Builder::with_capacity(n);
    for v in values {
        let t = v.cloned().unwrap_or_default();
        for (b, value) in text.iter_mut().zip([
            t.title,
            t.artist,
            t.album,
            t.album_artist,
            t.genre,
            t.date,
            t.comment,
        ]) {
            b.append_option(value);
        }
        track.append_option(t.track);
    }
    let mut columns: Vec<ArrayRef> = text
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    // `comment` comes last in the struct, after `track`.
    let comment = columns
        .pop()
        .unwrap_or_else(|| Arc::new(StringBuilder::new().finish()));
    columns.push(Arc::new(track.finish()));
    columns.push(comment);
    let fields = audio_tags_fields();
    let nulls = NullBuffer::from(values.iter().map(Option::is_some).collect::<Vec<_>>());
    StructArray::new(fields, columns, Some(nulls))
}

/// How a printer shows encoded audio: `<wav 16 kHz mono 2.00 s 64.0 KB>`,
/// or `<unreadable audio 12 B>`.
pub fn describe_audio(bytes: &[u8]) -> String {
    match crate::audio::probe_audio_bytes(bytes) {
        Ok(info) => {
            let mut parts = vec![info.format.name().to_string()];
            if let Some(r) = info.sample_rate {
                parts.push(khz(r));
            }
            if let Some(c) = info.channels {
                parts.push(channel_words(c));
            }
            if let Some(d) = info.duration {
                parts.push(format!("{d:.2} s"));
            }
            parts.push(human_size(bytes.len()));
            format!("<{}>", parts.join(" "))
        }
        Err(_) => format!("<unreadable audio {}>", human_size(bytes.len())),
    }
}

/// How a printer shows decoded audio: `<pcm 16 kHz mono 2.00 s>`.
pub fn describe_pcm(sample_rate: u32, channels: u16, samples: usize) -> String {
    let frames = samples / usize::from(channels.max(1));
    let seconds = if sample_rate == 0 {
        0.0
    } else {
        frames as f64 / f64::from(sample_rate)
    };
    format!(
        "<pcm {} {} {seconds:.2} s>",
        khz(sample_rate),
        channel_words(channels)
    )
}

fn khz(rate: u32) -> String {
    if rate.is_multiple_of(1000) {
        format!("{} kHz", rate / 1000)
    } else {
        format!("{:.1} kHz", f64::from(rate) / 1000.0)
    }
}

fn channel_words(channels: u16) -> String {
    match channels {
        1 => "mono".to_string(),
        2 => "stereo".to_string(),
        n => format!("{n} ch"),
    }
}

/// `Struct{width u32, height u32, channels u8, data Binary}`.
pub fn pixels_data_type() -> DataType {
    DataType::Struct(pixels_fields())
}

/// The fields of [`pixels_data_type`].
fn pixels_fields() -> Fields {
    Fields::from(vec![
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
        Field::new("channels", DataType::UInt8, false),
        Field::new("data", DataType::Binary, false),
    ])
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
    let fields = pixels_fields();
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
    DataType::Struct(exif_fields())
}

/// The fields of [`exif_data_type`].
fn exif_fields() -> Fields {
    Fields::from(vec![
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
    ])
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
    let fields = exif_fields();
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

    #[test]
    fn pcm_and_tags_round_trip_through_arrow() {
        let p = Pcm {
            sample_rate: 16000,
            channels: 2,
            samples: vec![0.1, -0.1, 0.2, -0.2],
        };
        let arr = pcm_array(&[None, Some(p.clone())]);
        assert_eq!(read_pcm(&arr, 0).unwrap(), None);
        assert_eq!(read_pcm(&arr, 1).unwrap(), Some(p));
        assert_eq!(describe_pcm(16000, 2, 32000), "<pcm 16 kHz stereo 1.00 s>");
        assert_eq!(describe_pcm(22050, 1, 22050), "<pcm 22.1 kHz mono 1.00 s>");
        let tags = AudioTags {
            title: Some("Tone".into()),
            track: Some(3),
            comment: Some("c".into()),
            ..AudioTags::default()
        };
        let arr = audio_tags_array(&[Some(&tags), None]);
        assert_eq!(arr.column_by_name("track").unwrap().len(), 2);
        assert!(arr.is_null(1));
        let mel = MelSpectrogram {
            n_mels: 2,
            n_frames: 3,
            data: vec![0.0; 6],
        };
        assert_eq!(mel_array(&[Some(mel), None]).len(), 2);
    }
}
