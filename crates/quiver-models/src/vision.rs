//! Image classifiers: what a classifier directory declares
//! (`config.json`, `labels.txt`), and classification in batches on the
//! model's thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::convnet::{InputScaling, Nhwc, softmax_rows, top_k};
use crate::efficientnet::{EfficientNet, LITE0_BLOCKS};
use crate::error::{ModelError, Result};
use crate::resnet::ResNet;
use crate::worker::Stop;

/// The `config.json` of an image classifier directory (written by
/// `quiver models import`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// `efficientnet` or `resnet`.
    pub model_type: String,
    /// `efficientnet-lite0` … `efficientnet-lite4`.
    #[serde(default)]
    pub variant: Option<String>,
    /// Side of the square input, pixels.
    pub image_size: usize,
    pub num_classes: usize,
    /// TensorFlow block strings (default: EfficientNet-Lite0's).
    #[serde(default = "lite0_blocks")]
    pub blocks: Vec<String>,
    /// Repeats multiplier of the variant (Lite0: 1.0).
    #[serde(default = "one")]
    pub depth_coefficient: f32,
    #[serde(default = "bn_eps")]
    pub batch_norm_epsilon: f32,
    /// Per-channel mean and standard deviation on the 0–1 scale:
    /// the input is `(byte / 255 − mean) / std`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The centred share of the shorter side kept before resizing
    /// (TensorFlow's evaluation crop, 224 / (224 + 32)).
    #[serde(default = "crop")]
    pub crop_fraction: f32,
}

fn lite0_blocks() -> Vec<String> {
    LITE0_BLOCKS.iter().map(|s| s.to_string()).collect()
}
fn one() -> f32 {
    1.0
}
fn bn_eps() -> f32 {
    1e-3
}
fn crop() -> f32 {
    0.875
}

impl ClassifierConfig {
    /// A torchvision ResNet with ImageNet's normalisation.
    pub fn resnet(num_classes: usize) -> Self {
        Self {
            model_type: "resnet".into(),
            variant: None,
            image_size: 224,
            num_classes,
            blocks: vec![],
            depth_coefficient: 1.0,
            batch_norm_epsilon: 1e-5,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            crop_fraction: 0.875,
        }
    }

    /// EfficientNet-Lite0 with TensorFlow's preprocessing
    /// (`(x − 127) / 128`).
    pub fn efficientnet_lite0(num_classes: usize) -> Self {
        Self {
            model_type: "efficientnet".into(),
            variant: Some("efficientnet-lite0".into()),
            image_size: 224,
            num_classes,
            blocks: lite0_blocks(),
            depth_coefficient: 1.0,
            batch_norm_epsilon: 1e-3,
            mean: [127.0 / 255.0; 3],
            std: [128.0 / 255.0; 3],
            crop_fraction: 0.875,
        }
    }
}

/// What an image classifier takes and returns, read without its weights.
#[derive(Debug, Clone)]
pub struct ImageClassifierInfo {
    /// `efficientnet` or `resnet`.
    pub model_type: String,
    pub image_size: usize,
    pub num_classes: usize,
    pub crop_fraction: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub blocks: Vec<String>,
    pub depth_coefficient: f32,
    pub batch_norm_epsilon: f32,
    /// One per class; `class_N` where the model has no labels file.
    pub labels: Arc<Vec<String>>,
    /// Where the labels came from, if from a file.
    pub labels_file: Option<PathBuf>,
}

impl ImageClassifierInfo {
    /// Reads `dir/config.json` and the labels: `labels` when given
    /// (relative paths are under `dir`), else `dir/labels.txt` if present.
    pub fn read(model: &str, dir: &Path, labels: Option<&Path>) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: ClassifierConfig = crate::text::read_json(model, &config_path)?;
        let bad = |reason: String| ModelError::BadOption {
            option: "config.json".into(),
            reason: format!("model '{model}' ({}): {reason}", config_path.display()),
        };
        if config.model_type != "efficientnet" && config.model_type != "resnet" {
            return Err(bad(format!(
                "model_type '{}' is not an image classifier Quiver runs (efficientnet, resnet)",
                config.model_type
            )));
        }
        if config.image_size == 0 || config.image_size > 1024 || config.num_classes == 0 {
            return Err(bad(
                "image_size must be 1–1024 and num_classes positive".into()
            ));
        }
        if config.std.iter().any(|s| *s <= 0.0) || !(0.05..=1.0).contains(&config.crop_fraction) {
            return Err(bad(
                "std must be positive and crop_fraction in 0.05–1".into()
            ));
        }
        let labels_file = match labels {
            Some(p) if p.is_absolute() => Some(p.to_path_buf()),
            Some(p) => Some(dir.join(p)),
            None => Some(dir.join("labels.txt")).filter(|p| p.is_file()),
        };
        let labels = match &labels_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| ModelError::io(model, path, e))?;
                let labels: Vec<String> = text
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
                if labels.len() != config.num_classes {
                    return Err(ModelError::BadOption {
                        option: "labels".into(),
                        reason: format!(
                            "{} has {} labels but model '{model}' has {} classes",
                            path.display(),
                            labels.len(),
                            config.num_classes
                        ),
                    });
                }
                labels
            }
            None => (0..config.num_classes)
                .map(|i| format!("class_{i}"))
                .collect(),
        };
        Ok(Self {
            model_type: config.model_type,
            image_size: config.image_size,
            num_classes: config.num_classes,
            crop_fraction: config.crop_fraction,
            mean: config.mean,
            std: config.std,
            blocks: config.blocks,
            depth_coefficient: config.depth_coefficient,
            batch_norm_epsilon: config.batch_norm_epsilon,
            labels: Arc::new(labels),
            labels_file,
        })
    }
}

