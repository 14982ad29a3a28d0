//! Quiver's Postgres wire endpoint: `psql`, `tokio-postgres`, psycopg and
//! other Postgres clients run SQL on the engine over a socket.
//!
//! | module | what it holds |
//! |---|---|
//! | [`activity`] | `pg_stat_activity`: the server's connections, what each runs, the memory each holds, its statement's progress |
//! | [`copy`] | `COPY … TO STDOUT` in the text, csv and binary formats |
//! | [`cursor`] | `DECLARE … CURSOR`, `FETCH`, `CLOSE`: forward cursors over a query's stream |
//! | [`handler`] | one connection: its own session, simple and extended query protocols, transactions and client settings |
//! | [`encode`] | Arrow → Postgres types and value encodings (text and binary) |
//! | [`errors`] | the one mapping from errors to SQLSTATE codes |
//! | [`idle`] | `idle_session_timeout`: idle connections end with SQLSTATE 57P05 |
//! | [`notices`] | progress NOTICEs while a statement runs (`SET quiver.progress = on`) |
//! | [`params`] | parameter types the client declares (`$1` as `bool`), and `unknown` ones as text |
//! | [`tls`] | TLS (rustls) from `server.tls_cert` / `server.tls_key` |
//!
//! [`serve`] takes an already-bound listener (tests bind port 0) and a
//! future that ends the server: it then stops accepting, gives running
//! connections [`SHUTDOWN_GRACE`] to finish, and returns.
//!
//! With users configured (`server.password`, `[server.users]`), every
//! client logs in with SCRAM-SHA-256; without, nobody is authenticated and
//! [`serve`] refuses a listener
//! that is not on a loopback address. Beyond `server.max_connections`
//! connections at once, a client gets SQLSTATE 53300 ("sorry, too many
//! clients already"), as from Postgres.

pub mod activity;
pub mod asyncpg;
pub mod copy;
pub mod cursor;
pub mod encode;
pub mod errors;
pub mod handler;
pub mod idle;
pub mod notices;
pub mod params;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{DataFusionError, Result};
use futures::FutureExt;
use quiver::Quiver;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What `server_version` and `SHOW server_version` report: the Postgres
/// version whose protocol and behaviour clients may assume, with Quiver's.
pub use quiver::pg_compat::SERVER_VERSION;

/// How long running connections get to finish after shutdown is asked.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a refused client gets to send its startup message.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A FATAL ErrorResponse message of SQLSTATE `code`, as bytes on the wire:
/// for the places that answer a client outside `pgwire`'s message loop.
fn fatal_frame(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    frame.extend_from_slice(&fields);
    frame
}

/// The connection's socket, and a duplicate of it (the same socket under
/// another descriptor) that the idle watch can end it through.
fn with_duplicate(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let socket = socket.into_std()?;
    let duplicate = socket.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(socket)?, duplicate))
}

/// Refuses a connection beyond `server.max_connections` the way Postgres
/// does: reads the client's startup (declining SSL), then answers with a
/// FATAL ErrorResponse of SQLSTATE 53300 and closes, so that the client
/// shows a message instead of a dropped socket.
async fn refuse(mut socket: tokio::net::TcpStream, max: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        loop {
            let len = socket.read_u32().await? as usize;
            if !(8..=10_000).contains(&len) {
                return Ok::<_, std::io::Error>(());
            }
            let mut body = vec![0u8; len - 4];
            socket.read_exact(&mut body).await?;
            // SSLRequest or GSSENCRequest: decline, then the startup follows.
            if len == 8
                && matches!(
                    body[..4],
                    [0x04, 0xd2, 0x16, 0x2f] | [0x04, 0xd2, 0x16, 0x30]
                )
            {
                socket.write_all(b"N").await?;
                continue;
            }
            break;
        }
        let message = format!("sorry, too many clients already (server.max_connections = {max})");
        socket.write_all(&fatal_frame("53300", &message)).await?;
        socket.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, exchange).await;
}

