//! Tiny models with the real layouts and deterministic pseudo-random
//! weights, generated on the spot, for tests and the demo: they check
//! shapes, batching, determinism and the SQL around models without
//! shipping or downloading weights. Their outputs mean nothing.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config, HiddenAct};
use serde_json::json;

use crate::error::{ModelError, Result};

/// A deterministic generator (SplitMix64), so that a seed gives the same
/// weights on every machine.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    pub fn next_f32(&mut self, scale: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }
}

fn io(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::io("tiny", path, source)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| ModelError::Config {
        model: "tiny".into(),
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(|e| io(path, e))
}

/// The tiny BERT's vocabulary: special tokens, the letters and digits (so
/// that any lower-case ASCII text tokenises, piece by piece) and a few
/// whole words.
fn tiny_vocab() -> Vec<String> {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in ('a'..='z').chain('0'..='9') {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    for p in [".", ",", "!", "?", "'", "-"] {
        vocab.push(p.to_string());
    }
    for w in [
        "the", "a", "cat", "dog", "sat", "on", "mat", "bird", "sky", "sea", "image", "sound",
        "photo", "of", "is", "and", "in", "car", "red", "blue",
    ] {
        vocab.push(w.to_string());
    }
    vocab
}

/// The shape of a generated BERT.
#[derive(Debug, Clone, Copy)]
pub struct BertShape {
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
}

impl BertShape {
    /// all-MiniLM-L6-v2's shape (384 wide, 6 layers, 12 heads), for
    /// throughput checks where the weights do not matter.
    pub const MINILM: BertShape = BertShape {
        dim: 384,
        layers: 6,
        heads: 12,
        intermediate: 1536,
    };
}

/// Writes a BERT sentence embedder (hidden size `dim`, 2 layers) in the
/// Hugging Face + sentence-transformers layout to `dir`: `config.json`,
/// `tokenizer.json` (WordPiece, lower-casing), `model.safetensors`,
/// `modules.json` (Transformer → Pooling → Normalize),
/// `sentence_bert_config.json` and `1_Pooling/config.json`.
pub fn write_tiny_bert(dir: &Path, dim: usize, seed: u64) -> Result<()> {
    let shape = BertShape {
        dim,
        layers: 2,
        heads: 4,
        intermediate: dim * 2,
    };
    write_bert(dir, shape, seed)
}

/// [`write_tiny_bert`] with any shape.
pub fn write_bert(dir: &Path, shape: BertShape, seed: u64) -> Result<()> {
    let dim = shape.dim;
    std::fs::create_dir_all(dir.join("1_Pooling")).map_err(|e| io(dir, e))?;
    let vocab = tiny_vocab();
    let config = Config {
        vocab_size: vocab.len(),
        hidden_size: dim,
        num_hidden_layers: shape.layers,
        num_attention_heads: shape.heads,
        intermediate_size: shape.intermediate,
        hidden_act: HiddenAct::Gelu,
        hidden_dropout_prob: 0.0,
        max_position_embeddings: 128,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: Default::default(),
        use_cache: false,
        classifier_dropout: None,
        model_type: Some("bert".into()),
    };
    write_json(
        &dir.join("config.json"),
        &json!({
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": config.vocab_size,
            "hidden_size": dim,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "max_position_embeddings": config.max_position_embeddings,
            "type_vocab_size": 2,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
        }),
    )?;
    write_json(
        &dir.join("sentence_bert_config.json"),
        &json!({"max_seq_length": 48, "do_lower_case": false}),
    )?;
    write_json(
        &dir.join("1_Pooling").join("config.json"),
        &json!({"word_embedding_dimension": dim, "pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false}),
    )?;
    write_json(
        &dir.join("modules.json"),
        &json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    )?;
    write_bert_tokenizer(&dir.join("tokenizer.json"), &vocab)?;

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb, &config).map_err(|e| crate::weights::load_error("tiny", dir, e))?;
    fill_deterministic(&varmap, seed).map_err(|e| crate::weights::load_error("tiny", dir, e))?;
    let path = dir.join("model.safetensors");
    varmap
        .save(&path)
        .map_err(|e| crate::weights::load_error("tiny", &path, e))
}

/// Overwrites every variable, in name order, with values from `seed`:
/// LayerNorm scales near 1, everything else small.
fn fill_deterministic(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = SplitMix::new(seed);
    for name in names {
        let var = &data[name];
        let n = var.elem_count();
        let values: Vec<f32> = if name.contains("LayerNorm.weight") {
            (0..n).map(|_| 1.0 + rng.next_f32(0.1)).collect()
        } else {
            (0..n).map(|_| rng.next_f32(0.2)).collect()
        };
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
    }
    Ok(())
}

/// Writes a WordPiece tokenizer over `vocab` as BERT's uncased tokenizers
/// are: BertNormalizer (lower-casing), BertPreTokenizer, `[CLS] … [SEP]`.
pub fn write_bert_tokenizer(path: &Path, vocab: &[String]) -> Result<()> {
    write_wordpiece_tokenizer(path, vocab, "[CLS]", "[SEP]")
}

/// [`write_bert_tokenizer`] with other start and end tokens.
fn write_wordpiece_tokenizer(path: &Path, vocab: &[String], cls: &str, sep: &str) -> Result<()> {
    let id = |t: &str| vocab.iter().position(|v| v == t).unwrap_or(0);
    let special = ["[PAD]", "[UNK]", cls, sep, "[MASK]"];
    let added: Vec<_> = special
        .iter()
        .map(|t| {
            json!({"id": id(t), "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    write_json(
        path,
        &json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": cls, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": sep, "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": cls, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": sep, "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}},
                         {"SpecialToken": {"id": sep, "type_id": 1}}],
                "special_tokens": {
                    cls: {"id": cls, "ids": [id(cls)], "tokens": [cls]},
                    sep: {"id": sep, "ids": [id(sep)], "tokens": [sep]}
                }
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab_map}
        }),
    )
}

