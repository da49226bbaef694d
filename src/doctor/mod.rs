//! `laminate-proxy doctor`: checks everything `run` needs, prints one line per
//! check (`ok`, `warn` or `fail`, what was found and, unless ok, the fix) and
//! exits 0 when nothing failed, 1 otherwise. For the first day on site and for
//! support calls.
//!
//! It takes the same settings as `run` and starts nothing that stays: a probe
//! file is written and removed, the store is opened and closed (a running
//! appliance's lock is reported, not broken), the backend's WebSocket is opened
//! and closed at once, nodes get one C-ECHO each, ports are bound and released.
//! Nothing is repaired and no config file is written. Bad settings are fail
//! lines, not exit code 2; only what clap cannot parse (unknown flags, a
//! non-number where a number goes) still exits 2.
//!
//! Files: `local.rs` (settings, config files, data dir, disk, store, index),
//! `backend.rs` (DNS, TCP, TLS, WebSocket handshake), `dicom.rs` (nodes and
//! the DICOM port), `ports.rs` (binding the HTTP port, asking a running
//! appliance), `audit.rs` (the `--audit-syslog` collector accepts connections).
//!
//! The proxy key never appears in the output: every line is scrubbed of it
//! before it is printed ([`Report::print`]).

mod audit;
mod backend;
mod dicom;
mod local;
mod ports;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use laminate_config::settings::{validate_settings, RawSettings, Settings, DICOM_ADDR_OFF};
use laminate_config::{check_ae_title, ProxyKey};

use crate::cli::RunArgs;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: the lines align their outcome column.
        f.pad(match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
        })
    }
}

/// One printed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub outcome: Outcome,
    /// What was checked, e.g. `data dir`, `node node_1`.
    pub check: String,
    /// What was found.
    pub found: String,
    /// What to do (warn and fail only).
    pub fix: Option<String>,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4} {}: {}", self.outcome, self.check, self.found)?;
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

/// The lines so far, printed as they come (a slow check shows what came before it).
pub struct Report {
    lines: Vec<Line>,
    /// The key to scrub from every line (and its redacted form to show instead).
    secret: Option<ProxyKey>,
    quiet: bool,
}

impl Report {
    fn new(secret: Option<ProxyKey>) -> Self {
        Report {
            lines: Vec::new(),
            secret,
            quiet: false,
        }
    }

    fn push(
        &mut self,
        outcome: Outcome,
        check: impl Into<String>,
        found: impl Into<String>,
        fix: Option<String>,
    ) {
        let mut line = Line {
            outcome,
            check: check.into(),
            found: found.into(),
            fix,
        };
        if let Some(key) = &self.secret {
            let (k, shown) = (key.expose(), key.redacted());
            line.found = line.found.replace(k, &shown);
            line.fix = line.fix.map(|f| f.replace(k, &shown));
            line.check = line.check.replace(k, &shown);
        }
        self.print(&line);
        self.lines.push(line);
    }

    pub fn ok(&mut self, check: impl Into<String>, found: impl Into<String>) {
        self.push(Outcome::Ok, check, found, None);
    }
    pub fn warn(
        &mut self,
        check: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Outcome::Warn, check, found, Some(fix.into()));
    }
    pub fn fail(
        &mut self,
        check: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Outcome::Fail, check, found, Some(fix.into()));
    }

    fn print(&self, line: &Line) {
        if !self.quiet {
            println!("{line}");
        }
    }

    pub fn failed(&self) -> bool {
        self.lines.iter().any(|l| l.outcome == Outcome::Fail)
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
}

/// What the checks work from: the validated settings when they all are valid,
/// otherwise whatever parts of them can be read on their own (the settings
/// line has already said what is wrong; checks without their input are left out).
struct Inputs {
    settings: Option<Settings>,
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    /// `Some(None)`: `off`.
    dicom_addr: Option<Option<SocketAddr>>,
    ae_title: Option<String>,
}

impl Inputs {
    fn from_settings(s: Settings) -> Inputs {
        Inputs {
            data_dir: Some(s.data_dir.clone()),
            http_addr: Some(s.http_addr),
            dicom_addr: Some(s.dicom_addr),
            ae_title: Some(s.ae_title.clone()),
            settings: Some(s),
        }
    }

    /// The parts that stand on their own, from the raw flags.
    fn from_raw(raw: &RawSettings) -> Inputs {
        let data_dir = match &raw.data_dir {
            Some(d) if d.as_os_str().is_empty() => None,
            Some(d) => Some(d.clone()),
            None => std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(laminate_config::settings::DEFAULT_DATA_DIR_NAME)),
        };
        let dicom = raw.dicom_addr.trim();
        Inputs {
            settings: None,
            data_dir,
            http_addr: raw.http_addr.trim().parse().ok(),
            dicom_addr: if dicom.eq_ignore_ascii_case(DICOM_ADDR_OFF) {
                Some(None)
            } else {
                dicom.parse().ok().map(Some)
            },
            ae_title: check_ae_title(&raw.ae_title)
                .is_ok()
                .then(|| raw.ae_title.clone()),
        }
    }
}

