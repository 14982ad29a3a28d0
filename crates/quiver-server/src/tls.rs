//! TLS for the Postgres endpoint: rustls over the certificate chain and key
//! named by `server.tls_cert` and `server.tls_key` (PEM files). Clients ask
//! for it as Postgres clients do (`sslmode=require`, `verify-full` with
//! the CA that signed the certificate); a client that does not ask is
//! served in plain text, as by a Postgres server with `host` lines in
//! `pg_hba.conf`. A configuration that cannot be used — a missing file, no
//! certificate in it, a key that does not match — stops the server before
//! it accepts anyone: it never falls back to plain text.

use std::path::Path;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A ready TLS configuration.
pub struct Tls {
    /// What accepts TLS connections.
    pub acceptor: TlsAcceptor,
    /// The certificate chain as read (PEM), for SCRAM channel binding.
    pub certs_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(rustls)")
    }
}

fn tls_error(what: String) -> DataFusionError {
    DataFusionError::Configuration(format!("TLS is configured but cannot be set up: {what}"))
}

/// TLS from the PEM files at `cert` and `key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Tls> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| tls_error(format!("reading {}: {e}", path.display())))
    };
    let certs_pem = read(cert)?;
    let certs = CertificateDer::pem_slice_iter(&certs_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{}: no PEM certificate in the file",
            cert.display()
        )));
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls_error(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| tls_error(format!("{} and {}: {e}", cert.display(), key.display())))?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certs_pem,
    })
}
