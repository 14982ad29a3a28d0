//! Reading CTranslate2 model files (`model.bin`, binary version 6) and
//! converting a CTranslate2 Whisper model to the Hugging Face layout
//! Candle's Whisper loads.
//!
//! The file: `u32` version, the spec's name, `u32` revision, `u32`
//! variable count, then per variable its name, `u8` rank, `rank × u32`
//! dimensions, `u8` type, `u32` byte count and the bytes; then `u32`
//! alias count and (alias, target) name pairs. Strings are a `u16` length
//! (with the NUL) and the bytes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

fn bad(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Import {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// One variable of a CTranslate2 model.
#[derive(Debug)]
pub enum Variable {
    /// A floating-point array, as F32 on the CPU.
    Tensor(Tensor),
    /// A scalar or array of integers (flags, head counts).
    Ints(Vec<i64>),
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| bad(self.path, format!("truncated at byte {}", self.at)))?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String> {
        let n = usize::from(self.u16()?);
        let b = self.take(n)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec()).map_err(|_| bad(self.path, "a name is not UTF-8"))
    }
}

/// The spec name (`WhisperSpec`, …) and variables of a CTranslate2
/// `model.bin`, aliases resolved to copies.
pub fn read_model(path: &Path) -> Result<(String, HashMap<String, Variable>)> {
    let data = std::fs::read(path).map_err(|e| ModelError::io("import", path, e))?;
    let mut c = Cursor {
        data: &data,
        at: 0,
        path,
    };
    let version = c.u32()?;
    if !(5..=6).contains(&version) {
        return Err(bad(
            path,
            format!("CTranslate2 binary version {version} (Quiver reads 5 and 6)"),
        ));
    }
    let spec = c.string()?;
    let _revision = c.u32()?;
    let count = c.u32()?;
    let mut vars = HashMap::new();
    for _ in 0..count {
        let name = c.string()?;
        let rank = usize::from(c.u8()?);
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(c.u32()? as usize);
        }
        let type_id = c.u8()?;
        let bytes = c.u32()? as usize;
        let raw = c.take(bytes)?;
        let elements = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(path, format!("{name}: shape {shape:?} is too large")))?;
        let (dtype, size) = match type_id {
            0 => (Some(DType::F32), 4),
            1 => (None, 1),
            2 => (None, 2),
            3 => (None, 4),
            4 => (Some(DType::F16), 2),
            5 => (Some(DType::BF16), 2),
            other => return Err(bad(path, format!("{name}: unknown type {other}"))),
        };
        if elements.checked_mul(size) != Some(bytes) {
            return Err(bad(
                path,
                format!("{name}: {bytes} bytes for shape {shape:?} of {size}-byte values"),
            ));
        }
        let value = match dtype {
            Some(dtype) => Variable::Tensor(
                Tensor::from_raw_buffer(raw, dtype, &shape, &Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .map_err(|e| bad(path, format!("{name}: {e}")))?,
            ),
            None if elements > 64 => {
                return Err(bad(
                    path,
                    format!(
                        "{name}: an integer array of {elements} values (quantised CTranslate2 \
                         models are not supported; convert with --quantization float32 or float16)"
                    ),
                ));
            }
            None => Variable::Ints(
                raw.chunks_exact(size)
                    .map(|b| match size {
                        1 => i64::from(b[0] as i8),
                        2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
                        _ => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    })
                    .collect(),
            ),
        };
        vars.insert(name, value);
    }
    Ok((spec, vars))
}

/// The Hugging Face `config.json` of a converted Whisper model (the fields
/// Candle's Whisper reads, plus the token lists decoding uses).
#[derive(Debug, Clone, serde::Serialize)]
struct WhisperConfig {
    model_type: &'static str,
    num_mel_bins: usize,
    max_source_positions: usize,
    d_model: usize,
    encoder_attention_heads: usize,
    encoder_layers: usize,
    vocab_size: usize,
    max_target_positions: usize,
    decoder_attention_heads: usize,
    decoder_layers: usize,
    suppress_tokens: Vec<i64>,
    begin_suppress_tokens: Vec<i64>,
}

