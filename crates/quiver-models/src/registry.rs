//! The model registry: names → architecture, local weights and options.
//! Models load on first use, once per registry (one per engine, shared by
//! every session and connection), and run on a dedicated worker thread.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::clip::{Clip, ClipInfo};
use crate::device::{DeviceChoice, Precision, device_name, pick_device};
use crate::error::{ModelError, Result};
use crate::share::{DeviceFraction, DeviceShares};
use crate::speech::{SpeechInfo, Transcriber};
use crate::text::{TextEmbedder, TextEmbedderInfo};
use crate::vision::{ImageClassifier, ImageClassifierInfo, Ranking};
use crate::worker::{MAX_REPLICAS, Worker};

/// The architectures Quiver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// A BERT-family sentence embedder (sentence-transformers layout:
    /// MiniLM, MPNet-free BERT, BGE, E5 …): `embed_text`.
    Bert,
    /// An EfficientNet-Lite image classifier: `classify_image`.
    EfficientNet,
    /// A torchvision ResNet image classifier: `classify_image`.
    ResNet,
    /// Whisper speech recognition: `transcribe`.
    Whisper,
    /// CLIP: `embed_image`, `embed_text` in the same space, `clip_classify`.
    Clip,
}

impl Architecture {
    /// Every architecture, as `CREATE MODEL … TYPE` names it.
    pub const ALL: [Architecture; 5] = [
        Architecture::Bert,
        Architecture::EfficientNet,
        Architecture::ResNet,
        Architecture::Whisper,
        Architecture::Clip,
    ];

    /// The name used in `TYPE`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::EfficientNet => "efficientnet",
            Self::ResNet => "resnet",
            Self::Whisper => "whisper",
            Self::Clip => "clip",
        }
    }

    /// What the model computes, in words.
    pub fn task(self) -> &'static str {
        match self {
            Self::Bert => "text embedding",
            Self::EfficientNet | Self::ResNet => "image classification",
            Self::Whisper => "speech to text",
            Self::Clip => "image and text embedding",
        }
    }
}

impl FromStr for Architecture {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "bert" | "sentence-transformer" | "sentence-transformers" | "minilm" => Ok(Self::Bert),
            "efficientnet" | "efficientnet-lite" | "efficientnet-lite0" => Ok(Self::EfficientNet),
            "resnet" => Ok(Self::ResNet),
            "whisper" => Ok(Self::Whisper),
            "clip" => Ok(Self::Clip),
            _ => Err(ModelError::UnknownArchitecture {
                given: s.to_string(),
                expected: Self::ALL.map(Self::name).join(", "),
            }),
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rows per forward pass when a model does not say.
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// A registered model: what `CREATE MODEL` (or the config file) declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub architecture: Architecture,
    /// The model directory (Hugging Face layout).
    pub path: PathBuf,
    pub device: DeviceChoice,
    pub precision: Precision,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Forward passes that run at once (worker threads over the same
    /// weights), where the session's `quiver.inference.replicas` is 0.
    pub replicas: usize,
    /// The share of its device the model holds while a forward pass runs
    /// (1: the device to itself; see [`crate::share`]).
    pub device_fraction: DeviceFraction,
    /// A file of class labels, one per line (classifiers).
    pub labels: Option<PathBuf>,
}

impl ModelSpec {
    /// A spec with default options.
    pub fn new(name: &str, architecture: Architecture, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            architecture,
            path: path.into(),
            device: DeviceChoice::default(),
            precision: Precision::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            replicas: 1,
            device_fraction: DeviceFraction::WHOLE,
            labels: None,
        }
    }

    /// Applies one `OPTIONS (key 'value')` entry.
    pub fn set_option(&mut self, key: &str, value: &str) -> Result<()> {
        match key.to_ascii_lowercase().as_str() {
            "device" => self.device = value.parse()?,
            "dtype" => self.precision = value.parse()?,
            "batch_size" => {
                self.batch_size = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| ModelError::BadOption {
                        option: "batch_size".into(),
                        reason: format!("'{value}' is not a positive whole number"),
                    })?
            }
            "replicas" => {
                self.replicas = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_REPLICAS).contains(n))
                    .ok_or_else(|| ModelError::BadOption {
                        option: "replicas".into(),
                        reason: format!("'{value}' is not a whole number from 1 to {MAX_REPLICAS}"),
                    })?
            }
            "device_fraction" => self.device_fraction = value.parse()?,
            "labels" => self.labels = Some(PathBuf::from(value)),
            other => {
                return Err(ModelError::BadOption {
                    option: other.to_string(),
                    reason: "unknown option (expected device, dtype, batch_size, replicas, device_fraction or labels)".into(),
                });
            }
        }
        Ok(())
    }
}

