//! Runs a sentence embedder of all-MiniLM-L6-v2's shape (deterministic
//! random weights, generated into DIR) on the CPU and on CUDA: checks that
//! both give the same embeddings, then prints sentences/s on each at batch
//! sizes 64 and 256. Built with `--features cuda` on a GPU machine:
//!
//! ```sh
//! cargo run --release -p quiver-models --features cuda --example gpu_check -- /tmp/minilm-shaped [sentences]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use quiver_models::testing::{BertShape, write_bert};
use quiver_models::{Architecture, ModelRegistry, ModelSpec};

fn sentences(n: usize) -> Vec<String> {
    let words = [
        "the", "a", "cat", "dog", "sat", "on", "mat", "bird", "sky", "sea", "image", "sound",
        "photo", "of", "is", "and", "in", "car", "red", "blue",
    ];
    (0..n)
        .map(|i| {
            let len = 6 + (i * 7) % 11;
            (0..len)
                .map(|j| words[(i * 31 + j * 17 + j * j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/minilm-shaped".into()));
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(4096);
    if !dir.join("model.safetensors").is_file() {
        write_bert(&dir, BertShape::MINILM, 7)?;
    }
    let registry = ModelRegistry::new();
    for device in ["cpu", "cuda"] {
        let mut spec = ModelSpec::new(device, Architecture::Bert, &dir);
        spec.set_option("device", device)?;
        registry.register(spec, false)?;
    }
    let texts = sentences(n);
    let cpu = registry.get("cpu")?;
    let gpu = registry.get("cuda")?;
    println!(
        "cpu model on {}; cuda model on {} ({:?})",
        cpu.device(),
        gpu.device(),
        gpu.warning()
    );
    let probe: Vec<String> = texts[..64].to_vec();
    let a = futures::executor::block_on(cpu.embed_texts(probe.clone()))?;
    let b = futures::executor::block_on(gpu.embed_texts(probe))?;
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    println!(
        "cpu vs {}: {} values, largest difference {max_diff:.2e}",
        gpu.device(),
        a.len()
    );
    for (name, model, count) in [("cuda", &gpu, n), ("cpu", &cpu, n.min(1024))] {
        for batch in [64usize, 256] {
            // Warm-up pass (kernels, allocator).
            futures::executor::block_on(model.embed_texts(texts[..batch].to_vec()))?;
            let started = Instant::now();
            for chunk in texts[..count].chunks(batch) {
                futures::executor::block_on(model.embed_texts(chunk.to_vec()))?;
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{name} ({}): batch {batch:>3}: {:.0} sentences/s ({count} sentences in {secs:.2} s)",
                model.device(),
                count as f64 / secs
            );
        }
    }
    if max_diff > 1e-3 {
        return Err(format!("cpu and cuda disagree by {max_diff}").into());
    }
    Ok(())
}
