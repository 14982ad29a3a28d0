//! The FFmpeg side of [`super`]: opening, probing and decoding.

use std::io::{Read, Seek, SeekFrom};
use std::sync::OnceLock;

use ff::codec::packet::side_data::Type as SideDataType;
use ff::format::context::{Input, StreamIo};
use ff::media::Type as MediaType;
use ffmpeg_next as ff;

use super::{
    FrameFormat, FrameImage, FrameSampling, Interrupt, VIDEO, VideoFrame, VideoInfo, VideoLimits,
    check_pixels,
};
use crate::MediaError;
use crate::Pcm;
use crate::error::{catch_panic, hex_prefix};
use crate::pixels::{EncodeFormat, Pixels, encode};

/// What a video file is expected to be, for messages.
const EXPECTED: &str = "video (MP4, MOV, WebM, MKV, AVI, …)";
/// FFmpeg's I/O buffer; the source decides how much each request fetches.
const IO_BUFFER: usize = 64 * 1024;

/// Starts FFmpeg once and quiets its log (errors are returned, not
/// printed).
fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ff::init().map_err(|e| e.to_string())?;
        ff::log::set_level(ff::log::Level::Quiet);
        Ok(())
    })
    .clone()
    .map_err(|reason| MediaError::Damaged {
        format: VIDEO,
        reason: format!("FFmpeg failed to start: {reason}"),
    })
}

fn damaged(what: &str, e: ff::Error) -> MediaError {
    MediaError::Damaged {
        format: VIDEO,
        reason: format!("{what}: {e}"),
    }
}

/// Opens `source` (named `name`, whose extension helps FFmpeg guess) and
/// finds its streams under `limits`.
fn open<R: Read + Seek + Send + 'static>(
    mut source: R,
    name: &str,
    limits: &VideoLimits,
    interrupt: &Interrupt,
) -> Result<Input, MediaError> {
    init()?;
    let io_err = |what: &str, e: std::io::Error| MediaError::Damaged {
        format: VIDEO,
        reason: format!("{what}: {e}"),
    };
    let size = source
        .seek(SeekFrom::End(0))
        .map_err(|e| io_err("seek", e))?;
    if size == 0 {
        return Err(MediaError::Empty);
    }
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| io_err("seek", e))?;
    let mut head = [0u8; 8];
    let n = source.read(&mut head).map_err(|e| io_err("read", e))?;
    let prefix = hex_prefix(&head[..n]);
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| io_err("seek", e))?;
    let io = StreamIo::from_read_seek_with_capacity(source, IO_BUFFER)
        .map_err(|e| damaged("opening", e))?;
    let mut options = ff::Dictionary::new();
    options.set("probesize", &limits.probe_bytes.max(32).to_string());
    options.set("analyzeduration", &limits.analyze_us.to_string());
    let flag = interrupt.clone();
    ff::format::input_from_stream_with_interrupt(io, Some(name), Some(options), move || {
        flag.is_set()
    })
    .map_err(|e| match e {
        ff::Error::InvalidData => match known_container(&head[..n]) {
            // A container FFmpeg knows that it could not read: damaged.
            Some(what) => MediaError::Damaged {
                format: VIDEO,
                reason: format!("{what} (FFmpeg: {e})"),
            },
            None => MediaError::UnknownFormat {
                expected: EXPECTED,
                prefix,
            },
        },
        ff::Error::Exit => MediaError::Invalid("reading was cancelled".into()),
        other => damaged("opening", other),
    })
}

/// What the first bytes say a file is, when they are a video container's
/// signature.
fn known_container(head: &[u8]) -> Option<&'static str> {
    match head {
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => {
            Some("an MP4/MOV file whose index (moov atom) is missing or cut short")
        }
        [0x1a, 0x45, 0xdf, 0xa3, ..] => Some("a Matroska/WebM file"),
        [b'R', b'I', b'F', b'F', ..] => Some("a RIFF (AVI) file"),
        _ => None,
    }
}

/// The container's short name: the one of the demuxer's names (or its
/// extensions) that the file's extension is, else its first name.
fn container_name(input: &Input, name: &str) -> String {
    let format = input.format();
    let names: Vec<&str> = format.name().split(',').collect();
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !ext.is_empty()
        && (names.contains(&ext.as_str()) || format.extensions().contains(&ext.as_str()))
    {
        return ext;
    }
    names.first().map_or_else(String::new, |n| (*n).to_string())
}

/// A rational as seconds or a rate, when it is one.
fn ratio(r: ff::Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r))
}

/// Degrees from a display matrix (nine 32-bit values, 16.16 fixed
/// point), as FFmpeg's `av_display_rotation_get` reads it: the value the
/// `rotate` tag had when a file was written with `-metadata:s:v rotate=N`.
fn matrix_rotation(data: &[u8]) -> Option<i32> {
    let value = |i: usize| -> Option<f64> {
        let b = data.get(i * 4..i * 4 + 4)?;
        Some(f64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])) / 65536.0)
    };
    let (m0, m1, m3, m4) = (value(0)?, value(1)?, value(3)?, value(4)?);
    let (s0, s1) = (m0.hypot(m3), m1.hypot(m4));
    if s0 == 0.0 || s1 == 0.0 {
        return None;
    }
    let degrees = -(m1 / s1).atan2(m0 / s0).to_degrees();
    Some(normalise_rotation(degrees.round() as i64))
}

