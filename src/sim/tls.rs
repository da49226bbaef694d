//! A throwaway certificate authority and a `localhost` / `127.0.0.1` server
//! certificate, so the simulator can serve `wss://` and `https://` in tests and
//! the appliance can be pointed at the CA with `--ca-file`.

/// A server configuration, the CA certificate (DER) and the CA certificate (PEM).
pub type SelfSigned = (
    rustls::ServerConfig,
    rustls::pki_types::CertificateDer<'static>,
    String,
);

/// Builds a server config for `localhost` and `127.0.0.1`, signed by a fresh CA; returns it
/// with the CA certificate (DER and PEM, the PEM being what an appliance's CA file holds).
pub fn self_signed_tls() -> Result<SelfSigned, String> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| e.to_string())?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| e.to_string())?;

    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .map_err(|e| e.to_string())?;
    Ok((config, ca_cert.der().clone(), ca_cert.pem()))
}
