//! Whisper's encoder and decoder (Hugging Face `WhisperForConditionalGeneration`
//! layout), with Candle's tensors. Unlike Candle's own Whisper, the decoder
//! keeps its self-attention keys and values between steps, so each greedy
//! step runs one token through the layers instead of the whole prefix (and
//! the cross-attention over 1,500 audio positions for every earlier token
//! again); GELU is the exact erf form, vectorised on the CPU.

use candle_core::{CpuStorage, DType, Module, Result, Storage, Tensor};
use candle_nn::{
    Conv1d, Conv1dConfig, LayerNorm, Linear, VarBuilder, conv1d, layer_norm, linear, linear_no_bias,
};
use candle_transformers::models::whisper::Config;

use crate::bert::gelu_erf;
use crate::convnet::few_rows_matmul_t;

const LN_EPS: f64 = 1e-5;

/// A linear layer over `[b, n, d]` as one `[b·n, d]` product (Candle's
/// `Linear` runs one product per batch row, with the weights broadcast).
fn lin(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    let flat = x.reshape((b * n, d))?;
    let y = match few_rows(&flat, layer.weight(), layer.bias())? {
        Some(y) => y,
        None => layer.forward(&flat)?,
    };
    let out = y.dim(1)?;
    y.reshape((b, n, out))
}

/// `x · wᵀ + bias` through [`few_rows_matmul_t`] when `x` has at most 8
/// rows and everything is f32 on the CPU (the decoder's steps).
fn few_rows(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let rows = x.dim(0)?;
    if rows > 8 || !x.device().is_cpu() || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let k = x.dim(1)?;
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(values)) = &*storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let b = match bias {
        Some(b) => Some(b.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    };
    let out = few_rows_matmul_t(&xs, &values[start..end], b.as_deref(), rows, k);
    let n = out.len() / rows.max(1);
    Ok(Some(Tensor::from_vec(out, (rows, n), x.device())?))
}

#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q: linear(d, d, vb.pp("q_proj"))?,
            k: linear_no_bias(d, d, vb.pp("k_proj"))?,
            v: linear(d, d, vb.pp("v_proj"))?,
            out: linear(d, d, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `[b, n, d]` → `[b, heads, n, d / heads]`.
    fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        x.reshape((b, n, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys (transposed, contiguous: `[b, heads, d / heads, n]`) and
    /// values (`[b, heads, n, d / heads]`) of `x`.
    fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.split(&lin(&self.k, x)?)?.t()?.contiguous()?,
            self.split(&lin(&self.v, x)?)?,
        ))
    }

    /// Attends from `x` to keys (transposed: `[b, heads, d / heads, t]`)
    /// and values (`[b, heads, t, d / heads]`).
    fn attend(&self, x: &Tensor, kt: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let scale = ((d / self.heads) as f64).powf(-0.5);
        let q = (self.split(&lin(&self.q, x)?)? * scale)?;
        let mut scores = q.matmul(kt)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs.matmul(v)?.transpose(1, 2)?.reshape((b, n, d))?;
        lin(&self.out, &context)
    }
}