/// Writes a tiny EfficientNet-Lite-layout classifier to `dir`: 32×32
/// inputs, three blocks (one without expansion, one strided, one
/// residual), `labels.len()` classes named by `labels.txt`.
pub fn write_tiny_efficientnet(dir: &Path, labels: &[&str], seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let classes = labels.len();
    let mut config = crate::vision::ClassifierConfig::efficientnet_lite0(classes);
    config.variant = Some("tiny".into());
    config.image_size = 32;
    config.blocks = vec!["r1_k3_s11_e1_i8_o8".into(), "r2_k5_s22_e4_i8_o12".into()];
    let json = serde_json::to_value(&config)
        .map_err(|e| ModelError::io("tiny", dir, std::io::Error::other(e)))?;
    write_json(&dir.join("config.json"), &json)?;
    std::fs::write(dir.join("labels.txt"), labels.join("\n") + "\n")
        .map_err(|e| io(&dir.join("labels.txt"), e))?;

    let mut rng = SplitMix::new(seed);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![];
    let bn = |tensors: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
        for f in ["weight", "bias", "running_mean", "running_var"] {
            tensors.push((format!("{p}.{f}"), vec![c]));
        }
    };
    tensors.push(("_conv_stem.weight".into(), vec![8, 3, 3, 3]));
    bn(&mut tensors, "_bn0", 8);
    // (input, expanded, output, kernel)
    for (i, (cin, mid, cout, k)) in [(8, 8, 8, 3), (8, 32, 12, 5), (12, 48, 12, 5)]
        .into_iter()
        .enumerate()
    {
        let p = format!("_blocks.{i}");
        if mid != cin {
            tensors.push((format!("{p}._expand_conv.weight"), vec![mid, cin, 1, 1]));
            bn(&mut tensors, &format!("{p}._bn0"), mid);
        }
        tensors.push((format!("{p}._depthwise_conv.weight"), vec![mid, 1, k, k]));
        bn(&mut tensors, &format!("{p}._bn1"), mid);
        tensors.push((format!("{p}._project_conv.weight"), vec![cout, mid, 1, 1]));
        bn(&mut tensors, &format!("{p}._bn2"), cout);
    }
    tensors.push(("_conv_head.weight".into(), vec![16, 12, 1, 1]));
    bn(&mut tensors, "_bn1", 16);
    tensors.push(("_fc.weight".into(), vec![classes, 16]));
    tensors.push(("_fc.bias".into(), vec![classes]));
    let mut map = std::collections::HashMap::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("running_var") || name.ends_with("bn0.weight") {
            (0..n).map(|_| 1.0 + rng.next_f32(0.5).abs()).collect()
        } else {
            (0..n).map(|_| rng.next_f32(0.5)).collect()
        };
        let t = Tensor::from_vec(values, shape, &Device::Cpu)
            .map_err(|e| crate::weights::load_error("tiny", dir, e))?;
        map.insert(name, t);
    }
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&map, &path)
        .map_err(|e| crate::weights::load_error("tiny", &path, e))
}

