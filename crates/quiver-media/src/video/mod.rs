//! Video through FFmpeg's libraries (`ffmpeg-next`): probing a file's
//! container and streams from its headers, and decoding sampled frames
//! (by rate, every n-th, keyframes only, within a time window) into images.
//!
//! Every function reads through a [`Read`] + [`Seek`] source, so a file on
//! disk and an object read by ranged requests go the same way; FFmpeg seeks
//! in the source to find headers (an MP4 index at the end) and keyframes.
//! Probing is capped (`probesize`, `analyzeduration`) and frames larger
//! than [`VideoLimits::max_pixels`] are refused before decoding.

use std::sync::Arc;

use crate::MediaError;
use crate::pixels::Pixels;

#[cfg(feature = "video")]
mod ffmpeg;
#[cfg(feature = "video")]
pub use ffmpeg::{FrameReader, decode_video_audio, probe_video};
#[cfg(not(feature = "video"))]
mod without;
#[cfg(not(feature = "video"))]
pub use without::{FrameReader, decode_video_audio, probe_video};

/// The kind in messages.
pub(crate) const VIDEO: &str = "video";

/// Caps on what FFmpeg may read and decode for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoLimits {
    /// Most pixels (width · height) of one frame; larger files are refused
    /// before their first frame is decoded.
    pub max_pixels: u64,
    /// Bytes FFmpeg reads at most to find the streams (`probesize`).
    pub probe_bytes: u64,
    /// Microseconds of media FFmpeg analyses at most to find the streams
    /// (`analyzeduration`).
    pub analyze_us: u64,
}

impl Default for VideoLimits {
    /// 8K frames (about 36 megapixels), 5 MB and 5 s of probing.
    fn default() -> Self {
        Self {
            max_pixels: 36_000_000,
            probe_bytes: 5_000_000,
            analyze_us: 5_000_000,
        }
    }
}

/// What a video file's headers say.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// The container, by the demuxer's short name that matches the file's
    /// extension (`mp4`, `mov`, `webm`, `mkv`, `avi`), else the demuxer's
    /// first name.
    pub container: String,
    /// The video codec (`h264`, `hevc`, `vp9`, `mpeg4`, …).
    pub codec: String,
    /// Frame width in pixels, as coded (before any rotation).
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second: the stream's average rate, else its base rate.
    pub fps: Option<f64>,
    /// Seconds, from the stream's or else the container's header.
    pub duration: Option<f64>,
    /// Frames, when the container records the count.
    pub frame_count: Option<u64>,
    /// Bits per second of the video stream, else of the whole file.
    pub bit_rate: Option<u64>,
    /// Degrees a player turns the picture clockwise (0, 90, 180, 270):
    /// the stream's display matrix or `rotate` tag.
    pub rotation: i32,
    /// The codec of the first audio stream, if there is one.
    pub audio_codec: Option<String>,
    /// Its sample rate.
    pub audio_sample_rate: Option<u32>,
}

/// What tells FFmpeg's reads to stop (a cancelled query): checked before
/// every read and every packet.
#[derive(Clone, Default)]
pub struct Interrupt(Option<Arc<dyn Fn() -> bool + Send + Sync>>);

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Interrupt(when)"
        } else {
            "Interrupt(never)"
        })
    }
}

impl Interrupt {
    /// Never stops.
    pub fn never() -> Self {
        Self(None)
    }

    /// Stops once `stop` returns true.
    pub fn when(stop: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(stop)))
    }

    /// Whether reading should stop.
    pub fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|stop| stop())
    }
}

#[cfg_attr(not(feature = "video"), allow(dead_code))]
pub(crate) fn check_pixels(
    width: u32,
    height: u32,
    limits: &VideoLimits,
) -> Result<(), MediaError> {
    if width == 0 || height == 0 {
        return Err(MediaError::Damaged {
            format: VIDEO,
            reason: format!("the video stream declares a frame of {width}x{height}"),
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(MediaError::TooLarge {
            format: VIDEO,
            width,
            height,
            limit: format!("{} pixels per frame", limits.max_pixels),
            setting: "SET quiver.media.max_video_pixels",
        });
    }
    Ok(())
}

/// How sampled frames are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameFormat {
    /// Encoded as PNG (lossless; the default).
    #[default]
    Png,
    /// Encoded as JPEG, quality 90.
    Jpeg,
    /// Decoded RGB pixels.
    Raw,
}

impl FrameFormat {
    /// Parses `png`, `jpeg`/`jpg` or `raw`.
    pub fn parse(name: &str) -> Result<Self, MediaError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "raw" => Ok(Self::Raw),
            other => Err(MediaError::Invalid(format!(
                "frame_format must be 'png', 'jpeg' or 'raw', not '{other}'"
            ))),
        }
    }

    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Raw => "raw",
        }
    }
}

/// Which frames to take from a video, and how.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrameSampling {
    /// Frames per second to take: the first frame at or after each tick
    /// `k / fps` seconds (ticks counted from 0, the stream's start).
    pub fps: Option<f64>,
    /// Take every n-th frame by frame index (0, n, 2n, …).
    pub every_n: Option<u64>,
    /// Decode keyframes only (the others are never decoded).
    pub keyframes_only: bool,
    /// The first timestamp wanted, in seconds, and whether it is included;
    /// the decoder seeks to the keyframe at or before it.
    pub start: Option<(f64, bool)>,
    /// The last timestamp wanted, and whether it is included; decoding
    /// stops after it.
    pub end: Option<(f64, bool)>,
    /// Output width; with only one of width and height, the other keeps
    /// the aspect ratio.
    pub width: Option<u32>,
    /// Output height.
    pub height: Option<u32>,
    /// How frames are handed out.
    pub format: FrameFormat,
    /// Whether frames are converted and encoded at all (not when the query
    /// reads only timestamps).
    pub pixels: bool,
    /// Decoder threads (0: FFmpeg decides, 1: none).
    pub threads: usize,
}

/// A sampled frame's picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameImage {
    /// Encoded as the sampling's format asked.
    Encoded(Vec<u8>),
    /// RGB pixels.
    Raw(Pixels),
}

impl FrameImage {
    /// Bytes it holds.
    pub fn len(&self) -> usize {
        match self {
            Self::Encoded(b) => b.len(),
            Self::Raw(p) => p.data.len(),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One sampled frame.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrame {
    /// The frame's number at the stream's nominal rate, from its
    /// timestamp: `round(pts · fps)`.
    pub index: u64,
    /// Presentation time in seconds from the stream's start.
    pub pts: f64,
    /// Whether the frame is a keyframe.
    pub is_keyframe: bool,
    /// Width of the picture handed out.
    pub width: u32,
    /// Height of the picture handed out.
    pub height: u32,
    /// The picture, unless the sampling asked for none.
    pub image: Option<FrameImage>,
}
