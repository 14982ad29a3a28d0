//! ResNet (torchvision's layout) on Quiver's CPU kernels equals
//! torchvision's ResNet on the same generated weights: basic blocks
//! (ResNet-18's) and bottlenecks (ResNet-50's), one block per stage, 10
//! classes, 64×64 patterns (reference computed by
//! `tests/reference/resnet_reference.py`, committed as numbers). Also a
//! torchvision-style checkpoint imports as a ResNet.

use quiver_models::testing::{pattern_image, write_resnet};
use quiver_models::vision::{ImageClassifier, ImageClassifierInfo};
use quiver_models::{Architecture, ModelRegistry, ModelSpec};

#[derive(serde::Deserialize)]
struct Reference {
    basic: Vec<Vec<f32>>,
    bottleneck: Vec<Vec<f32>>,
}

fn check(bottleneck: bool, want: &[Vec<f32>]) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_resnet(dir.path(), [1, 1, 1, 1], bottleneck, 10, 64, 21).expect("write");
    if let Ok(keep) = std::env::var("QUIVER_KEEP_RESNET") {
        let kind = if bottleneck { "bottleneck" } else { "basic" };
        write_resnet(
            &std::path::Path::new(&keep).join(kind),
            [1, 1, 1, 1],
            bottleneck,
            10,
            64,
            21,
        )
        .expect("write");
    }
    let info = ImageClassifierInfo::read("r", dir.path(), None).expect("config");
    let model = ImageClassifier::load("r", dir.path(), &info).expect("load");
    let rgb: Vec<u8> = (0..4).flat_map(|k| pattern_image(k, 64)).collect();
    let got = model.logits(&rgb, 4);
    assert_eq!(want.len(), 4, "reference rows");
    assert!(want.iter().all(|r| r.len() == 10));
    for (row, want) in got.chunks(10).zip(want) {
        for (x, y) in row.iter().zip(want) {
            assert!(
                (x - y).abs() < 1e-3 * (1.0 + y.abs()),
                "{x} vs {y} (bottleneck {bottleneck})"
            );
        }
    }
}

#[test]
fn resnet_matches_torchvision() {
    let reference: Reference =
        serde_json::from_str(include_str!("reference/resnet_reference.json")).expect("json");
    check(false, &reference.basic);
    check(true, &reference.bottleneck);
}

#[test]
fn resnet_registers_and_classifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_resnet(dir.path(), [1, 1, 1, 1], false, 10, 64, 3).expect("write");
    let registry = ModelRegistry::new();
    registry
        .register(ModelSpec::new("r", Architecture::ResNet, dir.path()), false)
        .expect("register");
    let model = registry.get("r").expect("load");
    let ranked = futures::executor::block_on(model.classify_images(pattern_image(2, 64), 3))
        .expect("classify");
    assert_eq!(ranked[0].len(), 3);
    // The wrong TYPE for the directory is refused at registration.
    let err = registry
        .register(
            ModelSpec::new("e", Architecture::EfficientNet, dir.path()),
            false,
        )
        .expect_err("not an efficientnet");
    assert!(
        err.to_string()
            .contains("holds a resnet model, not a efficientnet"),
        "{err}"
    );
}
