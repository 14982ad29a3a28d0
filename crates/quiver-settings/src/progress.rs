//! `StatementProgress`: what a session's running statement has done so far
//! — media files read, rows through model calls out of the rows expected —
//! for progress displays.
//!
//! One lives on each session's config (`SessionConfig::with_extension`,
//! and in its `QuiverSettings` for functions): media scans add the files
//! they finish reading (a scan of the listing alone reads none), and
//! `media_fetch` those it reads above a join; every `InferenceExec` adds the
//! rows its input will deliver (when the input's statistics know them for sure) to
//! the model total and the rows each call finishes to the model count. The
//! CLI's progress line and the server's progress NOTICEs read it; whoever
//! starts a statement resets it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Files read and model rows done / expected by a session's statement.
#[derive(Debug, Default)]
pub struct StatementProgress {
    files: AtomicU64,
    model_done: AtomicU64,
    model_total: AtomicU64,
    model_unknown: AtomicU64,
}

impl StatementProgress {
    /// Starts counting a new statement.
    pub fn reset(&self) {
        for counter in [
            &self.files,
            &self.model_done,
            &self.model_total,
            &self.model_unknown,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Media files the statement's scans have read (or probed) so far.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    /// Counts `n` more files read.
    pub fn add_files(&self, n: usize) {
        self.files.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Rows whose model calls have finished.
    pub fn model_done(&self) -> u64 {
        self.model_done.load(Ordering::Relaxed)
    }

    /// Rows the model calls will see, when every `InferenceExec` of the
    /// statement knew its input's size.
    pub fn model_total(&self) -> Option<u64> {
        (self.model_unknown.load(Ordering::Relaxed) == 0)
            .then(|| self.model_total.load(Ordering::Relaxed))
            .filter(|&t| t > 0)
    }

    /// A model call's input will deliver `rows` rows (`None`: unknown).
    pub fn expect_model_rows(&self, rows: Option<usize>) {
        match rows {
            Some(n) => self.model_total.fetch_add(n as u64, Ordering::Relaxed),
            None => self.model_unknown.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Counts `rows` more rows through model calls.
    pub fn add_model_rows(&self, rows: usize) {
        self.model_done.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// `12 rows`, with `· 40 files` once files were read and
    /// `· model 640/10000 rows (6%)` while model calls run; `rows` is what
    /// the statement has produced.
    pub fn summary(&self, rows: u64) -> String {
        let mut out = format!("{rows} rows");
        let files = self.files();
        if files > 0 {
            out.push_str(&format!(" · {files} files"));
        }
        let done = self.model_done();
        match self.model_total() {
            Some(total) => out.push_str(&format!(
                " · model {done}/{total} rows ({}%)",
                done * 100 / total.max(1)
            )),
            None if done > 0 => out.push_str(&format!(" · model {done} rows")),
            None => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_what_happened() {
        let p = StatementProgress::default();
        assert_eq!(p.summary(5), "5 rows");
        p.add_files(40);
        assert_eq!(p.summary(5), "5 rows · 40 files");
        p.add_model_rows(3);
        assert_eq!(p.summary(5), "5 rows · 40 files · model 3 rows");
        p.expect_model_rows(Some(12));
        assert_eq!(p.summary(5), "5 rows · 40 files · model 3/12 rows (25%)");
        p.expect_model_rows(None);
        assert_eq!(p.summary(5), "5 rows · 40 files · model 3 rows");
        p.reset();
        assert_eq!(p.summary(0), "0 rows");
    }
}
