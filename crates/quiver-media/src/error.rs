//! [`MediaError`]: why a piece of media could not be read.

/// A codec failure. The caller adds which file or row it was.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Zero bytes.
    #[error("empty file")]
    Empty,
    /// The bytes match no supported format.
    #[error("not a supported {expected}; starts with {prefix}")]
    UnknownFormat {
        /// What was expected, with the formats: "image (JPEG, PNG, …)".
        expected: &'static str,
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
    /// A decoder that reports errors as text found damage.
    #[error("corrupt {format}: {reason}")]
    Damaged {
        /// The detected format.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The decoder panicked; the panic was caught.
    #[error("{format} decoder failed: {message}")]
    DecoderPanic {
        /// The detected format.
        format: &'static str,
        /// The panic message.
        message: String,
    },
    /// The image is larger than the decode limits allow.
    #[error(
        "{format} image of {width}x{height} exceeds the decode limit of {limit} ({setting}); refused without decoding"
    )]
    TooLarge {
        /// The detected format.
        format: &'static str,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit, in words.
        limit: String,
        /// The setting that raises it.
        setting: &'static str,
    },
    /// The audio would decode to more samples than the limits allow.
    #[error(
        "{format} audio of {seconds:.1} s x {channels} channels exceeds the decode limit of {limit} bytes of samples ({setting}); refused before decoding; decode a window with audio_slice(audio, start_s, end_s)"
    )]
    AudioTooLarge {
        /// The detected format.
        format: &'static str,
        /// Declared (or decoded so far) length in seconds.
        seconds: f64,
        /// Channels.
        channels: u16,
        /// The limit in bytes.
        limit: u64,
        /// The setting that raises it.
        setting: &'static str,
    },
    /// The file uses a feature or codec no decoder here handles.
    #[error("{format}: {what} is not supported")]
    Unsupported {
        /// The detected format.
        format: &'static str,
        /// What is not supported.
        what: String,
    },
    /// The header lies beyond the bytes read so far; read the whole file.
    #[error("the header lies beyond the first bytes of the file")]
    Incomplete,
    /// An argument is out of range for this image (a crop outside it, a
    /// zero size, an unknown format name).
    #[error("{0}")]
    Invalid(String),
    /// Encoding failed.
    #[error("encoding {format} failed: {source}")]
    Encode {
        /// The target format.
        format: &'static str,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
}

/// The first bytes in hex, to tell a text file from damaged media.
pub(crate) fn hex_prefix(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a caught panic said (`panic!` with a literal or a formatted
/// message), if anything.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
}

/// Runs a codec call, turning a panic into [`MediaError::DecoderPanic`].
pub(crate) fn catch_panic<T>(
    format: &'static str,
    f: impl FnOnce() -> Result<T, MediaError>,
) -> Result<T, MediaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(MediaError::DecoderPanic {
            format,
            message: panic_message(panic.as_ref()).unwrap_or_else(|| "panic".to_string()),
        })
    })
}
