//! Progress NOTICEs (`SET quiver.progress = on`): while a statement runs,
//! the client gets a NOTICE every `quiver.progress_interval_ms` with the
//! rows sent so far, the media files read and the rows through model calls
//! (psql prints them as they come), and one more when it has finished
//! (for statements that ran at least one interval).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire::error::ErrorInfo;
use pgwire::messages::PgWireBackendMessage;
use quiver::{Quiver, StatementProgress};
use tokio::time::{Interval, MissedTickBehavior};

/// The progress of one statement and when to report it next.
#[derive(Debug)]
pub struct Notices {
    /// `None` when the session did not ask for progress.
    interval: Option<Interval>,
    every: Duration,
    progress: Option<Arc<StatementProgress>>,
    started: Instant,
    /// Rows sent to the client so far.
    pub rows: u64,
}

impl Notices {
    /// Starts counting a statement of `quiver`'s session (resetting its
    /// progress); NOTICEs come only when the session set `quiver.progress`.
    pub fn start(quiver: &Quiver) -> Self {
        let (progress, every) = quiver.start_progress();
        let interval = every.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        Self {
            interval,
            every: every.unwrap_or(Duration::MAX),
            progress,
            started: Instant::now(),
            rows: 0,
        }
    }

    /// Completes when the next NOTICE is due; never when progress is off.
    pub async fn due(&mut self) {
        match &mut self.interval {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// What the statement has done so far, as a NOTICE.
    pub fn notice(&self) -> PgWireBackendMessage {
        self.message("progress")
    }

    /// What the statement did, as a NOTICE, when progress is on and it ran
    /// at least one interval.
    pub fn finished(&self) -> Option<PgWireBackendMessage> {
        (self.interval.is_some() && self.started.elapsed() >= self.every)
            .then(|| self.message("finished"))
    }

    fn message(&self, what: &str) -> PgWireBackendMessage {
        let done = match &self.progress {
            Some(p) => p.summary(self.rows),
            None => format!("{} rows", self.rows),
        };
        let message = format!(
            "{what}: {done} after {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        let info = ErrorInfo::new("NOTICE".to_string(), "00000".to_string(), message);
        PgWireBackendMessage::NoticeResponse(info.into())
    }
}
