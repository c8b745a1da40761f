//! The TLS acceptor: rustls with the ring provider, offering HTTP/1.1 only in
//! ALPN. Its handshake is a phase of the connection, timed and evictable
//! like the others (`connection.rs`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::ServeError;
use crate::config::read_secret_file;

/// From a PEM certificate chain and a PEM private key (a secret file).
pub(super) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        ServeError::Tls(std::io::Error::other(format!("{what}: {e}")))
    };
    let chain = std::fs::read(cert).map_err(ServeError::Tls)?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&cert.display().to_string(), &e))?;
    let key_pem = read_secret_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&key.display().to_string(), &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| invalid("certificate and key", &e))?;
    // HTTP/1.1 only: one protocol, one set of limits (see the README).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
