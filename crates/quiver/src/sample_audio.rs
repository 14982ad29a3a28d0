//! Generated audio for the demo, the tests and the benchmarks.
//!
//! [`write_audio`] writes, deterministically, the sample dataset's `audio/`:
//!
//! | file | format | rate | channels | length | content |
//! |---|---|---|---|---|---|
//! | `tone-440.wav` | WAV 16-bit | 16 kHz | mono | 2.0 s | 440 Hz sine at half scale |
//! | `chord.flac` | FLAC 16-bit | 44.1 kHz | stereo | 3.0 s | A major chord, panned |
//! | `sweep-24bit.wav` | WAV 24-bit | 48 kHz | stereo | 1.5 s | 100 Hz–8 kHz sweep |
//! | `noise-8bit.wav` | WAV 8-bit | 8 kHz | mono | 1.0 s | seeded white noise |
//! | `float.wav` | WAV float32 | 22.05 kHz | mono | 1.0 s | 1 kHz sine |
//! | `talk.flac` | FLAC 16-bit | 16 kHz | mono | 65.0 s | a "talk": tones changing every 5 s, with pauses |
//!
//! [`write_lossy_audio`] adds MP3, Ogg Vorbis, M4A (AAC) and ADTS AAC
//! copies with tags, encoded by the `ffmpeg` command (Debian's; there is no
//! Rust encoder for these); [`write_bad_audio`] writes damaged files.

use std::path::{Path, PathBuf};
use std::process::Command;

use datafusion::common::{DataFusionError, Result};
use quiver_media::Pcm;
use quiver_media::audio::{AudioEncoding, encode_audio};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DataFusionError + '_ {
    move |e| DataFusionError::IoError(e).context(format!("writing {}", path.display()))
}

