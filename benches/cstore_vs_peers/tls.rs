//! The DICOM TLS rows (issue 16): our sender over TLS into `storescp --fork
//! --ignore +tls` against our sender in plain TCP into `storescp --fork
//! --ignore`, interleaved run by run on the same files, 1 and 4 associations.
//! The certificates (a CA, a `localhost`/127.0.0.1 server certificate) are
//! made here with rcgen.
//!
//! Beside them, the ceiling of any TLS sender here: the wire-limit exchange
//! (`support/wire_limit.rs`: length + file bytes, 12-byte answers, no DICOM)
//! inside rustls on both ends against the same exchange in plain TCP. On a
//! 2-core machine where the plain path already keeps both cores busy, the
//! cost of encrypting and decrypting every byte caps the TLS/plain ratio
//! whatever the DICOM sender does; ours over TLS is then judged against that
//! ceiling, not against 1.0.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use laminate_config::{load_client_tls, load_server_tls, NodeTls};

use super::support::wire_limit::{limit_send, limit_send_tls, LimitReceiver};
use super::support::{free_port, median, settle_disk, wait_listening, Orthanc};
use super::Row;

pub const TLS_RECEIVER: &str = "storescp --ignore +tls";
pub const PLAIN_RECEIVER: &str = "storescp --ignore (TLS rows' baseline)";
pub const ORTHANC_TLS: &str = "Orthanc +tls";
pub const ORTHANC_PLAIN: &str = "Orthanc (TLS rows' baseline)";
pub const LIMIT_TLS: &str = "minimal Rust receiver over TLS (rustls both ends)";
pub const LIMIT_PLAIN: &str = "minimal Rust receiver (TLS limit rows' baseline)";
const LIMIT_SENDER: &str = "minimal Rust sender (length + file bytes)";

struct Scp(Child);

impl Drop for Scp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn storescp(ae: &str, tls: Option<(&Path, &Path)>, log: &Path) -> (Scp, u16) {
    let port = free_port();
    let log = File::create(log).expect("log");
    let mut cmd = Command::new("/usr/bin/storescp");
    cmd.args(["--fork", "--ignore", "-aet", ae]);
    if let Some((key, cert)) = tls {
        cmd.arg("+tls").arg(key).arg(cert).arg("-ic");
    }
    let child = cmd
        .arg(port.to_string())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("dcmtk storescp");
    wait_listening(port, Duration::from_secs(10));
    (Scp(child), port)
}

/// Writes a CA and a server certificate into `dir`: (key, cert, ca).
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let paths = (dir.join("k.pem"), dir.join("c.pem"), dir.join("ca.pem"));
    std::fs::write(&paths.0, key.serialize_pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, ca.pem()).expect("write");
    paths
}

/// A real PACS: Orthanc with `DicomTlsEnabled` against a plain Orthanc, both
/// storing under `parent`, emptied between runs, 4 associations.
pub fn measure_orthanc(
    files: &[PathBuf],
    runs: usize,
    ae: &str,
    parent: &Path,
    ours: impl Fn(&[PathBuf], u16, &str, u32, Option<NodeTls>) -> Duration,
) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, cert, ca) = pki(dir.path());
    let tls = NodeTls {
        config: load_client_tls(&ca, None, true).expect("client TLS"),
        ca_file: ca.clone(),
        cert_file: None,
        key_file: None,
        verify_hostname: true,
    };
    let plain = Orthanc::start(ae, parent);
    let secure = Orthanc::start_with(
        ae,
        parent,
        serde_json::json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": cert,
            "DicomTlsPrivateKey": key,
            "DicomTlsTrustedCertificates": ca,
            "DicomTlsRemoteCertificateRequired": false,
        }),
    );
    let run = |o: &Orthanc, t: Option<NodeTls>| {
        o.clear();
        settle_disk();
        let took = ours(files, o.dicom_port, ae, 4, t);
        assert_eq!(
            o.instances(),
            files.len() as u64,
            "Orthanc stored everything"
        );
        took
    };
    run(&plain, None);
    run(&secure, Some(tls.clone()));
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        p.push(run(&plain, None));
        t.push(run(&secure, Some(tls.clone())));
    }
    plain.clear();
    secure.clear();
    [(ORTHANC_PLAIN, "ours", p), (ORTHANC_TLS, "ours (TLS)", t)]
        .into_iter()
        .map(|(receiver, sender, times)| Row {
            receiver,
            sender: sender.to_owned(),
            assoc: 4,
            time: median(times.clone()),
            runs: times,
        })
        .collect()
}

/// Plain and TLS rows for 1 and 4 associations; `ours(files, port, ae, n, tls)`
/// is the sender.
pub fn measure(
    files: &[PathBuf],
    runs: usize,
    ae: &str,
    ours: impl Fn(&[PathBuf], u16, &str, u32, Option<NodeTls>) -> Duration,
) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, cert, ca) = pki(dir.path());
    let tls = NodeTls {
        config: load_client_tls(&ca, None, true).expect("client TLS"),
        ca_file: ca,
        cert_file: None,
        key_file: None,
        verify_hostname: true,
    };
    let (_plain, plain_port) = storescp(ae, None, &dir.path().join("plain.log"));
    let (_secure, tls_port) = storescp(ae, Some((&key, &cert)), &dir.path().join("tls.log"));
    // Warm-up, untimed.
    ours(files, plain_port, ae, 4, None);
    ours(files, tls_port, ae, 4, Some(tls.clone()));
    let mut rows = measure_limits(files, runs, &key, &cert, &tls);
    for n in [1u32, 4] {
        let (mut plain, mut secure) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            plain.push(ours(files, plain_port, ae, n, None));
            secure.push(ours(files, tls_port, ae, n, Some(tls.clone())));
        }
        for (receiver, times) in [(PLAIN_RECEIVER, plain), (TLS_RECEIVER, secure)] {
            rows.push(Row {
                receiver,
                sender: format!(
                    "ours{}",
                    if receiver == TLS_RECEIVER {
                        " (TLS)"
                    } else {
                        ""
                    }
                ),
                assoc: n as usize,
                time: median(times.clone()),
                runs: times,
            });
        }
    }
    rows
}

/// The wire-limit exchange inside TLS and in plain TCP, 1 and 4 connections,
/// interleaved run by run after a warm-up.
fn measure_limits(
    files: &[PathBuf],
    runs: usize,
    key: &Path,
    cert: &Path,
    tls: &NodeTls,
) -> Vec<Row> {
    let server = load_server_tls(cert, key, None).expect("server TLS");
    let plain = LimitReceiver::start();
    let secure = LimitReceiver::start_tls(server);
    limit_send(files, plain.port, 4);
    limit_send_tls(files, secure.port, 4, tls.config.clone());
    let mut rows = Vec::new();
    for n in [1usize, 4] {
        let (mut p, mut t) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            p.push(limit_send(files, plain.port, n));
            t.push(limit_send_tls(files, secure.port, n, tls.config.clone()));
        }
        for (receiver, times) in [(LIMIT_PLAIN, p), (LIMIT_TLS, t)] {
            rows.push(Row {
                receiver,
                sender: LIMIT_SENDER.to_owned(),
                assoc: n,
                time: median(times.clone()),
                runs: times,
            });
        }
    }
    rows
}