fn normalise_rotation(degrees: i64) -> i32 {
    // Multiples of 90 only; anything else rounds to the nearest.
    let quarter = ((degrees as f64) / 90.0).round() as i64;
    (quarter.rem_euclid(4) * 90) as i32
}

fn stream_rotation(stream: &ff::Stream) -> i32 {
    for side in stream.side_data() {
        if side.kind() == SideDataType::DisplayMatrix
            && let Some(r) = matrix_rotation(side.data())
        {
            return r;
        }
    }
    stream
        .metadata()
        .get("rotate")
        .and_then(|r| r.trim().parse::<i64>().ok())
        .map_or(0, normalise_rotation)
}

/// Reads what the headers of the video at `source` say, under `limits`;
/// `name` (a path or key) helps FFmpeg guess the container.
pub fn probe_video<R: Read + Seek + Send + 'static>(
    source: R,
    name: &str,
    limits: &VideoLimits,
) -> Result<VideoInfo, MediaError> {
    catch_panic(VIDEO, || {
        let input = open(source, name, limits, &Interrupt::never())?;
        info(&input, name, limits)
    })
}

fn info(input: &Input, name: &str, limits: &VideoLimits) -> Result<VideoInfo, MediaError> {
    let container = container_name(input, name);
    let stream = input
        .streams()
        .best(MediaType::Video)
        .ok_or_else(|| MediaError::Unsupported {
            format: VIDEO,
            what: format!("{container} without a video stream"),
        })?;
    let params = stream.parameters();
    let codec = params.id().name().to_string();
    let decoder = ff::codec::Context::from_parameters(params.clone())
        .and_then(|c| c.decoder().video())
        .map_err(|e| MediaError::Unsupported {
            format: VIDEO,
            what: format!("{codec} video ({e})"),
        })?;
    let (width, height) = (decoder.width(), decoder.height());
    check_pixels(width, height, limits)?;
    let time_base = ratio(stream.time_base());
    let duration = match (stream.duration(), time_base) {
        (d, Some(tb)) if d > 0 => Some(d as f64 * tb),
        _ => (input.duration() > 0).then(|| input.duration() as f64 / 1_000_000.0),
    };
    let bit_rate = u64::try_from(params.bit_rate())
        .ok()
        .filter(|b| *b > 0)
        .or_else(|| u64::try_from(input.bit_rate()).ok().filter(|b| *b > 0));
    let audio = input.streams().best(MediaType::Audio);
    let audio_codec = audio
        .as_ref()
        .map(|a| a.parameters().id().name().to_string());
    let audio_sample_rate = audio.as_ref().and_then(|a| {
        ff::codec::Context::from_parameters(a.parameters())
            .and_then(|c| c.decoder().audio())
            .ok()
            .map(|d| d.rate())
            .filter(|r| *r > 0)
    });
    Ok(VideoInfo {
        container,
        codec,
        width,
        height,
        fps: ratio(stream.avg_frame_rate()).or_else(|| ratio(stream.rate())),
        duration,
        frame_count: u64::try_from(stream.frames()).ok().filter(|f| *f > 0),
        bit_rate,
        rotation: stream_rotation(&stream),
        audio_codec,
        audio_sample_rate,
    })
}

/// Number of ticks `k / fps` (k ≥ 0) at or before `t`.
fn ticks_through(t: f64, fps: f64) -> i64 {
    if t < 0.0 {
        0
    } else {
        (t * fps + 1e-6).floor() as i64 + 1
    }
}

/// Decodes the frames a [`FrameSampling`] asks for, one at a time.
pub struct FrameReader {
    input: Input,
    decoder: ff::decoder::Video,
    stream: usize,
    /// The stream's time base as numerator and denominator (seconds are
    /// `ts · num / den`, exact for whole-millisecond times).
    time_base: (f64, f64),
    start_time: i64,
    nominal_fps: f64,
    sampling: FrameSampling,
    limits: VideoLimits,
    interrupt: Interrupt,
    /// The previous decoded frame's pts, for the rate sampler.
    prev_pts: Option<f64>,
    /// The stream's length in seconds, when its header says (every frame
    /// starts before it).
    duration: Option<f64>,
    /// A seek ahead to make before decoding on: its target and range, in
    /// microseconds of the container's clock.
    pending_seek: Option<(i64, i64, i64)>,
    /// After a seek ahead, frames at or before this pts were seen already.
    floor: Option<f64>,
    /// Whether the first frame after the last seek is still to come.
    just_sought: bool,
    /// Seeks ahead are tried (off once one landed behind).
    seek_ahead: bool,
    /// The next tick of sampling by rate, once a frame was taken.
    next_tick: Option<f64>,
    /// Whether the decoder is told to skip frames nothing refers to.
    skipping: bool,
    /// The last keyframe's pts and the distance from the one before.
    last_key: Option<f64>,
    key_interval: Option<f64>,
    /// The decoder has been told the input ended.
    flushed: bool,
    /// With `keyframes_only`, the decoder is being drained of the one
    /// keyframe it was given (so that its frame comes out at once instead
    /// of after the decoder's reorder delay, which would decode the next
    /// keyframe only to drop it at the seek ahead).
    draining_key: bool,
    done: bool,
    scaler: Option<(ScaleKey, ff::software::scaling::Context)>,
    frame: ff::frame::Video,
    /// The scaler's output, kept between frames.
    rgb: ff::frame::Video,
    /// Frames decoded so far (all of them, sampled or not).
    decoded: u64,
    /// Packets handed to the decoder so far (a packet decoded and then
    /// dropped by a seek counts here but not in `decoded`).
    sent: u64,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("stream", &self.stream)
            .field("sampling", &self.sampling)
            .field("decoded", &self.decoded)
            .finish()
    }
}

