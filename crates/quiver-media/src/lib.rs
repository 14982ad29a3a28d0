//! Quiver's codecs, free of SQL: pure functions over byte slices.
//!
//! | module | what it holds |
//! |---|---|
//! | [`audio`] | audio format detection, header probing, decoding under limits, resampling, encoding |
//! | [`mel`] | Whisper-style log-mel spectrograms |
//! | [`arrow_types`] | the Arrow types of media, their builders, readers and display |
//! | [`error`] | [`MediaError`], the typed failures of every codec |
//! | [`image_probe`] | format detection from the bytes and header-only dimensions |
//! | [`pixels`] | decoding under limits (DCT-scaled for JPEG), encoding, resize, crop, rotate, flip, convert, tensors |
//! | [`hash`] | perceptual hashes and Hamming distance |
//! | [`exif`] | EXIF metadata (camera, time taken, orientation, GPS) |
//! | [`video`] | video probing and sampled frame decoding through FFmpeg (feature `video`) |

pub mod arrow_types;
pub mod audio;
pub mod error;
pub mod exif;
pub mod hash;
pub mod image_probe;
pub mod mel;
pub mod pixels;
pub mod video;

pub use audio::{AudioFormat, AudioInfo, AudioLimits, Pcm, decode_audio, probe_audio};
pub use error::MediaError;
pub use image_probe::{ImageFormat, ImageInfo, detect_image_format, probe_image};
pub use pixels::{DecodeLimits, Pixels};
