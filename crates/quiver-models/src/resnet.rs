//! ResNet image classification on the CPU (torchvision's layout:
//! `conv1`, `bn1`, `layerN.M.conv1…conv3`, `bnK`, `downsample.0/1`, `fc`),
//! basic blocks (ResNet-18/34) and bottlenecks (ResNet-50/101/152, the
//! stride on the 3×3 convolution as torchvision's "v1.5"), batch-norm
//! folded at load time, on [`crate::convnet`]'s kernels.

use std::path::Path;

use candle_core::{DType, Device};

use crate::convnet::{Activation, Dense, Nhwc, Padding, Pointwise, max_pool, pool_and_classify};
use crate::efficientnet::Weights;
use crate::error::{ModelError, Result};
use crate::vision::ImageClassifierInfo;
use crate::weights::{var_builder, weights_file};

const BN_EPS: f32 = 1e-5;

#[derive(Debug)]
struct Block {
    convs: Vec<Dense>,
    downsample: Option<Dense>,
}

/// A loaded ResNet.
#[derive(Debug)]
pub struct ResNet {
    stem: Dense,
    blocks: Vec<Block>,
    fc: Pointwise,
    image_size: usize,
    classes: usize,
}

impl ResNet {
    pub fn load(model: &str, dir: &Path, info: &ImageClassifierInfo) -> Result<Self> {
        let path = weights_file(model, dir)?;
        let vb = var_builder(model, &path, DType::F32, &Device::Cpu)?;
        let w = Weights::new(model, &path, vb);
        let conv = |name: &str, bn: &str, stride: usize| -> Result<Dense> {
            let ([o, i, k, _], values) = w.conv(&format!("{name}.weight"))?;
            let (scale, bias) = w.batch_norm(bn, o, BN_EPS)?;
            Ok(Dense::from_torch(
                &values,
                o,
                i,
                k,
                stride,
                Padding::Symmetric(k / 2),
                &scale,
                bias,
            ))
        };
        let stem = conv("conv1", "bn1", 2)?;
        if stem.cin != 3 {
            return Err(w.shape_error("conv1.weight", &[stem.cout, stem.cin], "3 input channels"));
        }
        let mut blocks = vec![];
        for layer in 1..=4 {
            let mut index = 0;
            while w.has(&format!("layer{layer}.{index}.conv1.weight")) {
                let p = format!("layer{layer}.{index}");
                let stride = if layer > 1 && index == 0 { 2 } else { 1 };
                let bottleneck = w.has(&format!("{p}.conv3.weight"));
                let convs = if bottleneck {
                    vec![
                        conv(&format!("{p}.conv1"), &format!("{p}.bn1"), 1)?,
                        conv(&format!("{p}.conv2"), &format!("{p}.bn2"), stride)?,
                        conv(&format!("{p}.conv3"), &format!("{p}.bn3"), 1)?,
                    ]
                } else {
                    vec![
                        conv(&format!("{p}.conv1"), &format!("{p}.bn1"), stride)?,
                        conv(&format!("{p}.conv2"), &format!("{p}.bn2"), 1)?,
                    ]
                };
                let downsample = if w.has(&format!("{p}.downsample.0.weight")) {
                    Some(conv(
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        stride,
                    )?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                index += 1;
            }
            if index == 0 {
                return Err(ModelError::BadOption {
                    option: "weights".into(),
                    reason: format!(
                        "model '{model}': {} has no layer{layer} (not a torchvision ResNet)",
                        path.display()
                    ),
                });
            }
        }
        let (fc_shape, fc_w) = w.get("fc.weight")?;
        let (_, fc_b) = w.get("fc.bias")?;
        let width = blocks
            .last()
            .and_then(|b| b.convs.last())
            .map_or(0, |c| c.cout);
        if fc_shape != [info.num_classes, width] || fc_b.len() != info.num_classes {
            return Err(w.shape_error(
                "fc.weight",
                &fc_shape,
                &format!("[{}, {width}]", info.num_classes),
            ));
        }
        let fc = Pointwise::from_torch(
            &fc_w,
            info.num_classes,
            width,
            &vec![1.0; info.num_classes],
            fc_b,
        );
        Ok(Self {
            stem,
            blocks,
            fc,
            image_size: info.image_size,
            classes: info.num_classes,
        })
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Logits (`n × classes`) of a batch of normalised images.
    pub fn forward(&self, x: &Nhwc) -> Vec<f32> {
        let x = self.stem.forward(x, None, Activation::Relu);
        let mut x = max_pool(&x, 3, 2, 1);
        for block in &self.blocks {
            let identity = block
                .downsample
                .as_ref()
                .map(|d| d.forward(&x, None, Activation::None));
            let Some((last, inner)) = block.convs.split_last() else {
                continue;
            };
            let mut h: Option<Nhwc> = None;
            for conv in inner {
                h = Some(conv.forward(h.as_ref().unwrap_or(&x), None, Activation::Relu));
            }
            // The shortcut is added inside the last product, before ReLU.
            let shortcut = identity.as_ref().unwrap_or(&x);
            x = last.forward(h.as_ref().unwrap_or(&x), Some(shortcut), Activation::Relu);
        }
        pool_and_classify(&x, &self.fc)
    }
}
