//! Every byte string a client may send, decoded as the server decodes it
//! (`pgwire`'s frontend codec, in each phase of a connection: SSL request,
//! startup, then regular messages). A malformed message must come back as
//! an error (which ends that connection) or as "incomplete", never as a
//! panic, a hang or an allocation the input's size does not justify.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the phase and the protocol version.
    let Some((&phase, rest)) = data.split_first() else {
        return;
    };
    let version = if phase & 4 == 0 {
        ProtocolVersion::PROTOCOL3_0
    } else {
        ProtocolVersion::PROTOCOL3_2
    };
    let mut ctx = DecodeContext::new(version);
    ctx.awaiting_frontend_ssl = phase & 1 == 1;
    ctx.awaiting_frontend_startup = phase & 3 != 0;
    let mut buf = BytesMut::from(rest);
    // As the connection loop does: decode until the rest is incomplete or
    // an error ends the connection (the bound keeps a message that
    // consumes nothing from looping).
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
});
