//! Without the `video` feature: every call says so.

use std::io::{Read, Seek};

use super::{FrameSampling, Interrupt, VideoFrame, VideoInfo, VideoLimits};
use crate::{MediaError, Pcm};

fn unsupported() -> MediaError {
    MediaError::Invalid(
        "built without video support: build quiver (or quiver-cli) with its `video` feature, on by default"
            .into(),
    )
}

/// Fails: this build has no video support.
pub fn probe_video<R: Read + Seek + Send + 'static>(
    _source: R,
    _name: &str,
    _limits: &VideoLimits,
) -> Result<VideoInfo, MediaError> {
    Err(unsupported())
}

/// Fails: this build has no video support.
pub fn decode_video_audio<R: Read + Seek + Send + 'static>(
    _source: R,
    _name: &str,
    _limits: &VideoLimits,
    _max_bytes: u64,
    _interrupt: Interrupt,
) -> Result<Option<Pcm>, MediaError> {
    Err(unsupported())
}

/// Never opens: this build has no video support.
#[derive(Debug)]
pub struct FrameReader(());

impl FrameReader {
    /// Fails: this build has no video support.
    pub fn open<R: Read + Seek + Send + 'static>(
        _source: R,
        _name: &str,
        _sampling: FrameSampling,
        _limits: VideoLimits,
        _interrupt: Interrupt,
    ) -> Result<Self, MediaError> {
        Err(unsupported())
    }

    /// Frames decoded so far: none.
    pub fn decoded(&self) -> u64 {
        0
    }

    /// No frames.
    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        Err(unsupported())
    }
}
