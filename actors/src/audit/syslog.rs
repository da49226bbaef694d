//! Forwarding audit records to a collector as RFC 5424 syslog messages over TCP,
//! framed by octet counting (RFC 6587: `LEN SP MSG`).
//!
//! The files stay the record of truth: forwarding runs on its own thread behind a
//! bounded queue, so a slow or absent collector never delays the trail. While the
//! collector is unreachable messages wait in that queue (the oldest are dropped,
//! counted and logged, past [`QUEUE`]) and the thread reconnects with a growing
//! pause (1 s up to 30 s).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use super::record::{outcome, AuditRecord};

/// Messages held while the collector is away.
pub const QUEUE: usize = 10_000;
const APP_NAME: &str = "laminate-proxy";
/// Facility 13: "log audit".
const FACILITY: u8 = 13;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `host:port` as given to `--audit-syslog`: checked for shape at start, resolved at
/// each connection (DNS may change).
pub fn check_target(target: &str) -> Result<(), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("expected host:port, got {target:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("expected host:port, got {target:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("the port of {target:?} must be 1–65535")),
    }
}

/// This machine's name for the HOSTNAME field (printable ASCII, no spaces), or `-`.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() {
        "-".to_owned()
    } else {
        name
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - BOM{json}`.
/// Severity: notice for a success, warning for a minor failure, error otherwise.
pub fn message(rec: &AuditRecord, json_line: &str, host: &str) -> String {
    let severity = match rec.outcome {
        outcome::SUCCESS => 5,
        outcome::MINOR_FAILURE => 4,
        _ => 3,
    };
    let pri = u16::from(FACILITY) * 8 + severity;
    format!(
        "<{pri}>1 {} {host} {APP_NAME} {} {} - \u{feff}{json_line}",
        rec.at,
        std::process::id(),
        rec.event_id.code
    )
}

/// Octet-counting framing (RFC 6587 §3.4.1).
pub fn frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

/// The sending side, held by the audit writer.
pub struct Forwarder {
    tx: SyncSender<Vec<u8>>,
    host: String,
    dropped: u64,
}

impl Forwarder {
    /// Starts the forwarding thread for `target` (`host:port`).
    pub fn start(target: String) -> std::io::Result<Forwarder> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-syslog".into())
            .spawn(move || run(&target, &rx))?;
        Ok(Forwarder {
            tx,
            host: hostname(),
            dropped: 0,
        })
    }

    /// Queues one record; never blocks.
    pub fn forward(&mut self, rec: &AuditRecord, json_line: &str) {
        let framed = frame(&message(rec, json_line, &self.host));
        match self.tx.try_send(framed) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    tracing::warn!(dropped = self.dropped, "audit syslog collector unreachable: records not forwarded (they are in audit/)");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("audit syslog forwarding thread is gone");
            }
        }
    }
}

fn connect(target: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other(format!("{target}: no address"));
    for addr in target.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The thread: one connection at a time; a message whose write failed is sent
/// again on the next connection (a collector may then see it twice).
fn run(target: &str, rx: &Receiver<Vec<u8>>) {
    let mut stream: Option<TcpStream> = None;
    let mut pending: Option<Vec<u8>> = None;
    let mut pause = Duration::from_secs(1);
    loop {
        let frame = match pending.take() {
            Some(f) => f,
            None => match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(f) => f,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        if stream.is_none() {
            match connect(target) {
                Ok(s) => {
                    tracing::info!(collector = target, "audit syslog collector connected");
                    pause = Duration::from_secs(1);
                    stream = Some(s);
                }
                Err(e) => {
                    tracing::warn!(collector = target, error = %e, retry_in_s = pause.as_secs(), "audit syslog collector unreachable");
                    pending = Some(frame);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        if let Some(s) = stream.as_mut() {
            if let Err(e) = s.write_all(&frame) {
                tracing::warn!(collector = target, error = %e, "audit syslog write failed; reconnecting");
                stream = None;
                pending = Some(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{event_id, AuditRecord};

    #[test]
    fn targets_must_be_host_and_port() {
        assert!(check_target("127.0.0.1:514").is_ok());
        assert!(check_target("collector.example:6514").is_ok());
        assert!(check_target("[::1]:514").is_ok());
        for bad in ["collector", ":514", "h:0", "h:99999", "h:x", "a b:1"] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_message_is_rfc5424_and_framed_by_its_length_in_bytes() {
        let rec = AuditRecord {
            at: "2026-01-02T03:04:05.678Z".into(),
            event_id: event_id::study_deleted(),
            event_type: None,
            action: "D".into(),
            outcome: 8,
            active_participants: vec![],
            participant_objects: vec![],
            detail: Default::default(),
        };
        let msg = message(&rec, "{\"é\":1}", "box");
        let pid = std::process::id();
        assert_eq!(
            msg,
            format!("<107>1 2026-01-02T03:04:05.678Z box laminate-proxy {pid} 110105 - \u{feff}{{\"é\":1}}")
        );
        let f = frame(&msg);
        let (len, rest) = f.split_at(f.iter().position(|b| *b == b' ').unwrap());
        let len: usize = std::str::from_utf8(len).unwrap().parse().unwrap();
        assert_eq!(len, rest.len() - 1);
    }
}
