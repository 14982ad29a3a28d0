//! The audio benchmark of issue 4, measured in one run over a generated
//! corpus of clips of 1–10 s, alternating WAV and FLAC (16-bit) at 16,
//! 22.05 and 44.1 kHz, mono and stereo:
//!
//! - **decode-only limit**: every clip read and decoded to f32 with the
//!   decoder Quiver uses (`quiver_media::decode_audio`), one thread per
//!   core, no SQL;
//! - **decode pipeline**: `SELECT count(*), sum(audio_duration(audio)),
//!   avg(audio_rms(audio_decode(audio))) FROM read_audio('…')`;
//! - **metadata only**: `SELECT count(*), sum(duration) FROM
//!   read_audio('…')` (headers, no decoding);
//! - for scale, Python's `soundfile` (libsndfile) reading every clip to
//!   float32 in one process, when `python3 -c 'import soundfile'` works.
//!
//! Targets: the pipeline at ≥ 0.85× the decode-only limit, metadata-only
//! ≥ 20× faster than the pipeline, and ≥ 1.5× soundfile's real-time
//! factor. Run with `cargo bench -p quiver-benches --bench audio`;
//! `QUIVER_BENCH_CLIPS` (default 300) and `QUIVER_BENCH_ROUNDS` (default
//! 3) change the corpus and the rounds; `QUIVER_BENCH_BREAKDOWN=1` prints
//! where the pipeline's time goes (stages, `EXPLAIN ANALYZE`, CPU and cores
//! busy) and `QUIVER_BENCH_PROFILE=pipeline|decode` runs one contender ten
//! times for a profiler. The corpus is kept under
//! `target/bench-data/`. Rounds alternate so that machine noise hits every
//! contender alike; figures are medians.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quiver::Quiver;
use quiver_benches::{
    corpus_dir, count_of, each_file_in_parallel, env_usize, median, process_cpu_seconds,
};
use quiver_media::AudioLimits;

/// Reads and decodes every file, one worker per core; returns the frames.
fn decode_only(paths: &[PathBuf], threads: usize) -> usize {
    let limits = AudioLimits::default();
    each_file_in_parallel(paths, threads, |bytes| {
        quiver_media::decode_audio(bytes, &limits, None)
            .expect("decode corpus file")
            .frames()
    })
}