/// What a model outputs, read from its configuration at registration (no
/// weights loaded).
#[derive(Debug, Clone)]
pub enum ModelInfo {
    TextEmbedder(TextEmbedderInfo),
    ImageClassifier(ImageClassifierInfo),
    Speech(SpeechInfo),
    Clip(ClipInfo),
}

impl ModelInfo {
    fn read(spec: &ModelSpec) -> Result<Self> {
        if !spec.path.is_dir() {
            return Err(ModelError::io(
                &spec.name,
                &spec.path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory"),
            ));
        }
        match spec.architecture {
            Architecture::Bert => Ok(Self::TextEmbedder(TextEmbedderInfo::read(
                &spec.name, &spec.path,
            )?)),
            Architecture::EfficientNet | Architecture::ResNet => {
                let info =
                    ImageClassifierInfo::read(&spec.name, &spec.path, spec.labels.as_deref())?;
                if info.model_type != spec.architecture.name() {
                    return Err(ModelError::BadOption {
                        option: "TYPE".into(),
                        reason: format!(
                            "model '{}': {} holds a {} model, not a {}",
                            spec.name,
                            spec.path.display(),
                            info.model_type,
                            spec.architecture
                        ),
                    });
                }
                Ok(Self::ImageClassifier(info))
            }
            Architecture::Whisper => Ok(Self::Speech(SpeechInfo::read(&spec.name, &spec.path)?)),
            Architecture::Clip => Ok(Self::Clip(ClipInfo::read(&spec.name, &spec.path)?)),
        }
    }

    /// The length of the model's embeddings, if it makes embeddings.
    pub fn embedding_dim(&self) -> Option<usize> {
        match self {
            Self::TextEmbedder(i) => Some(i.dim),
            Self::Clip(i) => Some(i.dim),
            Self::ImageClassifier(_) | Self::Speech(_) => None,
        }
    }

    /// Whether its embeddings have unit length.
    pub fn normalized(&self) -> bool {
        match self {
            Self::TextEmbedder(i) => i.normalize,
            Self::Clip(_) => true,
            Self::ImageClassifier(_) | Self::Speech(_) => false,
        }
    }
}

/// The forward passes of a loaded model.
#[derive(Debug)]
pub enum LoadedKind {
    TextEmbedder(Box<TextEmbedder>),
    ImageClassifier(Box<ImageClassifier>),
    Speech(Box<Transcriber>),
    Clip(Box<Clip>),
}

impl LoadedKind {
    fn wrong_kind(&self, function: &str) -> ModelError {
        let (model, architecture) = match self {
            Self::TextEmbedder(m) => (m.name(), Architecture::Bert),
            Self::ImageClassifier(m) => (m.name(), m.architecture()),
            Self::Speech(m) => (m.name(), Architecture::Whisper),
            Self::Clip(m) => (m.name(), Architecture::Clip),
        };
        ModelError::WrongKind {
            model: model.to_string(),
            architecture: architecture.name().to_string(),
            function: function.to_string(),
        }
    }
}

/// A loaded model: its weights on a device and the worker thread that runs
/// it. Shared (`Arc`) by every query using it.
#[derive(Debug)]
pub struct Model {
    spec: ModelSpec,
    device: String,
    warning: Option<String>,
    load_time: std::time::Duration,
    worker: Worker,
}

