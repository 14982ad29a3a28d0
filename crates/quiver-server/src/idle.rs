//! `idle_session_timeout`, as in Postgres: a connection that waits longer
//! than the timeout for its next query, outside a transaction, is ended
//! with a FATAL error of SQLSTATE 57P05. The timeout is a client setting
//! (`SET idle_session_timeout = '5min'`, milliseconds without a unit; 0 is
//! none), seeded for every connection by `server.idle_session_timeout`.

use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// When a connection last did something, and whether it is doing
/// something now.
#[derive(Debug)]
pub struct Activity {
    busy: AtomicUsize,
    in_transaction: AtomicBool,
    last: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            busy: AtomicUsize::new(0),
            in_transaction: AtomicBool::new(false),
            last: Mutex::new(Instant::now()),
        }
    }
}

/// Holds a connection busy (its statement is running or its rows being
/// sent) until dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// The connection heard from its client now.
    pub fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Marks the connection busy until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(Arc::clone(self))
    }

    /// Whether the connection's client has an open transaction.
    pub fn set_in_transaction(&self, open: bool) {
        self.in_transaction.store(open, Ordering::Relaxed);
    }

    /// How long the connection has waited for its client, when it is
    /// idle in Postgres' sense (not busy, no open transaction).
    fn idle_for(&self) -> Option<Duration> {
        if self.busy.load(Ordering::Relaxed) > 0 || self.in_transaction.load(Ordering::Relaxed) {
            return None;
        }
        Some(
            self.last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed(),
        )
    }
}

/// How often a connection without a timeout looks again (the client may
/// set one).
const RECHECK: Duration = Duration::from_secs(1);

/// Completes when the connection has been idle for longer than
/// `timeout()` allows, after telling the client why over `socket` (a
/// duplicate of the connection's socket; on TLS connections, where plain
/// bytes would break the stream, the connection is closed without a
/// message). The caller then drops the connection.
pub async fn watch(
    activity: Arc<Activity>,
    timeout: impl Fn() -> Option<Duration>,
    socket: Option<&std::net::TcpStream>,
) {
    loop {
        let wait = match (timeout(), activity.idle_for()) {
            (Some(limit), Some(idle)) if idle >= limit => break,
            (Some(limit), Some(idle)) => (limit - idle).min(RECHECK),
            (Some(limit), None) => limit.min(RECHECK),
            (None, _) => RECHECK,
        };
        tokio::time::sleep(wait).await;
    }
    if let Some(socket) = socket {
        say_goodbye(
            socket,
            "57P05",
            "terminating connection due to idle-session timeout",
        );
    }
}

/// Writes a FATAL error to the client over `socket` (a duplicate of the
/// connection's socket, outside `pgwire`) and ends the connection's writing
/// side.
pub fn say_goodbye(mut socket: &std::net::TcpStream, code: &str, message: &str) {
    // Non-blocking: an idle connection's send buffer is empty, so the few
    // bytes fit; if not, the client only misses the message.
    let _ = socket.write_all(&crate::fatal_frame(code, message));
    let _ = socket.shutdown(std::net::Shutdown::Write);
}
