//! The video benchmark of issue 5, measured in one run over a generated
//! corpus of H.264 clips (640×360, 10–30 fps, 5–10 s, a keyframe every
//! 2 s):
//!
//! - **(a) all-frames limit**: every frame of every clip decoded with the
//!   decoder Quiver uses (`quiver_media::video::FrameReader`, no
//!   conversion), one thread per core, no SQL;
//! - **(b) one frame per second**: `SELECT count(*), avg(image_width(frame))
//!   FROM video_frames('…', fps => 1)` (frames converted and encoded as PNG);
//! - **(c) keyframes**: the same with `keyframes_only => true`, and (c')
//!   `SELECT count(*), max(pts)` over it: the keyframes decoded only, as
//!   (a) decodes;
//! - **(d) metadata only**: `SELECT count(*), sum(duration) FROM
//!   read_video('…')`;
//! - for scale, OpenCV in Python (`cv2.VideoCapture`, reading every frame
//!   and keeping the first at or after each second), when `python3 -c
//!   'import cv2'` works (`pip install opencv-python-headless`).
//!
//! Targets: (b) ≥ 3× OpenCV's sampled frames per second (about 16 here);
//! (c) ≥ 5× faster than (a) at producing its frames (the keyframes: (a)
//! must decode every frame to find them); (d) ≥ 100 files/s. Run with
//! `cargo bench -p quiver-benches --bench video`; `QUIVER_BENCH_VIDEOS`
//! (default 20) and `QUIVER_BENCH_ROUNDS` (default 3) change the corpus and
//! the rounds. The corpus is kept under `target/bench-data/`. Rounds
//! alternate so that machine noise hits every contender alike; figures are
//! medians.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quiver::Quiver;
use quiver_benches::{corpus_dir, count_of, each_file_in_parallel, env_usize, median};
use quiver_media::video::{FrameReader, FrameSampling, Interrupt, VideoLimits};

/// Decodes every frame of every file, one worker per core; returns the
/// frames.
fn decode_all(paths: &[PathBuf], threads: usize) -> usize {
    each_file_in_parallel(paths, threads, |bytes| {
        let mut reader = FrameReader::open(
            std::io::Cursor::new(bytes.to_vec()),
            "clip.mp4",
            FrameSampling {
                threads: 1,
                ..Default::default()
            },
            VideoLimits::default(),
            Interrupt::never(),
        )
        .expect("open corpus file");
        let mut n = 0;
        while reader.next_frame().expect("decode corpus file").is_some() {
            n += 1;
        }
        n
    })
}

