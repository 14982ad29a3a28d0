//! EfficientNet-Lite (0–4) image classification on the CPU, with the
//! checkpoint layout of the `efficientnet_lite_pytorch` port of
//! TensorFlow's EfficientNet-Lite (`_conv_stem`, `_blocks.N._expand_conv`,
//! `_depthwise_conv`, `_project_conv`, `_bnK`, `_conv_head`, `_fc`).
//!
//! Lite means: ReLU6 instead of swish, no squeeze-and-excitation, stem
//! and head not scaled. Convolutions pad as TensorFlow's `SAME` does (the
//! weights come from TensorFlow). Batch-norm is folded into each
//! convolution at load time; the forward pass is [`crate::convnet`]'s
//! channels-last kernels.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::convnet::{
    Activation, BatchNorm, Dense, Depthwise, Nhwc, Padding, Pointwise, fold_batch_norm,
    pool_and_classify,
};
use crate::error::{ModelError, Result};
use crate::vision::ImageClassifierInfo;
use crate::weights::{load_error, var_builder, weights_file};

/// EfficientNet-Lite0's blocks, in TensorFlow's block-string notation
/// (`r` repeats, `k` kernel, `s` stride, `e` expansion, `i`/`o` filters).
pub const LITE0_BLOCKS: [&str; 7] = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
];

/// One stage of blocks as a block string describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageArgs {
    pub repeats: usize,
    pub kernel: usize,
    pub stride: usize,
}

/// Parses a TensorFlow block string (`r2_k3_s22_e6_i16_o24`); the filter
/// counts and expansion are read from the weights instead.
pub fn parse_block_string(s: &str) -> Option<StageArgs> {
    let mut repeats = None;
    let mut kernel = None;
    let mut stride = None;
    for part in s.split('_') {
        let (key, value) = part.split_at_checked(1)?;
        match key {
            "r" => repeats = value.parse().ok(),
            "k" => kernel = value.parse().ok(),
            // `s22` is a stride of 2 in both dimensions.
            "s" => stride = value.get(..1)?.parse().ok(),
            _ => {}
        }
    }
    Some(StageArgs {
        repeats: repeats?,
        kernel: kernel?,
        stride: stride?,
    })
}

#[derive(Debug)]
struct Block {
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
    residual: bool,
}

/// A loaded EfficientNet-Lite.
#[derive(Debug)]
pub struct EfficientNet {
    stem: Dense,
    blocks: Vec<Block>,
    head: Pointwise,
    fc: Pointwise,
    image_size: usize,
    classes: usize,
}

/// Tensors of one checkpoint, read as F32 vectors, naming the file on error.
pub(crate) struct Weights<'a> {
    model: &'a str,
    path: &'a Path,
    vb: VarBuilder<'static>,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(model: &'a str, path: &'a Path, vb: VarBuilder<'static>) -> Self {
        Self { model, path, vb }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    /// The tensor's shape and values.
    pub(crate) fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self
            .vb
            .get_unchecked_dtype(name, DType::F32)
            .map_err(|e| load_error(self.model, self.path, e))?;
        let shape = t.dims().to_vec();
        let values = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| load_error(self.model, self.path, e))?;
        Ok((shape, values))
    }

    pub(crate) fn shape_error(&self, name: &str, got: &[usize], want: &str) -> ModelError {
        ModelError::Weights {
            model: self.model.to_string(),
            path: self.path.to_path_buf(),
            message: format!("{name} has shape {got:?}, expected {want}"),
            source: Box::new(candle_core::Error::Msg(format!("shape of {name}"))),
        }
    }

    /// A batch-norm layer folded: per-channel scale and bias.
    pub(crate) fn batch_norm(
        &self,
        prefix: &str,
        channels: usize,
        eps: f32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut parts = vec![];
        for field in ["weight", "bias", "running_mean", "running_var"] {
            let name = format!("{prefix}.{field}");
            let (shape, values) = self.get(&name)?;
            if shape != [channels] {
                return Err(self.shape_error(&name, &shape, &format!("[{channels}]")));
            }
            parts.push(values);
        }
        Ok(fold_batch_norm(BatchNorm {
            gamma: &parts[0],
            beta: &parts[1],
            mean: &parts[2],
            var: &parts[3],
            eps,
        }))
    }

    /// A 4-d convolution weight: `[cout, cin, k, k]`.
    pub(crate) fn conv(&self, name: &str) -> Result<([usize; 4], Vec<f32>)> {
        let (shape, values) = self.get(name)?;
        match shape.as_slice() {
            &[o, i, kh, kw] if kh == kw => Ok(([o, i, kh, kw], values)),
            _ => Err(self.shape_error(name, &shape, "[out, in, k, k]")),
        }
    }

    fn pointwise(&self, conv: &str, bn: &str, eps: f32) -> Result<Pointwise> {
        let ([o, i, k, _], w) = self.conv(conv)?;
        if k != 1 {
            return Err(self.shape_error(conv, &[o, i, k, k], "a 1×1 kernel"));
        }
        let (scale, bias) = self.batch_norm(bn, o, eps)?;
        Ok(Pointwise::from_torch(&w, o, i, &scale, bias))
    }
}

