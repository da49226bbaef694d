//! DICOM TLS material (the IHE ATNA secure node profile): PEM files read and turned
//! into rustls configurations, TLS 1.2 and 1.3 only, with the `ring` provider.
//!
//! - [`load_client_tls`]: towards a node, the node's certificate checked against
//!   the site's CA file (the system roots are not trusted: a hospital's DICOM PKI is
//!   its own), optionally without the host name check, with a client certificate
//!   for mutual authentication.
//! - [`load_server_tls`]: the ingest SCP's TLS listener, requiring a client
//!   certificate signed by a CA file when one is given.
//!
//! Every failure names the file and what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, CipherSuite, ClientConfig, DigitallySignedStruct, RootCertStore,
    ServerConfig, SignatureScheme,
};

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsMaterialError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("{0}")]
    Rejected(String),
}

/// A node's TLS settings and the client configuration made of them.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// PEM CA certificate(s) the node's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate (chain) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Check that the node's certificate names its `host` (default true).
    pub verify_hostname: bool,
    /// The rustls configuration (loaded once, shared by every association).
    pub config: Arc<ClientConfig>,
}

impl PartialEq for NodeTls {
    /// Same files and the same loaded configuration: a reload that re-read the
    /// files is a change (the certificates may have been renewed in place).
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file
            && self.cert_file == other.cert_file
            && self.key_file == other.key_file
            && self.verify_hostname == other.verify_hostname
            && Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for NodeTls {}

/// ring's suites with AES-128-GCM first: as safe for DICOM TLS (BCP 195 lists it)
/// and cheaper per byte than AES-256, which matters on the send path.
fn provider() -> Arc<CryptoProvider> {
    let mut p = ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(p)
}

fn file_err(path: &Path, reason: impl Into<String>) -> TlsMaterialError {
    TlsMaterialError::File {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsMaterialError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsMaterialError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_err(path, format!("holds no usable PEM private key: {e}")))
}

fn roots(ca_file: &Path) -> Result<RootCertStore, TlsMaterialError> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        store
            .add(cert)
            .map_err(|e| file_err(ca_file, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The client configuration towards a node whose certificate chains to `ca_file`;
/// with `client` (certificate file, key file) the appliance authenticates itself.
pub fn load_client_tls(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
    verify_hostname: bool,
) -> Result<Arc<ClientConfig>, TlsMaterialError> {
    let roots = Arc::new(roots(ca_file)?);
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsMaterialError::Rejected(format!("CA file {}: {e}", ca_file.display())))?;
    let verifier: Arc<dyn ServerCertVerifier> = if verify_hostname {
        webpki
    } else {
        Arc::new(AnyName(webpki))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsMaterialError::Rejected(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| {
                TlsMaterialError::Rejected(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The ingest listener's configuration: its certificate and key, and with
/// `client_ca` every peer must present a certificate signed by it.
pub fn load_server_tls(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsMaterialError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsMaterialError::Rejected(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                    .build()
                    .map_err(|e| {
                        TlsMaterialError::Rejected(format!("CA file {}: {e}", ca.display()))
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(read_certs(cert_file)?, read_key(key_file)?)
        .map_err(|e| {
            TlsMaterialError::Rejected(format!(
                "certificate {} with key {}: {e}",
                cert_file.display(),
                key_file.display()
            ))
        })?;
    Ok(Arc::new(config))
}

/// Checks the chain like WebPKI but accepts a certificate issued for another name
/// (`verify_hostname: false`, for PACS whose certificates name something else).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (c, k, a) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("ca.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&a, ca.pem()).unwrap();
        (c, k, a)
    }

    #[test]
    fn good_material_loads_for_both_sides() {
        let tmp = tempfile::tempdir().unwrap();
        let (c, k, a) = write_pki(tmp.path());
        load_client_tls(&a, None, true).unwrap();
        load_client_tls(&a, Some((&c, &k)), false).unwrap();
        load_server_tls(&c, &k, None).unwrap();
        load_server_tls(&c, &k, Some(&a)).unwrap();
    }

    #[test]
    fn bad_material_names_the_file_and_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let (c, k, a) = write_pki(tmp.path());
        let e = load_client_tls(&tmp.path().join("none.pem"), None, true).unwrap_err();
        assert!(e.to_string().contains("none.pem: cannot read"), "{e}");
        let e = load_client_tls(&k, None, true).unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let e = load_client_tls(&a, Some((&c, &c)), true).unwrap_err();
        assert!(e.to_string().contains("no usable PEM private key"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let (_, k2, _) = write_pki(other.path());
        let e = load_server_tls(&c, &k2, None).unwrap_err();
        assert!(e.to_string().contains("with key"), "{e}");
    }
}
