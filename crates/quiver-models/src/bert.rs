//! Quiver's own BERT encoder (the Hugging Face `BertModel` layout), written
//! with candle-nn for speed on the CPU: query, key and value in one matrix
//! product, and a vectorised GELU (erf form) where Candle calls the scalar
//! `erff` per element, which took a quarter of the time of a MiniLM
//! forward pass on two cores. On other devices the same ops run through
//! Candle's kernels.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

/// A loaded encoder: token ids in, one vector per token out.
pub struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    act: HiddenAct,
    device: Device,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("layers", &self.layers.len())
            .field("heads", &self.heads)
            .field("device", &self.device)
            .finish()
    }
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    // Old checkpoints name the scale and shift gamma and beta.
    let (weight, bias) = match (vb.get(size, "weight"), vb.get(size, "bias")) {
        (Ok(w), Ok(b)) => (w, b),
        (Err(e), _) | (_, Err(e)) => match (vb.get(size, "gamma"), vb.get(size, "beta")) {
            (Ok(w), Ok(b)) => (w, b),
            _ => return Err(e),
        },
    };
    Ok(LayerNorm::new(weight, bias, eps))
}

fn linear(vb: VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Linear> {
    candle_nn::linear(inputs, outputs, vb)
}

impl Bert {
    /// Loads the weights of `config` from `vb` (with or without a `bert.`
    /// prefix).
    pub fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        if config.num_attention_heads == 0 || !h.is_multiple_of(config.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            );
        }
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(config.vocab_size, h, e.pp("word_embeddings"))?;
        let position = candle_nn::embedding(
            config.max_position_embeddings,
            h,
            e.pp("position_embeddings"),
        )?;
        let token_type =
            candle_nn::embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let embed_norm = layer_norm(e.pp("LayerNorm"), h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let s = a.pp("self");
            let parts = ["query", "key", "value"];
            let weights = parts
                .iter()
                .map(|p| s.pp(p).get((h, h), "weight"))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let biases = parts
                .iter()
                .map(|p| s.pp(p).get(h, "bias"))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let qkv = Linear::new(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?));
            layers.push(Layer {
                qkv,
                attn_out: linear(a.pp("output").pp("dense"), h, h)?,
                attn_norm: layer_norm(a.pp("output").pp("LayerNorm"), h, eps)?,
                up: linear(
                    l.pp("intermediate").pp("dense"),
                    h,
                    config.intermediate_size,
                )?,
                down: linear(l.pp("output").pp("dense"), config.intermediate_size, h)?,
                out_norm: layer_norm(l.pp("output").pp("LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            embed_norm,
            layers,
            heads: config.num_attention_heads,
            act: config.hidden_act,
            device: vb.device().clone(),
        })
    }

    /// `ids` and `mask` are `[batch, len]` (`mask` 1 for real tokens, 0 for
    /// padding); returns `[batch, len, hidden]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, &self.device)?;
        let mut x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .broadcast_add(&self.token_type.forward(&Tensor::zeros(
                1,
                DType::U32,
                &self.device,
            )?)?)?;
        x = self.embed_norm.forward(&x)?;
        let dtype = x.dtype();
        let hidden = x.dim(2)?;
        let head_dim = hidden / self.heads;
        // Padding gets a large negative score before the softmax.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?
            .to_dtype(dtype)?
            .reshape((b, 1, 1, len))?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((b, len, 3, self.heads, head_dim))?
                .permute((2, 0, 3, 1, 4))?;
            let q = (qkv.get(0)?.contiguous()? * scale)?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, len, hidden))?;
            let attended = layer.attn_out.forward(&context)?;
            x = layer.attn_norm.forward(&(attended + &x)?)?;
            let up = self.activate(&layer.up.forward(&x)?)?;
            let down = layer.down.forward(&up)?;
            x = layer.out_norm.forward(&(down + &x)?)?;
        }
        Ok(x)
    }

    fn activate(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self.act {
            HiddenAct::Gelu if xs.device().is_cpu() && xs.dtype() == DType::F32 => {
                xs.contiguous()?.apply_op1_no_bwd(&FastGelu)
            }
            HiddenAct::Gelu => xs.gelu_erf(),
            HiddenAct::GeluApproximate => xs.gelu(),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

/// GELU, erf form: vectorised on the CPU in f32, Candle's elsewhere.
pub(crate) fn gelu_erf(xs: &Tensor) -> candle_core::Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        xs.contiguous()?.apply_op1_no_bwd(&FastGelu)
    } else {
        xs.gelu_erf()
    }
}

/// GELU, erf form, over contiguous f32 on the CPU.
struct FastGelu;

impl CustomOp1 for FastGelu {
    fn name(&self) -> &'static str {
        "quiver-fast-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(values), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("quiver-fast-gelu takes contiguous f32");
        };
        let input = &values[start..end];
        let mut out = vec![0f32; input.len()];
        // Two threads when there is enough work (the model's worker thread
        // and one more), in blocks that vectorise.
        let half = input.len() / 2;
        if input.len() >= 1 << 16 {
            let (a_in, b_in) = input.split_at(half);
            let (a_out, b_out) = out.split_at_mut(half);
            std::thread::scope(|s| {
                s.spawn(|| gelu_slice(a_in, a_out));
                gelu_slice(b_in, b_out);
            });
        } else {
            gelu_slice(input, &mut out);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

fn gelu_slice(input: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(input) {
        *o = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf, Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7) with a
/// branch-free exp, so that loops over it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let e = 1.0 - poly * exp_neg(a * a);
    e.copysign(x)
}

/// e^(−y) for y ≥ 0 (relative error about 2e-7; 0 below e^−87).
#[inline(always)]
fn exp_neg(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let z = (-y).max(-87.0) * std::f32::consts::LOG2_E;
    let n = (z + MAGIC) - MAGIC;
    let r = z - n; // in [-0.5, 0.5]
    let r = r * std::f32::consts::LN_2;
    // e^r, degree 6.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf to 2e-6 (the approximation's 1.5e-7 plus f32 rounding)
    /// against a slow, accurate series.
    #[test]
    fn erf_and_gelu_are_accurate() {
        fn erf_ref(x: f64) -> f64 {
            // Maclaurin series, fine for |x| ≤ 3; beyond, erf is ±1 to 2e-5.
            if x.abs() > 3.0 {
                return x.signum()
                    * (1.0 - (-x * x).exp() / (x.abs() * std::f64::consts::PI.sqrt()));
            }
            let mut sum = 0.0;
            let mut term = x;
            for n in 0..200 {
                sum += term / (2 * n + 1) as f64;
                term *= -x * x / (n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            worst = worst.max((f64::from(erf(x)) - erf_ref(f64::from(x))).abs());
        }
        assert!(worst < 2e-6, "erf off by {worst}");
        let xs =
            Tensor::new(&[-3.0f32, -1.0, -0.1, 0.0, 0.5, 2.0, 9.0], &Device::Cpu).expect("tensor");
        let fast: Vec<f32> = xs
            .apply_op1_no_bwd(&FastGelu)
            .expect("gelu")
            .to_vec1()
            .expect("vec");
        let slow: Vec<f32> = xs.gelu_erf().expect("gelu").to_vec1().expect("vec");
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 2e-6, "{a} vs {b}");
        }
        assert!(exp_neg(200.0) >= 0.0 && exp_neg(200.0) < 1e-37);
    }
}