/// Seconds `soundfile` takes to read every file to float32 in one Python
/// process, or `None` when it is not installed.
fn soundfile_seconds(dir: &Path) -> Option<f64> {
    let script = r#"
import glob, sys, time
import soundfile
files = sorted(glob.glob(sys.argv[1] + '/*'))
t = time.perf_counter()
for f in files:
    soundfile.read(f, dtype='float32')
print(time.perf_counter() - t)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let count = env_usize("QUIVER_BENCH_CLIPS", 300);
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = corpus_dir(&format!("clips-{count}"));
    let started = Instant::now();
    let (paths, seconds) =
        quiver::sample_audio::write_audio_corpus(&dir, count).expect("write corpus");
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "corpus: {count} clips (WAV and FLAC, 16–44.1 kHz, mono and stereo) in {} ({:.1} MB, {:.0} s of audio; ready in {:.1} s); {threads} cores",
        dir.display(),
        bytes as f64 / 1e6,
        seconds,
        started.elapsed().as_secs_f64()
    );

    let q = Quiver::builder().build().expect("engine");
    let location = format!("{}/", dir.display());
    let pipeline_sql = format!(
        "SELECT count(*), sum(audio_duration(audio)), avg(audio_rms(audio_decode(audio))) FROM read_audio('{location}')"
    );
    let meta_sql = format!("SELECT count(*), sum(duration) FROM read_audio('{location}')");

    // One contender alone, ten times, to profile it (`perf record`):
    // QUIVER_BENCH_PROFILE=pipeline or =decode.
    if let Ok(which) = std::env::var("QUIVER_BENCH_PROFILE") {
        for _ in 0..10 {
            match which.as_str() {
                "decode" => {
                    decode_only(&paths, threads);
                }
                _ => {
                    count_of(&q, &pipeline_sql).await;
                }
            }
        }
        return;
    }

    // Where the pipeline's time goes, once each (QUIVER_BENCH_BREAKDOWN=1).
    if std::env::var_os("QUIVER_BENCH_BREAKDOWN").is_some() {
        let files: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| std::fs::read(p).expect("read corpus file"))
            .collect();
        let t = Instant::now();
        for f in &files {
            let n = f.len() as u64;
            let tail = n.saturating_sub(65536);
            quiver_media::probe_audio(
                &[(0, &f[..f.len().min(65536)]), (tail, &f[tail as usize..])],
                n,
            )
            .expect("probe");
        }
        println!(
            "  header probe, one thread         : {:.1} us per clip",
            t.elapsed().as_secs_f64() * 1e6 / files.len() as f64
        );
        for ext in ["wav", "flac"] {
            let (mut bytes, mut took) = (0usize, 0f64);
            for (f, p) in files.iter().zip(&paths) {
                if p.extension().is_some_and(|e| e == ext) {
                    let t = Instant::now();
                    quiver_media::decode_audio(f, &AudioLimits::default(), None).expect("decode");
                    took += t.elapsed().as_secs_f64();
                    bytes += f.len();
                }
            }
            println!(
                "  decode {ext:<4}, one thread         : {:.2} ns per encoded byte",
                took * 1e9 / bytes as f64
            );
        }
        for (what, sql) in [
            (
                "listing only: count(*)",
                format!("SELECT count(*) FROM read_audio('{location}')"),
            ),
            (
                "EXPLAIN (planning)",
                format!("EXPLAIN SELECT count(*) FROM read_audio('{location}')"),
            ),
            (
                "scan of the bytes",
                format!("SELECT count(audio) FROM read_audio('{location}')"),
            ),
            (
                "audio_duration only",
                format!(
                    "SELECT count(*), sum(audio_duration(audio)) FROM read_audio('{location}')"
                ),
            ),
            (
                "audio_rms(audio)",
                format!("SELECT count(*), avg(audio_rms(audio)) FROM read_audio('{location}')"),
            ),
            (
                "audio_rms(audio_decode(audio))",
                format!(
                    "SELECT count(*), avg(audio_rms(audio_decode(audio))) FROM read_audio('{location}')"
                ),
            ),
        ] {
            q.collect(&sql).await.expect("query");
            let t = Instant::now();
            q.collect(&sql).await.expect("query");
            println!("  {what:<32}: {:.3} s", t.elapsed().as_secs_f64());
        }
        // Each operator's time, from the engine's own metrics.
        let analyzed = q
            .collect(&format!("EXPLAIN ANALYZE {pipeline_sql}"))
            .await
            .expect("explain analyze");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&analyzed)
            .map(|t| t.to_string())
            .unwrap_or_default();
        println!("{text}");
        // CPU used against wall time, five runs each: how busy the cores are.
        let cpu_of = |wall: Duration, cpu: Option<(f64, u64)>| match cpu {
            Some((c, faults)) => format!(
                "{:.3} s wall, {c:.2} CPU-s, {:.2} cores busy, {faults} page faults",
                wall.as_secs_f64(),
                c / wall.as_secs_f64()
            ),
            None => format!("{:.3} s wall", wall.as_secs_f64()),
        };
        let (t, c) = (Instant::now(), process_cpu_seconds());
        for _ in 0..5 {
            decode_only(&paths, threads);
        }
        let cpu = process_cpu_seconds()
            .zip(c)
            .map(|(b, a)| (b.0 - a.0, b.1 - a.1));
        println!(
            "  decode-only x5                  : {}",
            cpu_of(t.elapsed(), cpu)
        );
        let (t, c) = (Instant::now(), process_cpu_seconds());
        for _ in 0..5 {
            q.collect(&pipeline_sql).await.expect("query");
        }
        let cpu = process_cpu_seconds()
            .zip(c)
            .map(|(b, a)| (b.0 - a.0, b.1 - a.1));
        println!(
            "  pipeline x5                     : {}",
            cpu_of(t.elapsed(), cpu)
        );
    }

    // Warm the page cache and check the answers once.
    let frames = decode_only(&paths, threads);
    assert_eq!(count_of(&q, &pipeline_sql).await, count as i64);
    assert_eq!(count_of(&q, &meta_sql).await, count as i64);

    let (mut dec, mut pipe, mut meta, mut sf) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(decode_only(&paths, threads), frames);
        dec.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &pipeline_sql).await;
        pipe.push(t.elapsed());
        let t = Instant::now();
        count_of(&q, &meta_sql).await;
        meta.push(t.elapsed());
        if let Some(s) = soundfile_seconds(&dir) {
            sf.push(Duration::from_secs_f64(s));
        }
    }
    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    let realtime = |d: Duration| seconds / d.as_secs_f64();
    let (dec, pipe, meta) = (median(dec), median(pipe), median(meta));
    println!(
        "decode-only limit : {:>9.1} clips/s ({:.3} s, {:.0}x real time)",
        rate(dec),
        dec.as_secs_f64(),
        realtime(dec)
    );
    println!(
        "decode pipeline   : {:>9.1} clips/s ({:.3} s, {:.0}x real time)",
        rate(pipe),
        pipe.as_secs_f64(),
        realtime(pipe)
    );
    println!(
        "metadata only     : {:>9.1} clips/s ({:.4} s)",
        rate(meta),
        meta.as_secs_f64()
    );
    if sf.is_empty() {
        println!(
            "soundfile         : not installed (pip install soundfile) — the issue quotes about 1,800x real time"
        );
    } else {
        let sf = median(sf);
        println!(
            "soundfile (1 proc): {:>9.1} clips/s ({:.3} s, {:.0}x real time); decode pipeline / soundfile = {:.2}x (target >= 1.5x)",
            rate(sf),
            sf.as_secs_f64(),
            realtime(sf),
            realtime(pipe) / realtime(sf)
        );
    }
    println!(
        "pipeline / decode-only = {:.2}x (target >= 0.85x); metadata / pipeline = {:.1}x (target >= 20x)",
        rate(pipe) / rate(dec),
        rate(meta) / rate(pipe)
    );
}
