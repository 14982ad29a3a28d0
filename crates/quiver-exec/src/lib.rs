//! Quiver's physical operators.
//!
//! | module | what |
//! |---|---|
//! | [`inference`] | `InferenceExec`: model calls batched across partitions, run with bounded queues and overlapped with the decoding upstream |
//! | [`nested`] | `NestedAsyncRule`: asynchronous calls nested in asynchronous calls (`embed_image('clip', url_download(url))`) run as a stack of operators, innermost first |
//! | [`progress`] | `InferenceProgress`: rows done / expected by a session's model calls, for progress displays |
//! | [`rule`] | `InferenceRule`: the physical optimizer rule that puts an `InferenceExec` wherever a plan calls a model (async) function |

pub mod inference;
pub mod nested;
pub mod progress;
pub mod rule;

pub use inference::{InferenceConfig, InferenceExec};
pub use nested::NestedAsyncRule;
pub use progress::InferenceProgress;
pub use rule::{BatchSizeHint, InferenceRule};
