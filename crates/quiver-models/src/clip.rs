//! CLIP (ViT layout, Hugging Face `CLIPModel` names) with Candle's CLIP:
//! image and text embeddings in one space, and zero-shot classification
//! against label texts.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use candle_transformers::models::clip::{ClipConfig, ClipModel};
use serde::Deserialize;
use tokenizers::{Encoding, Tokenizer};

use crate::convnet::{softmax_rows, top_k};
use crate::error::{ModelError, Result};
use crate::text::{load_tokenizer, tokenize};
use crate::vision::Ranking;
use crate::weights::{load_error, var_builder, weights_file};
use crate::worker::Stop;

/// OpenAI CLIP's input normalisation (0–1 scale).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Most positions (rows of the activations) one forward pass of the
/// image tower takes on the CPU. The activations a pass holds grow with
/// its rows, while the matrix products are no faster at 3,200 rows
/// (ViT-B/32's 64 images of 50 positions) than at 1,000: a pipeline of
/// 1,200 JPEGs into ViT-B/32 at `batch_size` 64 peaked at 963 MB of RSS
/// with passes of 64 images, 758 MB with passes of 20.
const CPU_PASS_POSITIONS: usize = 1024;

#[derive(Debug, Clone, Deserialize)]
struct TowerConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    projection_dim: Option<usize>,
    #[serde(default)]
    hidden_act: Option<String>,
    // Text only.
    #[serde(default)]
    vocab_size: Option<usize>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    // Vision only.
    #[serde(default)]
    image_size: Option<usize>,
    #[serde(default)]
    patch_size: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
struct HfClipConfig {
    text_config: TowerConfig,
    vision_config: TowerConfig,
    projection_dim: usize,
    #[serde(default = "logit_scale")]
    logit_scale_init_value: f32,
}

fn logit_scale() -> f32 {
    2.6592
}

/// What a CLIP directory declares, read without its weights.
#[derive(Debug, Clone)]
pub struct ClipInfo {
    /// Length of the (unit) embeddings of images and texts.
    pub dim: usize,
    /// Side of the square input images.
    pub image_size: usize,
    /// Most tokens of a text (longer ones are truncated).
    pub max_tokens: usize,
    config: ClipConfig,
}

impl ClipInfo {
    /// Candle's configuration of it.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Images one forward pass of the image tower takes on the CPU, of a
    /// call of `batch`: as many as make [`CPU_PASS_POSITIONS`] positions
    /// (patches and class tokens), at least one.
    pub fn images_per_cpu_pass(&self, batch: usize) -> usize {
        let vision = &self.config.vision_config;
        let side = vision.image_size / vision.patch_size.max(1);
        batch
            .max(1)
            .min((CPU_PASS_POSITIONS / (side * side + 1)).max(1))
    }

    pub fn read(model: &str, dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let c: HfClipConfig = crate::text::read_json(model, &path)?;
        let bad = |reason: String| ModelError::BadOption {
            option: "config.json".into(),
            reason: format!("model '{model}' ({}): {reason}", path.display()),
        };
        for (tower, t) in [("text", &c.text_config), ("vision", &c.vision_config)] {
            if t.hidden_act.as_deref().is_some_and(|a| a != "quick_gelu") {
                return Err(bad(format!(
                    "{tower} activation {:?}: Quiver's CLIP runs quick_gelu (OpenAI's layout)",
                    t.hidden_act
                )));
            }
            if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
                return Err(bad(format!("{tower} heads do not divide the width")));
            }
        }
        let t = &c.text_config;
        let v = &c.vision_config;
        let (Some(vocab), Some(max_pos), Some(image), Some(patch)) = (
            t.vocab_size,
            t.max_position_embeddings,
            v.image_size,
            v.patch_size,
        ) else {
            return Err(bad(
                "text_config needs vocab_size and max_position_embeddings, vision_config image_size and patch_size"
                    .into(),
            ));
        };
        if patch == 0 || image % patch != 0 {
            return Err(bad(format!(
                "image_size {image} is not a multiple of patch_size {patch}"
            )));
        }
        let config = ClipConfig {
            text_config: ClipTextConfig {
                vocab_size: vocab,
                embed_dim: t.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: t.intermediate_size,
                max_position_embeddings: max_pos,
                pad_with: None,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                projection_dim: t.projection_dim.unwrap_or(c.projection_dim),
            },
            vision_config: ClipVisionConfig {
                embed_dim: v.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: v.intermediate_size,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                projection_dim: v.projection_dim.unwrap_or(c.projection_dim),
                num_channels: 3,
                image_size: image,
                patch_size: patch,
            },
            logit_scale_init_value: c.logit_scale_init_value,
            image_size: image,
        };
        Ok(Self {
            dim: c.projection_dim,
            image_size: image,
            max_tokens: max_pos,
            config,
        })
    }
}

/// A loaded CLIP.
#[derive(Debug)]
pub struct Clip {
    name: String,
    info: ClipInfo,
    model: ClipModel,
    tokenizer: Tokenizer,
    device: Device,
    dtype: DType,
    logit_scale: f32,
}

