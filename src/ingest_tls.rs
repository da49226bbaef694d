//! The ingest SCP's DICOM TLS listener settings (`--dicom-tls-addr`,
//! `--dicom-tls-cert`, `--dicom-tls-key`, `--dicom-tls-ca`): checked together
//! before anything starts, every problem one line naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use laminate_actors::ingest::IngestTls;

/// The flags as given.
#[derive(Debug, Clone, Default)]
pub struct IngestTlsArgs {
    pub addr: String,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

/// `Ok(None)` when the TLS listener is off; the listener's settings with its
/// certificate loaded; or every problem.
pub fn validate(args: &IngestTlsArgs) -> Result<Option<IngestTls>, Vec<String>> {
    let off = args.addr.trim().eq_ignore_ascii_case("off") || args.addr.trim().is_empty();
    if off {
        if args.cert.is_some() || args.key.is_some() || args.ca.is_some() {
            return Err(vec![
                "--dicom-tls-cert/--dicom-tls-key/--dicom-tls-ca are set but --dicom-tls-addr (LAMINATE_PROXY_DICOM_TLS_ADDR) is off: give the TLS listener an address, e.g. 0.0.0.0:2762".into(),
            ]);
        }
        return Ok(None);
    }
    let mut problems = Vec::new();
    let addr: Option<SocketAddr> = match args.addr.trim().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "--dicom-tls-addr (LAMINATE_PROXY_DICOM_TLS_ADDR): {:?} is not an address like 0.0.0.0:2762, or `off`",
                args.addr
            ));
            None
        }
    };
    if args.cert.is_none() {
        problems.push("--dicom-tls-cert (LAMINATE_PROXY_DICOM_TLS_CERT) is required with --dicom-tls-addr: the PEM certificate (chain) of the TLS listener".into());
    }
    if args.key.is_none() {
        problems.push("--dicom-tls-key (LAMINATE_PROXY_DICOM_TLS_KEY) is required with --dicom-tls-addr: the PEM private key of --dicom-tls-cert".into());
    }
    let (Some(addr), Some(cert), Some(key), true) =
        (addr, &args.cert, &args.key, problems.is_empty())
    else {
        return Err(problems);
    };
    laminate_config::load_server_tls(cert, key, args.ca.as_deref())
        .map(|config| Some(IngestTls { addr, config }))
        .map_err(|e| {
            vec![format!(
                "--dicom-tls-cert/--dicom-tls-key/--dicom-tls-ca (LAMINATE_PROXY_DICOM_TLS_*): {e}"
            )]
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_files_without_an_address_are_refused() {
        assert!(validate(&IngestTlsArgs {
            addr: "off".into(),
            ..Default::default()
        })
        .unwrap()
        .is_none());
        let e = validate(&IngestTlsArgs {
            addr: "off".into(),
            cert: Some("c.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e[0].contains("--dicom-tls-addr"), "{e:?}");
    }

    #[test]
    fn an_address_needs_a_certificate_and_key_that_load() {
        let e = validate(&IngestTlsArgs {
            addr: "nowhere".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        let e = validate(&IngestTlsArgs {
            addr: "127.0.0.1:0".into(),
            cert: Some("/nonexistent/c.pem".into()),
            key: Some("/nonexistent/k.pem".into()),
            ca: None,
        })
        .unwrap_err();
        assert!(e[0].contains("/nonexistent/c.pem: cannot read"), "{e:?}");
    }
}