fn media_err(e: quiver_media::MediaError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Interleaved samples from `f(t, channel)` over `seconds`.
pub fn synth(rate: u32, channels: u16, seconds: f64, mut f: impl FnMut(f64, u16) -> f64) -> Pcm {
    let frames = (seconds * f64::from(rate)).round() as usize;
    let mut samples = Vec::with_capacity(frames * usize::from(channels));
    for i in 0..frames {
        let t = i as f64 / f64::from(rate);
        for c in 0..channels {
            samples.push(f(t, c) as f32);
        }
    }
    Pcm {
        sample_rate: rate,
        channels,
        samples,
    }
}

fn sine(hz: f64, t: f64) -> f64 {
    (2.0 * std::f64::consts::PI * hz * t).sin()
}

/// A WAV file of `bits` per sample (8, 16, 24 integer or 32 float).
pub fn wav_bytes(pcm: &Pcm, bits: u16) -> Result<Vec<u8>> {
    let float = bits == 32;
    let spec = hound::WavSpec {
        channels: pcm.channels,
        sample_rate: pcm.sample_rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let ext = |e: hound::Error| DataFusionError::External(Box::new(e));
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).map_err(ext)?;
    let scale = f64::from((1i32 << (bits.min(31) - 1)) - 1);
    for s in &pcm.samples {
        let s = f64::from(s.clamp(-1.0, 1.0));
        if float {
            w.write_sample(s as f32).map_err(ext)?;
        } else if bits == 8 {
            w.write_sample((s * 127.0).round() as i8).map_err(ext)?;
        } else {
            w.write_sample((s * scale).round() as i32).map_err(ext)?;
        }
    }
    w.finalize().map_err(ext)?;
    Ok(out.into_inner())
}

/// The sample clips: (file name, rate, channels, seconds).
pub const AUDIO: &[(&str, u32, u16, f64)] = &[
    ("tone-440.wav", 16_000, 1, 2.0),
    ("chord.flac", 44_100, 2, 3.0),
    ("sweep-24bit.wav", 48_000, 2, 1.5),
    ("noise-8bit.wav", 8_000, 1, 1.0),
    ("float.wav", 22_050, 1, 1.0),
    ("talk.flac", 16_000, 1, 65.0),
];

/// The samples of one of [`AUDIO`].
pub fn clip(name: &str, rate: u32, channels: u16, seconds: f64) -> Pcm {
    match name {
        "tone-440.wav" => synth(rate, channels, seconds, |t, _| 0.5 * sine(440.0, t)),
        "chord.flac" => synth(rate, channels, seconds, |t, c| {
            let (l, r) = if c == 0 { (0.6, 0.3) } else { (0.3, 0.6) };
            0.25 * (l * sine(440.0, t) + sine(554.37, t) * 0.5 + r * sine(659.25, t))
        }),
        "sweep-24bit.wav" => synth(rate, channels, seconds, |t, _| {
            // Exponential sweep: phase of f0 * (k^t - 1) / ln k.
            let (f0, f1) = (100.0f64, 8000.0f64);
            let k = (f1 / f0).powf(1.0 / seconds);
            0.4 * (2.0 * std::f64::consts::PI * f0 * (k.powf(t) - 1.0) / k.ln()).sin()
        }),
        "noise-8bit.wav" => {
            let mut rng = SmallRng::seed_from_u64(7);
            let frames = (seconds * f64::from(rate)) as usize;
            Pcm {
                sample_rate: rate,
                channels,
                samples: (0..frames)
                    .map(|_| rng.random_range(-0.3f32..0.3))
                    .collect(),
            }
        }
        "float.wav" => synth(rate, channels, seconds, |t, _| 0.7 * sine(1000.0, t)),
        _ => synth(rate, channels, seconds, |t, _| {
            // Five seconds per "sentence", the last second of each silent.
            let sentence = (t / 5.0).floor();
            if t - sentence * 5.0 >= 4.0 {
                0.0
            } else {
                0.3 * sine(200.0 + 40.0 * sentence, t) + 0.1 * sine(1200.0 + 40.0 * sentence, t)
            }
        }),
    }
}

/// Writes [`AUDIO`] under `dir`.
pub fn write_audio(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut written = vec![];
    for (name, rate, channels, seconds) in AUDIO {
        let pcm = clip(name, *rate, *channels, *seconds);
        let bytes = if name.ends_with(".flac") {
            encode_audio(pcm.view(), AudioEncoding::Flac).map_err(media_err)?
        } else {
            let bits = match *name {
                "sweep-24bit.wav" => 24,
                "noise-8bit.wav" => 8,
                "float.wav" => 32,
                _ => 16,
            };
            wav_bytes(&pcm, bits)?
        };
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The lossy copies [`write_lossy_audio`] makes: (file name, ffmpeg
/// arguments after the input).
const LOSSY: &[(&str, &[&str])] = &[
    ("song.mp3", &["-c:a", "libmp3lame", "-b:a", "96k"]),
    ("song.ogg", &["-c:a", "libvorbis", "-q:a", "3"]),
    ("song.m4a", &["-c:a", "aac", "-b:a", "96k"]),
    ("song.aac", &["-c:a", "aac", "-b:a", "96k", "-f", "adts"]),
];

/// Whether the `ffmpeg` command is on the PATH.
pub fn have_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Writes MP3, Ogg Vorbis, M4A and ADTS AAC versions of a 2.5-s stereo
/// 44.1 kHz clip under `dir`, tagged title "Quiver Song", artist "The
/// Samples", album "Fixtures", track 3, date 2024 (ADTS has no tags).
/// Needs the `ffmpeg` command.
pub fn write_lossy_audio(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let pcm = synth(44_100, 2, 2.5, |t, c| {
        0.3 * sine(if c == 0 { 330.0 } else { 495.0 }, t) + 0.1 * sine(2000.0, t)
    });
    let source = dir.join(".source.wav");
    std::fs::write(&source, wav_bytes(&pcm, 16)?).map_err(io_err(&source))?;
    let mut written = vec![];
    for (name, codec) in LOSSY {
        let path = dir.join(name);
        let output = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(&source)
            .args(*codec)
            .args([
                "-metadata",
                "title=Quiver Song",
                "-metadata",
                "artist=The Samples",
                "-metadata",
                "album=Fixtures",
                "-metadata",
                "track=3",
                "-metadata",
                "date=2024",
            ])
            .arg(&path)
            .output()
            .map_err(|e| {
                DataFusionError::IoError(e)
                    .context("running ffmpeg to encode MP3/Ogg/AAC fixtures (install it: apt-get install ffmpeg)")
            })?;
        if !output.status.success() {
            return Err(DataFusionError::Execution(format!(
                "ffmpeg failed to write {}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        written.push(path);
    }
    std::fs::remove_file(&source).map_err(io_err(&source))?;
    Ok(written)
}

/// Writes damaged audio under `dir`: `empty.wav` (0 bytes), `notes.mp3`
/// (text), `half.wav` and `half.flac` (the first half of good files),
/// `header-only.wav` (a WAV header and no samples), `huge.wav` (a header
/// declaring 2 GiB of samples, 67,109 s, over 40 bytes of data),
/// `really-flac.wav`
/// (a good FLAC file with the wrong extension) and one good `ok.wav`.
pub fn write_bad_audio(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let pcm = synth(16_000, 1, 1.0, |t, _| 0.5 * sine(300.0, t));
    let wav = wav_bytes(&pcm, 16)?;
    let flac = encode_audio(pcm.view(), AudioEncoding::Flac).map_err(media_err)?;
    let mut huge = wav[..44].to_vec();
    // The RIFF and data chunk sizes of 2 GiB of samples.
    let declared: u32 = 0x7fff_fff0;
    huge[40..44].copy_from_slice(&declared.to_le_bytes());
    huge[4..8].copy_from_slice(&(declared + 36).to_le_bytes());
    huge.extend_from_slice(&[0u8; 40]);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("ok.wav", wav.clone()),
        ("empty.wav", vec![]),
        ("notes.mp3", b"these are words, not sounds\n".to_vec()),
        ("half.wav", wav[..wav.len() / 2].to_vec()),
        ("half.flac", flac[..flac.len() / 2].to_vec()),
        ("header-only.wav", wav[..44].to_vec()),
        ("huge.wav", huge),
        ("really-flac.wav", flac),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Writes `count` clips of 1–10 s, alternating WAV and FLAC at 16, 22.05
/// and 44.1 kHz, mono and stereo, for the benchmark; returns the files and
/// their total length in seconds.
pub fn write_audio_corpus(dir: &Path, count: usize) -> Result<(Vec<PathBuf>, f64)> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut rng = SmallRng::seed_from_u64(11);
    let mut written = vec![];
    let mut total = 0.0;
    for i in 0..count {
        let rate = [16_000, 22_050, 44_100][i % 3];
        let channels = 1 + (i % 2) as u16;
        let seconds = f64::from(rng.random_range(10u32..=100)) / 10.0;
        let hz = f64::from(rng.random_range(100u32..2000));
        let mut noise = SmallRng::seed_from_u64(i as u64);
        let pcm = synth(rate, channels, seconds, |t, _| {
            0.4 * sine(hz, t) + f64::from(noise.random_range(-0.05f32..0.05))
        });
        let (name, bytes) = if i % 2 == 0 {
            (format!("clip-{i:04}.wav"), wav_bytes(&pcm, 16)?)
        } else {
            (
                format!("clip-{i:04}.flac"),
                encode_audio(pcm.view(), AudioEncoding::Flac).map_err(media_err)?,
            )
        };
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
        written.push(path);
        total += seconds;
    }
    Ok((written, total))
}
