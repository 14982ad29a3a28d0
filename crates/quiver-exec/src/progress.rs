//! `InferenceProgress`: rows through model calls, for a progress display.
//!
//! Put one on a session's config (`SessionConfig::with_extension`); every
//! `InferenceExec` the session runs adds the rows its input will deliver
//! (when the input's statistics know them) to `total`, and the rows each
//! call finishes to `done`. The CLI's progress line reads it; a server can
//! turn it into NOTICEs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Rows done and expected by the model calls of a session's statement.
#[derive(Debug, Default)]
pub struct InferenceProgress {
    done: AtomicU64,
    total: AtomicU64,
    unknown: AtomicU64,
}

impl InferenceProgress {
    /// Starts counting a new statement.
    pub fn reset(&self) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
        self.unknown.store(0, Ordering::Relaxed);
    }

    /// Rows whose model calls have finished.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Rows the model calls will see, when every `InferenceExec` of the
    /// statement knew its input's size.
    pub fn total(&self) -> Option<u64> {
        (self.unknown.load(Ordering::Relaxed) == 0)
            .then(|| self.total.load(Ordering::Relaxed))
            .filter(|&t| t > 0)
    }

    pub(crate) fn expect(&self, rows: Option<usize>) {
        match rows {
            Some(n) => self.total.fetch_add(n as u64, Ordering::Relaxed),
            None => self.unknown.fetch_add(1, Ordering::Relaxed),
        };
    }

    pub(crate) fn add(&self, rows: usize) {
        self.done.fetch_add(rows as u64, Ordering::Relaxed);
    }
}