/// A deterministic `size`×`size` RGB test pattern (`kind` 0–3: gradient,
/// checkerboard, rings, noise), the same bytes the EfficientNet reference
/// script computes.
pub fn pattern_image(kind: u64, size: usize) -> Vec<u8> {
    let mut rng = SplitMix::new(kind);
    let mut out = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        for x in 0..size {
            let px = match kind {
                0 => [
                    (x * 255 / (size - 1)) as u8,
                    (y * 255 / (size - 1)) as u8,
                    128,
                ],
                1 => {
                    let v: usize = if ((x / 16) + (y / 16)) % 2 == 1 {
                        255
                    } else {
                        0
                    };
                    [v as u8, (v / 2) as u8, (255 - v) as u8]
                }
                2 => {
                    let (dx, dy) = (x as i64 - 112, y as i64 - 112);
                    let v = ((dx * dx + dy * dy) / 64 % 256) as usize;
                    [v as u8, (255 - v) as u8, (v * 3 % 256) as u8]
                }
                _ => {
                    let z = rng.next_u64();
                    [z as u8, (z >> 8) as u8, (z >> 16) as u8]
                }
            };
            out.extend_from_slice(&px);
        }
    }
    out
}

/// The vision tower of a generated CLIP: image and patch size, width,
/// depth and heads, and the embedding dimension. The text tower is the
/// tiny one (2 layers of width 32) whatever the shape.
#[derive(Debug, Clone, Copy)]
pub struct ClipShape {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    /// Width of the MLP inside each layer.
    pub mlp: usize,
    pub layers: usize,
    pub heads: usize,
    pub projection_dim: usize,
}

impl ClipShape {
    /// 32×32 images in 8×8 patches, 2 layers of width 32, 16-dimensional
    /// embeddings.
    pub const TINY: ClipShape = ClipShape {
        image_size: 32,
        patch_size: 8,
        width: 32,
        mlp: 64,
        layers: 2,
        heads: 4,
        projection_dim: 16,
    };
    /// OpenAI's ViT-B/32 image tower: 224×224 images in 32×32 patches,
    /// 12 layers of width 768, 512-dimensional embeddings.
    pub const VIT_B32: ClipShape = ClipShape {
        image_size: 224,
        patch_size: 32,
        width: 768,
        mlp: 3072,
        layers: 12,
        heads: 12,
        projection_dim: 512,
    };
}

/// Writes a tiny CLIP (OpenAI's ViT layout, Hugging Face names) to `dir`:
/// [`ClipShape::TINY`], and a WordPiece tokenizer whose end-of-text token
/// has the highest id (the text tower pools there, as CLIP's BPE
/// vocabulary has it).
pub fn write_tiny_clip(dir: &Path, seed: u64) -> Result<()> {
    write_clip(dir, ClipShape::TINY, seed)
}

/// Writes a CLIP of vision tower `shape` with deterministic weights to
/// `dir` (see [`write_tiny_clip`]).
pub fn write_clip(dir: &Path, shape: ClipShape, seed: u64) -> Result<()> {
    use candle_transformers::models::clip::ClipModel;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut vocab = tiny_vocab();
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let tower = |extra: serde_json::Value| {
        let mut base = json!({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "hidden_act": "quick_gelu",
                              "projection_dim": shape.projection_dim});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        base
    };
    write_json(
        &dir.join("config.json"),
        &json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": shape.projection_dim,
            "logit_scale_init_value": 2.6592,
            "text_config": tower(json!({"vocab_size": vocab.len(), "max_position_embeddings": 16,
                                        "bos_token_id": vocab.len() - 2, "eos_token_id": vocab.len() - 1,
                                        "pad_token_id": 0})),
            "vision_config": tower(json!({"image_size": shape.image_size, "patch_size": shape.patch_size,
                                          "hidden_size": shape.width, "intermediate_size": shape.mlp,
                                          "num_hidden_layers": shape.layers,
                                          "num_attention_heads": shape.heads})),
        }),
    )?;
    write_wordpiece_tokenizer(
        &dir.join("tokenizer.json"),
        &vocab,
        "<|startoftext|>",
        "<|endoftext|>",
    )?;
    let info = crate::clip::ClipInfo::read("tiny", dir)?;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let err = |e| crate::weights::load_error("tiny", dir, e);
    // Parameters Candle's CLIP makes up when a checkpoint lacks them (the
    // class embedding at random): the tiny model has them all.
    let init = candle_nn::Init::Const(0.0);
    varmap
        .get(
            shape.width,
            "vision_model.embeddings.class_embedding",
            init,
            DType::F32,
            &Device::Cpu,
        )
        .map_err(err)?;
    varmap
        .get((), "logit_scale", init, DType::F32, &Device::Cpu)
        .map_err(err)?;
    ClipModel::new(vb, info.config()).map_err(err)?;
    fill_deterministic(&varmap, seed).map_err(err)?;
    // CLIP's initial temperature, ln(1 / 0.07).
    varmap
        .set_one(
            "logit_scale",
            Tensor::new(2.6592f32, &Device::Cpu).map_err(err)?,
        )
        .map_err(err)?;
    let path = dir.join("model.safetensors");
    varmap
        .save(&path)
        .map_err(|e| crate::weights::load_error("tiny", &path, e))
}

