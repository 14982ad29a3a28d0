//! Speech to text with Whisper (Hugging Face layout, [`crate::whisper`]):
//! 30-second log-mel windows in, text out, greedy decoding without
//! timestamps.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use candle_transformers::models::whisper::Config;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::error::{ModelError, Result};
use crate::text::load_tokenizer;
use crate::weights::{load_error, var_builder, weights_file};
use crate::whisper::Whisper;
use crate::worker::Stop;

/// Mel frames in one 30-second window of Whisper's input (16 kHz, hop
/// 160, FFT 400: `quiver_media::mel::whisper_windows` makes them).
pub const WINDOW_FRAMES: usize = 3000;

#[derive(Debug, Clone, Deserialize)]
struct FullConfig {
    #[serde(flatten)]
    whisper: Config,
    #[serde(default)]
    begin_suppress_tokens: Vec<u32>,
}

/// What a Whisper directory declares, read without its weights.
#[derive(Debug, Clone)]
pub struct SpeechInfo {
    /// Mel bands of its input (80; 128 for large-v3).
    pub n_mels: usize,
    /// English-only (`*.en`) models take no language token.
    pub english_only: bool,
    pub d_model: usize,
    pub layers: usize,
    config: FullConfig,
}

impl SpeechInfo {
    pub fn read(model: &str, dir: &Path) -> Result<Self> {
        let config: FullConfig = crate::text::read_json(model, &dir.join("config.json"))?;
        Ok(Self {
            n_mels: config.whisper.num_mel_bins,
            // The multilingual vocabulary has one more token (51865).
            english_only: config.whisper.vocab_size == 51864,
            d_model: config.whisper.d_model,
            layers: config.whisper.encoder_layers,
            config,
        })
    }
}

/// A loaded Whisper model.
#[derive(Debug)]
pub struct Transcriber {
    name: String,
    info: SpeechInfo,
    model: Whisper,
    tokenizer: Tokenizer,
    device: Device,
    dtype: DType,
    sot: u32,
    eot: u32,
    transcribe: Option<u32>,
    no_timestamps: u32,
    /// `-inf` at tokens never emitted: the model's suppressed tokens and
    /// every special and timestamp token but end-of-text.
    suppress: Tensor,
    /// Added at the first step: blank and end-of-text.
    suppress_begin: Tensor,
}

