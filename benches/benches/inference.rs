//! The inference-pipeline benchmark of issue 3: `image_decode` +
//! `image_resize` (CPU) feeding `embed_image` on a CLIP of ViT-B/32's
//! image tower (generated, deterministic weights), through
//! `InferenceExec`.
//!
//! - **overlap**: in one run, images/s of the decode stage alone, of the
//!   model alone (over pixels decoded beforehand, held in memory) and of
//!   the whole pipeline, with the model's busy % from `EXPLAIN ANALYZE`.
//!   Target: pipeline ≥ 0.9× the slower stage; busy ≥ 90% when the model
//!   is the slower stage.
//! - **dynamic batching**: the pipeline at `target_partitions = 8`,
//!   `quiver.inference.batch_size = 64`: mean batch fill (target ≥ 0.9);
//!   again at each `max_wait_ms` in `QUIVER_BENCH_MAX_WAITS` (`100,250`).
//! - **memory**: the pipeline over `QUIVER_BENCH_MEMORY_IMAGES` (default
//!   10,000; 0 skips it) 320×240 JPEGs under a 512 MB memory limit, in a
//!   child process: its peak RSS while the pipeline runs (the peak is
//!   reset after the model is loaded) against the limit plus the model's
//!   weights.
//! - **sharing a device** (`QUIVER_BENCH_SHARE=1`): two CLIPs (separate
//!   copies of the weights) embedding the same decoded pixels in one
//!   query, at `device_fraction` 1 (they take turns) and 0.5 each (side
//!   by side): images/s through both.
//!
//! `QUIVER_BENCH_IMAGES` (default 500) sets the corpus,
//! `QUIVER_BENCH_BATCH` (default 64) the model's batch size,
//! `QUIVER_BENCH_DEVICE=cuda` puts the model on the GPU. Run with
//! `cargo bench -p quiver-benches --bench inference`.

use std::path::Path;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use quiver::{Quiver, QuiverConfig};
use quiver_benches::{corpus_dir, env_usize, explain_lines, peak_rss_mb, rss_mb, status_value};
use quiver_models::testing::{ClipShape, write_clip};

const PIPELINE: &str = "embed_image('clip', image_resize(image_decode(image), 224, 224))";

fn engine(memory_limit: Option<&str>) -> Quiver {
    // `QUIVER_EXEC_*` variables apply (`QUIVER_EXEC_TARGET_PARTITIONS`
    // runs a 16-core machine's partitioning here).
    let mut config = QuiverConfig::default()
        .with_env_overrides()
        .expect("QUIVER_* settings");
    if let Some(limit) = memory_limit {
        config
            .set("exec.memory_limit", limit, "bench")
            .expect("memory limit");
    }
    Quiver::builder().config(config).build().expect("engine")
}

/// Registers (or replaces) the CLIP in `dir` as `name` on `device`, at
/// the benchmark's batch size and `fraction` of the device.
async fn create_model(q: &Quiver, name: &str, dir: &Path, device: &str, fraction: &str) {
    q.collect(&format!(
        "CREATE OR REPLACE MODEL {name} TYPE clip FROM '{}' OPTIONS (device '{device}', batch_size '{}', device_fraction '{fraction}')",
        dir.display(),
        env_usize("QUIVER_BENCH_BATCH", 64)
    ))
    .await
    .expect("model");
}

async fn register_model(q: &Quiver, model: &Path, device: &str, warm: &Path) {
    create_model(q, "clip", model, device, "1").await;
    // Load it (and warm it up) outside the timings.
    q.collect(&format!(
        "SELECT {PIPELINE} FROM read_images('{}')",
        warm.display()
    ))
    .await
    .expect("warm-up");
}

/// Seconds `sql` takes, and the `InferenceExec` line of its `EXPLAIN
/// ANALYZE` when `analyze`.
async fn run(q: &Quiver, sql: &str, analyze: bool) -> (f64, String) {
    let started = Instant::now();
    if !analyze {
        q.collect(sql).await.expect("query");
        return (started.elapsed().as_secs_f64(), String::new());
    }
    let batches = q
        .collect(&format!("EXPLAIN ANALYZE {sql}"))
        .await
        .expect("query");
    let seconds = started.elapsed().as_secs_f64();
    let line = explain_lines(&batches)
        .into_iter()
        .find(|l| l.contains("InferenceExec"))
        .unwrap_or_default();
    (seconds, line)
}

