//! Quiver's physical operators.
//!
//! | module | what |
//! |---|---|
//! | [`inference`] | `InferenceExec`: model calls batched across partitions, run with bounded queues and overlapped with the decoding upstream |
//! | [`rule`] | `InferenceRule`: the physical optimizer rule that puts an `InferenceExec` wherever a plan calls a model (async) function |

pub mod inference;
pub mod rule;

pub use inference::{InferenceConfig, InferenceExec};
pub use rule::{BatchSizeHint, InferenceRule};