impl Model {
    fn load(spec: &ModelSpec, shares: &DeviceShares) -> Result<Self> {
        let started = Instant::now();
        let (mut device, mut warning) = pick_device(spec.device);
        let kind = match spec.architecture {
            Architecture::Bert => LoadedKind::TextEmbedder(Box::new(TextEmbedder::load(
                &spec.name,
                &spec.path,
                &device,
                spec.precision.dtype(),
            )?)),
            Architecture::EfficientNet | Architecture::ResNet => {
                // Quiver's own channels-last kernels: CPU and f32 only.
                if !device.is_cpu() || spec.precision != Precision::F32 {
                    warning = Some(format!(
                        "model '{}': {} runs on the CPU in f32 (Quiver's own kernels); \
                         device '{}' and dtype '{}' are not used",
                        spec.name, spec.architecture, spec.device, spec.precision
                    ));
                    device = candle_core::Device::Cpu;
                }
                let info =
                    ImageClassifierInfo::read(&spec.name, &spec.path, spec.labels.as_deref())?;
                LoadedKind::ImageClassifier(Box::new(ImageClassifier::load(
                    &spec.name, &spec.path, &info,
                )?))
            }
            Architecture::Whisper => LoadedKind::Speech(Box::new(Transcriber::load(
                &spec.name,
                &spec.path,
                &device,
                spec.precision.dtype(),
            )?)),
            Architecture::Clip => LoadedKind::Clip(Box::new(Clip::load(
                &spec.name,
                &spec.path,
                &device,
                spec.precision.dtype(),
            )?)),
        };
        let device = device_name(&device);
        let claim = shares.claim(&device, spec.device_fraction);
        Ok(Self {
            spec: spec.clone(),
            device,
            warning,
            load_time: started.elapsed(),
            worker: Worker::spawn(&spec.name, kind, claim)?,
        })
    }

    /// Makes sure `replicas` forward passes of this model can run at once
    /// (worker threads over the same weights; at most 16).
    pub fn ensure_replicas(&self, replicas: usize) -> Result<()> {
        self.worker.ensure_replicas(replicas)
    }

    /// What was registered.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device it runs on (`cpu`, `cuda:0`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Why it does not run where it was asked to, if so.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// How long loading took.
    pub fn load_time(&self) -> std::time::Duration {
        self.load_time
    }