impl Transcriber {
    pub fn load(name: &str, dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let info = SpeechInfo::read(name, dir)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let (tokenizer, _) = load_tokenizer(name, dir, info.config.whisper.max_target_positions)?;
        let token = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| ModelError::Tokenizer {
                    model: name.to_string(),
                    path: tokenizer_path.clone(),
                    message: format!("no {t} token"),
                })
        };
        let (sot, eot, no_timestamps) = (
            token("<|startoftranscript|>")?,
            token("<|endoftext|>")?,
            token("<|notimestamps|>")?,
        );
        let transcribe = tokenizer.token_to_id("<|transcribe|>");
        let weights = weights_file(name, dir)?;
        let vb = var_builder(name, &weights, dtype, device)?;
        let model =
            Whisper::load(&vb, &info.config.whisper).map_err(|e| load_error(name, &weights, e))?;
        let vocab = info.config.whisper.vocab_size;
        let mask = |ids: &mut dyn Iterator<Item = u32>| -> Result<Tensor> {
            let mut m = vec![0f32; vocab];
            for id in ids {
                if let Some(v) = m.get_mut(id as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
            Tensor::from_vec(m, vocab, device).map_err(ModelError::forward(name))
        };
        let suppress = mask(
            &mut info
                .config
                .whisper
                .suppress_tokens
                .iter()
                .copied()
                .chain(eot + 1..vocab as u32),
        )?;
        let suppress_begin = mask(&mut info.config.begin_suppress_tokens.iter().copied())?;
        Ok(Self {
            name: name.to_string(),
            info,
            model,
            tokenizer,
            device: device.clone(),
            dtype,
            sot,
            eot,
            transcribe,
            no_timestamps,
            suppress,
            suppress_begin,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the model takes.
    pub fn info(&self) -> &SpeechInfo {
        &self.info
    }

    /// The decoder's first tokens for `language` (ISO 639-1, `en` when
    /// none; English-only models take only `en`).
    fn prompt(&self, language: Option<&str>) -> Result<Vec<u32>> {
        let bad = |reason: String| ModelError::BadOption {
            option: "language".into(),
            reason,
        };
        if self.info.english_only {
            if let Some(l) = language.filter(|l| !l.eq_ignore_ascii_case("en")) {
                return Err(bad(format!(
                    "model '{}' is English-only; it cannot transcribe '{l}'",
                    self.name
                )));
            }
            return Ok(vec![self.sot, self.no_timestamps]);
        }
        let language = language.unwrap_or("en").to_ascii_lowercase();
        let lang = self
            .tokenizer
            .token_to_id(&format!("<|{language}|>"))
            .ok_or_else(|| {
                bad(format!(
                    "'{language}' is not a language model '{}' knows",
                    self.name
                ))
            })?;
        let transcribe = self
            .transcribe
            .ok_or_else(|| bad("the tokenizer has no <|transcribe|> token".into()))?;
        Ok(vec![self.sot, lang, transcribe, self.no_timestamps])
    }

    /// The text of each window (`n_mels × 3000` log-mel values, band after
    /// band), `batch` windows per encoder pass.
    pub fn transcribe(
        &self,
        mels: &[f32],
        language: Option<&str>,
        batch: usize,
        stop: Stop,
    ) -> Result<Vec<String>> {
        let per_window = self.info.n_mels * WINDOW_FRAMES;
        if per_window == 0 || !mels.len().is_multiple_of(per_window) {
            return Err(ModelError::forward(&self.name)(candle_core::Error::Msg(
                format!(
                    "{} values are not whole {}x{WINDOW_FRAMES} windows",
                    mels.len(),
                    self.info.n_mels
                ),
            )));
        }
        let prompt = self.prompt(language)?;
        let err = ModelError::forward(&self.name);
        let mut out = Vec::with_capacity(mels.len() / per_window);
        for chunk in mels.chunks(batch.max(1) * per_window) {
            if stop() {
                return Err(ModelError::Cancelled(self.name.clone()));
            }
            let n = chunk.len() / per_window;
            let x = Tensor::from_slice(chunk, (n, self.info.n_mels, WINDOW_FRAMES), &self.device)
                .and_then(|t| t.to_dtype(self.dtype))
                .map_err(&err)?;
            let features = self.model.encoder.forward(&x).map_err(&err)?;
            if stop() {
                return Err(ModelError::Cancelled(self.name.clone()));
            }
            out.extend(self.decode(&features, &prompt)?);
        }
        Ok(out)
    }

    /// Greedy decoding of windows' encoded audio (`[b, 1500, d]`), side
    /// by side: one decoder step per token for all of them, until every
    /// window has ended.
    fn decode(&self, audio: &Tensor, prompt: &[u32]) -> Result<Vec<String>> {
        let err = ModelError::forward(&self.name);
        let decoder = &self.model.decoder;
        let b = audio.dim(0).map_err(&err)?;
        let mut state = decoder.start(audio).map_err(&err)?;
        let max_tokens = decoder.max_tokens();
        let mut texts: Vec<Vec<u32>> = vec![vec![]; b];
        let mut done = vec![false; b];
        let mut input: Vec<Vec<u32>> = vec![prompt.to_vec(); b];
        for step in 0..max_tokens / 2 {
            if prompt.len() + step + 1 >= max_tokens {
                break;
            }
            let mut logits = decoder
                .step(&mut state, &input)
                .and_then(|l| l.to_dtype(DType::F32))
                .and_then(|l| l.broadcast_add(&self.suppress))
                .map_err(&err)?;
            if step == 0 {
                logits = logits.broadcast_add(&self.suppress_begin).map_err(&err)?;
            }
            let next = logits
                .argmax(D::Minus1)
                .and_then(|t| t.to_vec1::<u32>())
                .map_err(&err)?;
            for (i, &token) in next.iter().enumerate() {
                if done[i] {
                    continue;
                }
                if token == self.eot {
                    done[i] = true;
                    continue;
                }
                texts[i].push(token);
                // A window stuck repeating one token (silence, noise) ends.
                let t = &texts[i];
                if t.len() >= 24 && t[t.len() - 24..].iter().all(|&x| x == token) {
                    done[i] = true;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            input = next.iter().map(|&t| vec![t]).collect();
        }
        texts
            .iter()
            .map(|tokens| {
                self.tokenizer
                    .decode(tokens, true)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| ModelError::Tokenize {
                        model: self.name.clone(),
                        message: e.to_string(),
                    })
            })
            .collect()
    }
}
