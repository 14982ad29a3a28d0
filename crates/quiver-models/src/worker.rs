//! A model's dedicated thread: forward passes run there, one at a time,
//! never on the async runtime's workers. Callers await a oneshot reply;
//! a caller that has gone away (its query was cancelled) is skipped.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::mpsc;

use futures::channel::oneshot;

use crate::error::{ModelError, Result};
use crate::registry::LoadedKind;

type Job = Box<dyn FnOnce(&LoadedKind) + Send>;

/// Asked between forward passes: whether the caller has gone away.
pub type Stop<'a> = &'a dyn Fn() -> bool;

/// The sending end of a model's worker thread.
#[derive(Debug)]
pub struct Worker {
    name: String,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Worker {
    /// Starts a thread that owns `kind` and runs jobs sent to it.
    pub fn spawn(name: &str, kind: LoadedKind) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("quiver-model-{name}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A panicking forward pass fails its own caller (its
                    // reply is dropped) and leaves the thread serving.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&kind)));
                }
            })
            .map_err(|source| {
                ModelError::io(name, std::path::Path::new("worker thread"), source)
            })?;
        Ok(Self {
            name: name.to_string(),
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on the worker and awaits its result. `f` is skipped when
    /// the caller has gone away before the worker reaches it, and may ask
    /// its [`Stop`] between passes.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&LoadedKind, Stop) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |kind| {
            if tx.is_canceled() {
                return;
            }
            let result = f(kind, &|| tx.is_canceled());
            let _ = tx.send(result);
        });
        let sent = self
            .jobs
            .lock()
            .map_err(|_| ModelError::WorkerGone(self.name.clone()))
            .and_then(|jobs| {
                jobs.send(job)
                    .map_err(|_| ModelError::WorkerGone(self.name.clone()))
            });
        sent?;
        rx.await.unwrap_or_else(|_| {
            Err(ModelError::WorkerGone(format!(
                "{} (the forward pass panicked)",
                self.name
            )))
        })
    }
}