/// Source format and size, and output size, of a scaler.
type ScaleKey = (ff::format::Pixel, u32, u32, u32, u32);

impl FrameReader {
    /// Opens the video at `source` and seeks to the sampling's start.
    /// `interrupt` stops reading when set (a cancelled query).
    pub fn open<R: Read + Seek + Send + 'static>(
        source: R,
        name: &str,
        sampling: FrameSampling,
        limits: VideoLimits,
        interrupt: Interrupt,
    ) -> Result<Self, MediaError> {
        catch_panic(VIDEO, || {
            Self::open_inner(source, name, sampling, limits, interrupt)
        })
    }

    fn open_inner<R: Read + Seek + Send + 'static>(
        source: R,
        name: &str,
        sampling: FrameSampling,
        limits: VideoLimits,
        interrupt: Interrupt,
    ) -> Result<Self, MediaError> {
        if let Some(fps) = sampling.fps
            && !(fps.is_finite() && fps > 0.0)
        {
            return Err(MediaError::Invalid(format!(
                "fps must be a positive number, got {fps}"
            )));
        }
        if sampling.every_n == Some(0) {
            return Err(MediaError::Invalid("every_n must be at least 1".into()));
        }
        let input = open(source, name, &limits, &interrupt)?;
        let container = container_name(&input, name);
        let (stream, time_base, start_time, nominal_fps, params, duration) =
            {
                let s = input.streams().best(MediaType::Video).ok_or_else(|| {
                    MediaError::Unsupported {
                        format: VIDEO,
                        what: format!("{container} without a video stream"),
                    }
                })?;
                let start = s.start_time();
                (
                    s.index(),
                    match s.time_base() {
                        tb if tb.numerator() > 0 && tb.denominator() > 0 => {
                            (f64::from(tb.numerator()), f64::from(tb.denominator()))
                        }
                        _ => (1.0, 90_000.0),
                    },
                    if start == ff::ffi::AV_NOPTS_VALUE {
                        0
                    } else {
                        start
                    },
                    ratio(s.avg_frame_rate())
                        .or_else(|| ratio(s.rate()))
                        .unwrap_or(25.0),
                    s.parameters(),
                    match (s.duration(), ratio(s.time_base())) {
                        (d, Some(tb)) if d > 0 => Some(d as f64 * tb),
                        _ => None,
                    },
                )
            };
        let codec = params.id().name();
        let mut context =
            ff::codec::Context::from_parameters(params).map_err(|e| MediaError::Unsupported {
                format: VIDEO,
                what: format!("{codec} video ({e})"),
            })?;
        context.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: sampling.threads,
            ..Default::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| MediaError::Unsupported {
                format: VIDEO,
                what: format!("{codec} video ({e})"),
            })?;
        check_pixels(decoder.width(), decoder.height(), &limits)?;
        let mut reader = Self {
            input,
            decoder,
            stream,
            time_base,
            start_time,
            nominal_fps,
            sampling,
            limits,
            interrupt,
            prev_pts: None,
            duration,
            pending_seek: None,
            floor: None,
            just_sought: false,
            seek_ahead: true,
            last_key: None,
            key_interval: None,
            next_tick: None,
            skipping: false,
            flushed: false,
            draining_key: false,
            done: false,
            scaler: None,
            frame: ff::frame::Video::empty(),
            rgb: ff::frame::Video::empty(),
            decoded: 0,
            sent: 0,
        };
        if let Some((start, _)) = reader.sampling.start
            && start > 0.0
        {
            // To the keyframe at or before `start` (in AV_TIME_BASE units,
            // microseconds, plus the stream's offset).
            let offset = reader.start_time as f64 * reader.time_base.0 / reader.time_base.1;
            let ts = ((start + offset) * 1_000_000.0) as i64;
            if reader.input.seek(ts, ..ts).is_ok() {
                reader.decoder.flush();
            } else {
                // Not seekable: decode from the beginning.
                reader.input.seek(0, ..0).ok();
            }
        }
        Ok(reader)
    }

    /// Frames decoded so far, sampled or not.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Packets of the video stream handed to the decoder so far.
    pub fn packets_sent(&self) -> u64 {
        self.sent
    }

    /// The next sampled frame, or `None` at the end (of the file or of
    /// the sampling's window).
    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        catch_panic(VIDEO, || self.next_inner())
    }

    fn next_inner(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        if let Some((min, ts, max)) = self.pending_seek.take()
            && self.seek_ahead
            && !self.flushed
            && self.input.seek(ts, min..max).is_ok()
        {
            self.decoder.flush();
            self.floor = self.prev_pts;
            self.just_sought = true;
        }
        while !self.done {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    self.decoded += 1;
                    if let Some(out) = self.sample()? {
                        return Ok(Some(out));
                    }
                }
                Err(ff::Error::Eof) if self.draining_key => {
                    // The keyframe is out: ready for the next one.
                    self.decoder.flush();
                    self.draining_key = false;
                }
                Err(ff::Error::Eof) => self.done = true,
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => self.feed()?,
                Err(e) => return Err(damaged("decoding", e)),
            }
        }
        Ok(None)
    }

    /// Sends the next packet of the stream to the decoder (or the end).
    fn feed(&mut self) -> Result<(), MediaError> {
        if self.flushed {
            self.done = true;
            return Ok(());
        }
        let mut packet = ff::Packet::empty();
        loop {
            if self.interrupt.is_set() {
                return Err(MediaError::Invalid("reading was cancelled".into()));
            }
            match packet.read(&mut self.input) {
                Ok(()) => {
                    if packet.stream() != self.stream {
                        continue;
                    }
                    if self.sampling.keyframes_only && !packet.is_key() {
                        continue;
                    }
                    // Frames no sampling can take are skipped by the decoder
                    // when nothing refers to them.
                    let skippable = packet.pts().is_some_and(|ts| {
                        let pts =
                            (ts - self.start_time) as f64 * self.time_base.0 / self.time_base.1;
                        self.cannot_take(pts)
                    });
                    if skippable != self.skipping {
                        self.skipping = skippable;
                        self.decoder.skip_frame(if skippable {
                            ff::Discard::NonReference
                        } else {
                            ff::Discard::Default
                        });
                    }
                    let sent = self.decoder.send_packet(&packet);
                    if sent.is_ok() {
                        self.sent += 1;
                    }
                    return match sent {
                        Ok(()) if self.sampling.keyframes_only => {
                            // A keyframe depends on nothing before or after it.
                            self.draining_key = true;
                            self.decoder.send_eof().map_err(|e| damaged("decoding", e))
                        }
                        Ok(()) => Ok(()),
                        // A damaged packet: the decoder conceals what it can;
                        // go on with the next.
                        Err(ff::Error::InvalidData) => continue,
                        Err(e) => Err(damaged("decoding", e)),
                    };
                }
                Err(ff::Error::Eof) => {
                    self.flushed = true;
                    return self.decoder.send_eof().map_err(|e| damaged("decoding", e));
                }
                Err(ff::Error::Exit) => {
                    return Err(MediaError::Invalid("reading was cancelled".into()));
                }
                Err(e) => return Err(damaged("reading", e)),
            }
        }
    }

    /// The decoded frame, if the sampling takes it.
    fn sample(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        let Some(ts) = self.frame.timestamp().or(self.frame.pts()) else {
            return Ok(None);
        };
        let pts = (ts - self.start_time) as f64 * self.time_base.0 / self.time_base.1;
        if let Some(floor) = self.floor {
            if pts <= floor + 1e-9 {
                // Seen before the seek: the seek landed behind, so stop
                // seeking ahead in this file.
                if self.just_sought {
                    self.seek_ahead = false;
                }
                self.just_sought = false;
                return Ok(None);
            }
            self.floor = None;
            self.just_sought = false;
        }
        if self.frame.is_key() {
            if let Some(k) = self.last_key
                && pts > k
            {
                self.key_interval = Some(pts - k);
            }
            self.last_key = Some(pts);
        }
        let prev = self.prev_pts.unwrap_or_else(|| {
            if self.sampling.start.is_some() {
                pts - 1.0 / self.nominal_fps
            } else {
                f64::NEG_INFINITY
            }
        });
        self.prev_pts = Some(pts);
        if let Some((end, inclusive)) = self.sampling.end
            && (pts > end || (!inclusive && pts >= end))
        {
            self.done = true;
            return Ok(None);
        }
        let index = (pts * self.nominal_fps).round().max(0.0) as u64;
        if let Some(fps) = self.sampling.fps
            && ticks_through(pts, fps) <= ticks_through(prev, fps)
        {
            return Ok(None);
        }
        if let Some(n) = self.sampling.every_n
            && !index.is_multiple_of(n)
        {
            return Ok(None);
        }
        if let Some((start, inclusive)) = self.sampling.start
            && (pts < start || (!inclusive && pts <= start))
        {
            return Ok(None);
        }
        let is_keyframe = self.frame.is_key();
        self.plan_seek_ahead(pts);
        let (width, height) = self.output_size();
        let image = if self.sampling.pixels {
            Some(self.picture(width, height)?)
        } else {
            None
        };
        Ok(Some(VideoFrame {
            index,
            pts,
            is_keyframe,
            width,
            height,
            image,
        }))
    }

    /// After taking the frame at `pts`, plans a seek past frames no
    /// sampled frame can come from: with `keyframes_only`, to the next
    /// keyframe; with `fps`, to the keyframe at or before the next tick when
    /// the keyframes seen so far say one lies between here and there (the
    /// frames before it are decoded only to be dropped). The rows are the
    /// same as without seeking: frames at or before `pts` met again after a
    /// seek are dropped, and a seek that lands behind stops seeking.
    fn plan_seek_ahead(&mut self, pts: f64) {
        let offset = self.start_time as f64 * self.time_base.0 / self.time_base.1;
        let micros = |t: f64| ((t + offset) * 1_000_000.0) as i64;
        if self.sampling.keyframes_only {
            // One tick of the stream's clock later, rounded up: FFmpeg
            // rounds a seek target to the nearest tick, so `micros(pts) + 1`
            // would land on this keyframe again.
            let tick = self.time_base.0 / self.time_base.1;
            let next = ((pts + tick + offset) * 1_000_000.0).ceil() as i64;
            self.pending_seek = Some((next, next, i64::MAX));
            return;
        }
        let Some(fps) = self.sampling.fps else {
            return;
        };
        let tick = ticks_through(pts, fps) as f64 / fps;
        self.next_tick = Some(tick);
        if self.duration.is_some_and(|d| tick >= d - 1e-9) {
            // No frame lies at or after the next tick.
            self.done = true;
            return;
        }
        let (Some(key), Some(interval)) = (self.last_key, self.key_interval) else {
            return;
        };
        let next_key = key + interval;
        let within_end = self.sampling.end.is_none_or(|(end, _)| tick <= end);
        // Worth it when at least two frames lie between here and the key.
        if within_end && next_key <= tick + 1e-9 && next_key - pts > 2.0 / self.nominal_fps {
            let target = micros(tick);
            self.pending_seek = Some((i64::MIN, target, target));
        }
    }

    /// Whether a frame at `pts` (from its packet) cannot be taken: before
    /// the next tick when sampling by rate, else before the window or off
    /// the every-n grid.
    fn cannot_take(&self, pts: f64) -> bool {
        if self.sampling.fps.is_some() {
            return self.next_tick.is_some_and(|t| pts < t - 1e-9);
        }
        let before = self
            .sampling
            .start
            .is_some_and(|(start, inclusive)| pts < start || (!inclusive && pts <= start));
        let off_grid = self
            .sampling
            .every_n
            .is_some_and(|n| !((pts * self.nominal_fps).round().max(0.0) as u64).is_multiple_of(n));
        before || off_grid
    }

    fn output_size(&self) -> (u32, u32) {
        let (w, h) = (self.frame.width().max(1), self.frame.height().max(1));
        let scaled = |other: u32, num: u32, den: u32| -> u32 {
            ((u64::from(other) * u64::from(num) + u64::from(den) / 2) / u64::from(den)).max(1)
                as u32
        };
        match (self.sampling.width, self.sampling.height) {
            (Some(tw), Some(th)) => (tw, th),
            (Some(tw), None) => (tw, scaled(tw, h, w)),
            (None, Some(th)) => (scaled(th, w, h), th),
            (None, None) => (w, h),
        }
    }

    /// The frame as RGB at `width` × `height`, encoded as asked.
    fn picture(&mut self, width: u32, height: u32) -> Result<FrameImage, MediaError> {
        check_pixels(width, height, &self.limits)?;
        let key = (
            self.frame.format(),
            self.frame.width(),
            self.frame.height(),
            width,
            height,
        );
        if self.scaler.as_ref().is_none_or(|(k, _)| *k != key) {
            let scaler = ff::software::scaling::Context::get(
                key.0,
                key.1,
                key.2,
                ff::format::Pixel::RGB24,
                width,
                height,
                ff::software::scaling::Flags::BILINEAR,
            )
            .map_err(|e| damaged("converting a frame", e))?;
            self.scaler = Some((key, scaler));
            // A new size needs a new output frame.
            self.rgb = ff::frame::Video::empty();
        }
        if let Some((_, scaler)) = self.scaler.as_mut() {
            // Into the kept RGB frame: its buffer is reused for every frame
            // of the same size instead of allocated (and paged in) anew.
            scaler
                .run(&self.frame, &mut self.rgb)
                .map_err(|e| damaged("converting a frame", e))?;
        }
        let row = width as usize * 3;
        let stride = self.rgb.stride(0);
        let plane = self.rgb.data(0);
        let short = || MediaError::Damaged {
            format: VIDEO,
            reason: "a converted frame is shorter than its size".into(),
        };
        if stride == row && self.sampling.format == FrameFormat::Png {
            // Rows without padding: encoded where they lie, not copied.
            let rgb = plane.get(..row * height as usize).ok_or_else(short)?;
            return Ok(FrameImage::Encoded(fast_png(rgb, width, height)?));
        }
        let mut data = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            let line = plane.get(y * stride..y * stride + row).ok_or_else(short)?;
            data.extend_from_slice(line);
        }
        let pixels = Pixels {
            width,
            height,
            channels: 3,
            data,
        };
        Ok(match self.sampling.format {
            FrameFormat::Raw => FrameImage::Raw(pixels),
            FrameFormat::Png => FrameImage::Encoded(fast_png(&pixels.data, width, height)?),
            FrameFormat::Jpeg => {
                FrameImage::Encoded(encode(&pixels, EncodeFormat::Jpeg, Some(90))?)
            }
        })
    }
}

