//! Generated video: FFmpeg test patterns encoded by Debian's `ffmpeg`
//! command (there is no Rust H.264 encoder), for the demo, the tests and
//! the benchmark, and damaged copies for the error tests. Nothing is
//! committed.

use std::path::{Path, PathBuf};
use std::process::Command;

use datafusion::common::{DataFusionError, Result};

/// The sample clips: name, and the ffmpeg arguments that make them
/// (inputs and codec; the output path follows).
pub const VIDEO: &[(&str, &[&str])] = &[
    // H.264 in MP4, 25 fps, a keyframe every 2 s, with AAC audio.
    (
        "pattern.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25:duration=6",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=6",
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
    ),
    // H.265 in Matroska, 24 fps, no audio.
    (
        "bars.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "smptebars=size=320x240:rate=24:duration=3",
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error:keyint=24",
            "-pix_fmt",
            "yuv420p",
        ],
    ),
    // VP9 in WebM, 30 fps, with Opus audio.
    (
        "mandelbrot.webm",
        &[
            "-f",
            "lavfi",
            "-i",
            "mandelbrot=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=220:sample_rate=48000",
            "-t",
            "3",
            "-c:v",
            "libvpx-vp9",
            "-g",
            "30",
            "-deadline",
            "realtime",
            "-c:a",
            "libopus",
        ],
    ),
    // MPEG-4 part 2 in AVI, 10 fps.
    (
        "life.avi",
        &[
            "-f",
            "lavfi",
            "-i",
            "life=size=160x120:rate=10:mold=10:ratio=0.5:seed=7",
            "-t",
            "4",
            "-c:v",
            "mpeg4",
            "-g",
            "10",
            // Keyframes every 10 frames exactly, not at scene changes.
            "-sc_threshold",
            "1000000000",
        ],
    ),
    // MPEG-4 in QuickTime, 15 fps, shown turned by 90 degrees.
    (
        "turned.mov",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=240x160:rate=15:duration=2",
            "-c:v",
            "mpeg4",
            "-g",
            "15",
        ],
    ),
];

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DataFusionError + '_ {
    move |e| DataFusionError::IoError(e).context(format!("writing {}", path.display()))
}

/// Runs ffmpeg with `args` writing `out`.
fn ffmpeg(args: &[&str], out: &Path) -> Result<()> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .arg(out)
        .output()
        .map_err(|e| {
            DataFusionError::IoError(e).context(
                "running ffmpeg to encode video fixtures (install it: apt-get install ffmpeg)",
            )
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(DataFusionError::Execution(format!(
            "ffmpeg failed to write {}: {}",
            out.display(),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// Writes the sample clips of [`VIDEO`] under `dir`. Needs the `ffmpeg`
/// command.
pub fn write_video(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut written = vec![];
    for (name, args) in VIDEO {
        let path = dir.join(name);
        ffmpeg(args, &path)?;
        written.push(path);
    }
    // FFmpeg 5.1 writes the display matrix of a `rotate` tag when it copies
    // the stream, not when it encodes it.
    let turned = dir.join("turned.mov");
    let copy = dir.join(".turned.mov");
    let source = turned.to_string_lossy().into_owned();
    ffmpeg(
        &["-i", &source, "-c", "copy", "-metadata:s:v", "rotate=90"],
        &copy,
    )?;
    std::fs::rename(&copy, &turned).map_err(io_err(&turned))?;
    Ok(written)
}

/// Writes damaged videos under `dir`: `empty.mp4` (zero bytes),
/// `text.mp4` (a text file), `no_index.mp4` (an MP4 cut in half, its
/// index at the end lost), `cut.mp4` (an MP4 with its index first, cut in
/// half: the headers read, the frames stop early) and `audio_only.mp4`
/// (no video stream). Needs the `ffmpeg` command.
pub fn write_bad_video(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(io_err(&p))
    };
    write("empty.mp4", b"")?;
    write(
        "text.mp4",
        b"this is not a video, only text with a video's name\n",
    )?;
    let pattern = [
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25:duration=4",
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
    ];
    let whole = dir.join(".whole.mp4");
    ffmpeg(&pattern, &whole)?;
    let bytes = std::fs::read(&whole).map_err(io_err(&whole))?;
    write("no_index.mp4", &bytes[..bytes.len() / 2])?;
    let mut faststart = pattern.to_vec();
    faststart.extend(["-movflags", "+faststart"]);
    let first = dir.join(".faststart.mp4");
    ffmpeg(&faststart, &first)?;
    let bytes = std::fs::read(&first).map_err(io_err(&first))?;
    write("cut.mp4", &bytes[..bytes.len() / 2])?;
    for p in [&whole, &first] {
        std::fs::remove_file(p).map_err(io_err(p))?;
    }
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=16000:duration=1",
            "-c:a",
            "aac",
        ],
        &dir.join("audio_only.mp4"),
    )
}

/// Writes `count` H.264 clips for the benchmark under `dir`: 640×360,
/// 10–30 fps, 5–10 s, a keyframe about every 2 s, no audio. Returns the
/// files and the frames they hold.
pub fn write_video_corpus(dir: &Path, count: usize) -> Result<(Vec<PathBuf>, u64)> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut written = vec![];
    let mut frames = 0u64;
    for i in 0..count {
        let fps = [10u64, 15, 24, 25, 30][i % 5];
        let seconds = 5 + (i as u64 * 3) % 6;
        let source = match i % 3 {
            0 => "testsrc",
            1 => "testsrc2",
            _ => "smptebars",
        };
        let input = format!("{source}=size=640x360:rate={fps}:duration={seconds}");
        let gop = (2 * fps).to_string();
        let path = dir.join(format!("clip{i:03}.mp4"));
        ffmpeg(
            &[
                "-f", "lavfi", "-i", &input, "-c:v", "libx264", "-preset", "veryfast", "-g", &gop,
                "-pix_fmt", "yuv420p",
            ],
            &path,
        )?;
        frames += fps * seconds;
        written.push(path);
    }
    Ok((written, frames))
}
