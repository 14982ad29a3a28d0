//! Quiver's physical operators.
//!
//! | module | what |
//! |---|---|
//! | [`inference`] | `InferenceExec`: model calls batched across partitions, run with bounded queues and overlapped with the decoding upstream |
//! | [`progress`] | `InferenceProgress`: rows done / expected by a session's model calls, for progress displays |
//! | [`rule`] | `InferenceRule`: the physical optimizer rule that puts an `InferenceExec` wherever a plan calls a model (async) function |

pub mod inference;
pub mod progress;
pub mod rule;

pub use inference::{InferenceConfig, InferenceExec};
pub use progress::InferenceProgress;
pub use rule::{BatchSizeHint, InferenceRule};