/// Writes a torchvision-layout ResNet with deterministic He-scaled weights
/// to `dir`: `layers` blocks per stage (ResNet-18 is `[2, 2, 2, 2]`),
/// bottlenecks (ResNet-50's) or basic blocks, `classes` outputs, inputs of
/// `image_size`² (any size works: the network pools globally).
pub fn write_resnet(
    dir: &Path,
    layers: [usize; 4],
    bottleneck: bool,
    classes: usize,
    image_size: usize,
    seed: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut config = crate::vision::ClassifierConfig::resnet(classes);
    config.image_size = image_size;
    let json = serde_json::to_value(&config)
        .map_err(|e| ModelError::io("resnet", dir, std::io::Error::other(e)))?;
    write_json(&dir.join("config.json"), &json)?;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![];
    let bn = |shapes: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
        for f in ["weight", "bias", "running_mean", "running_var"] {
            shapes.push((format!("{p}.{f}"), vec![c]));
        }
    };
    shapes.push(("conv1.weight".into(), vec![64, 3, 7, 7]));
    bn(&mut shapes, "bn1", 64);
    let expansion = if bottleneck { 4 } else { 1 };
    let mut inplanes = 64;
    for (stage, &count) in layers.iter().enumerate() {
        let planes = 64 << stage;
        for i in 0..count {
            let p = format!("layer{}.{i}", stage + 1);
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            if bottleneck {
                shapes.push((format!("{p}.conv1.weight"), vec![planes, inplanes, 1, 1]));
                bn(&mut shapes, &format!("{p}.bn1"), planes);
                shapes.push((format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]));
                bn(&mut shapes, &format!("{p}.bn2"), planes);
                shapes.push((format!("{p}.conv3.weight"), vec![planes * 4, planes, 1, 1]));
                bn(&mut shapes, &format!("{p}.bn3"), planes * 4);
            } else {
                shapes.push((format!("{p}.conv1.weight"), vec![planes, inplanes, 3, 3]));
                bn(&mut shapes, &format!("{p}.bn1"), planes);
                shapes.push((format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]));
                bn(&mut shapes, &format!("{p}.bn2"), planes);
            }
            if stride != 1 || inplanes != planes * expansion {
                shapes.push((
                    format!("{p}.downsample.0.weight"),
                    vec![planes * expansion, inplanes, 1, 1],
                ));
                bn(
                    &mut shapes,
                    &format!("{p}.downsample.1"),
                    planes * expansion,
                );
            }
            inplanes = planes * expansion;
        }
    }
    shapes.push(("fc.weight".into(), vec![classes, inplanes]));
    shapes.push(("fc.bias".into(), vec![classes]));
    let mut rng = SplitMix::new(seed);
    let mut map = std::collections::HashMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("running_var") {
            (0..n).map(|_| 1.0 + rng.next_f32(0.5).abs()).collect()
        } else if name.ends_with("running_mean") || name.ends_with(".bias") {
            (0..n).map(|_| rng.next_f32(0.1)).collect()
        } else if shape.len() == 1 {
            // Batch-norm scales.
            (0..n).map(|_| 1.0 + rng.next_f32(0.2)).collect()
        } else {
            // He: uniform with variance 2 / fan-in.
            let fan_in: usize = shape[1..].iter().product();
            let bound = (6.0 / fan_in as f32).sqrt();
            (0..n).map(|_| rng.next_f32(bound)).collect()
        };
        let t = Tensor::from_vec(values, shape, &Device::Cpu)
            .map_err(|e| crate::weights::load_error("resnet", dir, e))?;
        map.insert(name, t);
    }
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&map, &path)
        .map_err(|e| crate::weights::load_error("resnet", &path, e))
}

/// The words of `s`, lower case, punctuation dropped (for scoring
/// transcripts).
pub fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The share of the words of `want` found in `got`, in order (their
/// longest common subsequence over `want`'s length).
pub fn word_recall(want: &str, got: &str) -> f64 {
    let (want, got) = (words(want), words(got));
    let mut dp = vec![vec![0usize; got.len() + 1]; want.len() + 1];
    for i in 0..want.len() {
        for j in 0..got.len() {
            dp[i + 1][j + 1] = if want[i] == got[j] {
                dp[i][j] + 1
            } else {
                dp[i][j + 1].max(dp[i + 1][j])
            };
        }
    }
    dp[want.len()][got.len()] as f64 / want.len().max(1) as f64
}