    /// Embeds `texts`: [`Self::tokenize`] on the caller's thread, then
    /// [`Self::embed_tokens`] on the model's.
    pub async fn embed_texts(&self, texts: Vec<String>) -> Result<Vec<f32>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens = self.tokenize(&refs)?;
        self.embed_tokens(tokens).await
    }

    /// `texts` tokenised for this model's text encoder, on the caller's
    /// thread (CPU work that needs no weights and no device: a caller runs
    /// it on a blocking pool while the model's thread runs another call).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Tokens> {
        let encodings = match self.worker.kind() {
            LoadedKind::TextEmbedder(m) => m.tokenize(texts)?,
            LoadedKind::Clip(m) => m.tokenize(texts)?,
            other => return Err(other.wrong_kind("embed_text")),
        };
        Ok(Tokens(encodings))
    }

    /// Embeds tokenised texts on the model's worker thread, `batch_size`
    /// rows per forward pass (like lengths together); `n × dim` floats in
    /// input order. Dropping the future stops before the next pass.
    pub async fn embed_tokens(&self, tokens: Tokens) -> Result<Vec<f32>> {
        let batch = self.spec.batch_size;
        self.worker
            .run(move |kind, stop| match kind {
                LoadedKind::TextEmbedder(m) => m.embed_tokens(&tokens.0, batch, stop),
                LoadedKind::Clip(m) => m.embed_tokens(&tokens.0, batch, stop),
                other => Err(other.wrong_kind("embed_text")),
            })
            .await
    }

    /// Embeds images (RGB bytes, the model's `image_size`² each) on the
    /// model's worker thread: `n × dim` floats, unit length.
    pub async fn embed_images(&self, rgb: Vec<u8>) -> Result<Vec<f32>> {
        let batch = self.spec.batch_size;
        self.worker
            .run(move |kind, stop| match kind {
                LoadedKind::Clip(m) => m.embed_images(&rgb, batch, stop),
                other => Err(other.wrong_kind("embed_image")),
            })
            .await
    }

    /// Zero-shot classification of images against label texts: the
    /// `top_k` labels of each image (indices into `labels`) with their
    /// probabilities. The labels (a few short texts) are tokenised on the
    /// caller's thread, the passes run on the model's.
    pub async fn clip_classify(
        &self,
        rgb: Vec<u8>,
        labels: Vec<String>,
        top_k: usize,
    ) -> Result<Vec<Ranking>> {
        let batch = self.spec.batch_size;
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let labels = match self.worker.kind() {
            LoadedKind::Clip(m) => m.tokenize(&refs)?,
            other => return Err(other.wrong_kind("clip_classify")),
        };
        self.worker
            .run(move |kind, stop| match kind {
                LoadedKind::Clip(m) => m.classify(&rgb, &labels, batch, top_k, stop),
                other => Err(other.wrong_kind("clip_classify")),
            })
            .await
    }

    /// Transcribes audio on the model's worker thread: `mels` holds
    /// 30-second log-mel windows (`n_mels × 3000` each), `windows[i]` of
    /// them for row `i`; `batch_size` windows per encoder pass. The text
    /// of each row, its windows' texts joined by spaces.
    pub async fn transcribe(
        &self,
        mels: Vec<f32>,
        windows: Vec<usize>,
        language: Option<String>,
    ) -> Result<Vec<String>> {
        let batch = self.spec.batch_size;
        let texts = self
            .worker
            .run(move |kind, stop| match kind {
                LoadedKind::Speech(m) => m.transcribe(&mels, language.as_deref(), batch, stop),
                other => Err(other.wrong_kind("transcribe")),
            })
            .await?;
        let mut texts = texts.into_iter();
        Ok(windows
            .into_iter()
            .map(|n| {
                texts
                    .by_ref()
                    .take(n)
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect())
    }

    /// Classifies images (RGB bytes, the model's `image_size`² each) on
    /// the model's worker thread, `batch_size` per forward pass: the
    /// `top_k` classes of each with their probabilities.
    pub async fn classify_images(&self, rgb: Vec<u8>, top_k: usize) -> Result<Vec<Ranking>> {
        let batch = self.spec.batch_size;
        self.worker
            .run(move |kind, stop| match kind {
                LoadedKind::ImageClassifier(m) => m.classify(&rgb, batch, top_k, stop),
                other => Err(other.wrong_kind("classify_image")),
            })
            .await
    }
}

/// Texts tokenised by [`Model::tokenize`], for [`Model::embed_tokens`].
#[derive(Debug, Clone)]
pub struct Tokens(Vec<tokenizers::Encoding>);

impl Tokens {
    /// How many texts.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug)]
struct Entry {
    spec: ModelSpec,
    info: ModelInfo,
    /// Filled on first use; shared with every other name for the same
    /// weights, device and precision.
    slot: Slot,
}

/// Where a model is kept once loaded.
type Slot = Arc<Mutex<Option<Arc<Model>>>>;

/// Weights are shared between names that load the same files the same way
/// (and hold the same share of the device).
type LoadKey = (
    Architecture,
    PathBuf,
    DeviceChoice,
    Precision,
    DeviceFraction,
);

/// Registered models, by lower-case name.
#[derive(Debug, Default)]
pub struct ModelRegistry {
    entries: RwLock<BTreeMap<String, Entry>>,
    slots: Mutex<HashMap<LoadKey, Slot>>,
    /// What each device's models hold of it while they run.
    shares: DeviceShares,
}

/// One row of `SHOW MODELS`.
#[derive(Debug, Clone)]
pub struct ModelListing {
    pub spec: ModelSpec,
    pub info: ModelInfo,
    /// Set once loaded: the device it runs on.
    pub loaded_on: Option<String>,
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `spec`, after checking that its directory and
    /// configuration read (weights load on first use). With `replace`, an
    /// existing model of that name is replaced.
    pub fn register(&self, spec: ModelSpec, replace: bool) -> Result<()> {
        let info = ModelInfo::read(&spec)?;
        let canonical = std::fs::canonicalize(&spec.path).unwrap_or_else(|_| spec.path.clone());
        let load_key = (
            spec.architecture,
            canonical,
            spec.device,
            spec.precision,
            spec.device_fraction,
        );
        let slot = self
            .slots
            .lock()
            .map_err(|_| ModelError::WorkerGone(spec.name.clone()))?
            .entry(load_key)
            .or_default()
            .clone();
        let mut entries = self
            .entries
            .write()
            .map_err(|_| ModelError::WorkerGone(spec.name.clone()))?;
        let k = key(&spec.name);
        if entries.contains_key(&k) && !replace {
            return Err(ModelError::Exists(spec.name));
        }
        entries.insert(k, Entry { spec, info, slot });
        Ok(())
    }

    /// Removes a model; `Ok(false)` when there was none of that name.
    pub fn drop_model(&self, name: &str) -> Result<bool> {
        let mut entries = self
            .entries
            .write()
            .map_err(|_| ModelError::WorkerGone(name.to_string()))?;
        Ok(entries.remove(&key(name)).is_some())
    }

    /// The registered models, by name.
    pub fn list(&self) -> Vec<ModelListing> {
        let Ok(entries) = self.entries.read() else {
            return vec![];
        };
        entries
            .values()
            .map(|e| ModelListing {
                spec: e.spec.clone(),
                info: e.info.clone(),
                loaded_on: e
                    .slot
                    .try_lock()
                    .ok()
                    .and_then(|s| s.as_ref().map(|m| m.device().to_string())),
            })
            .collect()
    }

    /// The spec and info of `name`.
    pub fn describe(&self, name: &str) -> Result<(ModelSpec, ModelInfo)> {
        let entries = self
            .entries
            .read()
            .map_err(|_| ModelError::WorkerGone(name.to_string()))?;
        let e = entries
            .get(&key(name))
            .ok_or_else(|| ModelError::UnknownModel(name.to_string()))?;
        Ok((e.spec.clone(), e.info.clone()))
    }

    /// What model `name` was registered with, if it is registered.
    pub fn spec(&self, name: &str) -> Option<ModelSpec> {
        let entries = self.entries.read().ok()?;
        entries.get(&key(name)).map(|e| e.spec.clone())
    }

    /// The loaded model `name`, loading it on first use. Blocks while
    /// loading: call from a blocking thread.
    pub fn get(&self, name: &str) -> Result<Arc<Model>> {
        let (spec, slot) = {
            let entries = self
                .entries
                .read()
                .map_err(|_| ModelError::WorkerGone(name.to_string()))?;
            let e = entries
                .get(&key(name))
                .ok_or_else(|| ModelError::UnknownModel(name.to_string()))?;
            (e.spec.clone(), e.slot.clone())
        };
        let mut slot = slot
            .lock()
            .map_err(|_| ModelError::WorkerGone(name.to_string()))?;
        if let Some(model) = slot.as_ref() {
            return Ok(model.clone());
        }
        let model = Arc::new(Model::load(&spec, &self.shares)?);
        *slot = Some(model.clone());
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{write_tiny_bert, write_tiny_clip};

    /// Tokenising is the caller's work: it goes on while the model's only
    /// thread is busy with another call, and its tokens embed as the texts
    /// do.
    fn tokenizes_beside_a_busy_model(architecture: Architecture) {
        let dir = tempfile::tempdir().expect("tempdir");
        match architecture {
            Architecture::Clip => write_tiny_clip(dir.path(), 3).expect("tiny clip"),
            _ => write_tiny_bert(dir.path(), 32, 7).expect("tiny bert"),
        }
        let registry = ModelRegistry::new();
        registry
            .register(ModelSpec::new("m", architecture, dir.path()), false)
            .expect("register");
        let model = registry.get("m").expect("load");
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let busy = {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                futures::executor::block_on(model.worker.run(move |_, _| {
                    let _ = started.send(());
                    let _ = wait.recv();
                    Ok(())
                }))
            })
        };
        running
            .recv()
            .expect("the model's thread runs the first call");
        let texts = ["a cat sat on the mat", "dog"];
        // On another thread, with a deadline: work sent to the model's
        // thread would wait for ever here.
        let (done, tokenised) = std::sync::mpsc::channel();
        {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                let _ = done.send(model.tokenize(&texts));
            });
        }
        let tokens = tokenised
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("tokenised while the model's only thread is busy")
            .expect("tokens");
        assert_eq!(tokens.len(), 2);
        release.send(()).expect("release");
        busy.join().expect("join").expect("the first call");
        let from_tokens = futures::executor::block_on(model.embed_tokens(tokens)).expect("embed");
        let from_texts = futures::executor::block_on(
            model.embed_texts(texts.iter().map(|t| (*t).to_string()).collect()),
        )
        .expect("embed");
        assert_eq!(from_tokens, from_texts);
        assert!(!from_tokens.is_empty());
    }

    #[test]
    fn a_text_embedder_tokenizes_beside_a_busy_model() {
        tokenizes_beside_a_busy_model(Architecture::Bert);
    }

    #[test]
    fn clip_tokenizes_beside_a_busy_model() {
        tokenizes_beside_a_busy_model(Architecture::Clip);
    }
}
