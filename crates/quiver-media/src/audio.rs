//! Audio: format detection from the bytes, header-only probing (the
//! duration comes from the container and stream headers, not a decode),
//! decoding under limits to interleaved `f32` PCM, resampling, mixing
//! down, slicing, levels and encoding.
//!
//! Decoding goes through symphonia (WAV, FLAC, MP3, Ogg Vorbis, AAC in
//! M4A/MP4 or ADTS); resampling through rubato's FFT resampler; WAV and
//! FLAC are written with hound and flacenc.

use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, SeekMode, SeekTo, Track, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::{MetadataOptions, StandardTag};
use symphonia::core::units::Time;

use crate::MediaError;
use crate::error::{catch_panic, hex_prefix};

/// The formats `read_audio` recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// RIFF WAVE (PCM 8/16/24/32-bit, float, ADPCM).
    Wav,
    /// Free Lossless Audio Codec.
    Flac,
    /// MPEG audio layer III (and I/II).
    Mp3,
    /// Ogg (Vorbis).
    Ogg,
    /// MPEG-4 audio (AAC in M4A/MP4).
    M4a,
    /// Raw AAC in ADTS frames.
    Aac,
}

impl AudioFormat {
    /// The lower-case name shown in the `format` column.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Flac => "flac",
            Self::Mp3 => "mp3",
            Self::Ogg => "ogg",
            Self::M4a => "m4a",
            Self::Aac => "aac",
        }
    }

    /// Whether the container states the exact length, so that a decode
    /// that falls short of it means a truncated file. (MP3 without a Xing
    /// header and ADTS have only an estimate.)
    fn exact_length(self) -> bool {
        matches!(self, Self::Wav | Self::Flac | Self::Ogg | Self::M4a)
    }
}

/// What [`MediaError::UnknownFormat`] says was expected.
const EXPECTED: &str = "audio file (WAV, FLAC, MP3, Ogg Vorbis, AAC/M4A)";

/// Detects the format from the first bytes (an ID3v2 tag in front is
/// skipped when the bytes reach past it).
pub fn detect_audio_format(data: &[u8]) -> Option<AudioFormat> {
    if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WAVE" {
        return Some(AudioFormat::Wav);
    }
    if data.starts_with(b"fLaC") {
        return Some(AudioFormat::Flac);
    }
    if data.starts_with(b"OggS") {
        return Some(AudioFormat::Ogg);
    }
    if data.len() >= 8 && &data[4..8] == b"ftyp" {
        return Some(AudioFormat::M4a);
    }
    if data.len() >= 10 && data.starts_with(b"ID3") {
        let size = data[6..10]
            .iter()
            .fold(0usize, |acc, b| (acc << 7) | usize::from(b & 0x7f));
        let footer = if data[5] & 0x10 != 0 { 10 } else { 0 };
        let after = 10 + size + footer;
        return match data.get(after..) {
            Some(rest) if rest.len() >= 4 => match detect_audio_format(rest) {
                Some(f) => Some(f),
                // Padding after the tag: assume the usual MP3.
                None => Some(AudioFormat::Mp3),
            },
            _ => Some(AudioFormat::Mp3),
        };
    }
    if data.len() >= 2 && data[0] == 0xff && data[1] & 0xe0 == 0xe0 {
        let layer = (data[1] >> 1) & 0x3;
        if layer == 0 {
            return (data[1] & 0xf6 == 0xf0).then_some(AudioFormat::Aac);
        }
        return Some(AudioFormat::Mp3);
    }
    None
}

/// Tags found in the file's metadata (ID3, Vorbis comments, RIFF INFO,
/// MP4 atoms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioTags {
    /// Track title.
    pub title: Option<String>,
    /// Artist.
    pub artist: Option<String>,
    /// Album.
    pub album: Option<String>,
    /// Album artist.
    pub album_artist: Option<String>,
    /// Genre.
    pub genre: Option<String>,
    /// Recording or release date, as written.
    pub date: Option<String>,
    /// Track number.
    pub track: Option<u32>,
    /// Comment.
    pub comment: Option<String>,
}