/// PNG with fast compression and the `Sub` filter: about twice as fast as
/// adaptive filtering on video frames, for a few percent more bytes.
fn fast_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, MediaError> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut out = Vec::with_capacity(rgb.len() / 2);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|source| MediaError::Encode {
            format: "png",
            source,
        })?;
    Ok(out)
}

/// One sample of `kind` from its little-endian bytes, as f32 in [-1, 1].
fn sample_f32(kind: ff::format::Sample, b: &[u8]) -> f32 {
    use ff::format::Sample as S;
    match (kind, b) {
        (S::U8(_), [x, ..]) => (f32::from(*x) - 128.0) / 128.0,
        (S::I16(_), [x, y, ..]) => f32::from(i16::from_le_bytes([*x, *y])) / 32768.0,
        (S::I32(_), [a, b2, c, d, ..]) => {
            i32::from_le_bytes([*a, *b2, *c, *d]) as f32 / 2_147_483_648.0
        }
        (S::F32(_), [a, b2, c, d, ..]) => f32::from_le_bytes([*a, *b2, *c, *d]),
        (S::F64(_), [a, b2, c, d, e, f, g, h, ..]) => {
            f64::from_le_bytes([*a, *b2, *c, *d, *e, *f, *g, *h]) as f32
        }
        _ => 0.0,
    }
}

