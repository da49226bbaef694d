//! The rustls client configuration for `wss://` and `https://`: the system's
//! roots plus an optional PEM file of extra roots (`--ca-file`), HTTP/1.1 ALPN
//! only (h2 cannot carry a WebSocket upgrade).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("CA file {path} holds no certificate")]
    EmptyCaFile { path: String },
}

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the client configuration.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be loaded");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsSetupError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| TlsSetupError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsSetupError::EmptyCaFile { path: shown });
        }
        for c in certs {
            roots.add(c).map_err(|e| TlsSetupError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        // Plain ws:// and http:// still work; wss:// will fail with a clear
        // certificate error on the status page.
        tracing::warn!(
            "no trusted root certificates: the system has none and no --ca-file was given"
        );
    }
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
