//! CLIP with a tiny generated model of the real layout: text and image
//! embeddings of the right length, unit norm, deterministic and
//! independent of batching, equal to Hugging Face transformers' on the same
//! weights (`tests/reference/tiny_clip_reference.py`, committed as
//! numbers); zero-shot probabilities.

use futures::executor::block_on;
use quiver_models::testing::{SplitMix, write_tiny_clip};
use quiver_models::{Architecture, ModelInfo, ModelRegistry, ModelSpec};

fn images(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix::new(seed);
    (0..n * 32 * 32 * 3).map(|_| rng.next_u64() as u8).collect()
}

#[derive(serde::Deserialize)]
struct Reference {
    texts: Vec<String>,
    text_embeddings: Vec<Vec<f32>>,
    image_embeddings: Vec<Vec<f32>>,
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}

#[test]
fn tiny_clip_embeds_texts_and_images_in_one_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_clip(dir.path(), 5).expect("write");
    // The model for the reference script.
    if let Ok(keep) = std::env::var("QUIVER_KEEP_TINY_CLIP") {
        write_tiny_clip(std::path::Path::new(&keep), 5).expect("write");
    }
    let registry = ModelRegistry::new();
    for (name, batch) in [("one", "1"), ("three", "3"), ("many", "128")] {
        let mut spec = ModelSpec::new(name, Architecture::Clip, dir.path());
        spec.set_option("batch_size", batch).expect("batch");
        registry.register(spec, false).expect("register");
    }
    let (_, info) = registry.describe("one").expect("describe");
    assert_eq!(info.embedding_dim(), Some(16));
    assert!(matches!(info, ModelInfo::Clip(ref c) if c.image_size == 32));
    let texts: Vec<String> = ["a cat", "a photo of a dog on the grass", "", "boat"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (one, three) = (
        registry.get("one").expect("load"),
        registry.get("three").expect("load"),
    );
    let a = block_on(one.embed_texts(texts.clone())).expect("embed");
    let b = block_on(three.embed_texts(texts.clone())).expect("embed");
    assert_eq!(a.len(), 4 * 16);
    close(&a, &b);
    for v in a.chunks(16) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    assert!(a[..16] != a[16..32], "different texts, different vectors");

    // Against transformers' CLIPModel.
    let reference: Reference =
        serde_json::from_str(include_str!("reference/tiny_clip_reference.json")).expect("json");
    assert_eq!(reference.texts, texts);
    close(&a, &reference.text_embeddings.concat());
    let patterns: Vec<u8> = (0..4)
        .flat_map(|k| quiver_models::testing::pattern_image(k, 32))
        .collect();
    let got = block_on(one.embed_images(patterns)).expect("patterns");
    close(&got, &reference.image_embeddings.concat());

    let rgb = images(5, 3);
    let x = block_on(one.embed_images(rgb.clone())).expect("images");
    let y = block_on(three.embed_images(rgb.clone())).expect("images");
    assert_eq!(x.len(), 5 * 16);
    close(&x, &y);
    // On the CPU a call of 128 images runs in forward passes of 60 (the
    // tiny tower has 17 positions per image): the same embeddings as one
    // image at a time.
    let (_, info) = registry.describe("many").expect("describe");
    let ModelInfo::Clip(clip) = info else {
        panic!("a CLIP")
    };
    assert_eq!(clip.images_per_cpu_pass(128), 60);
    assert_eq!(clip.images_per_cpu_pass(3), 3);
    let many = registry.get("many").expect("load");
    let lots = images(130, 4);
    close(
        &block_on(many.embed_images(lots.clone())).expect("images"),
        &block_on(one.embed_images(lots)).expect("images"),
    );
    let ranked = block_on(one.clip_classify(rgb, texts[..2].to_vec(), 2)).expect("classify");
    assert_eq!(ranked.len(), 5);
    for r in &ranked {
        assert_eq!(r.len(), 2);
        assert!((r[0].1 + r[1].1 - 1.0).abs() < 1e-4 && r[0].1 >= r[1].1);
    }
    // Not an image model: classify_image names the mismatch.
    let err = block_on(one.classify_images(vec![0; 32 * 32 * 3], 1)).expect_err("not a classifier");
    assert!(err.to_string().contains("has no classify_image"), "{err}");
}