/// OpenCV's seconds and sampled frames for one frame per second over
/// `dir`, or `None` when cv2 is not installed.
fn opencv(dir: &Path) -> Option<(f64, u64)> {
    let script = r#"
import glob, math, sys, time
import cv2
files = sorted(glob.glob(sys.argv[1] + '/*.mp4'))
t = time.perf_counter()
sampled = 0
for f in files:
    cap = cv2.VideoCapture(f)
    fps = cap.get(cv2.CAP_PROP_FPS)
    i, tick = 0, 0.0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i / fps >= tick:
            sampled += 1
            tick = math.floor(i / fps) + 1.0
        i += 1
    cap.release()
print(time.perf_counter() - t, sampled)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let seconds = parts.next()?.parse().ok()?;
    let sampled = parts.next()?.parse().ok()?;
    Some((seconds, sampled))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let count = env_usize("QUIVER_BENCH_VIDEOS", 20);
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = corpus_dir(&format!("videos-{count}"));
    let started = Instant::now();
    let (paths, frames) =
        quiver::sample_video::write_video_corpus(&dir, count).expect("write corpus");
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "corpus: {count} H.264 clips (640x360, 10-30 fps, 5-10 s, GOP 2 s) in {} ({:.1} MB, {frames} frames; ready in {:.1} s); {threads} cores",
        dir.display(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let q = Quiver::builder().build().expect("engine");
    let location = format!("{}/", dir.display());
    let fps_sql = format!(
        "SELECT count(*), avg(image_width(frame)) FROM video_frames('{location}', fps => 1)"
    );
    let key_sql = format!(
        "SELECT count(*), avg(image_width(frame)) FROM video_frames('{location}', keyframes_only => true)"
    );
    // The same frames, decoded only (no conversion or encoding), as (a).
    let key_decode_sql = format!(
        "SELECT count(*), max(pts) FROM video_frames('{location}', keyframes_only => true)"
    );
    let meta_sql = format!("SELECT count(*), sum(duration) FROM read_video('{location}')");

    // Warm the page cache and check the answers once.
    assert_eq!(decode_all(&paths, threads) as u64, frames);
    let sampled = count_of(&q, &fps_sql).await;
    let keyframes = count_of(&q, &key_sql).await;
    assert_eq!(count_of(&q, &meta_sql).await, count as i64);

    let (mut all, mut fps, mut key, mut meta, mut cv) = (vec![], vec![], vec![], vec![], vec![]);
    let mut key_decode = vec![];
    let mut cv_sampled = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        decode_all(&paths, threads);
        all.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &fps_sql).await;
        fps.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &key_sql).await;
        key.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &key_decode_sql).await;
        key_decode.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &meta_sql).await;
        meta.push(t.elapsed());
        if let Some((s, n)) = opencv(&dir) {
            cv.push(Duration::from_secs_f64(s));
            cv_sampled = n;
        }
    }
    let (all, fps, key, meta) = (median(all), median(fps), median(key), median(meta));
    let key_decode = median(key_decode);
    let per_s = |n: f64, d: Duration| n / d.as_secs_f64();
    println!(
        "(a) all frames decoded   : {:>8.1} frames/s ({frames} frames, {:.3} s)",
        per_s(frames as f64, all),
        all.as_secs_f64()
    );
    println!(
        "(b) fps => 1             : {:>8.1} sampled frames/s ({sampled} frames, {:.3} s)",
        per_s(sampled as f64, fps),
        fps.as_secs_f64()
    );
    println!(
        "(c) keyframes_only       : {:>8.1} keyframes/s ({keyframes} frames, {:.3} s)",
        per_s(keyframes as f64, key),
        key.as_secs_f64()
    );
    println!(
        "(c') keyframes, decoded only: {:>8.1} keyframes/s ({:.3} s; no conversion or encoding, as (a))",
        per_s(keyframes as f64, key_decode),
        key_decode.as_secs_f64()
    );
    println!(
        "(d) metadata only        : {:>8.1} files/s ({count} files, {:.4} s)",
        per_s(count as f64, meta),
        meta.as_secs_f64()
    );
    println!(
        "(c) vs (a) for the keyframes: {:.1}x faster with PNG frames, {:.1}x decoded only as (a) (target >= 5x)",
        all.as_secs_f64() / key.as_secs_f64(),
        all.as_secs_f64() / key_decode.as_secs_f64()
    );
    println!(
        "(d) files/s vs target 100: {:.1}x",
        per_s(count as f64, meta) / 100.0
    );
    if cv.is_empty() {
        println!(
            "OpenCV: not run (python3 cannot import cv2; pip install opencv-python-headless); (b) vs the issue's 16 sampled frames/s: {:.1}x (target >= 3x)",
            per_s(sampled as f64, fps) / 16.0
        );
    } else {
        let cv = median(cv);
        let cv_rate = per_s(cv_sampled as f64, cv);
        println!(
            "OpenCV (Python, every frame decoded): {cv_rate:>8.1} sampled frames/s ({cv_sampled} frames, {:.3} s)",
            cv.as_secs_f64()
        );
        println!(
            "(b) vs OpenCV: {:.1}x (target >= 3x)",
            per_s(sampled as f64, fps) / cv_rate
        );
    }
}
