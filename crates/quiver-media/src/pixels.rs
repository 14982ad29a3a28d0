//! Decoded images ([`Pixels`]): decoding under limits (with DCT-scaled JPEG
//! decoding when only a fraction of the size is needed), encoding, and the
//! pixel transforms behind the SQL image functions.

use std::io::Cursor;

use fast_image_resize as fir;
use image::{ExtendedColorType, ImageEncoder, ImageReader};

use crate::error::catch_panic;
use crate::{ImageFormat, ImageInfo, MediaError, probe_image};

/// An 8-bit decoded image, row-major, channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
    pub channels: u8,
    /// `width · height · channels` bytes.
    pub data: Vec<u8>,
}

/// The colour layouts, by name as SQL spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// Grey, one channel.
    L,
    /// Grey and alpha.
    La,
    /// Red, green, blue.
    Rgb,
    /// Red, green, blue, alpha.
    Rgba,
}

impl ColorMode {
    /// Parses `l`, `la`, `rgb`, `rgba` (any case).
    pub fn parse(name: &str) -> Result<Self, MediaError> {
        match name.to_ascii_lowercase().as_str() {
            "l" | "gray" | "grey" => Ok(Self::L),
            "la" => Ok(Self::La),
            "rgb" => Ok(Self::Rgb),
            "rgba" => Ok(Self::Rgba),
            other => Err(MediaError::Invalid(format!(
                "unknown colour mode '{other}'; expected 'rgb', 'rgba', 'l' or 'la'"
            ))),
        }
    }

    /// Channels per pixel.
    pub fn channels(self) -> u8 {
        match self {
            Self::L => 1,
            Self::La => 2,
            Self::Rgb => 3,
            Self::Rgba => 4,
        }
    }

    /// The mode with `channels` channels.
    pub fn from_channels(channels: u8) -> Result<Self, MediaError> {
        match channels {
            1 => Ok(Self::L),
            2 => Ok(Self::La),
            3 => Ok(Self::Rgb),
            4 => Ok(Self::Rgba),
            n => Err(MediaError::Invalid(format!(
                "decoded image with {n} channels; expected 1 to 4"
            ))),
        }
    }

    /// `l`, `la`, `rgb` or `rgba`.
    pub fn name(self) -> &'static str {
        match self {
            Self::L => "l",
            Self::La => "la",
            Self::Rgb => "rgb",
            Self::Rgba => "rgba",
        }
    }
}

/// How far a decoder may go. A header that declares more is refused
/// before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width · height) in one image.
    pub max_pixels: u64,
    /// Most bytes the decoder may allocate for one image.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// 100 megapixels and 1 GiB.
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
            max_alloc: 1 << 30,
        }
    }
}

/// Resampling filters for [`resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeFilter {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle) convolution.
    Bilinear,
    /// Bicubic (Catmull-Rom) convolution.
    Bicubic,
    /// Lanczos, three lobes.
    Lanczos3,
}

impl ResizeFilter {
    /// Parses `nearest`, `bilinear`, `bicubic`, `lanczos3` (any case).
    pub fn parse(name: &str) -> Result<Self, MediaError> {
        match name.to_ascii_lowercase().as_str() {
            "nearest" => Ok(Self::Nearest),
            "bilinear" | "linear" | "triangle" => Ok(Self::Bilinear),
            "bicubic" | "cubic" | "catmullrom" => Ok(Self::Bicubic),
            "lanczos3" | "lanczos" => Ok(Self::Lanczos3),
            other => Err(MediaError::Invalid(format!(
                "unknown resize filter '{other}'; expected 'nearest', 'bilinear', 'bicubic' or 'lanczos3'"
            ))),
        }
    }

    fn alg(self) -> fir::ResizeAlg {
        match self {
            Self::Nearest => fir::ResizeAlg::Nearest,
            Self::Bilinear => fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
            Self::Bicubic => fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom),
            Self::Lanczos3 => fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3),
        }
    }
}

