//! A progress line on stderr (rows, elapsed time, media files read, and
//! rows through model calls out of the rows expected, when the statement
//! runs models) for
//! statements that run longer than a second, shown only when stderr is a
//! terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quiver::StatementProgress;

/// How long a statement runs before the bar appears.
const DELAY: Duration = Duration::from_secs(1);

/// `12 rows`, with files read and model rows when there are some.
fn message(rows: u64, progress: Option<&StatementProgress>) -> String {
    match progress {
        Some(p) => p.summary(rows),
        None => format!("{rows} rows"),
    }
}

/// Progress of one running statement.
pub struct Progress {
    rows: Arc<AtomicU64>,
    bar: ProgressBar,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts tracking; the bar shows after [`DELAY`] if stderr is a
    /// terminal. `models` is the session's progress (files, model rows),
    /// reset here.
    pub fn start(models: Option<Arc<StatementProgress>>) -> Self {
        if let Some(m) = &models {
            m.reset();
        }
        let rows = Arc::new(AtomicU64::new(0));
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if !std::io::stderr().is_terminal() {
            return Self {
                rows,
                bar,
                task: None,
            };
        }
        let style = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        let (task_bar, task_rows) = (bar.clone(), Arc::clone(&rows));
        let task = tokio::spawn(async move {
            tokio::time::sleep(DELAY).await;
            task_bar.set_draw_target(ProgressDrawTarget::stderr());
            loop {
                let n = task_rows.load(Ordering::Relaxed);
                task_bar.set_message(message(n, models.as_deref()));
                task_bar.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            rows,
            bar,
            task: Some(task),
        }
    }

    /// Counts rows produced so far.
    pub fn add_rows(&self, n: usize) {
        self.rows.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Stops and erases the bar (before results are printed).
    pub fn clear(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_counts_model_rows_when_there_are_some() {
        assert_eq!(message(5, None), "5 rows");
        let m = StatementProgress::default();
        assert_eq!(message(5, Some(&m)), "5 rows");
    }
}