/// Appends a decoded audio frame to `out`, interleaved.
fn append_audio(frame: &ff::frame::Audio, out: &mut Vec<f32>) -> Result<(), MediaError> {
    let kind = frame.format();
    let width = kind.bytes();
    let channels = usize::from(frame.channels());
    let n = frame.samples();
    if width == 0 || channels == 0 || matches!(kind, ff::format::Sample::I64(_)) {
        return Err(MediaError::Unsupported {
            format: VIDEO,
            what: format!("audio samples of format {}", kind.name()),
        });
    }
    let short = || MediaError::Damaged {
        format: VIDEO,
        reason: "a decoded audio frame is shorter than its sample count".into(),
    };
    if frame.is_planar() {
        let planes: Vec<&[u8]> = (0..channels.min(frame.planes()))
            .map(|c| frame.data(c))
            .collect();
        if planes.len() != channels {
            return Err(short());
        }
        for i in 0..n {
            for plane in &planes {
                let b = plane.get(i * width..(i + 1) * width).ok_or_else(short)?;
                out.push(sample_f32(kind, b));
            }
        }
    } else {
        let data = frame
            .data(0)
            .get(..n * channels * width)
            .ok_or_else(short)?;
        out.extend(data.chunks_exact(width).map(|b| sample_f32(kind, b)));
    }
    Ok(())
}