/// Converts the CTranslate2 Whisper model in `dir` (`model.bin`,
/// `config.json`, `tokenizer.json`) into `dest`: `model.safetensors` with
/// Hugging Face names (fused query/key/value projections split; Whisper's
/// key projections have no bias, and CTranslate2's stored zeros are
/// dropped), `config.json`, `tokenizer.json`.
pub fn convert_whisper(dir: &Path, dest: &Path) -> Result<()> {
    let model_path = dir.join("model.bin");
    let (spec, vars) = read_model(&model_path)?;
    if spec != "WhisperSpec" {
        return Err(bad(&model_path, format!("a {spec}, not a Whisper model")));
    }
    let get = |name: &str| -> Result<&Tensor> {
        match vars.get(name) {
            Some(Variable::Tensor(t)) => Ok(t),
            _ => Err(bad(&model_path, format!("no tensor {name}"))),
        }
    };
    let int = |name: &str| -> Result<usize> {
        match vars.get(name) {
            Some(Variable::Ints(v)) if v.len() == 1 && v[0] > 0 => Ok(v[0] as usize),
            _ => Err(bad(&model_path, format!("no positive integer {name}"))),
        }
    };
    let layers = |side: &str| {
        (0..)
            .take_while(|i| vars.contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight")))
            .count()
    };
    let (enc_layers, dec_layers) = (layers("encoder"), layers("decoder"));
    let conv1 = get("encoder/conv1/weight")?;
    let &[d_model, n_mels, _] = conv1.dims() else {
        return Err(bad(&model_path, "encoder/conv1/weight is not 3-d"));
    };
    let vocab = get("decoder/embeddings/weight")?.dims()[0];
    let n_audio = get("encoder/position_encodings/encodings")?.dims()[0];
    let n_text = get("decoder/position_encodings/encodings")?.dims()[0];

    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, t: Tensor| {
        out.insert(name, t);
    };
    let rows = |t: &Tensor, start: usize, len: usize| -> Result<Tensor> {
        t.narrow(0, start, len)
            .and_then(|t| t.contiguous())
            .map_err(|e| bad(&model_path, e.to_string()))
    };
    let norm = |put: &mut dyn FnMut(String, Tensor), from: &str, to: &str| -> Result<()> {
        put(
            format!("{to}.weight"),
            get(&format!("{from}/gamma"))?.clone(),
        );
        put(format!("{to}.bias"), get(&format!("{from}/beta"))?.clone());
        Ok(())
    };
    let linear = |put: &mut dyn FnMut(String, Tensor), from: &str, to: &str| -> Result<()> {
        put(
            format!("{to}.weight"),
            get(&format!("{from}/weight"))?.clone(),
        );
        put(format!("{to}.bias"), get(&format!("{from}/bias"))?.clone());
        Ok(())
    };
    // q, k, v stacked (`parts` of them from `first`) into separate
    // projections.
    let split =
        |put: &mut dyn FnMut(String, Tensor), from: &str, to: &str, names: &[&str]| -> Result<()> {
            let w = get(&format!("{from}/weight"))?;
            let b = get(&format!("{from}/bias"))?;
            for (i, name) in names.iter().enumerate() {
                put(
                    format!("{to}.{name}.weight"),
                    rows(w, i * d_model, d_model)?,
                );
                if *name != "k_proj" {
                    put(format!("{to}.{name}.bias"), rows(b, i * d_model, d_model)?);
                }
            }
            Ok(())
        };
    for (side, n) in [("encoder", enc_layers), ("decoder", dec_layers)] {
        let hf = format!("model.{side}");
        for i in 0..n {
            let (c, h) = (format!("{side}/layer_{i}"), format!("{hf}.layers.{i}"));
            split(
                &mut put,
                &format!("{c}/self_attention/linear_0"),
                &format!("{h}.self_attn"),
                &["q_proj", "k_proj", "v_proj"],
            )?;
            linear(
                &mut put,
                &format!("{c}/self_attention/linear_1"),
                &format!("{h}.self_attn.out_proj"),
            )?;
            norm(
                &mut put,
                &format!("{c}/self_attention/layer_norm"),
                &format!("{h}.self_attn_layer_norm"),
            )?;
            if side == "decoder" {
                linear(
                    &mut put,
                    &format!("{c}/attention/linear_0"),
                    &format!("{h}.encoder_attn.q_proj"),
                )?;
                split(
                    &mut put,
                    &format!("{c}/attention/linear_1"),
                    &format!("{h}.encoder_attn"),
                    &["k_proj", "v_proj"],
                )?;
                linear(
                    &mut put,
                    &format!("{c}/attention/linear_2"),
                    &format!("{h}.encoder_attn.out_proj"),
                )?;
                norm(
                    &mut put,
                    &format!("{c}/attention/layer_norm"),
                    &format!("{h}.encoder_attn_layer_norm"),
                )?;
            }
            linear(&mut put, &format!("{c}/ffn/linear_0"), &format!("{h}.fc1"))?;
            linear(&mut put, &format!("{c}/ffn/linear_1"), &format!("{h}.fc2"))?;
            norm(
                &mut put,
                &format!("{c}/ffn/layer_norm"),
                &format!("{h}.final_layer_norm"),
            )?;
        }
        norm(
            &mut put,
            &format!("{side}/layer_norm"),
            &format!("{hf}.layer_norm"),
        )?;
        put(
            format!("{hf}.embed_positions.weight"),
            get(&format!("{side}/position_encodings/encodings"))?.clone(),
        );
    }
    for conv in ["conv1", "conv2"] {
        linear(
            &mut put,
            &format!("encoder/{conv}"),
            &format!("model.encoder.{conv}"),
        )?;
    }
    put(
        "model.decoder.embed_tokens.weight".into(),
        get("decoder/embeddings/weight")?.clone(),
    );

    std::fs::create_dir_all(dest).map_err(|e| ModelError::io("import", dest, e))?;
    let weights = dest.join("model.safetensors");
    candle_core::safetensors::save(&out, &weights)
        .map_err(|e| bad(&weights, format!("writing: {e}")))?;

    // Token lists from CTranslate2's config.json.
    let ct2_config_path = dir.join("config.json");
    let ct2_config: serde_json::Value = std::fs::read(&ct2_config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let ids = |key: &str, default: &[i64]| -> Vec<i64> {
        ct2_config
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
            .unwrap_or_else(|| default.to_vec())
    };
    let config = WhisperConfig {
        model_type: "whisper",
        num_mel_bins: n_mels,
        max_source_positions: n_audio,
        d_model,
        encoder_attention_heads: int("encoder/num_heads")?,
        encoder_layers: enc_layers,
        vocab_size: vocab,
        max_target_positions: n_text,
        decoder_attention_heads: int("decoder/num_heads")?,
        decoder_layers: dec_layers,
        suppress_tokens: ids("suppress_ids", &[]),
        begin_suppress_tokens: ids("suppress_ids_begin", &[220, 50256]),
    };
    let config_path = dest.join("config.json");
    let json = serde_json::to_vec_pretty(&config).map_err(|e| bad(&config_path, e.to_string()))?;
    std::fs::write(&config_path, json).map_err(|e| ModelError::io("import", &config_path, e))?;
    let tokenizer = dir.join("tokenizer.json");
    std::fs::copy(&tokenizer, dest.join("tokenizer.json"))
        .map_err(|e| ModelError::io("import", &tokenizer, e))?;
    Ok(())
}

/// Whether `dir` holds a CTranslate2 model (`model.bin` beside a
/// `config.json` and `tokenizer.json`).
pub fn is_ct2_dir(dir: &Path) -> bool {
    ["model.bin", "config.json", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}