impl Clip {
    pub fn load(name: &str, dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let info = ClipInfo::read(name, dir)?;
        // Padding is added per pass (with 0, see `embed_tokens`).
        let (tokenizer, _) = load_tokenizer(name, dir, info.max_tokens)?;
        let weights = weights_file(name, dir)?;
        let vb = var_builder(name, &weights, dtype, device)?;
        let model =
            ClipModel::new(vb.clone(), &info.config).map_err(|e| load_error(name, &weights, e))?;
        let logit_scale = if vb.contains_tensor("logit_scale") {
            vb.get_unchecked_dtype("logit_scale", DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| load_error(name, &weights, e))?
                .first()
                .copied()
                .unwrap_or(info.config.logit_scale_init_value)
        } else {
            info.config.logit_scale_init_value
        };
        Ok(Self {
            name: name.to_string(),
            info,
            model,
            tokenizer,
            device: device.clone(),
            dtype,
            logit_scale: logit_scale.exp(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &ClipInfo {
        &self.info
    }

    /// Unit-length rows, as f32 values.
    fn normalized(&self, features: &Tensor) -> Result<Vec<f32>> {
        let err = ModelError::forward(&self.name);
        let f = features.to_dtype(DType::F32).map_err(&err)?;
        let norm = f
            .sqr()
            .and_then(|s| s.sum_keepdim(D::Minus1))
            .and_then(|s| s.sqrt())
            .and_then(|s| s.clamp(1e-12, f64::MAX))
            .map_err(&err)?;
        f.broadcast_div(&norm)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(&err)
    }

    /// `texts` tokenised for the text tower, ready for
    /// [`Self::embed_tokens`]: CPU work that needs no weights.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        tokenize(&self.tokenizer, &self.name, texts)
    }

    /// Text embeddings of tokenised texts (`encodings.len() × dim`, unit
    /// length), `batch` texts per pass, each padded to the longest of its
    /// pass.
    pub fn embed_tokens(
        &self,
        encodings: &[Encoding],
        batch: usize,
        stop: Stop,
    ) -> Result<Vec<f32>> {
        let err = ModelError::forward(&self.name);
        let mut out = Vec::with_capacity(encodings.len() * self.info.dim);
        for chunk in encodings.chunks(batch.max(1)) {
            if stop() {
                return Err(ModelError::Cancelled(self.name.clone()));
            }
            let len = chunk.iter().map(|e| e.len()).max().unwrap_or(1).max(1);
            // Padding with 0: the text tower pools at the highest id (the
            // end-of-text token), which padding must not outrank.
            let mut ids = vec![0u32; chunk.len() * len];
            for (row, e) in chunk.iter().enumerate() {
                ids[row * len..row * len + e.len()].copy_from_slice(e.get_ids());
            }
            let ids = Tensor::from_vec(ids, (chunk.len(), len), &self.device).map_err(&err)?;
            let features = self.model.get_text_features(&ids).map_err(&err)?;
            out.extend(self.normalized(&features)?);
        }
        Ok(out)
    }

    /// Images in one forward pass of a call of `batch`: all of them on a
    /// GPU, [`ClipInfo::images_per_cpu_pass`] on the CPU.
    fn images_per_pass(&self, batch: usize) -> usize {
        if self.device.is_cpu() {
            self.info.images_per_cpu_pass(batch)
        } else {
            batch.max(1)
        }
    }

    /// Image embeddings (`n × dim`, unit length) of RGB images of
    /// `image_size`², `batch` per call: per forward pass, all of them on
    /// a GPU, [`Self::images_per_pass`] on the CPU.
    pub fn embed_images(&self, rgb: &[u8], batch: usize, stop: Stop) -> Result<Vec<f32>> {
        let err = ModelError::forward(&self.name);
        let s = self.info.image_size;
        let per_image = s * s * 3;
        if !rgb.len().is_multiple_of(per_image) {
            return Err(err(candle_core::Error::Msg(format!(
                "{} bytes are not whole {s}x{s} RGB images",
                rgb.len()
            ))));
        }
        let mut out = Vec::with_capacity(rgb.len() / per_image * self.info.dim);
        for chunk in rgb.chunks(self.images_per_pass(batch) * per_image) {
            if stop() {
                return Err(ModelError::Cancelled(self.name.clone()));
            }
            let n = chunk.len() / per_image;
            // NCHW, (x / 255 − mean) / std.
            let mut pixels = vec![0f32; chunk.len()];
            for (img, dst) in chunk
                .chunks_exact(per_image)
                .zip(pixels.chunks_exact_mut(per_image))
            {
                for c in 0..3 {
                    let plane = &mut dst[c * s * s..(c + 1) * s * s];
                    for (d, px) in plane.iter_mut().zip(img.chunks_exact(3)) {
                        *d = (f32::from(px[c]) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
                    }
                }
            }
            let x = Tensor::from_vec(pixels, (n, 3, s, s), &self.device)
                .and_then(|t| t.to_dtype(self.dtype))
                .map_err(&err)?;
            let features = self.model.get_image_features(&x).map_err(&err)?;
            out.extend(self.normalized(&features)?);
        }
        Ok(out)
    }

    /// Zero-shot classification: each image against `labels` (texts such
    /// as "a photo of a cat", tokenised by [`Self::tokenize`]), softmax
    /// over the scaled cosine similarities; the `top` best, most probable
    /// first.
    pub fn classify(
        &self,
        rgb: &[u8],
        labels: &[Encoding],
        batch: usize,
        top: usize,
        stop: Stop,
    ) -> Result<Vec<Ranking>> {
        let d = self.info.dim;
        let texts = self.embed_tokens(labels, batch, stop)?;
        let images = self.embed_images(rgb, batch, stop)?;
        let mut out = vec![];
        for image in images.chunks_exact(d) {
            let mut logits: Vec<f32> = texts
                .chunks_exact(d)
                .map(|t| self.logit_scale * t.iter().zip(image).map(|(a, b)| a * b).sum::<f32>())
                .collect();
            softmax_rows(&mut logits, labels.len());
            out.push(top_k(&logits, top));
        }
        Ok(out)
    }
}
