//! ResNet image classification on the CPU (torchvision's layout:
//! `conv1`, `bn1`, `layerN.M.conv1…conv3`, `bnK`, `downsample.0/1`, `fc`),
//! basic blocks (ResNet-18/34) and bottlenecks (ResNet-50/101/152, the
//! stride on the 3×3 convolution as torchvision's "v1.5"), batch-norm
//! folded at load time, on [`crate::convnet`]'s kernels.

use std::path::Path;

use candle_core::{DType, Device};

use crate::convnet::{Activation, Dense, Nhwc, Padding, Pointwise, global_average_pool, max_pool};
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
    scale: [f32; 3],
    shift: [f32; 3],
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
            scale: info.std.map(|s| 1.0 / (255.0 * s)),
            shift: [0, 1, 2].map(|c| info.mean[c] / info.std[c]),
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

    /// Logits (`n × classes`) of `n` RGB images of `image_size`², two at
    /// a time (as EfficientNet, for the caches).
    pub fn forward(&self, rgb: &[u8], n: usize) -> Vec<f32> {
        let per_image = self.image_size * self.image_size * 3;
        let mut out = Vec::with_capacity(n * self.classes);
        for chunk in rgb.chunks(crate::efficientnet::MICRO_BATCH * per_image) {
            out.extend(self.forward_chunk(chunk, chunk.len() / per_image));
        }
        out
    }

    fn forward_chunk(&self, rgb: &[u8], n: usize) -> Vec<f32> {
        let s = self.image_size;
        let data = rgb
            .chunks_exact(3)
            .flat_map(|px| (0..3).map(move |c| f32::from(px[c]) * self.scale[c] - self.shift[c]))
            .collect();
        let x = Nhwc {
            n,
            h: s,
            w: s,
            c: 3,
            data,
        };
        let x = self.stem.forward(&x, None, Activation::Relu);
        let mut x = max_pool(&x, 3, 2, 1);
        for block in &self.blocks {
            let identity = block
                .downsample
                .as_ref()
                .map(|d| d.forward(&x, None, Activation::None));
            let last = block.convs.len() - 1;
            let mut h = x.clone();
            for (i, conv) in block.convs.iter().enumerate() {
                h = if i == last {
                    conv.forward(&h, Some(identity.as_ref().unwrap_or(&x)), Activation::Relu)
                } else {
                    conv.forward(&h, None, Activation::Relu)
                };
            }
            x = h;
        }
        let pooled = Nhwc {
            n,
            h: 1,
            w: 1,
            c: x.c,
            data: global_average_pool(&x),
        };
        self.fc.forward(&pooled, None, Activation::None).data
    }
}
