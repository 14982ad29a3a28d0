//! Speech to text with Whisper (Candle's Whisper, Hugging Face layout):
//! 30-second log-mel windows in, text out, greedy decoding without
//! timestamps.

use std::path::Path;
use std::sync::Mutex;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use candle_transformers::models::whisper::Config;
use candle_transformers::models::whisper::model::Whisper;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::error::{ModelError, Result};
use crate::weights::{load_error, var_builder, weights_file};
use crate::worker::Stop;

/// Whisper's input: 16 kHz audio in 30-second windows of 3000 log-mel
/// frames (hop 160, FFT 400).
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples in one window.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE as usize;
/// Mel frames in one window.
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
        let path = dir.join("config.json");
        let text = std::fs::read(&path).map_err(|e| ModelError::io(model, &path, e))?;
        let config: FullConfig =
            serde_json::from_slice(&text).map_err(|source| ModelError::Config {
                model: model.to_string(),
                path: path.clone(),
                source,
            })?;
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
    model: Mutex<Whisper>,
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

fn forward_error(model: &str) -> impl Fn(candle_core::Error) -> ModelError + '_ {
    move |e| ModelError::Forward {
        model: model.to_string(),
        source: Box::new(e),
    }
}

impl Transcriber {
    pub fn load(name: &str, dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let info = SpeechInfo::read(name, dir)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| ModelError::Tokenizer {
                model: name.to_string(),
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;
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
        let model = Whisper::load(&vb, info.config.whisper.clone())
            .map_err(|e| load_error(name, &weights, e))?;
        let vocab = info.config.whisper.vocab_size;
        let mask = |ids: &mut dyn Iterator<Item = u32>| -> Result<Tensor> {
            let mut m = vec![0f32; vocab];
            for id in ids {
                if let Some(v) = m.get_mut(id as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
            Tensor::from_vec(m, vocab, device).map_err(forward_error(name))
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
            model: Mutex::new(model),
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
            return Err(forward_error(&self.name)(candle_core::Error::Msg(format!(
                "{} values are not whole {}x{WINDOW_FRAMES} windows",
                mels.len(),
                self.info.n_mels
            ))));
        }
        let prompt = self.prompt(language)?;
        let err = forward_error(&self.name);
        let mut model = self
            .model
            .lock()
            .map_err(|_| ModelError::WorkerGone(self.name.clone()))?;
        let mut out = Vec::with_capacity(mels.len() / per_window);
        for chunk in mels.chunks(batch.max(1) * per_window) {
            if stop() {
                return Err(ModelError::Cancelled(self.name.clone()));
            }
            let n = chunk.len() / per_window;
            let x = Tensor::from_slice(chunk, (n, self.info.n_mels, WINDOW_FRAMES), &self.device)
                .and_then(|t| t.to_dtype(self.dtype))
                .map_err(&err)?;
            let features = model.encoder.forward(&x, true).map_err(&err)?;
            for i in 0..n {
                if stop() {
                    return Err(ModelError::Cancelled(self.name.clone()));
                }
                let audio = features.i(i..i + 1).map_err(&err)?;
                out.push(self.decode(&mut model, &audio, &prompt)?);
            }
        }
        Ok(out)
    }

    /// Greedy decoding of one window's encoded audio.
    fn decode(&self, model: &mut Whisper, audio: &Tensor, prompt: &[u32]) -> Result<String> {
        let err = forward_error(&self.name);
        let mut tokens = prompt.to_vec();
        let max_tokens = self.info.config.whisper.max_target_positions / 2;
        for step in 0..max_tokens {
            let input = Tensor::new(tokens.as_slice(), &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(&err)?;
            let hidden = model
                .decoder
                .forward(&input, audio, step == 0)
                .map_err(&err)?;
            let last = hidden.i((..1, tokens.len() - 1..)).map_err(&err)?;
            let mut logits = model
                .decoder
                .final_linear(&last)
                .and_then(|l| l.i((0, 0)))
                .and_then(|l| l.to_dtype(DType::F32))
                .and_then(|l| l.add(&self.suppress))
                .map_err(&err)?;
            if step == 0 {
                logits = logits.add(&self.suppress_begin).map_err(&err)?;
            }
            let next = logits
                .argmax(D::Minus1)
                .and_then(|t| t.to_scalar::<u32>())
                .map_err(&err)?;
            if next == self.eot || tokens.len() + 1 >= self.info.config.whisper.max_target_positions
            {
                break;
            }
            tokens.push(next);
            // A window stuck repeating one token (silence, noise) stops.
            if tokens.len() > prompt.len() + 24
                && tokens[tokens.len() - 24..].iter().all(|&t| t == next)
            {
                break;
            }
        }
        let text = self
            .tokenizer
            .decode(&tokens[prompt.len()..], true)
            .map_err(|e| ModelError::Tokenize {
                model: self.name.clone(),
                message: e.to_string(),
            })?;
        Ok(text.trim().to_string())
    }
}