/// Checks a header's dimensions against `limits` before decoding.
pub fn check_limits(
    format: &'static str,
    width: u32,
    height: u32,
    limits: &DecodeLimits,
) -> Result<(), MediaError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(MediaError::TooLarge {
            format,
            width,
            height,
            limit: format!("{} pixels", limits.max_pixels),
            setting: "quiver.media.max_image_pixels",
        });
    }
    // Worst case: four 16-bit channels while decoding.
    if pixels.saturating_mul(8) > limits.max_alloc {
        return Err(MediaError::TooLarge {
            format,
            width,
            height,
            limit: format!("{} bytes of decoded pixels", limits.max_alloc),
            setting: "quiver.media.max_image_alloc",
        });
    }
    Ok(())
}

/// Decodes an encoded image to 8-bit pixels (16-bit and float images are
/// reduced to 8 bits; GIF gives its first frame).
///
/// `at_least`: when the caller will shrink the result to this size right
/// away, a JPEG is decoded in the DCT domain at the smallest of 1/8, 2/8,
/// … 8/8 of its size that still covers it, which skips most of the
/// decoder's work. The result is then larger than or equal to `at_least`,
/// not equal.
pub fn decode(
    bytes: &[u8],
    limits: &DecodeLimits,
    at_least: Option<(u32, u32)>,
) -> Result<Pixels, MediaError> {
    decode_with(bytes, limits, |_| at_least)
}

/// [`decode`], with the size needed computed from the header (a thumbnail
/// needs the source's aspect ratio).
pub fn decode_with(
    bytes: &[u8],
    limits: &DecodeLimits,
    at_least: impl FnOnce(&ImageInfo) -> Option<(u32, u32)>,
) -> Result<Pixels, MediaError> {
    let info = probe_image(bytes)?;
    let name = info.format.name();
    check_limits(name, info.width, info.height, limits)?;
    let at_least = at_least(&info);
    if info.format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(MediaError::Damaged {
            format: name,
            reason: "truncated: the data stops before the end-of-image marker".to_string(),
        });
    }
    catch_panic(name, || {
        if info.format == ImageFormat::Jpeg
            && let Some((w, h)) = at_least
            && w.saturating_mul(2) <= info.width
            && h.saturating_mul(2) <= info.height
            && let Some(pixels) = decode_jpeg_scaled(bytes, w, h)?
        {
            return Ok(pixels);
        }
        if info.format == ImageFormat::Jpeg {
            return decode_jpeg(bytes);
        }
        decode_full(bytes, &info, limits)
    })
}

/// Full-size JPEG decoding with `zune-jpeg`, straight from the slice
/// (the `image` crate's wrapper copies the file first). A file whose data
/// stops before the end-of-image marker is an error, as Pillow's "image
/// file is truncated", rather than grey rows.
fn decode_jpeg(bytes: &[u8]) -> Result<Pixels, MediaError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let damaged = |reason: String| MediaError::Damaged {
        format: "jpeg",
        reason,
    };
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    d.decode_headers().map_err(|e| damaged(e.to_string()))?;
    let (out, channels) = match d.input_colorspace() {
        Some(ColorSpace::Luma | ColorSpace::LumaA) => (ColorSpace::Luma, 1u8),
        _ => (ColorSpace::RGB, 3u8),
    };
    d.set_options(options.jpeg_set_out_colorspace(out));
    let data = d.decode().map_err(|e| damaged(e.to_string()))?;
    let (w, h) = d
        .dimensions()
        .ok_or_else(|| damaged("no dimensions after decoding".to_string()))?;
    if data.len() != w * h * usize::from(channels) {
        return Err(damaged(format!(
            "decoded {} bytes for {w}x{h}x{channels}",
            data.len()
        )));
    }
    Ok(Pixels {
        width: w as u32,
        height: h as u32,
        channels,
        data,
    })
}

