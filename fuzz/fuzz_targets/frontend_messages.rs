//! Every byte string a client may send, decoded as the server decodes it
//! (`pgwire`'s frontend codec, in each phase of a connection: SSL request,
//! startup, then regular messages).
//!
//! `pgwire` 0.42.1 panics on some malformed messages (found by this
//! target: a CopyData declaring a length below 4 underflows `len - 4`; a
//! Parse whose declared length is shorter than its fields reads past its
//! end). `quiver serve` contains such a panic to the connection and
//! answers FATAL 08P01 (`quiver-server/src/lib.rs`, tested in
//! `tests/server.rs`), so this target does the same — catches the panic
//! and prints each distinct place once, for reporting upstream — and the
//! fuzzer looks for what the server could not survive: a hang (`-timeout`),
//! an allocation the input does not justify (`-rss_limit_mb`,
//! `-malloc_limit_mb`) or an abort.

#![no_main]

use std::collections::HashSet;
use std::sync::{Mutex, Once};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

static QUIET_PANICS: Once = Once::new();
static PANIC_SITES: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Panics are caught below, as the server catches them; the hook only
/// reports each new place.
fn contain_panics() {
    QUIET_PANICS.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let site = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let mut sites = PANIC_SITES.lock().unwrap_or_else(|e| e.into_inner());
            if sites.get_or_insert_with(HashSet::new).insert(site.clone()) {
                eprintln!("pgwire panicked (contained, as in quiver serve) at {site}: {info}");
            }
        }));
    });
}

/// Decodes `rest` as the connection loop does, in the phase and protocol
/// version the first byte picks.
fn decode_all(phase: u8, rest: &[u8]) {
    let version = if phase & 4 == 0 {
        ProtocolVersion::PROTOCOL3_0
    } else {
        ProtocolVersion::PROTOCOL3_2
    };
    let mut ctx = DecodeContext::new(version);
    ctx.awaiting_frontend_ssl = phase & 1 == 1;
    ctx.awaiting_frontend_startup = phase & 3 != 0;
    let mut buf = BytesMut::from(rest);
    // Until the rest is incomplete or an error ends the connection (the
    // bound keeps a message that consumes nothing from looping).
    for _ in 0..256 {
        let before = buf.len();
        match PgWireFrontendMessage::decode(&mut buf, &ctx) {
            Ok(Some(_)) if buf.len() < before => {
                // After the startup phase, regular messages follow.
                ctx.awaiting_frontend_ssl = false;
                ctx.awaiting_frontend_startup = false;
            }
            _ => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    contain_panics();
    let Some((&phase, rest)) = data.split_first() else {
        return;
    };
    let _ = std::panic::catch_unwind(|| decode_all(phase, rest));
});
