//! A test PKI made with rcgen (DICOM TLS tests): a CA, server and client
//! certificates signed by it, one for another host name, an unrelated CA, and
//! `storescp +tls` with them.

use std::path::PathBuf;

use super::{free_port, json, StoreScp, Value};

/// A test PKI in a directory: a CA, a server certificate for `localhost` and
/// 127.0.0.1 and a client certificate signed by it, and an unrelated CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&key).expect("ca");
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("laminate test CA");
        let (other_pem, _) = ca("some other CA");
        let leaf = |names: Vec<String>, file: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names)
                .expect("params")
                .signed_by(&key, &issuer)
                .expect("leaf");
            std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.path().join(format!("{file}.key")), key.serialize_pem())
                .expect("write");
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], "server");
        leaf(vec!["laminate-proxy".into()], "client");
        leaf(vec!["pacs.hospital.example".into()], "elsewhere");
        std::fs::write(dir.path().join("ca.pem"), ca_pem).expect("write");
        std::fs::write(dir.path().join("other-ca.pem"), other_pem).expect("write");
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A `storescp +tls` with the server certificate; `peer` is its peer
    /// authentication option (`-ic` none, `-rc` client certificate required).
    pub fn storescp(&self, ae: &str, peer: &str) -> StoreScp {
        self.storescp_as("server", ae, peer)
    }

    /// Same, with the certificate `name` (`server` or `elsewhere`).
    pub fn storescp_as(&self, name: &str, ae: &str, peer: &str) -> StoreScp {
        StoreScp::start_on(
            free_port(),
            ae,
            &[
                "+tls",
                &self.s(&format!("{name}.key")),
                &self.s(&format!("{name}.pem")),
                "+cf",
                &self.s("ca.pem"),
                peer,
            ],
        )
    }

    /// Orthanc's DICOM TLS settings with the server certificate, requiring a
    /// client certificate signed by the CA; `extra` adds to them.
    pub fn orthanc_tls(&self, extra: Value) -> Value {
        let mut cfg = json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": self.s("server.pem"),
            "DicomTlsPrivateKey": self.s("server.key"),
            "DicomTlsTrustedCertificates": self.s("ca.pem"),
            "DicomTlsRemoteCertificateRequired": true,
        });
        if let (Some(cfg), Value::Object(extra)) = (cfg.as_object_mut(), extra) {
            cfg.extend(extra);
        }
        cfg
    }
}