/// Whether an end-of-image marker follows the first scan of the main
/// image. Segments before the scan are walked by their lengths, so an EXIF
/// thumbnail's own markers (inside APP1) are not mistaken for the image's;
/// inside entropy-coded data a 0xFF byte is always stuffed, so 0xFFD9 can
/// only be the marker.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            i += 1;
            continue;
        }
        let marker = bytes[i + 1];
        match marker {
            // Fill bytes, and markers without a length.
            0xFF => i += 1,
            0x01 | 0xD0..=0xD7 => i += 2,
            0xD9 => return true,
            0xDA => {
                // The marker normally ends the file: search from the end, so
                // a complete file costs two bytes, not a pass over the data.
                return bytes[i + 2..].windows(2).rev().any(|w| w == [0xFF, 0xD9]);
            }
            _ => {
                let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
                i += 2 + len;
            }
        }
    }
    false
}

fn decode_full(
    bytes: &[u8],
    info: &ImageInfo,
    limits: &DecodeLimits,
) -> Result<Pixels, MediaError> {
    let format = info.format;
    let name = format.name();
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.to_image());
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let img = reader.decode().map_err(|source| match source {
        image::ImageError::Limits(_) => MediaError::TooLarge {
            format: name,
            width: info.width,
            height: info.height,
            limit: format!("{} bytes of decoder memory", limits.max_alloc),
            setting: "quiver.media.max_image_alloc",
        },
        source => MediaError::Corrupt {
            format: name,
            source,
        },
    })?;
    Ok(from_dynamic(img))
}

/// DCT-scaled decoding with libjpeg-turbo (through `mozjpeg`): the
/// smallest of 1/8, 1/4 and 1/2 of the size that still covers `w` × `h`
/// (the scales with SIMD inverse transforms). `None` when no such scale
/// helps or for CMYK files, which take the full path.
fn decode_jpeg_scaled(bytes: &[u8], w: u32, h: u32) -> Result<Option<Pixels>, MediaError> {
    let damaged = |reason: String| MediaError::Damaged {
        format: "jpeg",
        reason,
    };
    // libjpeg reports errors by unwinding (without the panic hook); catch
    // them here to keep the decoder's message.
    let run = || -> std::io::Result<Option<Pixels>> {
        let mut d = mozjpeg::Decompress::new_mem(bytes)?;
        let (sw, sh) = (d.width() as u64, d.height() as u64);
        let covers =
            |n: u64| (sw * n).div_ceil(8) >= u64::from(w) && (sh * n).div_ceil(8) >= u64::from(h);
        let Some(n) = [1u8, 2, 4].into_iter().find(|n| covers(u64::from(*n))) else {
            return Ok(None);
        };
        d.scale(n);
        let (channels, mut started) = match d.image()? {
            mozjpeg::Format::RGB(s) => (3u8, s),
            mozjpeg::Format::Gray(s) => (1u8, s),
            mozjpeg::Format::CMYK(_) => return Ok(None),
        };
        let (width, height) = (started.width() as u32, started.height() as u32);
        let data = started.read_scanlines::<u8>()?;
        started.finish()?;
        if data.len() != width as usize * height as usize * usize::from(channels) {
            return Ok(None);
        }
        Ok(Some(Pixels {
            width,
            height,
            channels,
            data,
        }))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(result) => result.map_err(|e| damaged(e.to_string())),
        Err(panic) => Err(damaged(
            crate::error::panic_message(panic.as_ref())
                .unwrap_or_else(|| "decoder error".to_string()),
        )),
    }
}

fn from_dynamic(img: image::DynamicImage) -> Pixels {
    use image::DynamicImage as D;
    let (width, height) = (img.width(), img.height());
    let (channels, data) = match img {
        D::ImageLuma8(b) => (1, b.into_raw()),
        D::ImageLumaA8(b) => (2, b.into_raw()),
        D::ImageRgb8(b) => (3, b.into_raw()),
        D::ImageRgba8(b) => (4, b.into_raw()),
        other => {
            let color = other.color();
            match (color.has_color(), color.has_alpha()) {
                (false, false) => (1, other.to_luma8().into_raw()),
                (false, true) => (2, other.to_luma_alpha8().into_raw()),
                (true, false) => (3, other.to_rgb8().into_raw()),
                (true, true) => (4, other.to_rgba8().into_raw()),
            }
        }
    };
    Pixels {
        width,
        height,
        channels,
        data,
    }
}