impl AudioTags {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// What the headers say about a file.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    /// The container.
    pub format: AudioFormat,
    /// The codec's short name (`pcm_s16le`, `flac`, `mp3`, `vorbis`, `aac`).
    pub codec: &'static str,
    /// Samples per second.
    pub sample_rate: Option<u32>,
    /// Channels.
    pub channels: Option<u16>,
    /// Length in frames (samples per channel), when the headers say.
    pub frames: Option<u64>,
    /// Length in seconds, when the headers say.
    pub duration: Option<f64>,
    /// Bits per sample of the stored samples (lossless formats).
    pub bit_depth: Option<u32>,
    /// Metadata tags; `None` when the file has none.
    pub tags: Option<AudioTags>,
}

/// Some byte ranges of a file (its head, its tail, or all of it), seen by
/// symphonia as a seekable file of the full length. A read outside them
/// fails and is remembered, so that the caller can fetch the whole file and
/// try again.
struct Ranges<'a> {
    parts: Vec<(u64, &'a [u8])>,
    len: u64,
    pos: u64,
    missed: Arc<AtomicBool>,
}

impl Read for Ranges<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        for (start, part) in &self.parts {
            if self.pos >= *start && self.pos < start + part.len() as u64 {
                let off = usize::try_from(self.pos - start).unwrap_or(usize::MAX);
                let n = buf.len().min(part.len() - off);
                buf[..n].copy_from_slice(&part[off..off + n]);
                self.pos += n as u64;
                return Ok(n);
            }
        }
        self.missed.store(true, Ordering::Relaxed);
        Err(io::Error::other("read beyond the bytes fetched"))
    }
}

impl Seek for Ranges<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            )),
        }
    }
}

impl MediaSource for Ranges<'_> {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// Opens a format reader over `parts` of a file of `len` bytes.
fn open<'a>(
    format: AudioFormat,
    parts: Vec<(u64, &'a [u8])>,
    len: u64,
    missed: &Arc<AtomicBool>,
) -> Result<Box<dyn FormatReader + 'a>, SymphoniaError> {
    let source = Ranges {
        parts,
        len,
        pos: 0,
        missed: Arc::clone(missed),
    };
    let mss = MediaSourceStream::new(Box::new(source), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    hint.with_extension(format.name());
    symphonia::default::get_probe().probe(
        &hint,
        mss,
        FormatOptions::default(),
        MetadataOptions::default(),
    )
}

/// Turns a symphonia error into a [`MediaError`].
fn media_error(format: AudioFormat, missed: &AtomicBool, e: SymphoniaError) -> MediaError {
    if missed.load(Ordering::Relaxed) {
        return MediaError::Incomplete;
    }
    match e {
        SymphoniaError::Unsupported(what) => MediaError::Unsupported {
            format: format.name(),
            what: what.to_string(),
        },
        SymphoniaError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            MediaError::Damaged {
                format: format.name(),
                reason: "truncated: the file ends inside its header".to_string(),
            }
        }
        other => MediaError::Damaged {
            format: format.name(),
            reason: other.to_string(),
        },
    }
}

fn detect(data: &[u8]) -> Result<AudioFormat, MediaError> {
    if data.is_empty() {
        return Err(MediaError::Empty);
    }
    detect_audio_format(data).ok_or_else(|| MediaError::UnknownFormat {
        expected: EXPECTED,
        prefix: hex_prefix(data),
    })
}

/// The audio track and its decoder's name.
fn audio_track(
    format: AudioFormat,
    reader: &dyn FormatReader,
) -> Result<(Track, &'static str), MediaError> {
    let track = reader
        .default_track(TrackType::Audio)
        .cloned()
        .ok_or_else(|| MediaError::Damaged {
            format: format.name(),
            reason: "no audio track".to_string(),
        })?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| MediaError::Unsupported {
            format: format.name(),
            what: "a track without audio codec parameters".to_string(),
        })?;
    let codec = symphonia::default::get_codecs()
        .get_audio_decoder(params.codec)
        .map(|d| d.codec.info.short_name)
        .ok_or_else(|| MediaError::Unsupported {
            format: format.name(),
            what: format!(
                "audio codec {} (Opus and others have no decoder here)",
                params.codec
            ),
        })?;
    Ok((track, codec))
}

