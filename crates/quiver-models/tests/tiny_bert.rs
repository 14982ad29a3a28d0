//! The sentence embedder on a tiny BERT with deterministic weights:
//! shapes, unit length, determinism, batching (padding must not change a
//! row's embedding), sharing of loaded weights, and errors that name the
//! file and tensor at fault.

use std::sync::Arc;

use quiver_models::testing::write_tiny_bert;
use quiver_models::{Architecture, ModelError, ModelRegistry, ModelSpec};

fn registry_with_tiny(dir: &std::path::Path) -> ModelRegistry {
    write_tiny_bert(dir, 32, 7).expect("tiny model");
    let registry = ModelRegistry::new();
    registry
        .register(ModelSpec::new("tiny", Architecture::Bert, dir), false)
        .expect("register");
    registry
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[test]
fn embeddings_are_unit_length_deterministic_and_batch_independent() {
    let tmp = tempfile::tempdir().expect("tmp");
    let registry = registry_with_tiny(tmp.path());
    let (_, info) = registry
        .describe("TINY")
        .expect("describe is case-insensitive");
    assert_eq!(info.embedding_dim(), Some(32));
    let model = registry.get("tiny").expect("load");
    let texts = vec![
        "a cat sat on the mat".to_string(),
        "dog".to_string(),
        "the quick brown fox jumps over the lazy dog, twice over, and then once more".to_string(),
    ];
    let all = block_on(model.embed_texts(texts.clone())).expect("embed");
    assert_eq!(all.len(), 3 * 32);
    for row in all.chunks(32) {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // Alone (no padding) and in a batch padded to a longer text: the same.
    let alone = block_on(model.embed_texts(vec![texts[1].clone()])).expect("embed one");
    let max_diff = alone
        .iter()
        .zip(&all[32..64])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-5,
        "padding changed the embedding by {max_diff}"
    );
    // Different texts, different vectors; the same text, the same vector.
    assert!(all[..32] != all[32..64]);
    let again = block_on(model.embed_texts(texts)).expect("embed again");
    assert_eq!(all, again);
    // Loaded once: a second get returns the same model.
    let model2 = registry.get("tiny").expect("get");
    assert!(Arc::ptr_eq(&model, &model2));
}

#[test]
fn another_name_for_the_same_weights_shares_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let registry = registry_with_tiny(tmp.path());
    registry
        .register(
            ModelSpec::new("tiny2", Architecture::Bert, tmp.path()),
            false,
        )
        .expect("register");
    let a = registry.get("tiny").expect("a");
    let b = registry.get("tiny2").expect("b");
    assert!(Arc::ptr_eq(&a, &b));
    assert!(matches!(
        registry.register(
            ModelSpec::new("tiny", Architecture::Bert, tmp.path()),
            false
        ),
        Err(ModelError::Exists(_))
    ));
    assert!(registry.drop_model("tiny2").expect("drop"));
    assert!(!registry.drop_model("tiny2").expect("drop again"));
    assert!(matches!(
        registry.get("tiny2"),
        Err(ModelError::UnknownModel(_))
    ));
}

#[test]
fn a_missing_tensor_is_named_with_its_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_tiny_bert(tmp.path(), 32, 7).expect("tiny model");
    // Rewrite the weights without one tensor.
    let path = tmp.path().join("model.safetensors");
    let mut tensors =
        candle_core::safetensors::load(&path, &candle_core::Device::Cpu).expect("load");
    tensors.remove("encoder.layer.1.output.dense.weight");
    candle_core::safetensors::save(&tensors, &path).expect("save");
    let registry = ModelRegistry::new();
    registry
        .register(
            ModelSpec::new("broken", Architecture::Bert, tmp.path()),
            false,
        )
        .expect("registering reads only the configuration");
    let err = registry
        .get("broken")
        .expect_err("must fail to load")
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("encoder.layer.1.output.dense.weight"), "{err}");
}

#[test]
fn registration_checks_directory_and_options() {
    let registry = ModelRegistry::new();
    let err = registry
        .register(
            ModelSpec::new("nowhere", Architecture::Bert, "/no/such/dir"),
            false,
        )
        .expect_err("no directory");
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    let mut spec = ModelSpec::new("x", Architecture::Bert, "/tmp");
    assert!(spec.set_option("batch_size", "0").is_err());
    assert!(spec.set_option("device", "tpu").is_err());
    assert!(spec.set_option("colour", "red").is_err());
    spec.set_option("batch_size", "16").expect("batch size");
    spec.set_option("dtype", "bf16").expect("dtype");
    assert_eq!(spec.batch_size, 16);
    assert!("resnet9000".parse::<Architecture>().is_err());
}

#[test]
fn cuda_falls_back_to_the_cpu_with_a_warning_when_absent() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_tiny_bert(tmp.path(), 32, 7).expect("tiny model");
    let registry = ModelRegistry::new();
    let mut spec = ModelSpec::new("gpu", Architecture::Bert, tmp.path());
    spec.set_option("device", "cuda").expect("device");
    registry.register(spec, false).expect("register");
    let model = registry.get("gpu").expect("load");
    if model.device() == "cpu" {
        assert!(model.warning().is_some_and(|w| w.contains("CPU")));
    } else {
        assert!(model.device().starts_with("cuda"));
    }
    let v = block_on(model.embed_texts(vec!["red car".into()])).expect("embed");
    assert_eq!(v.len(), 32);
}
