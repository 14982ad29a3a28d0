//! Sentence embeddings from BERT-family encoders, as sentence-transformers
//! computes them: tokenise (padding each batch to its longest input,
//! truncating at `max_seq_length`), encode, mean-pool over the attention
//! mask (or take `[CLS]`), and L2-normalise when the model's pipeline ends
//! in `Normalize`.

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use candle_transformers::models::bert::Config;

use crate::bert::Bert;
use serde::Deserialize;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::error::{ModelError, Result};
use crate::weights::{load_error, var_builder, weights_file};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over real (unpadded) tokens.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

/// What a BERT model directory declares, read without loading weights.
#[derive(Debug, Clone)]
pub struct TextEmbedderInfo {
    /// The embedding's length (`hidden_size`).
    pub dim: usize,
    /// Inputs are truncated to this many tokens.
    pub max_tokens: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    config: Config,
}

/// A JSON file of `model`'s directory, parsed; errors name the file.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(model: &str, path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|source| ModelError::io(model, path, source))?;
    serde_json::from_slice(&text).map_err(|source| ModelError::Config {
        model: model.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

impl TextEmbedderInfo {
    /// Reads `config.json` and the sentence-transformers files beside it
    /// (`sentence_bert_config.json`, `1_Pooling/config.json`,
    /// `modules.json`; each optional).
    pub fn read(model: &str, dir: &Path) -> Result<Self> {
        let config: Config = read_json(model, &dir.join("config.json"))?;
        let st_path = dir.join("sentence_bert_config.json");
        let max_seq = if st_path.is_file() {
            read_json::<SentenceBertConfig>(model, &st_path)?.max_seq_length
        } else {
            None
        };
        let max_tokens = max_seq
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let pool_path = dir.join("1_Pooling").join("config.json");
        let pooling = if pool_path.is_file()
            && read_json::<PoolingConfig>(model, &pool_path)?.pooling_mode_cls_token
        {
            Pooling::Cls
        } else {
            Pooling::Mean
        };
        let modules_path = dir.join("modules.json");
        // A bare encoder (no modules.json) is normalised, so that its
        // embeddings compare by cosine as sentence-transformers' do.
        let normalize = if modules_path.is_file() {
            read_json::<Vec<Module>>(model, &modules_path)?
                .iter()
                .any(|m| m.kind.ends_with("Normalize"))
        } else {
            true
        };
        Ok(Self {
            dim: config.hidden_size,
            max_tokens,
            pooling,
            normalize,
            config,
        })
    }
}

/// A loaded sentence embedder.
pub struct TextEmbedder {
    name: String,
    info: TextEmbedderInfo,
    model: Bert,
    tokenizer: Tokenizer,
    pad_id: u32,
    device: Device,
}

impl std::fmt::Debug for TextEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEmbedder")
            .field("name", &self.name)
            .field("info", &self.info)
            .field("device", &self.device)
            .finish()
    }
}

/// `texts` tokenised by `tokenizer`, `model`'s: one encoding per text.
pub(crate) fn tokenize(
    tokenizer: &Tokenizer,
    model: &str,
    texts: &[&str],
) -> Result<Vec<Encoding>> {
    tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| ModelError::Tokenize {
            model: model.to_string(),
            message: e.to_string(),
        })
}

/// Loads `dir/tokenizer.json`, truncating at `max_tokens` and without
/// padding (Hugging Face exports often fix padding at 128; the embedder pads
/// each forward pass to its own longest input instead, as
/// sentence-transformers does). Returns the padding token's id too.
pub fn load_tokenizer(model: &str, dir: &Path, max_tokens: usize) -> Result<(Tokenizer, u32)> {
    let path = dir.join("tokenizer.json");
    let tokenizer_error = |e: tokenizers::Error| ModelError::Tokenizer {
        model: model.to_string(),
        path: path.clone(),
        message: e.to_string(),
    };
    let mut tokenizer = Tokenizer::from_file(&path).map_err(tokenizer_error)?;
    let pad_id = tokenizer.get_padding().map_or(0, |p| p.pad_id);
    tokenizer.with_padding(None);
    let trunc = tokenizer.get_truncation().cloned().unwrap_or_default();
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..trunc
        }))
        .map_err(tokenizer_error)?;
    Ok((tokenizer, pad_id))
}

impl TextEmbedder {
    /// Loads the encoder in `dir` onto `device` as `dtype`.
    /// The name it was registered under.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn load(name: &str, dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let info = TextEmbedderInfo::read(name, dir)?;
        let (tokenizer, pad_id) = load_tokenizer(name, dir, info.max_tokens)?;
        let weights: PathBuf = weights_file(name, dir)?;
        let vb = var_builder(name, &weights, dtype, device)?;
        let model = Bert::load(vb, &info.config).map_err(|e| load_error(name, &weights, e))?;
        Ok(Self {
            name: name.to_string(),
            info,
            model,
            tokenizer,
            pad_id,
            device: device.clone(),
        })
    }

    /// What the model declares.
    pub fn info(&self) -> &TextEmbedderInfo {
        &self.info
    }

    /// `texts` tokenised (truncated at the model's `max_tokens`), ready for
    /// [`Self::embed_tokens`]: CPU work that needs no weights, so a caller
    /// can do it while the model runs another batch.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        tokenize(&self.tokenizer, &self.name, texts)
    }

    /// Embeds tokenised texts, `encodings.len() × dim` floats in input
    /// order. Texts of like token length share a forward pass of at most
    /// `batch` rows, padded to its longest; `stop` is asked before each
    /// pass (the caller has gone away).
    pub fn embed_tokens(
        &self,
        encodings: &[Encoding],
        batch: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>> {
        let dim = self.info.dim;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut out = vec![0f32; encodings.len() * dim];
        for pass in order.chunks(batch.max(1)) {
            if stop() {
                return Err(ModelError::Cancelled(self.name.clone()));
            }
            let len = pass.iter().map(|&i| encodings[i].len()).max().unwrap_or(0);
            let mut ids = vec![self.pad_id; pass.len() * len];
            let mut mask = vec![0u32; pass.len() * len];
            for (row, &i) in pass.iter().enumerate() {
                let e = &encodings[i];
                ids[row * len..row * len + e.len()].copy_from_slice(e.get_ids());
                mask[row * len..row * len + e.len()].copy_from_slice(e.get_attention_mask());
            }
            let vectors = self
                .forward(ids, mask, pass.len(), len)
                .map_err(ModelError::forward(&self.name))?;
            for (&i, v) in pass.iter().zip(vectors.chunks(dim)) {
                out[i * dim..(i + 1) * dim].copy_from_slice(v);
            }
        }
        Ok(out)
    }

    fn forward(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        n: usize,
        len: usize,
    ) -> candle_core::Result<Vec<f32>> {
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let hidden = self.model.forward(&ids, &mask)?;
        let hidden = hidden.to_dtype(DType::F32)?;
        let pooled = match self.info.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)?
            }
        };
        let pooled = if self.info.normalize {
            let norms = pooled
                .sqr()?
                .sum_keepdim(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            pooled.broadcast_div(&norms)?
        } else {
            pooled
        };
        pooled.flatten_all()?.to_vec1::<f32>()
    }
}