/// Reads format, codec, rate, channels, length and tags from the headers.
///
/// `parts` are byte ranges of a file of `len` bytes, `(offset, bytes)`,
/// e.g. its first and last 64 KiB; [`MediaError::Incomplete`] means the
/// headers need bytes outside them (read the whole file and call again).
pub fn probe_audio(parts: &[(u64, &[u8])], len: u64) -> Result<AudioInfo, MediaError> {
    let first = parts
        .iter()
        .find(|(start, _)| *start == 0)
        .map(|(_, b)| *b)
        .unwrap_or_default();
    if len == 0 {
        return Err(MediaError::Empty);
    }
    let format = detect(first)?;
    catch_panic(format.name(), || {
        let missed = Arc::new(AtomicBool::new(false));
        let mut reader = open(format, parts.to_vec(), len, &missed)
            .map_err(|e| media_error(format, &missed, e))?;
        let (track, codec) = audio_track(format, reader.as_ref())?;
        let params = track.codec_params.as_ref().and_then(|p| p.audio());
        let sample_rate = params.and_then(|p| p.sample_rate);
        let channels = params
            .and_then(|p| p.channels.as_ref())
            .and_then(|c| u16::try_from(c.count()).ok());
        let bit_depth = params.and_then(|p| p.bits_per_sample);
        let frames = track.num_frames;
        let duration = match (track.time_base, track.duration) {
            (Some(tb), Some(d)) => tb.calc_duration(d).map(|t| t.as_secs_f64()),
            _ => None,
        }
        .or_else(|| match (frames, sample_rate) {
            (Some(n), Some(r)) if r > 0 => Some(n as f64 / f64::from(r)),
            _ => None,
        });
        let tags = read_tags(reader.as_mut());
        Ok(AudioInfo {
            format,
            codec,
            sample_rate,
            channels,
            frames,
            duration,
            bit_depth,
            tags,
        })
    })
}

/// [`probe_audio`] over a whole file in memory.
pub fn probe_audio_bytes(data: &[u8]) -> Result<AudioInfo, MediaError> {
    probe_audio(&[(0, data)], data.len() as u64)
}

fn read_tags(reader: &mut dyn FormatReader) -> Option<AudioTags> {
    let mut tags = AudioTags::default();
    let mut metadata = reader.metadata();
    let revision = metadata.skip_to_latest()?;
    let all = revision.media.tags.iter().chain(
        revision
            .per_track
            .iter()
            .flat_map(|t| t.metadata.tags.iter()),
    );
    for tag in all {
        let Some(std) = &tag.std else { continue };
        let text = |s: &Arc<String>| Some(s.trim_end_matches('\0').to_string());
        match std {
            StandardTag::TrackTitle(s) => tags.title = tags.title.take().or_else(|| text(s)),
            StandardTag::Artist(s) => tags.artist = tags.artist.take().or_else(|| text(s)),
            StandardTag::Album(s) => tags.album = tags.album.take().or_else(|| text(s)),
            StandardTag::AlbumArtist(s) => {
                tags.album_artist = tags.album_artist.take().or_else(|| text(s));
            }
            StandardTag::Genre(s) => tags.genre = tags.genre.take().or_else(|| text(s)),
            StandardTag::RecordingDate(s) | StandardTag::ReleaseDate(s) => {
                tags.date = tags.date.take().or_else(|| text(s));
            }
            StandardTag::RecordingYear(y) | StandardTag::ReleaseYear(y) => {
                tags.date = tags.date.take().or_else(|| Some(y.to_string()));
            }
            StandardTag::TrackNumber(n) => {
                tags.track = tags.track.or_else(|| u32::try_from(*n).ok());
            }
            StandardTag::Comment(s) => tags.comment = tags.comment.take().or_else(|| text(s)),
            _ => {}
        }
    }
    (!tags.is_empty()).then_some(tags)
}

/// Decoded audio: interleaved samples (`L R L R …` for stereo) in
/// `[-1, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Interleaved samples, `frames × channels` of them.
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.view().frames()
    }

    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        self.view().duration()
    }
}

/// Borrowed decoded audio: [`Pcm`] without owning its samples (a row of
/// an Arrow column, say).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PcmRef<'a> {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Interleaved samples.
    pub samples: &'a [f32],
}

impl PcmRef<'_> {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.frames() as f64 / f64::from(self.sample_rate)
        }
    }

    /// An owned copy.
    pub fn to_pcm(&self) -> Pcm {
        Pcm {
            sample_rate: self.sample_rate,
            channels: self.channels,
            samples: self.samples.to_vec(),
        }
    }
}

impl Pcm {
    /// A borrowed view.
    pub fn view(&self) -> PcmRef<'_> {
        PcmRef {
            sample_rate: self.sample_rate,
            channels: self.channels,
            samples: &self.samples,
        }
    }
}

