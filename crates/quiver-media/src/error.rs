//! [`MediaError`]: why a piece of media could not be read.

/// A codec failure. The caller adds which file or row it was.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Zero bytes.
    #[error("empty file")]
    Empty,
    /// The bytes match no supported format.
    #[error("not a supported image (JPEG, PNG, WebP, GIF, BMP, TIFF); starts with {prefix}")]
    UnknownFormat {
        /// The first bytes, in hex, to tell a text file from a damaged image.
        prefix: String,
    },
    /// The header or data is damaged or truncated.
    #[error("corrupt {format}: {source}")]
    Corrupt {
        /// The detected format.
        format: &'static str,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// The decoder panicked; the panic was caught.
    #[error("{format} decoder failed: {message}")]
    DecoderPanic {
        /// The detected format.
        format: &'static str,
        /// The panic message.
        message: String,
    },
}