/// The first audio stream of the video at `source`, decoded whole to
/// interleaved samples at its own rate and channels; `None` when the file
/// has no audio. More than `max_bytes` of f32 samples is refused.
pub fn decode_video_audio<R: Read + Seek + Send + 'static>(
    source: R,
    name: &str,
    limits: &VideoLimits,
    max_bytes: u64,
    interrupt: Interrupt,
) -> Result<Option<Pcm>, MediaError> {
    catch_panic(VIDEO, || {
        let mut input = open(source, name, limits, &interrupt)?;
        let Some((stream, params)) = input
            .streams()
            .best(MediaType::Audio)
            .map(|s| (s.index(), s.parameters()))
        else {
            return Ok(None);
        };
        let codec = params.id().name();
        let mut decoder = ff::codec::Context::from_parameters(params)
            .and_then(|c| c.decoder().audio())
            .map_err(|e| MediaError::Unsupported {
                format: VIDEO,
                what: format!("{codec} audio ({e})"),
            })?;
        let (rate, channels) = (decoder.rate(), decoder.channels());
        let mut samples = vec![];
        let mut frame = ff::frame::Audio::empty();
        let mut packet = ff::Packet::empty();
        let mut ended = false;
        loop {
            match decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    append_audio(&frame, &mut samples)?;
                    if samples.len() as u64 * 4 > max_bytes {
                        return Err(MediaError::AudioTooLarge {
                            format: VIDEO,
                            seconds: samples.len() as f64
                                / f64::from(rate.max(1))
                                / f64::from(channels.max(1)),
                            channels,
                            limit: max_bytes,
                            setting: crate::audio::MAX_AUDIO_ALLOC_SETTING,
                        });
                    }
                }
                Err(ff::Error::Eof) => break,
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => {
                    if ended {
                        break;
                    }
                    loop {
                        if interrupt.is_set() {
                            return Err(MediaError::Invalid("reading was cancelled".into()));
                        }
                        match packet.read(&mut input) {
                            Ok(()) if packet.stream() != stream => continue,
                            Ok(()) => match decoder.send_packet(&packet) {
                                Ok(()) | Err(ff::Error::InvalidData) => break,
                                Err(e) => return Err(damaged("decoding audio", e)),
                            },
                            Err(ff::Error::Eof) => {
                                ended = true;
                                decoder
                                    .send_eof()
                                    .map_err(|e| damaged("decoding audio", e))?;
                                break;
                            }
                            Err(e) => return Err(damaged("reading", e)),
                        }
                    }
                }
                Err(e) => return Err(damaged("decoding audio", e)),
            }
        }
        Ok(Some(Pcm {
            sample_rate: rate.max(1),
            channels: channels.max(1),
            samples,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Encodes a test pattern with Debian's ffmpeg CLI.
    fn make(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let out = dir.join(name);
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(args)
            .arg(&out)
            .status()
            .expect("ffmpeg runs (the set-up installs it)");
        assert!(status.success(), "ffmpeg made {name}");
        out
    }

    fn h264(dir: &Path) -> PathBuf {
        make(
            dir,
            "clip.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100",
                "-t",
                "4",
                "-c:v",
                "libx264",
                "-g",
                "50",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-shortest",
            ],
        )
    }

    fn file(path: &Path) -> std::fs::File {
        std::fs::File::open(path).expect("fixture opens")
    }

    fn frames(path: &Path, sampling: FrameSampling) -> Vec<VideoFrame> {
        frames_and_counts(path, sampling).0
    }

    /// The sampled frames, how many frames were decoded to get them and
    /// how many packets the decoder was given.
    fn frames_and_counts(path: &Path, sampling: FrameSampling) -> (Vec<VideoFrame>, u64, u64) {
        let mut reader = FrameReader::open(
            file(path),
            &path.to_string_lossy(),
            sampling,
            VideoLimits::default(),
            Interrupt::never(),
        )
        .expect("opens");
        let mut out = vec![];
        while let Some(f) = reader.next_frame().expect("decodes") {
            out.push(f);
        }
        (out, reader.decoded(), reader.packets_sent())
    }

    #[test]
    fn probes_an_h264_mp4_with_audio() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = h264(dir.path());
        let info = probe_video(file(&path), "clip.mp4", &VideoLimits::default()).expect("probe");
        assert_eq!(info.container, "mp4");
        assert_eq!(info.codec, "h264");
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(info.fps, Some(25.0));
        let duration = info.duration.expect("duration");
        assert!((duration - 4.0).abs() < 0.05, "{duration}");
        assert_eq!(info.frame_count, Some(100));
        assert_eq!(info.rotation, 0);
        assert_eq!(info.audio_codec.as_deref(), Some("aac"));
        assert_eq!(info.audio_sample_rate, Some(44100));
    }

    #[test]
    fn rotation_comes_from_the_display_matrix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = h264(dir.path());
        let src = src.to_string_lossy().to_string();
        let rotated = make(
            dir.path(),
            "rotated.mp4",
            &["-i", &src, "-c", "copy", "-metadata:s:v", "rotate=90"],
        );
        let info =
            probe_video(file(&rotated), "rotated.mp4", &VideoLimits::default()).expect("probe");
        assert_eq!(info.rotation, 90);
    }

    #[test]
    fn samples_one_frame_per_second_at_or_after_each_tick() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = h264(dir.path());
        let got = frames(
            &path,
            FrameSampling {
                fps: Some(1.0),
                pixels: true,
                ..Default::default()
            },
        );
        let pts: Vec<f64> = got.iter().map(|f| f.pts).collect();
        assert_eq!(pts, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            got.iter().map(|f| f.index).collect::<Vec<_>>(),
            vec![0, 25, 50, 75]
        );
        // Once two keyframes (0 s, 2 s) show the GOP, the frames between a
        // tick and the next keyframe are skipped by a seek: after 3 s the
        // decoder jumps to 4 s... which is past the end here, so a longer
        // clip shows it.
        let dir2 = tempfile::tempdir().expect("temp dir");
        let long = make(
            dir2.path(),
            "long.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=160x120:rate=25:duration=10",
                "-c:v",
                "libx264",
                "-g",
                "50",
                "-pix_fmt",
                "yuv420p",
            ],
        );
        let (got_long, decoded, _) = frames_and_counts(
            &long,
            FrameSampling {
                fps: Some(1.0),
                ..Default::default()
            },
        );
        let pts: Vec<f64> = got_long.iter().map(|f| f.pts).collect();
        assert_eq!(pts, (0..10).map(f64::from).collect::<Vec<_>>());
        // 0–3 s decoded in full (76 frames), then 4, 4–5, 6, 6–7, 8, 8–9.
        assert!(decoded < 200, "decoded {decoded}");
        let keys = frames(
            &long,
            FrameSampling {
                keyframes_only: true,
                ..Default::default()
            },
        );
        assert_eq!(
            keys.iter().map(|f| f.pts).collect::<Vec<_>>(),
            vec![0.0, 2.0, 4.0, 6.0, 8.0]
        );
        // GOP of 50 frames: keyframes at 0 s and 2 s.
        assert_eq!(
            got.iter().map(|f| f.is_keyframe).collect::<Vec<_>>(),
            vec![true, false, true, false]
        );
        let Some(FrameImage::Encoded(png)) = &got[0].image else {
            panic!("an encoded frame");
        };
        let info = crate::probe_image(png).expect("a png");
        assert_eq!((info.width, info.height), (320, 240));
    }

    #[test]
    fn keyframes_window_every_n_and_scaling() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = h264(dir.path());
        let keys = frames(
            &path,
            FrameSampling {
                keyframes_only: true,
                ..Default::default()
            },
        );
        assert_eq!(
            keys.iter().map(|f| f.pts).collect::<Vec<_>>(),
            vec![0.0, 2.0]
        );
        // Each keyframe is decoded once: none is decoded again after the
        // seek to the next one (FFmpeg rounds seek targets to the nearest
        // tick), and none is sent only to be flushed by a seek while the
        // decoder held it back for reordering. Both come out as PNGs of
        // the kept conversion buffer.
        let (pngs, decoded, sent) = frames_and_counts(
            &path,
            FrameSampling {
                keyframes_only: true,
                pixels: true,
                ..Default::default()
            },
        );
        assert_eq!((decoded, sent), (2, 2));
        let raw = frames(
            &path,
            FrameSampling {
                keyframes_only: true,
                pixels: true,
                format: FrameFormat::Raw,
                ..Default::default()
            },
        );
        assert_eq!(raw.len(), pngs.len());
        for (f, r) in pngs.iter().zip(&raw) {
            let (Some(FrameImage::Encoded(png)), Some(FrameImage::Raw(r))) = (&f.image, &r.image)
            else {
                panic!("a png and raw pixels");
            };
            let decoded = crate::pixels::decode(png, &crate::DecodeLimits::default(), None)
                .expect("png decodes");
            assert_eq!((decoded.width, decoded.height), (320, 240));
            assert!(decoded.data == r.data, "the PNG holds the frame's pixels");
        }
        let window = frames(
            &path,
            FrameSampling {
                start: Some((2.5, true)),
                end: Some((3.0, false)),
                every_n: Some(5),
                width: Some(64),
                format: FrameFormat::Raw,
                pixels: true,
                ..Default::default()
            },
        );
        assert_eq!(
            window.iter().map(|f| f.index).collect::<Vec<_>>(),
            vec![65, 70]
        );
        let Some(FrameImage::Raw(p)) = &window[0].image else {
            panic!("raw pixels");
        };
        assert_eq!((p.width, p.height, p.channels), (64, 48, 3));
        // The sampler decodes from the keyframe at 2 s, not from 0.
        let mut reader = FrameReader::open(
            file(&path),
            "clip.mp4",
            FrameSampling {
                start: Some((2.5, true)),
                ..Default::default()
            },
            VideoLimits::default(),
            Interrupt::never(),
        )
        .expect("opens");
        let first = reader.next_frame().expect("decodes").expect("a frame");
        assert!((first.pts - 2.52).abs() < 0.001 || (first.pts - 2.5).abs() < 0.001);
        assert!(reader.decoded() <= 14, "decoded {}", reader.decoded());
    }

    #[test]
    fn bad_files_have_clear_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = h264(dir.path());
        let bytes = std::fs::read(&path).expect("read");
        let limits = VideoLimits::default();
        let cursor = |b: &[u8]| std::io::Cursor::new(b.to_vec());
        let err = probe_video(cursor(&[]), "empty.mp4", &limits).expect_err("empty");
        assert_eq!(err.to_string(), "empty file");
        let err = probe_video(cursor(b"hello, world\n"), "text.mp4", &limits).expect_err("text");
        assert!(err.to_string().contains("not a supported video"), "{err}");
        // The index (moov) of this file is at its end: cut it off.
        let err = probe_video(cursor(&bytes[..bytes.len() / 2]), "cut.mp4", &limits)
            .expect_err("truncated");
        assert!(err.to_string().contains("video"), "{err}");
        let small = VideoLimits {
            max_pixels: 1000,
            ..limits
        };
        let err = probe_video(cursor(&bytes), "big.mp4", &small).expect_err("too large");
        assert!(err.to_string().contains("320x240"), "{err}");
    }
}
