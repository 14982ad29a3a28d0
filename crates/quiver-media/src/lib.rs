//! Quiver's codecs, free of SQL: pure functions over byte slices.
//!
//! | module | what it holds |
//! |---|---|
//! | [`error`] | [`MediaError`], the typed failures of every codec |
//! | [`image_probe`] | format detection from the bytes and header-only dimensions |

pub mod error;
pub mod image_probe;

pub use error::MediaError;
pub use image_probe::{ImageFormat, ImageInfo, detect_image_format, probe_image};