/// A metric's value in an `EXPLAIN ANALYZE` line.
fn metric(line: &str, name: &str) -> String {
    line.split([',', '[', ']', ' '])
        .find_map(|w| w.trim().strip_prefix(&format!("{name}=")))
        .unwrap_or("?")
        .to_string()
}

/// The memory run, in a child process so that its peak RSS is its own.
async fn memory_child(corpus: &Path, model: &Path, device: &str) {
    let q = engine(Some("512MB"));
    let before_model = rss_mb("VmRSS:");
    register_model(&q, model, device, &corpus.join("photo-00000.jpg")).await;
    // One full batch first: buffers (and, on a GPU, kernels the CUDA
    // libraries load lazily) that the first full call sets up once.
    q.collect(&format!(
        "SELECT count({PIPELINE}) FROM (SELECT image FROM read_images('{}/') LIMIT {})",
        corpus.display(),
        env_usize("QUIVER_BENCH_BATCH", 64)
    ))
    .await
    .expect("warm-up");
    // Loading reads the weights file and copies it into tensors: that
    // peak belongs to loading. Start counting afresh for the pipeline
    // (writing 5 to clear_refs resets the peak RSS).
    let load_peak = peak_rss_mb();
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let after_model = rss_mb("VmRSS:");
    let sql = format!(
        "SELECT count({PIPELINE}) FROM read_images('{}/')",
        corpus.display()
    );
    let (seconds, _) = run(&q, &sql, false).await;
    println!(
        "child seconds={seconds:.2} peak_rss_mb={:.0} load_peak_rss_mb={load_peak:.0} reset={reset} before_model_rss_mb={before_model:.0} after_model_rss_mb={after_model:.0} end_anon_mb={:.0} end_file_mb={:.0} threads={}",
        peak_rss_mb(),
        rss_mb("RssAnon:"),
        rss_mb("RssFile:"),
        status_value("Threads:"),
    );
}

fn weights_mb(model: &Path) -> f64 {
    std::fs::metadata(model.join("model.safetensors")).map_or(f64::NAN, |m| m.len() as f64 / 1e6)
}

fn main() {
    // As the `quiver` binary does, before the runtime's threads start.
    quiver_models::arenas::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run_all());
}