/// Limits on every audio decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLimits {
    /// Bytes of decoded `f32` samples one decode may hold.
    pub max_alloc: u64,
}

impl Default for AudioLimits {
    fn default() -> Self {
        Self { max_alloc: 1 << 30 }
    }
}

/// The setting that raises [`AudioLimits::max_alloc`].
pub const MAX_AUDIO_ALLOC_SETTING: &str = "SET quiver.media.max_audio_alloc";

/// A window of time in seconds, `[start, end)`; `end` may be infinite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start in seconds, ≥ 0.
    pub start: f64,
    /// End in seconds, > start.
    pub end: f64,
}

impl Window {
    /// Checks the bounds.
    pub fn new(start: f64, end: f64) -> Result<Self, MediaError> {
        // NaN fails both comparisons.
        let ordered = start >= 0.0 && end > start;
        if !ordered {
            return Err(MediaError::Invalid(format!(
                "a window needs 0 <= start < end, got start {start} and end {end}"
            )));
        }
        Ok(Self { start, end })
    }

    /// The window in frames at `rate`: `[first, last)`.
    fn frames(&self, rate: u32) -> (u64, u64) {
        let r = f64::from(rate);
        let first = (self.start * r).round() as u64;
        let last = if self.end.is_finite() {
            (self.end * r).round() as u64
        } else {
            u64::MAX
        };
        (first, last)
    }
}

/// Decodes a whole file, or the frames of `window` only, to interleaved
/// `f32` samples, refusing (before decoding, where the header says the
/// length) anything larger than `limits` allow.
///
/// A decode error anywhere in the stream, or a stream that ends before the
/// length its container states, is an error: nothing is silently dropped.
pub fn decode_audio(
    data: &[u8],
    limits: &AudioLimits,
    window: Option<Window>,
) -> Result<Pcm, MediaError> {
    let mut samples = Vec::new();
    let (sample_rate, channels) = decode_audio_into(data, limits, window, &mut samples)?;
    Ok(Pcm {
        sample_rate,
        channels,
        samples,
    })
}

/// [`decode_audio`] appending the samples to `out` (the values of a whole
/// Arrow column, say) instead of a vector of their own; returns the rate
/// and channels. On error `out` is left as it was.
pub fn decode_audio_into(
    data: &[u8],
    limits: &AudioLimits,
    window: Option<Window>,
    out: &mut Vec<f32>,
) -> Result<(u32, u16), MediaError> {
    let format = detect(data)?;
    let base = out.len();
    let result = catch_panic(format.name(), || {
        decode_inner(format, data, limits, window, &mut *out)
    });
    if result.is_err() {
        out.truncate(base);
    }
    result
}