/// Formats [`encode`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeFormat {
    /// PNG, lossless.
    Png,
    /// JPEG with a quality 1–100 (default 85); alpha is dropped.
    Jpeg,
    /// WebP, lossless (the pure-Rust encoder writes lossless only).
    Webp,
}

impl EncodeFormat {
    /// Parses `png`, `jpeg`/`jpg`, `webp` (any case).
    pub fn parse(name: &str) -> Result<Self, MediaError> {
        match name.to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::Webp),
            other => Err(MediaError::Invalid(format!(
                "cannot encode '{other}'; expected 'png', 'jpeg' or 'webp'"
            ))),
        }
    }

    /// `png`, `jpeg` or `webp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
        }
    }
}

/// Encodes pixels. `quality` (1–100) applies to JPEG only.
pub fn encode(
    pixels: &Pixels,
    format: EncodeFormat,
    quality: Option<u8>,
) -> Result<Vec<u8>, MediaError> {
    let name = format.name();
    if let Some(q) = quality {
        if format != EncodeFormat::Jpeg {
            return Err(MediaError::Invalid(format!(
                "quality applies to jpeg only; {name} is written lossless"
            )));
        }
        if !(1..=100).contains(&q) {
            return Err(MediaError::Invalid(format!(
                "jpeg quality must be between 1 and 100, got {q}"
            )));
        }
    }
    let converted;
    let src = if format == EncodeFormat::Jpeg && pixels.channels.is_multiple_of(2) {
        // JPEG has no alpha channel.
        converted = convert(pixels, ColorMode::from_channels(pixels.channels - 1)?);
        &converted
    } else {
        pixels
    };
    let color = match src.channels {
        1 => ExtendedColorType::L8,
        2 => ExtendedColorType::La8,
        3 => ExtendedColorType::Rgb8,
        _ => ExtendedColorType::Rgba8,
    };
    let mut out = Vec::with_capacity(src.data.len() / 4);
    let result = match format {
        EncodeFormat::Png => image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&src.data, src.width, src.height, color),
        EncodeFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.unwrap_or(85))
                .write_image(&src.data, src.width, src.height, color)
        }
        EncodeFormat::Webp => image::codecs::webp::WebPEncoder::new_lossless(&mut out)
            .write_image(&src.data, src.width, src.height, color),
    };
    result.map_err(|source| MediaError::Encode {
        format: name,
        source,
    })?;
    Ok(out)
}

fn check_size(what: &str, width: i64, height: i64) -> Result<(u32, u32), MediaError> {
    let ok = |v: i64| u32::try_from(v).ok().filter(|v| (1..=65_535).contains(v));
    match (ok(width), ok(height)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(MediaError::Invalid(format!(
            "{what} size must be between 1 and 65535 pixels on each side, got {width}x{height}"
        ))),
    }
}

/// Resizes to exactly `width` × `height` (SIMD convolution).
pub fn resize(
    pixels: &Pixels,
    width: i64,
    height: i64,
    filter: ResizeFilter,
) -> Result<Pixels, MediaError> {
    let (width, height) = check_size("resize", width, height)?;
    if (width, height) == (pixels.width, pixels.height) {
        return Ok(pixels.clone());
    }
    let pixel_type = match pixels.channels {
        1 => fir::PixelType::U8,
        2 => fir::PixelType::U8x2,
        3 => fir::PixelType::U8x3,
        _ => fir::PixelType::U8x4,
    };
    let invalid = |e: &dyn std::fmt::Display| MediaError::Invalid(format!("resize: {e}"));
    let src = fir::images::ImageRef::new(pixels.width, pixels.height, &pixels.data, pixel_type)
        .map_err(|e| invalid(&e))?;
    let mut dst = fir::images::Image::new(width, height, pixel_type);
    fir::Resizer::new()
        .resize(
            &src,
            &mut dst,
            &fir::ResizeOptions::new().resize_alg(filter.alg()),
        )
        .map_err(|e| invalid(&e))?;
    Ok(Pixels {
        width,
        height,
        channels: pixels.channels,
        data: dst.into_vec(),
    })
}

