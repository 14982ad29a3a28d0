//! A model's dedicated threads: forward passes run there (one per thread,
//! `replicas` threads at most), never on the async runtime's workers. Callers await a oneshot reply;
//! a caller that has gone away (its query was cancelled) is skipped.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use futures::channel::oneshot;

use crate::error::{ModelError, Result};
use crate::registry::LoadedKind;
use crate::share::Claim;

type Job = Box<dyn FnOnce(&LoadedKind, &Claim) + Send>;

/// Asked between forward passes: whether the caller has gone away.
pub type Stop<'a> = &'a dyn Fn() -> bool;

/// Most worker threads (replicas) one model may have.
pub const MAX_REPLICAS: usize = 16;

/// The sending end of a model's worker threads: one at first, more on
/// request ([`Worker::ensure_replicas`]), all taking jobs from one queue
/// and sharing the same loaded weights, and the model's claim on its
/// device (each pass holds it while it runs).
#[derive(Debug)]
pub struct Worker {
    name: String,
    kind: Arc<LoadedKind>,
    claim: Claim,
    jobs: Mutex<mpsc::Sender<Job>>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    threads: Mutex<usize>,
}

impl Worker {
    /// Starts a thread that owns `kind` and runs jobs sent to it, each
    /// holding `claim` while it runs.
    pub fn spawn(name: &str, kind: LoadedKind, claim: Claim) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = Self {
            name: name.to_string(),
            kind: Arc::new(kind),
            claim,
            jobs: Mutex::new(tx),
            queue: Arc::new(Mutex::new(rx)),
            threads: Mutex::new(0),
        };
        worker.ensure_replicas(1)?;
        Ok(worker)
    }

    /// The loaded model, for work that needs no weights (tokenising) on
    /// the caller's thread.
    pub fn kind(&self) -> &LoadedKind {
        &self.kind
    }

    /// Makes sure `replicas` threads (at most [`MAX_REPLICAS`]) run this
    /// model's jobs, so that as many forward passes can run at once.
    pub fn ensure_replicas(&self, replicas: usize) -> Result<()> {
        let mut threads = self
            .threads
            .lock()
            .map_err(|_| ModelError::WorkerGone(self.name.clone()))?;
        while *threads < replicas.clamp(1, MAX_REPLICAS) {
            let (kind, queue, claim) = (self.kind.clone(), self.queue.clone(), self.claim.clone());
            std::thread::Builder::new()
                .name(format!("quiver-model-{}-{}", self.name, *threads))
                .spawn(move || {
                    loop {
                        // One thread waits on the queue at a time; the lock is
                        // released before the job runs.
                        let job = match queue.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking forward pass fails its own caller (its
                        // reply is dropped) and leaves the thread serving.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&kind, &claim)));
                    }
                })
                .map_err(|source| {
                    ModelError::io(&self.name, std::path::Path::new("worker thread"), source)
                })?;
            *threads += 1;
        }
        Ok(())
    }

    /// Runs `f` on the worker, once the model's fraction of its device is
    /// free, and awaits its result. `f` is skipped when the caller has gone
    /// away before the worker (or the device) reaches it, and may ask its
    /// [`Stop`] between passes.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&LoadedKind, Stop) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |kind, claim| {
            if tx.is_canceled() {
                return;
            }
            let Some(_held) = claim.hold(&|| tx.is_canceled()) else {
                return;
            };
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