fn decode_inner(
    format: AudioFormat,
    data: &[u8],
    limits: &AudioLimits,
    window: Option<Window>,
    samples: &mut Vec<f32>,
) -> Result<(u32, u16), MediaError> {
    let base = samples.len();
    let name = format.name();
    let missed = Arc::new(AtomicBool::new(false));
    let mut reader = open(format, vec![(0, data)], data.len() as u64, &missed)
        .map_err(|e| media_error(format, &missed, e))?;
    let (track, _) = audio_track(format, reader.as_ref())?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| MediaError::Unsupported {
            format: name,
            what: "a track without audio codec parameters".to_string(),
        })?
        .clone();
    let declared_rate = params.sample_rate.unwrap_or(0);
    let declared_channels = params
        .channels
        .as_ref()
        .map(|c| c.count())
        .unwrap_or(1)
        .max(1);
    let too_large = |frames: u64, channels: usize, rate: u32| MediaError::AudioTooLarge {
        format: name,
        seconds: if rate > 0 {
            frames as f64 / f64::from(rate)
        } else {
            0.0
        },
        channels: u16::try_from(channels).unwrap_or(u16::MAX),
        limit: limits.max_alloc,
        setting: MAX_AUDIO_ALLOC_SETTING,
    };
    // Refuse before decoding when the header's length is over the limit.
    if let Some(declared) = track.num_frames {
        let (first, last) = window
            .map(|w| w.frames(declared_rate))
            .unwrap_or((0, u64::MAX));
        let kept = declared.min(last).saturating_sub(first);
        if kept.saturating_mul(declared_channels as u64 * 4) > limits.max_alloc {
            return Err(too_large(declared, declared_channels, declared_rate));
        }
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| media_error(format, &missed, e))?;
    // A window that starts later: seek (sample-accurately: to a point at or
    // before the start) instead of decoding everything before it. Where
    // the container cannot seek, decode from the start.
    let mut seeked = false;
    if let Some(w) = window
        && w.start > 0.0
        && let Some(time) = Time::try_from_secs_f64(w.start)
    {
        let to = SeekTo::Time {
            time,
            track_id: Some(track.id),
        };
        if reader.seek(SeekMode::Accurate, to).is_ok() {
            decoder.reset();
            seeked = true;
        } else {
            reader = open(format, vec![(0, data)], data.len() as u64, &missed)
                .map_err(|e| media_error(format, &missed, e))?;
        }
    }
    // Room for the declared length (within the limit), so that the samples
    // are not copied as the vector grows.
    let expected = track.num_frames.map_or(0, |declared| {
        let (first, last) = window
            .map(|w| w.frames(declared_rate))
            .unwrap_or((0, u64::MAX));
        declared.min(last).saturating_sub(first) * declared_channels as u64
    });
    samples.reserve(usize::try_from(expected.min(limits.max_alloc / 4)).unwrap_or(0));
    let mut rate = declared_rate;
    let mut channels = declared_channels;
    let mut decoded: u64 = 0;
    let mut finished_window = false;
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => {
                return Err(MediaError::Unsupported {
                    format: name,
                    what: "a stream whose parameters change midway".to_string(),
                });
            }
            Err(e) => return Err(media_error(format, &missed, e)),
        };
        if packet.track_id != track.id {
            continue;
        }
        if seeked {
            // Where the seek landed, in frames: the packet's timestamp.
            seeked = false;
            decoded = frames_at(&track, packet.pts.get().max(0), declared_rate);
        }
        let buf = decoder.decode(&packet).map_err(|e| match e {
            SymphoniaError::DecodeError(reason) => MediaError::Damaged {
                format: name,
                reason: format!(
                    "malformed stream at {:.3} s: {reason}",
                    if rate > 0 {
                        decoded as f64 / f64::from(rate)
                    } else {
                        0.0
                    }
                ),
            },
            other => media_error(format, &missed, other),
        })?;
        let spec = buf.spec();
        rate = spec.rate();
        channels = spec.channels().count().max(1);
        let n = buf.frames() as u64;
        let (first, last) = window.map(|w| w.frames(rate)).unwrap_or((0, u64::MAX));
        let lo = first.max(decoded);
        let hi = last.min(decoded + n);
        if lo < hi {
            let total = buf.samples_interleaved();
            let start = samples.len();
            // Keep only the window's frames of this packet.
            let skip = usize::try_from(lo - decoded).unwrap_or(usize::MAX) * channels;
            let keep = usize::try_from(hi - lo).unwrap_or(usize::MAX) * channels;
            if (start - base + keep) as u64 * 4 > limits.max_alloc {
                return Err(too_large(decoded + n, channels, rate));
            }
            samples.resize(start + total, 0.0);
            buf.copy_to_slice_interleaved(&mut samples[start..]);
            samples.drain(start..start + skip);
            samples.truncate(start + keep);
        }
        decoded += n;
        if decoded >= last {
            finished_window = true;
            break;
        }
    }
    if !finished_window
        && format.exact_length()
        && let Some(declared) = track.num_frames
    {
        // Lossy codecs may lose a frame of priming at the edges.
        let slack = if matches!(format, AudioFormat::Wav | AudioFormat::Flac) {
            0
        } else {
            2048
        };
        if decoded + slack < declared {
            return Err(MediaError::Damaged {
                format: name,
                reason: format!(
                    "truncated: the header declares {declared} frames ({:.3} s), the data holds {decoded}",
                    if rate > 0 {
                        declared as f64 / f64::from(rate)
                    } else {
                        0.0
                    }
                ),
            });
        }
    }
    Ok((rate, u16::try_from(channels).unwrap_or(u16::MAX)))
}

/// A timestamp of `track` in frames at `rate` (timestamps count frames
/// when the time base is 1/rate, the usual case for audio).
fn frames_at(track: &Track, ts: i64, rate: u32) -> u64 {
    let ts = u64::try_from(ts).unwrap_or(0);
    match track.time_base {
        Some(tb) if u64::from(tb.denom.get()) != u64::from(rate) || tb.numer.get() != 1 => {
            let num = u128::from(ts) * u128::from(rate) * u128::from(tb.numer.get());
            u64::try_from(num / u128::from(tb.denom.get())).unwrap_or(u64::MAX)
        }
        _ => ts,
    }
}