/// The network of a classifier.
#[derive(Debug)]
enum Net {
    EfficientNet(EfficientNet),
    ResNet(ResNet),
}

impl Net {
    fn image_size(&self) -> usize {
        match self {
            Self::EfficientNet(n) => n.image_size(),
            Self::ResNet(n) => n.image_size(),
        }
    }
    fn classes(&self) -> usize {
        match self {
            Self::EfficientNet(n) => n.classes(),
            Self::ResNet(n) => n.classes(),
        }
    }
    fn forward(&self, x: &Nhwc) -> Vec<f32> {
        match self {
            Self::EfficientNet(m) => m.forward(x),
            Self::ResNet(m) => m.forward(x),
        }
    }
}

/// Images per pass through a network, whatever the model's batch size:
/// two images' feature maps at 224² (about 10 MB at the widest for
/// EfficientNet-Lite0) stay close to the caches, where 32 at once (150 MB)
/// do not. Measured on 2 cores at batch 32: 6.1 ms per image in passes of
/// 2, 6.4 in passes of 4, 11.5 in passes of 8, 13.0 in one pass of 32.
pub const MICRO_BATCH: usize = 2;

/// A loaded image classifier.
#[derive(Debug)]
pub struct ImageClassifier {
    name: String,
    net: Net,
    input: InputScaling,
}

/// Classes and probabilities of one image, most probable first.
pub type Ranking = Vec<(usize, f32)>;

impl ImageClassifier {
    /// Loads the network in `dir`.
    pub fn load(name: &str, dir: &Path, info: &ImageClassifierInfo) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            net: match info.model_type.as_str() {
                "resnet" => Net::ResNet(ResNet::load(name, dir, info)?),
                _ => Net::EfficientNet(EfficientNet::load(name, dir, info)?),
            },
            input: InputScaling::new(info.mean, info.std),
        })
    }

    /// The name it was registered under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its architecture.
    pub fn architecture(&self) -> crate::registry::Architecture {
        match self.net {
            Net::EfficientNet(_) => crate::registry::Architecture::EfficientNet,
            Net::ResNet(_) => crate::registry::Architecture::ResNet,
        }
    }

    /// The `top_k` classes of each of the `rgb.len() / (size² · 3)` images
    /// (RGB bytes, `image_size`² each), `batch` images per forward pass.
    pub fn classify(
        &self,
        rgb: &[u8],
        batch: usize,
        top: usize,
        stop: Stop,
    ) -> Result<Vec<Ranking>> {
        let s = self.net.image_size();
        let per_image = s * s * 3;
        if !rgb.len().is_multiple_of(per_image) {
            return Err(ModelError::forward(&self.name)(candle_core::Error::Msg(
                format!(
                    "{} bytes is not a whole number of {s}x{s} RGB images",
                    rgb.len()
                ),
            )));
        }
        let classes = self.net.classes();
        let mut out = Vec::with_capacity(rgb.len() / per_image);
        for chunk in rgb.chunks(batch.max(1) * per_image) {
            if stop() {
                return Err(ModelError::Cancelled(self.name.clone()));
            }
            let n = chunk.len() / per_image;
            let mut logits = self.logits(chunk, n);
            softmax_rows(&mut logits, classes);
            out.extend(logits.chunks_exact(classes).map(|row| top_k(row, top)));
        }
        Ok(out)
    }

    /// Logits (`n × classes`) of `n` RGB images of `image_size`², bytes
    /// interleaved row by row, [`MICRO_BATCH`] images per pass.
    pub fn logits(&self, rgb: &[u8], n: usize) -> Vec<f32> {
        let size = self.net.image_size();
        let per_image = size * size * 3;
        debug_assert_eq!(rgb.len(), n * per_image);
        let mut out = Vec::with_capacity(n * self.net.classes());
        for chunk in rgb.chunks(MICRO_BATCH * per_image) {
            let x = self.input.apply(chunk, chunk.len() / per_image, size);
            out.extend(self.net.forward(&x));
        }
        out
    }
}