#[derive(Debug)]
struct Block {
    attn: Attention,
    attn_ln: LayerNorm,
    cross: Option<(Attention, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    mlp_ln: LayerNorm,
}

impl Block {
    fn load(d: usize, heads: usize, cross: bool, vb: VarBuilder) -> Result<Self> {
        let cross = if cross {
            Some((
                Attention::load(d, heads, vb.pp("encoder_attn"))?,
                layer_norm(d, LN_EPS, vb.pp("encoder_attn_layer_norm"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            attn: Attention::load(d, heads, vb.pp("self_attn"))?,
            attn_ln: layer_norm(d, LN_EPS, vb.pp("self_attn_layer_norm"))?,
            cross,
            fc1: linear(d, 4 * d, vb.pp("fc1"))?,
            fc2: linear(4 * d, d, vb.pp("fc2"))?,
            mlp_ln: layer_norm(d, LN_EPS, vb.pp("final_layer_norm"))?,
        })
    }

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let h = gelu_erf(&lin(&self.fc1, &self.mlp_ln.forward(x)?)?)?;
        x + lin(&self.fc2, &h)?
    }
}

/// The audio encoder: two convolutions (the second strided), sinusoidal
/// positions, pre-norm transformer blocks.
#[derive(Debug)]
pub struct Encoder {
    conv1: Conv1d,
    conv2: Conv1d,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
}

impl Encoder {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let c1 = Conv1dConfig {
            padding: 1,
            ..Default::default()
        };
        let c2 = Conv1dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        Ok(Self {
            conv1: conv1d(cfg.num_mel_bins, d, 3, c1, vb.pp("conv1"))?,
            conv2: conv1d(d, d, 3, c2, vb.pp("conv2"))?,
            positions: vb.get((cfg.max_source_positions, d), "embed_positions.weight")?,
            blocks: (0..cfg.encoder_layers)
                .map(|i| {
                    Block::load(
                        d,
                        cfg.encoder_attention_heads,
                        false,
                        vb.pp(format!("layers.{i}")),
                    )
                })
                .collect::<Result<_>>()?,
            ln: layer_norm(d, LN_EPS, vb.pp("layer_norm"))?,
        })
    }

    /// `[b, n_mels, 3000]` log-mel → `[b, 1500, d]`.
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let x = gelu_erf(&self.conv1.forward(mel)?)?;
        let x = gelu_erf(&self.conv2.forward(&x)?)?;
        let x = x.transpose(1, 2)?;
        let n = x.dim(1)?;
        let mut x = x.broadcast_add(&self.positions.narrow(0, 0, n)?)?;
        for block in &self.blocks {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.keys_values(&h)?;
            x = (&x + block.attn.attend(&h, &k, &v, None)?)?;
            x = block.mlp(&x)?;
        }
        self.ln.forward(&x)
    }
}

/// The text decoder.
#[derive(Debug)]
pub struct Decoder {
    embed: Tensor,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
}

/// One window's decoding state: per block, the self-attention keys and
/// values so far and the cross-attention keys and values of the audio.
#[derive(Debug)]
pub struct DecodeState {
    cache: Vec<Option<(Tensor, Tensor)>>,
    audio: Vec<(Tensor, Tensor)>,
    /// Tokens processed so far.
    pub len: usize,
}

impl Decoder {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            embed: vb.get((cfg.vocab_size, d), "embed_tokens.weight")?,
            positions: vb.get((cfg.max_target_positions, d), "embed_positions.weight")?,
            blocks: (0..cfg.decoder_layers)
                .map(|i| {
                    Block::load(
                        d,
                        cfg.decoder_attention_heads,
                        true,
                        vb.pp(format!("layers.{i}")),
                    )
                })
                .collect::<Result<_>>()?,
            ln: layer_norm(d, LN_EPS, vb.pp("layer_norm"))?,
        })
    }

    /// The state for decoding against `audio` (`[b, 1500, d]`: `b`
    /// windows decoded side by side).
    pub fn start(&self, audio: &Tensor) -> Result<DecodeState> {
        let audio = self
            .blocks
            .iter()
            .map(|b| match &b.cross {
                Some((attn, _)) => attn.keys_values(audio),
                None => candle_core::bail!("a decoder block without cross-attention"),
            })
            .collect::<Result<_>>()?;
        Ok(DecodeState {
            cache: vec![None; self.blocks.len()],
            audio,
            len: 0,
        })
    }

    /// Runs `tokens` (`b` rows of `n`, following the `state.len` already
    /// run) through the decoder; the logits after the last of each row,
    /// `[b, vocab]`.
    pub fn step(&self, state: &mut DecodeState, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let b = tokens.len();
        let n = tokens.first().map_or(0, Vec::len);
        if n == 0 || tokens.iter().any(|t| t.len() != n) {
            candle_core::bail!("decoder step: rows of tokens must be non-empty and of one length");
        }
        let device = self.embed.device();
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let ids = Tensor::new(flat.as_slice(), device)?;
        let d = self.embed.dim(1)?;
        let x = self.embed.index_select(&ids, 0)?.reshape((b, n, d))?;
        let mut x = x.broadcast_add(&self.positions.narrow(0, state.len, n)?)?;
        // Among several new tokens, each sees those before it.
        let past = state.len;
        let mask = if n > 1 {
            let total = past + n;
            let values: Vec<f32> = (0..n)
                .flat_map(|i| {
                    (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(values, (n, total), device)?.to_dtype(x.dtype())?)
        } else {
            None
        };
        for (i, block) in self.blocks.iter().enumerate() {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.keys_values(&h)?;
            let (k, v) = match state.cache[i].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 3)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            x = (&x + block.attn.attend(&h, &k, &v, mask.as_ref())?)?;
            state.cache[i] = Some((k, v));
            if let Some((cross, cross_ln)) = &block.cross {
                let (ak, av) = &state.audio[i];
                let h = cross_ln.forward(&x)?;
                x = (&x + cross.attend(&h, ak, av, None)?)?;
            }
            x = block.mlp(&x)?;
        }
        state.len += n;
        let last = self.ln.forward(&x.narrow(1, n - 1, 1)?)?;
        // Logits against the (tied) token embeddings.
        let last = last.reshape((b, d))?;
        match few_rows(&last, &self.embed, None)? {
            Some(logits) => Ok(logits),
            None => last.matmul(&self.embed.t()?),
        }
    }

    /// The longest token sequence it takes.
    pub fn max_tokens(&self) -> usize {
        self.positions.dim(0).unwrap_or(0)
    }
}

/// A loaded Whisper.
#[derive(Debug)]
pub struct Whisper {
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl Whisper {
    pub fn load(vb: &VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::load(cfg, vb.pp("model.encoder"))?,
            decoder: Decoder::load(cfg, vb.pp("model.decoder"))?,
        })
    }
}