/// Resamples to `rate` with rubato's FFT resampler (band-limited, for a
/// fixed ratio); the output has `ceil(frames × rate / from)` frames.
pub fn resample(pcm: PcmRef<'_>, rate: u32) -> Result<Pcm, MediaError> {
    if rate == 0 {
        return Err(MediaError::Invalid(
            "the sample rate must be greater than 0".to_string(),
        ));
    }
    if rate == pcm.sample_rate || pcm.samples.is_empty() {
        return Ok(Pcm {
            sample_rate: rate,
            ..pcm.to_pcm()
        });
    }
    if pcm.sample_rate == 0 {
        return Err(MediaError::Invalid(
            "cannot resample audio with a sample rate of 0".to_string(),
        ));
    }
    let channels = usize::from(pcm.channels.max(1));
    let frames = pcm.frames();
    let invalid = |e: &dyn std::fmt::Display| MediaError::Invalid(format!("resampling: {e}"));
    let mut resampler = Fft::<f32>::new(
        pcm.sample_rate as usize,
        rate as usize,
        1024,
        channels,
        FixedSync::Both,
    )
    .map_err(|e| invalid(&e))?;
    let input = InterleavedSlice::new(&pcm.samples[..frames * channels], channels, frames)
        .map_err(|e| invalid(&e))?;
    let needed = resampler.process_all_needed_output_len(frames);
    let mut out = vec![0f32; needed * channels];
    let mut output =
        InterleavedSlice::new_mut(&mut out, channels, needed).map_err(|e| invalid(&e))?;
    let (_, produced) = resampler
        .process_all_into_buffer(&input, &mut output, frames, None)
        .map_err(|e| invalid(&e))?;
    out.truncate(produced * channels);
    Ok(Pcm {
        sample_rate: rate,
        channels: pcm.channels,
        samples: out,
    })
}

/// Mixes all channels down to one (their mean).
pub fn to_mono(pcm: PcmRef<'_>) -> Pcm {
    let channels = usize::from(pcm.channels.max(1));
    if channels == 1 {
        return pcm.to_pcm();
    }
    let scale = 1.0 / channels as f32;
    Pcm {
        sample_rate: pcm.sample_rate,
        channels: 1,
        samples: pcm
            .samples
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale)
            .collect(),
    }
}

/// The frames of `window` (clipped to the clip's length).
pub fn slice(pcm: PcmRef<'_>, window: Window) -> Pcm {
    let channels = usize::from(pcm.channels.max(1));
    let (first, last) = window.frames(pcm.sample_rate);
    let frames = pcm.frames() as u64;
    let first = usize::try_from(first.min(frames)).unwrap_or(usize::MAX);
    let last = usize::try_from(last.min(frames)).unwrap_or(usize::MAX);
    Pcm {
        sample_rate: pcm.sample_rate,
        channels: pcm.channels,
        samples: pcm.samples[first * channels..last * channels].to_vec(),
    }
}

/// Root mean square of all samples (0 for silence or no samples).
pub fn rms(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    // Eight independent sums, so that the additions do not wait on each
    // other (and vectorise).
    let mut lanes = [0f64; 8];
    let chunks = samples.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (acc, s) in lanes.iter_mut().zip(c) {
            *acc += f64::from(*s) * f64::from(*s);
        }
    }
    let sum: f64 = lanes.iter().sum::<f64>()
        + rest
            .iter()
            .map(|s| f64::from(*s) * f64::from(*s))
            .sum::<f64>();
    (sum / samples.len() as f64).sqrt()
}

/// Largest absolute sample.
pub fn peak(samples: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = samples.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, s) in lanes.iter_mut().zip(c) {
            *m = m.max(s.abs());
        }
    }
    let lanes = lanes.iter().fold(0f32, |m, s| m.max(*s));
    rest.iter().fold(lanes, |m, s| m.max(s.abs())).into()
}

/// Formats [`encode_audio`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioEncoding {
    /// WAV, 16-bit PCM.
    Wav,
    /// FLAC, 16-bit.
    Flac,
}

impl AudioEncoding {
    /// Parses `wav` or `flac`.
    pub fn parse(name: &str) -> Result<Self, MediaError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "wav" | "wave" => Ok(Self::Wav),
            "flac" => Ok(Self::Flac),
            other => Err(MediaError::Invalid(format!(
                "audio can be encoded as 'wav' or 'flac', not '{other}'"
            ))),
        }
    }

    /// The name, which is also the file extension.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Flac => "flac",
        }
    }
}

