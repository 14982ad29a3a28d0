//! Quiver's physical operators.
//!
//! | module | what |
//! |---|---|
//! | [`inference`] | `InferenceExec`: model calls batched across partitions, run with bounded queues and overlapped with the decoding upstream |
//! | [`nested`] | `NestedAsyncRule`: asynchronous calls nested in asynchronous calls (`embed_image('clip', url_download(url))`) run as a stack of operators, innermost first |
//! | [`rule`] | `InferenceRule`: the physical optimizer rule that puts an `InferenceExec` wherever a plan calls a model (async) function |

pub mod inference;
pub mod nested;
pub mod rule;

pub use inference::{InferenceConfig, InferenceExec};
pub use nested::NestedAsyncRule;
pub use quiver_settings::progress::StatementProgress;
pub use rule::{InferenceRule, ModelDefaults, ModelHint};