/// The size that fits within `max_side` × `max_side` keeping the aspect
/// ratio (never enlarging, never below 1 pixel).
pub fn thumbnail_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = |v: u32| {
        ((u64::from(v) * u64::from(max_side) + u64::from(longest) / 2) / u64::from(longest)).max(1)
            as u32
    };
    (scale(width), scale(height))
}

/// Shrinks to fit within `max_side` on both sides, keeping the aspect
/// ratio; smaller images are returned as they are.
pub fn thumbnail(pixels: &Pixels, max_side: i64) -> Result<Pixels, MediaError> {
    let (max_side, _) = check_size("thumbnail", max_side, max_side)?;
    let (w, h) = thumbnail_size(pixels.width, pixels.height, max_side);
    resize(pixels, i64::from(w), i64::from(h), ResizeFilter::Bilinear)
}

/// The rectangle at (`x`, `y`) of `width` × `height`; it must lie inside.
pub fn crop(
    pixels: &Pixels,
    x: i64,
    y: i64,
    width: i64,
    height: i64,
) -> Result<Pixels, MediaError> {
    let inside = x >= 0
        && y >= 0
        && width > 0
        && height > 0
        && x + width <= i64::from(pixels.width)
        && y + height <= i64::from(pixels.height);
    if !inside {
        return Err(MediaError::Invalid(format!(
            "crop of {width}x{height} at ({x}, {y}) does not lie inside the {}x{} image",
            pixels.width, pixels.height
        )));
    }
    let c = pixels.channels as usize;
    let (x, y, w, h) = (x as usize, y as usize, width as usize, height as usize);
    let stride = pixels.width as usize * c;
    let mut data = Vec::with_capacity(w * h * c);
    for row in y..y + h {
        let start = row * stride + x * c;
        data.extend_from_slice(&pixels.data[start..start + w * c]);
    }
    Ok(Pixels {
        width: w as u32,
        height: h as u32,
        channels: pixels.channels,
        data,
    })
}

/// Rotates clockwise by 90, 180 or 270 degrees.
pub fn rotate(pixels: &Pixels, degrees: i64) -> Result<Pixels, MediaError> {
    let (w, h, c) = (
        pixels.width as usize,
        pixels.height as usize,
        pixels.channels as usize,
    );
    let at = |x: usize, y: usize| &pixels.data[(y * w + x) * c..(y * w + x + 1) * c];
    let mut data = Vec::with_capacity(pixels.data.len());
    let (nw, nh) = match degrees.rem_euclid(360) {
        0 => return Ok(pixels.clone()),
        90 => {
            for y in 0..w {
                for x in 0..h {
                    data.extend_from_slice(at(y, h - 1 - x));
                }
            }
            (h, w)
        }
        180 => {
            for y in 0..h {
                for x in 0..w {
                    data.extend_from_slice(at(w - 1 - x, h - 1 - y));
                }
            }
            (w, h)
        }
        270 => {
            for y in 0..w {
                for x in 0..h {
                    data.extend_from_slice(at(w - 1 - y, x));
                }
            }
            (h, w)
        }
        _ => {
            return Err(MediaError::Invalid(format!(
                "rotation must be 90, 180 or 270 degrees, got {degrees}"
            )));
        }
    };
    Ok(Pixels {
        width: nw as u32,
        height: nh as u32,
        channels: pixels.channels,
        data,
    })
}

