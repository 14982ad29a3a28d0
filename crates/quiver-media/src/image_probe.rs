//! Which image format a byte string holds, and its dimensions, from the
//! header alone (no pixel decoding).

use std::io::Cursor;

use image::ImageReader;

use crate::MediaError;
use crate::error::{catch_panic, hex_prefix};

/// The image formats Quiver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP (lossy and lossless).
    Webp,
    /// GIF (the first frame).
    Gif,
    /// Windows bitmap.
    Bmp,
    /// TIFF.
    Tiff,
}

impl ImageFormat {
    /// Lower-case name, as SQL shows it: `jpeg`, `png`, `webp`, `gif`,
    /// `bmp`, `tiff`.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Tiff => "tiff",
        }
    }

    pub(crate) fn to_image(self) -> image::ImageFormat {
        match self {
            ImageFormat::Jpeg => image::ImageFormat::Jpeg,
            ImageFormat::Png => image::ImageFormat::Png,
            ImageFormat::Webp => image::ImageFormat::WebP,
            ImageFormat::Gif => image::ImageFormat::Gif,
            ImageFormat::Bmp => image::ImageFormat::Bmp,
            ImageFormat::Tiff => image::ImageFormat::Tiff,
        }
    }
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// The format, detected from the bytes.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Detects the format from the magic bytes (never the file name).
pub fn detect_image_format(bytes: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(bytes).ok()? {
        image::ImageFormat::Jpeg => Some(ImageFormat::Jpeg),
        image::ImageFormat::Png => Some(ImageFormat::Png),
        image::ImageFormat::WebP => Some(ImageFormat::Webp),
        image::ImageFormat::Gif => Some(ImageFormat::Gif),
        image::ImageFormat::Bmp => Some(ImageFormat::Bmp),
        image::ImageFormat::Tiff => Some(ImageFormat::Tiff),
        _ => None,
    }
}

/// Reads format and dimensions from the start of an image. `bytes` may be
/// just a prefix of the file: when the header lies beyond it, the error is
/// [`MediaError::Corrupt`] and the caller may retry with the whole file.
pub fn probe_image(bytes: &[u8]) -> Result<ImageInfo, MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    let format = detect_image_format(bytes).ok_or_else(|| MediaError::UnknownFormat {
        expected: "image (JPEG, PNG, WebP, GIF, BMP, TIFF)",
        prefix: hex_prefix(bytes),
    })?;
    let name = format.name();
    let (width, height) = catch_panic(name, || {
        ImageReader::with_format(Cursor::new(bytes), format.to_image())
            .into_dimensions()
            .map_err(|source| MediaError::Corrupt {
                format: name,
                source,
            })
    })?;
    Ok(ImageInfo {
        format,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(format: image::ImageFormat, w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        });
        let mut out = Cursor::new(vec![]);
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, format)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn probes_every_format_from_its_bytes() {
        for (fmt, ours) in [
            (image::ImageFormat::Png, ImageFormat::Png),
            (image::ImageFormat::Jpeg, ImageFormat::Jpeg),
            (image::ImageFormat::Bmp, ImageFormat::Bmp),
            (image::ImageFormat::Gif, ImageFormat::Gif),
            (image::ImageFormat::Tiff, ImageFormat::Tiff),
            (image::ImageFormat::WebP, ImageFormat::Webp),
        ] {
            let bytes = encode(fmt, 33, 21);
            let info = probe_image(&bytes).unwrap();
            assert_eq!(info.format, ours);
            assert_eq!((info.width, info.height), (33, 21), "{}", ours.name());
        }
    }

    #[test]
    fn bad_bytes_say_why() {
        assert!(matches!(probe_image(b""), Err(MediaError::Empty)));
        let err = probe_image(b"hello, world").unwrap_err().to_string();
        assert!(err.contains("68 65 6c 6c"), "{err}");
        let jpeg = encode(image::ImageFormat::Jpeg, 64, 64);
        let err = probe_image(&jpeg[..20]).unwrap_err().to_string();
        assert!(err.starts_with("corrupt jpeg"), "{err}");
    }
}