fn to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16
}

/// Encodes as 16-bit WAV or FLAC.
pub fn encode_audio(pcm: PcmRef<'_>, encoding: AudioEncoding) -> Result<Vec<u8>, MediaError> {
    if pcm.sample_rate == 0 || pcm.channels == 0 {
        return Err(MediaError::Invalid(format!(
            "cannot encode audio with {} Hz and {} channels",
            pcm.sample_rate, pcm.channels
        )));
    }
    let failed = |e: &dyn std::fmt::Display| {
        MediaError::Invalid(format!("encoding {} failed: {e}", encoding.name()))
    };
    match encoding {
        AudioEncoding::Wav => {
            let spec = hound::WavSpec {
                channels: pcm.channels,
                sample_rate: pcm.sample_rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut out = Cursor::new(Vec::with_capacity(44 + pcm.samples.len() * 2));
            let mut writer = hound::WavWriter::new(&mut out, spec).map_err(|e| failed(&e))?;
            let mut samples = writer.get_i16_writer(pcm.samples.len() as u32);
            for s in pcm.samples {
                samples.write_sample(to_i16(*s));
            }
            samples.flush().map_err(|e| failed(&e))?;
            writer.finalize().map_err(|e| failed(&e))?;
            Ok(out.into_inner())
        }
        AudioEncoding::Flac => {
            use flacenc::component::BitRepr;
            use flacenc::error::Verify;
            let config = flacenc::config::Encoder::default()
                .into_verified()
                .map_err(|(_, e)| failed(&e))?;
            let ints: Vec<i32> = pcm.samples.iter().map(|s| i32::from(to_i16(*s))).collect();
            let source = flacenc::source::MemSource::from_samples(
                &ints,
                usize::from(pcm.channels),
                16,
                pcm.sample_rate as usize,
            );
            let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
                .map_err(|e| failed(&e))?;
            let mut sink = flacenc::bitsink::ByteSink::new();
            stream.write(&mut sink).map_err(|e| failed(&e))?;
            let mut out = sink.into_inner();
            // STREAMINFO's minimum block size excludes the last block (RFC
            // 9639, 8.2); flacenc counts it, which makes strict readers
            // (symphonia among them) take fixed blocking for variable and
            // reject every frame. All blocks but the last have the maximum
            // size here, so the minimum is the maximum.
            if out.len() >= 12 && out.starts_with(b"fLaC") && out[4] & 0x7f == 0 {
                let (min, max) = out.split_at_mut(10);
                min[8..10].copy_from_slice(&max[..2]);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, channels: u16, seconds: f64, hz: f64) -> Pcm {
        let frames = (seconds * f64::from(rate)) as usize;
        let mut samples = Vec::with_capacity(frames * usize::from(channels));
        for i in 0..frames {
            let v = (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() * 0.5;
            for _ in 0..channels {
                samples.push(v as f32);
            }
        }
        Pcm {
            sample_rate: rate,
            channels,
            samples,
        }
    }

    #[test]
    fn wav_and_flac_round_trip_through_the_probe_and_decoder() {
        let pcm = tone(22050, 2, 1.5, 440.0);
        for enc in [AudioEncoding::Wav, AudioEncoding::Flac] {
            let bytes = encode_audio(pcm.view(), enc).unwrap();
            let info = probe_audio_bytes(&bytes).unwrap();
            assert_eq!(info.format.name(), enc.name());
            assert_eq!(info.sample_rate, Some(22050));
            assert_eq!(info.channels, Some(2));
            assert_eq!(info.frames, Some(33075));
            assert!((info.duration.unwrap() - 1.5).abs() < 1e-6, "{info:?}");
            assert_eq!(info.bit_depth, Some(16));
            let back = decode_audio(&bytes, &AudioLimits::default(), None).unwrap();
            assert_eq!(back.frames(), 33075);
            let err: f32 = back
                .samples
                .iter()
                .zip(&pcm.samples)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-3, "{enc:?} max error {err}");
        }
    }

    #[test]
    fn windows_limits_and_truncation() {
        let pcm = tone(8000, 1, 2.0, 100.0);
        let bytes = encode_audio(pcm.view(), AudioEncoding::Wav).unwrap();
        let w = Window::new(0.5, 1.25).unwrap();
        let part = decode_audio(&bytes, &AudioLimits::default(), Some(w)).unwrap();
        assert_eq!(part.frames(), 6000);
        let full = decode_audio(&bytes, &AudioLimits::default(), None).unwrap();
        assert!(part.samples[..] == full.samples[4000..10000]);
        assert!(slice(pcm.view(), w).samples[..] == pcm.samples[4000..10000]);
        let small = AudioLimits { max_alloc: 1000 };
        let err = decode_audio(&bytes, &small, None).unwrap_err().to_string();
        assert!(err.contains("exceeds the decode limit"), "{err}");
        // The window fits even when the whole clip does not.
        let tiny = Window::new(0.0, 0.01).unwrap();
        assert_eq!(
            decode_audio(&bytes, &small, Some(tiny)).unwrap().frames(),
            80
        );
        // Windows after a seek hold the same samples as a full decode.
        for enc in [AudioEncoding::Wav, AudioEncoding::Flac] {
            let long = tone(16000, 2, 3.0, 250.0);
            let encoded = encode_audio(long.view(), enc).unwrap();
            let full = decode_audio(&encoded, &AudioLimits::default(), None).unwrap();
            for (a, b) in [(1.25, 2.0), (0.5, 3.0), (2.9, 10.0)] {
                let w = Window::new(a, b).unwrap();
                let part = decode_audio(&encoded, &AudioLimits::default(), Some(w)).unwrap();
                assert!(
                    part.samples[..] == slice(full.view(), w).samples[..],
                    "{enc:?} window {a}-{b}: {} samples",
                    part.samples.len()
                );
            }
        }
        let half = &bytes[..bytes.len() / 2];
        let err = decode_audio(half, &AudioLimits::default(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(Window::new(2.0, 1.0).is_err());
    }

    #[test]
    fn detection_and_garbage() {
        assert_eq!(
            detect_audio_format(b"RIFF\0\0\0\0WAVEfmt "),
            Some(AudioFormat::Wav)
        );
        assert_eq!(
            detect_audio_format(b"ID3\x04\0\0\0\0\0\x02\0\0\xff\xfb\x90\0"),
            Some(AudioFormat::Mp3)
        );
        assert_eq!(
            detect_audio_format(&[0xff, 0xf1, 0x50, 0x80]),
            Some(AudioFormat::Aac)
        );
        assert_eq!(
            detect_audio_format(b"\0\0\0\x20ftypM4A "),
            Some(AudioFormat::M4a)
        );
        let err = probe_audio_bytes(b"hello world, not audio")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a supported audio file"), "{err}");
        assert!(matches!(probe_audio_bytes(b""), Err(MediaError::Empty)));
        let err = decode_audio(b"RIFF\x10\0\0\0WAVEjunkjunk", &AudioLimits::default(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wav"), "{err}");
    }

    #[test]
    fn header_only_probe_asks_for_more_only_when_needed() {
        let pcm = tone(16000, 1, 3.0, 300.0);
        let bytes = encode_audio(pcm.view(), AudioEncoding::Flac).unwrap();
        let head = &bytes[..4096];
        let tail_start = bytes.len() - 4096;
        let info = probe_audio(
            &[(0, head), (tail_start as u64, &bytes[tail_start..])],
            bytes.len() as u64,
        )
        .unwrap();
        assert_eq!(info.frames, Some(48000));
        // Only four bytes: the stream header is missing.
        let err = probe_audio(&[(0, &bytes[..4])], bytes.len() as u64).unwrap_err();
        assert!(matches!(err, MediaError::Incomplete), "{err}");
    }

    #[test]
    fn resample_mono_and_levels() {
        let pcm = tone(44100, 2, 1.0, 440.0);
        let out = resample(pcm.view(), 16000).unwrap();
        assert_eq!(out.sample_rate, 16000);
        assert!((out.frames() as i64 - 16000).abs() <= 1, "{}", out.frames());
        let mono = to_mono(out.view());
        assert_eq!(mono.channels, 1);
        // A 0.5-amplitude sine: RMS 0.5/√2, peak 0.5, kept by resampling.
        let r = rms(&mono.samples[1000..15000]);
        assert!((r - 0.5 / 2f64.sqrt()).abs() < 0.01, "{r}");
        assert!((peak(&pcm.samples) - 0.5).abs() < 1e-3);
        assert!(resample(pcm.view(), 0).is_err());
    }
}