impl EfficientNet {
    /// Loads the weights in `dir` (`model.safetensors`, made by
    /// `quiver models import` from the PyTorch checkpoint) as `info`
    /// describes them.
    pub fn load(model: &str, dir: &Path, info: &ImageClassifierInfo) -> Result<Self> {
        let path = weights_file(model, dir)?;
        let vb = var_builder(model, &path, DType::F32, &Device::Cpu)?;
        let w = Weights {
            model,
            path: &path,
            vb,
        };
        let eps = info.batch_norm_epsilon;
        let config_error = |reason: String| ModelError::BadOption {
            option: "config.json".into(),
            reason: format!("model '{model}': {reason}"),
        };

        let ([stem_out, stem_in, stem_k, _], stem_w) = w.conv("_conv_stem.weight")?;
        if stem_in != 3 {
            return Err(w.shape_error(
                "_conv_stem.weight",
                &[stem_out, stem_in],
                "3 input channels",
            ));
        }
        let (scale, bias) = w.batch_norm("_bn0", stem_out, eps)?;
        let stem = Dense::from_torch(&stem_w, stem_out, 3, stem_k, 2, Padding::Same, &scale, bias);

        let mut strides = vec![];
        for s in &info.blocks {
            let stage = parse_block_string(s)
                .ok_or_else(|| config_error(format!("'{s}' is not a block string")))?;
            let repeats = (info.depth_coefficient * stage.repeats as f32).ceil() as usize;
            strides.push(stage.stride);
            strides.extend(std::iter::repeat_n(1, repeats.saturating_sub(1)));
        }
        let mut blocks = vec![];
        let mut channels = stem_out;
        for (i, &stride) in strides.iter().enumerate() {
            let p = format!("_blocks.{i}");
            if !w.has(&format!("{p}._depthwise_conv.weight")) {
                return Err(config_error(format!(
                    "the configuration has {} blocks but the weights stop at {i}",
                    strides.len()
                )));
            }
            let input = channels;
            let expand = if w.has(&format!("{p}._expand_conv.weight")) {
                Some(w.pointwise(
                    &format!("{p}._expand_conv.weight"),
                    &format!("{p}._bn0"),
                    eps,
                )?)
            } else {
                None
            };
            let inner = expand.as_ref().map_or(input, |e| e.cout);
            if let Some(e) = &expand
                && e.cin != input
            {
                return Err(w.shape_error(
                    &format!("{p}._expand_conv.weight"),
                    &[e.cout, e.cin],
                    &format!("{input} input channels"),
                ));
            }
            let name = format!("{p}._depthwise_conv.weight");
            let ([c, one, k, _], dw) = w.conv(&name)?;
            if c != inner || one != 1 {
                return Err(w.shape_error(&name, &[c, one, k, k], &format!("[{inner}, 1, k, k]")));
            }
            let (scale, bias) = w.batch_norm(&format!("{p}._bn1"), c, eps)?;
            let depthwise = Depthwise::from_torch(&dw, c, k, stride, Padding::Same, &scale, bias);
            let project = w.pointwise(
                &format!("{p}._project_conv.weight"),
                &format!("{p}._bn2"),
                eps,
            )?;
            if project.cin != inner {
                return Err(w.shape_error(
                    &format!("{p}._project_conv.weight"),
                    &[project.cout, project.cin],
                    &format!("{inner} input channels"),
                ));
            }
            channels = project.cout;
            blocks.push(Block {
                residual: stride == 1 && input == project.cout,
                expand,
                depthwise,
                project,
            });
        }
        if w.has(&format!("_blocks.{}._depthwise_conv.weight", strides.len())) {
            return Err(config_error(format!(
                "the weights have more blocks than the configuration's {}",
                strides.len()
            )));
        }
        let head = w.pointwise("_conv_head.weight", "_bn1", eps)?;
        if head.cin != channels {
            return Err(w.shape_error(
                "_conv_head.weight",
                &[head.cout, head.cin],
                &format!("{channels} input channels"),
            ));
        }
        let (fc_shape, fc_w) = w.get("_fc.weight")?;
        let (_, fc_b) = w.get("_fc.bias")?;
        if fc_shape != [info.num_classes, head.cout] || fc_b.len() != info.num_classes {
            return Err(w.shape_error(
                "_fc.weight",
                &fc_shape,
                &format!("[{}, {}]", info.num_classes, head.cout),
            ));
        }
        let fc = Pointwise::from_torch(
            &fc_w,
            info.num_classes,
            head.cout,
            &vec![1.0; info.num_classes],
            fc_b,
        );
        Ok(Self {
            stem,
            blocks,
            head,
            fc,
            image_size: info.image_size,
            classes: info.num_classes,
        })
    }

    /// The side of the square RGB images it takes.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Logits (`n × classes`) of a batch of normalised images.
    pub fn forward(&self, x: &Nhwc) -> Vec<f32> {
        let mut x = self.stem.forward(x, None, Activation::Relu6);
        for block in &self.blocks {
            let expanded = block
                .expand
                .as_ref()
                .map(|e| e.forward(&x, None, Activation::Relu6));
            let dw = block
                .depthwise
                .forward(expanded.as_ref().unwrap_or(&x), Activation::Relu6);
            drop(expanded);
            let residual = block.residual.then_some(&x);
            x = block.project.forward(&dw, residual, Activation::None);
        }
        pool_and_classify(&self.head.forward(&x, None, Activation::Relu6), &self.fc)
    }

    /// How many classes it scores.
    pub fn classes(&self) -> usize {
        self.classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_strings_parse() {
        assert_eq!(
            parse_block_string("r2_k5_s22_e6_i24_o40"),
            Some(StageArgs {
                repeats: 2,
                kernel: 5,
                stride: 2
            })
        );
        assert_eq!(parse_block_string("k3_s11"), None);
        assert_eq!(
            LITE0_BLOCKS
                .iter()
                .filter_map(|s| parse_block_string(s))
                .map(|s| s.repeats)
                .sum::<usize>(),
            16
        );
    }
}