async fn run_all() {
    let device = std::env::var("QUIVER_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let model = corpus_dir("clip-vit-b32-shaped");
    if !model.join("model.safetensors").is_file() {
        write_clip(&model, ClipShape::VIT_B32, 3).expect("write CLIP");
    }
    if std::env::args().nth(1).as_deref() == Some("--memory-child") {
        let dir = std::env::var("QUIVER_BENCH_MEMORY_CORPUS").unwrap_or_default();
        memory_child(Path::new(&dir), &model, &device).await;
        return;
    }

    let count = env_usize("QUIVER_BENCH_IMAGES", 500);
    let corpus = corpus_dir(&format!("photos-{count}"));
    quiver::sample::write_photo_corpus(&corpus, count, threads).expect("corpus");
    let images = format!("read_images('{}/')", corpus.display());
    println!(
        "{count} photo-like JPEGs (640×480 to 1920×1080), CLIP ViT-B/32 image tower on {device}, {threads} cores, batch_size {}",
        env_usize("QUIVER_BENCH_BATCH", 64)
    );

    let q = engine(None);
    register_model(&q, &model, &device, &corpus.join("photo-00000.jpg")).await;
    let (decode_s, _) = run(
        &q,
        &format!("SELECT count(image_resize(image_decode(image), 224, 224)) FROM {images}"),
        false,
    )
    .await;
    q.collect(&format!(
        "CREATE TABLE pixels AS SELECT image_resize(image_decode(image), 224, 224) AS image FROM {images}"
    ))
    .await
    .expect("pixels");
    let (model_s, model_line) = run(
        &q,
        "SELECT count(embed_image('clip', image)) FROM pixels",
        true,
    )
    .await;
    let (pipeline_s, line) =
        run(&q, &format!("SELECT count({PIPELINE}) FROM {images}"), true).await;
    let rate = |s: f64| count as f64 / s;
    let (decode, model_rate, pipeline) = (rate(decode_s), rate(model_s), rate(pipeline_s));
    let slower = decode.min(model_rate);
    println!(
        "decode+resize alone: {decode:.1} images/s; model alone: {model_rate:.1} images/s (busy {}%); pipeline: {pipeline:.1} images/s",
        metric(&model_line, "model_busy_pct")
    );
    println!(
        "overlap: pipeline / slower stage ({}) = {:.2} (target >= 0.9); model busy {}% (target >= 90% when the model is slower); batch fill {}%",
        if model_rate <= decode {
            "model"
        } else {
            "decode"
        },
        pipeline / slower,
        metric(&line, "model_busy_pct"),
        metric(&line, "batch_fill_pct"),
    );
    println!("  {}", line.trim());

    q.collect("SET datafusion.execution.target_partitions = 8")
        .await
        .expect("set");
    // At the session's `max_wait_ms`, then at each one listed in
    // `QUIVER_BENCH_MAX_WAITS` (`100,250`): a call's fill when the
    // decoding is the slower stage.
    let shown = q
        .collect("SHOW quiver.inference.max_wait_ms")
        .await
        .expect("show");
    let session_wait = shown
        .first()
        .map(|b| b.column(1).as_string::<i32>().value(0).to_string())
        .expect("max_wait_ms");
    let listed = std::env::var("QUIVER_BENCH_MAX_WAITS").unwrap_or_default();
    let waits = listed
        .split(',')
        .filter_map(|w| w.trim().parse::<u64>().ok());
    for wait in std::iter::once(None).chain(waits.map(Some)) {
        let label = match wait {
            Some(wait) => {
                q.collect(&format!("SET quiver.inference.max_wait_ms = {wait}"))
                    .await
                    .expect("set");
                format!(", max_wait_ms {wait}")
            }
            None => String::new(),
        };
        let (seconds, line) =
            run(&q, &format!("SELECT count({PIPELINE}) FROM {images}"), true).await;
        println!(
            "dynamic batching, target_partitions 8{label}: {:.1} images/s, {} calls, mean batch fill {}% (target >= 90%)",
            rate(seconds),
            metric(&line, "model_batches"),
            metric(&line, "batch_fill_pct"),
        );
    }
    q.collect(&format!(
        "SET quiver.inference.max_wait_ms = {session_wait}"
    ))
    .await
    .expect("set");

    if env_usize("QUIVER_BENCH_SHARE", 0) > 0 {
        share_a_device(&q, &model, &device, count).await;
    }

    let small = env_usize("QUIVER_BENCH_MEMORY_IMAGES", 10_000);
    if small > 0 {
        let small_dir = corpus_dir(&format!("small-photos-{small}"));
        quiver::sample::write_photo_corpus_of(&small_dir, small, threads, &[(320, 240)])
            .expect("corpus");
        let exe = std::env::current_exe().expect("exe");
        let out = std::process::Command::new(exe)
            .arg("--memory-child")
            .env("QUIVER_BENCH_MEMORY_CORPUS", &small_dir)
            .output()
            .expect("child");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("child "))
            .unwrap_or("child failed");
        let figure = |name: &str| metric(line, name).parse::<f64>().unwrap_or(f64::NAN);
        let (rss, before, after) = (
            figure("peak_rss_mb"),
            figure("before_model_rss_mb"),
            figure("after_model_rss_mb"),
        );
        let weights = weights_mb(&model);
        println!(
            "memory: {small} images under a 512 MB limit: {line}; limit + weights = {:.0} MB; peak RSS / (limit + weights) = {:.2} (target < 1); above the process before the model and the weights: {:.0} MB; growth while the pipeline ran: {:.0} MB",
            512.0 + weights,
            rss / (512.0 + weights),
            rss - before - weights,
            rss - after
        );
        if !out.status.success() {
            println!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Two models over the same pixels in one query, at `device_fraction` 1
/// and 0.5 each.
async fn share_a_device(q: &Quiver, model: &Path, device: &str, count: usize) {
    let copy = corpus_dir("clip-vit-b32-shaped-copy");
    if !copy.join("model.safetensors").is_file() {
        write_clip(&copy, ClipShape::VIT_B32, 3).expect("write CLIP");
    }
    for fraction in ["1", "0.5"] {
        create_model(q, "clip_a", model, device, fraction).await;
        create_model(q, "clip_b", &copy, device, fraction).await;
        let sql = |from: &str| {
            format!(
                "SELECT count(embed_image('clip_a', image)), count(embed_image('clip_b', image)) FROM {from}"
            )
        };
        // Loads both and warms them up.
        q.collect(&sql("(SELECT image FROM pixels LIMIT 64)"))
            .await
            .expect("warm-up");
        let (seconds, _) = run(q, &sql("pixels"), false).await;
        println!(
            "sharing a device: two models at device_fraction {fraction}: {:.1} images/s through both ({seconds:.2} s for {count} images)",
            count as f64 / seconds
        );
    }
}