/// Serves connections on `listener` until `shutdown` completes. Each
/// connection gets its own session of `engine` (settings, temporary
/// tables), sharing the memory pool and object stores.
pub async fn serve(
    listener: TcpListener,
    engine: Quiver,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let passwords = engine.config().server.passwords();
    if passwords.is_empty() && !addr.ip().is_loopback() {
        return Err(DataFusionError::Configuration(format!(
            "refusing to listen on {addr} without authentication: set a password (server.password or QUIVER_SERVER_PASSWORD, or [server.users] in the config) or listen on a loopback address (127.0.0.1 or ::1)"
        )));
    }
    // TLS when configured; a configuration that does not work stops the
    // server here rather than serving in plain text.
    let tls = match (
        &engine.config().server.tls_cert,
        &engine.config().server.tls_key,
    ) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    // With users, every client logs in with SCRAM-SHA-256, loopback too
    // (SCRAM-SHA-256-PLUS, bound to the TLS channel, where TLS is on).
    let auth = if passwords.is_empty() {
        None
    } else {
        let certs = tls.as_ref().map(|t| t.certs_pem.as_slice());
        let auth = handler::Users::new(&passwords)?
            .into_auth(certs)
            .map_err(|e| {
                DataFusionError::Configuration(format!(
                    "TLS is configured but cannot be set up: SCRAM channel binding: {e}"
                ))
            })?;
        Some(Arc::new(auth))
    };
    let acceptor = tls.map(|t| t.acceptor);
    let max_connections = engine.config().server.max_connections.max(1);
    // Every connection's cancel key, for cancel requests (Ctrl-C in psql).
    let cancel_keys = Arc::new(handler::CancelKeys::default());
    // Every connection, for pg_stat_activity.
    let backends = Arc::new(activity::Backends::default());
    let connection_memory_limit = engine
        .config()
        .connection_memory_limit_bytes()
        .map_err(|e| DataFusionError::Configuration(e.to_string()))?;
    let mut connections = JoinSet::new();
    let mut refusals = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, _) = match accepted {
                    Ok(a) => a,
                    // A client that went away between connect and accept.
                    Err(_) => continue,
                };
                // Connections that ended but were not yet reaped do not count.
                while connections.try_join_next().is_some() {}
                if connections.len() >= max_connections {
                    refusals.spawn(refuse(socket, max_connections));
                    continue;
                }
                let Ok(session) = engine.new_session_with_memory_limit(connection_memory_limit) else {
                    continue;
                };
                if session.context().register_table("pg_catalog.pg_stat_activity", Arc::new(activity::StatActivity(Arc::clone(&backends)))).is_err() {
                    let _ = session.context().register_table("pg_stat_activity", Arc::new(activity::StatActivity(Arc::clone(&backends))));
                }
                if let Some(timeout) = &engine.config().server.idle_session_timeout {
                    quiver::pg_compat::ClientSettings::set_in(session.context(), "idle_session_timeout", timeout);
                }
                let Ok((socket, duplicate)) = with_duplicate(socket) else {
                    continue;
                };
                let connection = Arc::new(handler::Connection::new(session, Arc::clone(&cancel_keys), auth.clone(), Arc::clone(&backends)));
                let handlers = Arc::new(handler::Handlers(Arc::clone(&connection)));
                // Plain bytes cannot be written into a TLS stream.
                let duplicate = acceptor.is_none().then_some(duplicate);
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let served = std::panic::AssertUnwindSafe(pgwire::tokio::process_socket(socket, acceptor, handlers)).catch_unwind();
                    let idle = idle::watch(connection.activity(), move || connection.idle_timeout(), duplicate.as_ref());
                    // Protocol errors end this connection only; so does
                    // the idle-session timeout (the socket closes here).
                    tokio::select! {
                        served = served => {
                            // pgwire 0.42.1 panics on some malformed
                            // messages (a CopyData declaring a length
                            // below 4 underflows `len - 4`, found by
                            // fuzz/): the panic ends this connection only,
                            // and the client hears why, as from Postgres.
                            if served.is_err() && let Some(socket) = &duplicate {
                                idle::say_goodbye(socket, "08P01", "invalid frontend message: the connection is closed");
                            }
                        }
                        () = idle => {}
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    Ok(())
}
