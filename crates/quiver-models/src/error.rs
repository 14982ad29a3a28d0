//! [`ModelError`]: what can go wrong registering, loading or running a model.

use std::path::PathBuf;

/// An error from the model registry, a loader or a forward pass. Each
/// variant names the model, file or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No model of that name is registered.
    #[error("no model named '{0}' (CREATE MODEL registers one; SHOW MODELS lists them)")]
    UnknownModel(String),
    /// A model of that name is registered already.
    #[error("a model named '{0}' exists already (DROP MODEL it first)")]
    Exists(String),
    /// The architecture named in `TYPE` is not one Quiver runs.
    #[error("unknown model type '{given}' (expected one of: {expected})")]
    UnknownArchitecture { given: String, expected: String },
    /// An option of `CREATE MODEL … OPTIONS (…)` is unknown or malformed.
    #[error("model option '{option}': {reason}")]
    BadOption { option: String, reason: String },
    /// A file the model needs is missing or unreadable.
    #[error("model '{model}': cannot read {}", path.display())]
    Io {
        model: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file (`config.json`, …) does not parse.
    #[error("model '{model}': {} is not a valid configuration", path.display())]
    Config {
        model: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The weights file lacks a tensor the architecture needs, or holds one
    /// of the wrong shape.
    #[error("model '{model}': loading {}: {message}", path.display())]
    Weights {
        model: String,
        path: PathBuf,
        message: String,
        #[source]
        source: Box<candle_core::Error>,
    },
    /// The tokenizer file does not load.
    #[error("model '{model}': tokenizer {}: {message}", path.display())]
    Tokenizer {
        model: String,
        path: PathBuf,
        message: String,
    },
    /// Tokenising an input failed.
    #[error("model '{model}': tokenising: {message}")]
    Tokenize { model: String, message: String },
    /// The forward pass failed.
    #[error("model '{model}': forward pass: {source}")]
    Forward {
        model: String,
        #[source]
        source: Box<candle_core::Error>,
    },
    /// The function does not fit the model (embed_text on a classifier, …).
    #[error("model '{model}' is a {architecture} model, which has no {function}")]
    WrongKind {
        model: String,
        architecture: String,
        function: String,
    },
    /// A checkpoint to import is not one Quiver recognises.
    #[error("import {}: {reason}", path.display())]
    Import { path: PathBuf, reason: String },
    /// The query that asked stopped before the model got to it.
    #[error("model '{0}': cancelled")]
    Cancelled(String),
    /// The model's worker thread stopped (it panicked, or the engine is
    /// shutting down).
    #[error("model '{0}': its worker thread stopped")]
    WorkerGone(String),
}

impl ModelError {
    /// Wraps a failed forward pass of `model` (for `map_err`).
    pub fn forward(model: &str) -> impl Fn(candle_core::Error) -> Self + '_ {
        move |e| Self::Forward {
            model: model.to_string(),
            source: Box::new(e),
        }
    }

    /// A file of `model` that cannot be read.
    pub fn io(model: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            model: model.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