/// Mirrors left-right (`horizontal`) or top-bottom (`vertical`).
pub fn flip(pixels: &Pixels, vertical: bool) -> Pixels {
    let c = pixels.channels as usize;
    let stride = pixels.width as usize * c;
    let mut data = Vec::with_capacity(pixels.data.len());
    if vertical {
        for row in pixels.data.chunks_exact(stride).rev() {
            data.extend_from_slice(row);
        }
    } else {
        for row in pixels.data.chunks_exact(stride) {
            for px in row.chunks_exact(c).rev() {
                data.extend_from_slice(px);
            }
        }
    }
    Pixels {
        width: pixels.width,
        height: pixels.height,
        channels: pixels.channels,
        data,
    }
}

/// Applies an EXIF orientation (1–8) so that the image shows upright.
pub fn orient(pixels: &Pixels, orientation: u16) -> Result<Pixels, MediaError> {
    Ok(match orientation {
        2 => flip(pixels, false),
        3 => rotate(pixels, 180)?,
        4 => flip(pixels, true),
        5 => flip(&rotate(pixels, 90)?, false),
        6 => rotate(pixels, 90)?,
        7 => flip(&rotate(pixels, 270)?, false),
        8 => rotate(pixels, 270)?,
        _ => pixels.clone(),
    })
}

/// Grey from RGB with the ITU-R 601 weights, as PIL does.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114 + 500) / 1000) as u8
}

/// Converts between colour layouts (alpha added as opaque, dropped when
/// not wanted).
pub fn convert(pixels: &Pixels, mode: ColorMode) -> Pixels {
    let from = pixels.channels as usize;
    let to = mode.channels() as usize;
    if from == to {
        return pixels.clone();
    }
    let mut data = Vec::with_capacity(pixels.width as usize * pixels.height as usize * to);
    for px in pixels.data.chunks_exact(from) {
        let (r, g, b, a) = match from {
            1 => (px[0], px[0], px[0], 255),
            2 => (px[0], px[0], px[0], px[1]),
            3 => (px[0], px[1], px[2], 255),
            _ => (px[0], px[1], px[2], px[3]),
        };
        match to {
            1 => data.push(if from <= 2 { r } else { luma(r, g, b) }),
            2 => data.extend_from_slice(&[if from <= 2 { r } else { luma(r, g, b) }, a]),
            3 => data.extend_from_slice(&[r, g, b]),
            _ => data.extend_from_slice(&[r, g, b, a]),
        }
    }
    Pixels {
        width: pixels.width,
        height: pixels.height,
        channels: to as u8,
        data,
    }
}