fn raw_settings(args: RunArgs) -> RawSettings {
    RawSettings {
        backend_url: args.backend_url,
        api_url: args.api_url,
        proxy_key: args.proxy_key,
        data_dir: args.data_dir,
        http_addr: args.http_addr,
        status_token: args.status_token,
        ae_title: args.ae_title,
        dicom_addr: args.dicom_addr,
        ca_file: args.ca_file,
        log_format: args.log_format,
    }
}

/// `laminate-proxy doctor`.
pub fn main(args: RunArgs) -> ExitCode {
    let report = check_all(args);
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs every check in order and prints each line as it is known.
pub fn check_all(args: RunArgs) -> Report {
    let audit_syslog = args.audit_syslog.clone().filter(|s| !s.trim().is_empty());
    let ingest_tls = crate::ingest_tls::IngestTlsArgs {
        addr: args.dicom_tls_addr.clone(),
        cert: args.dicom_tls_cert.clone(),
        key: args.dicom_tls_key.clone(),
        ca: args.dicom_tls_ca.clone(),
    };
    let raw = raw_settings(args);
    let secret = raw.proxy_key.clone().and_then(|k| ProxyKey::new(k).ok());
    let mut r = Report::new(secret);
    let inputs = match validate_settings(raw.clone()) {
        Ok(s) => {
            r.ok(
                "settings",
                format!(
                    "valid (backend {}, key {}, data dir {}, http {}, dicom {})",
                    s.backend_url,
                    s.proxy_key.redacted(),
                    s.data_dir.display(),
                    s.http_addr,
                    s.dicom_addr
                        .map_or_else(|| DICOM_ADDR_OFF.to_owned(), |a| a.to_string())
                ),
            );
            Inputs::from_settings(s)
        }
        Err(problems) => {
            for p in problems {
                r.fail("settings", format!("{}: {}", p.setting, p.problem), p.fix);
            }
            Inputs::from_raw(&raw)
        }
    };

    match crate::ingest_tls::validate(&ingest_tls) {
        Ok(None) => {}
        Ok(Some(t)) => r.ok(
            "dicom tls",
            format!(
                "ingest TLS listener {}: certificate and key load{}",
                t.addr,
                if ingest_tls.ca.is_some() {
                    ", client certificates required"
                } else {
                    ""
                }
            ),
        ),
        Err(problems) => {
            for p in problems {
                r.fail(
                    "dicom tls",
                    p,
                    "fix the --dicom-tls-* settings (PEM files readable by the appliance's user)",
                );
            }
        }
    }

    let mut nodes = None;
    if let Some(dir) = &inputs.data_dir {
        nodes = local::data_dir(&mut r, dir);
    }
    let running = inputs
        .http_addr
        .map(|addr| ports::http_port(&mut r, addr))
        .unwrap_or_default();
    if let (Some(Some(addr)), Some(ae)) = (inputs.dicom_addr, &inputs.ae_title) {
        dicom::dicom_port(&mut r, addr, ae, running.is_some());
    }
    if let Some(s) = &inputs.settings {
        backend::check(&mut r, s, running.as_ref());
    }
    if let (Some(nodes), Some(ae)) = (nodes, &inputs.ae_title) {
        dicom::nodes(&mut r, &nodes, ae);
        if let Some(ingest) = inputs.dicom_addr {
            dicom::commitment(&mut r, &nodes, ingest, ae);
        }
    }
    if let Some(target) = &audit_syslog {
        audit::syslog(&mut r, target);
    }
    let (fails, warns) = r.lines().iter().fold((0, 0), |(f, w), l| match l.outcome {
        Outcome::Fail => (f + 1, w),
        Outcome::Warn => (f, w + 1),
        Outcome::Ok => (f, w),
    });
    if !r.quiet {
        println!(
            "{} checks: {fails} failed, {warns} warnings",
            r.lines().len()
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_outcome_check_found_fix() {
        let line = Line {
            outcome: Outcome::Fail,
            check: "node n1".into(),
            found: "refused".into(),
            fix: Some("start it".into()),
        };
        assert_eq!(line.to_string(), "fail node n1: refused — fix: start it");
    }

    #[test]
    fn the_key_is_scrubbed_from_every_line() {
        let key = ProxyKey::new("pk_live_verysecret_9876").expect("key");
        let mut r = Report::new(Some(key));
        r.quiet = true;
        r.fail(
            "backend websocket",
            "ws://h/proxy/ws?proxy_key=pk_live_verysecret_9876 refused",
            "check pk_live_verysecret_9876",
        );
        let text = r.lines()[0].to_string();
        assert!(!text.contains("verysecret"), "{text}");
        assert!(text.contains("9876"), "{text}");
        assert!(r.failed());
    }
}