/// Resizes to `width` × `height` (bilinear), converts to RGB and returns a
/// CHW float tensor `(v / 255 − mean[c]) / std[c]`.
pub fn to_tensor(
    pixels: &Pixels,
    width: i64,
    height: i64,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Vec<f32>, MediaError> {
    if std.contains(&0.0) {
        return Err(MediaError::Invalid(
            "image_to_tensor: std must not contain 0".to_string(),
        ));
    }
    let rgb = convert(pixels, ColorMode::Rgb);
    let sized = resize(&rgb, width, height, ResizeFilter::Bilinear)?;
    let plane = sized.width as usize * sized.height as usize;
    let mut out = vec![0f32; plane * 3];
    for c in 0..3 {
        let scale = 1.0 / (255.0 * std[c]);
        let shift = mean[c] / std[c];
        let dst = &mut out[c * plane..(c + 1) * plane];
        for (d, px) in dst.iter_mut().zip(sized.data.chunks_exact(3)) {
            *d = f32::from(px[c]) * scale - shift;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Pixels {
        let mut data = vec![];
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
            }
        }
        Pixels {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let img = gradient(40, 30);
        for f in [EncodeFormat::Png, EncodeFormat::Webp] {
            let bytes = encode(&img, f, None).unwrap();
            assert_eq!(decode(&bytes, &DecodeLimits::default(), None).unwrap(), img);
        }
        let jpeg = encode(&img, EncodeFormat::Jpeg, Some(90)).unwrap();
        let back = decode(&jpeg, &DecodeLimits::default(), None).unwrap();
        assert_eq!((back.width, back.height, back.channels), (40, 30, 3));
        let err = encode(&img, EncodeFormat::Png, Some(50)).unwrap_err();
        assert!(err.to_string().contains("jpeg only"), "{err}");
    }

    #[test]
    fn jpeg_is_decoded_scaled_when_asked() {
        let img = gradient(640, 480);
        let jpeg = encode(&img, EncodeFormat::Jpeg, None).unwrap();
        let small = decode(&jpeg, &DecodeLimits::default(), Some((100, 100))).unwrap();
        // 1/4 is the smallest eighth that covers 100x100.
        assert_eq!((small.width, small.height), (160, 120));
        let full = decode(&jpeg, &DecodeLimits::default(), Some((400, 300))).unwrap();
        assert_eq!((full.width, full.height), (640, 480));
    }

    #[test]
    fn truncated_jpeg_is_an_error_at_every_scale() {
        let jpeg = encode(&gradient(320, 240), EncodeFormat::Jpeg, None).unwrap();
        let half = &jpeg[..jpeg.len() / 2];
        let err = decode(half, &DecodeLimits::default(), None)
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string().starts_with("corrupt jpeg: truncated"),
            "{err}"
        );
        assert!(decode(half, &DecodeLimits::default(), Some((40, 30))).is_err());
        // Bytes after the end-of-image marker are fine.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(b"trailing bytes");
        assert!(decode(&padded, &DecodeLimits::default(), None).is_ok());
    }

    #[test]
    fn limits_refuse_before_decoding() {
        let img = gradient(100, 100);
        let png = encode(&img, EncodeFormat::Png, None).unwrap();
        let limits = DecodeLimits {
            max_pixels: 5_000,
            max_alloc: 1 << 30,
        };
        let err = decode(&png, &limits, None).unwrap_err().to_string();
        assert!(
            err.contains("100x100") && err.contains("5000 pixels"),
            "{err}"
        );
    }

    #[test]
    fn geometry() {
        let img = gradient(4, 2);
        let r = rotate(&img, 90).unwrap();
        assert_eq!((r.width, r.height), (2, 4));
        // Clockwise: the bottom-left pixel comes to the top-left.
        assert_eq!(&r.data[..3], &img.data[4 * 3..4 * 3 + 3]);
        assert_eq!(rotate(&rotate(&img, 90).unwrap(), 270).unwrap(), img);
        assert_eq!(rotate(&rotate(&img, 180).unwrap(), 180).unwrap(), img);
        assert_eq!(flip(&flip(&img, false), false), img);
        assert_eq!(&flip(&img, false).data[..3], &img.data[9..12]);
        let c = crop(&img, 1, 1, 2, 1).unwrap();
        assert_eq!(c.data, img.data[(4 + 1) * 3..(4 + 3) * 3].to_vec());
        assert!(crop(&img, 3, 0, 2, 1).is_err());
        assert_eq!(thumbnail_size(1920, 1080, 256), (256, 144));
        assert_eq!(thumbnail_size(100, 50, 256), (100, 50));
        assert!(rotate(&img, 45).is_err());
    }

    #[test]
    fn tensor_is_chw_and_normalised() {
        let img = Pixels {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![255, 0, 0, 0, 255, 0],
        };
        let t = to_tensor(&img, 2, 1, [0.0; 3], [1.0; 3]).unwrap();
        assert_eq!(t, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        let t = to_tensor(&img, 2, 1, [0.5; 3], [0.5; 3]).unwrap();
        assert_eq!(t, vec![1.0, -1.0, -1.0, 1.0, -1.0, -1.0]);
    }

    #[test]
    fn resize_and_convert() {
        let img = gradient(64, 48);
        let r = resize(&img, 32, 24, ResizeFilter::Lanczos3).unwrap();
        assert_eq!((r.width, r.height, r.data.len()), (32, 24, 32 * 24 * 3));
        let l = convert(&img, ColorMode::L);
        assert_eq!(l.data.len(), 64 * 48);
        assert_eq!(convert(&l, ColorMode::Rgba).data.len(), 64 * 48 * 4);
        assert!(resize(&img, 0, 10, ResizeFilter::Nearest).is_err());
    }
}
