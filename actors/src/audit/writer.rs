//! The audit writer's thread: turns events into records (looking the patients of
//! delivered studies up in the cache), appends them to the day's file, forwards
//! them to the syslog collector, and prunes old files. One thread, fed by one
//! channel, so records are written in the order they were sent.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};

use laminate_store::Store;

use super::event::{AuditEvent, Lookups, NodeSeen};
use super::syslog::Forwarder;
use super::trail::{day_of_ms, Trail};
use crate::health::ActorHealth;

/// What the writer is asked to do.
pub enum Command {
    Record {
        at_ms: u64,
        event: Box<AuditEvent>,
    },
    /// Remove day files older than this many days.
    Prune(u64),
    /// Sync, then answer (everything sent before is written by then).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// What the writer needs; cloned into each (re)started thread.
#[derive(Clone)]
pub struct WriterConfig {
    pub data_dir: PathBuf,
    pub appliance_ae: String,
    pub store: Store,
    /// Scrubbed from every line as a last guard (no event should carry it).
    pub proxy_key: String,
    /// `host:port` of the syslog collector (`--audit-syslog`).
    pub syslog: Option<String>,
    pub health: ActorHealth,
    /// The nodes as configured now (a delivery names the node's AE title and address).
    pub board: crate::board::SharedBoard,
}

/// Starts the thread; its channel closes when the returned sender is dropped.
pub fn spawn(cfg: WriterConfig) -> std::io::Result<Sender<Command>> {
    let (tx, rx) = channel();
    let trail = Trail::new(&cfg.data_dir)?;
    let forwarder = match &cfg.syslog {
        Some(t) => Some(Forwarder::start(t.clone())?),
        None => None,
    };
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            Writer {
                cfg,
                trail,
                forwarder,
            }
            .run(&rx)
        })?;
    Ok(tx)
}

struct Writer {
    cfg: WriterConfig,
    trail: Trail,
    forwarder: Option<Forwarder>,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            self.handle(cmd);
            // A burst is written first, then made durable once.
            while let Ok(cmd) = rx.try_recv() {
                self.handle(cmd);
            }
            if let Err(e) = self.trail.sync() {
                self.failed(format!("audit: sync: {e}"));
            }
        }
        let _ = self.trail.sync();
    }

    fn failed(&self, msg: String) {
        tracing::error!(error = %msg, "audit trail write failed");
        self.cfg.health.record_error(msg);
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Record { at_ms, event } => self.record(at_ms, *event),
            Command::Prune(days) => {
                let today = day_of_ms(crate::clock::now_ms());
                match today.map(|d| self.trail.prune(d, days)) {
                    Some(Ok(n)) if n > 0 => {
                        tracing::info!(files = n, audit_days = days, "old audit files pruned")
                    }
                    Some(Err(e)) => self.failed(format!("audit: prune: {e}")),
                    _ => {}
                }
            }
            Command::Flush(done) => {
                if let Err(e) = self.trail.sync() {
                    self.failed(format!("audit: sync: {e}"));
                }
                let _ = done.send(());
            }
        }
    }

    fn record(&mut self, at_ms: u64, event: AuditEvent) {
        let store = &self.cfg.store;
        let patient_of = |study: &str| store.patient_of_study(study).ok().flatten();
        let node_of = |id: &str| {
            let node = self
                .cfg
                .board
                .nodes()
                .into_iter()
                .find(|n| n.node_id == id)?;
            Some(NodeSeen {
                calling_ae_title: node.calling_ae(&self.cfg.appliance_ae).to_owned(),
                ae_title: node.ae_title,
                host: node.host,
                port: node.port,
            })
        };
        let rec = event.into_record(
            crate::clock::ms_to_rfc3339(at_ms),
            &Lookups {
                appliance: &self.cfg.appliance_ae,
                patient_of: &patient_of,
                node_of: &node_of,
            },
        );
        let mut line = match serde_json::to_string(&rec) {
            Ok(l) => l,
            Err(e) => return self.failed(format!("audit: encode: {e}")),
        };
        if !self.cfg.proxy_key.is_empty() && line.contains(&self.cfg.proxy_key) {
            line = line.replace(&self.cfg.proxy_key, "pk_…");
        }
        let Some(day) = day_of_ms(at_ms) else {
            return self.failed(format!("audit: no day for {at_ms} ms"));
        };
        if let Err(e) = self.trail.append(day, &line) {
            return self.failed(format!("audit: append: {e}"));
        }
        if let Some(f) = self.forwarder.as_mut() {
            f.forward(&rec, &line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthRegistry;

    #[test]
    fn a_line_never_holds_the_key_and_a_flush_answers_after_what_was_sent_before() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = HealthRegistry::new();
        let tx = spawn(WriterConfig {
            data_dir: tmp.path().to_path_buf(),
            appliance_ae: "AE".into(),
            store: Store::open_temporary().unwrap(),
            proxy_key: "pk_live_secret".into(),
            syslog: None,
            health: registry.register("audit"),
            board: crate::board::Board::new(registry.clone()),
        })
        .unwrap();
        let event = AuditEvent::Link {
            backend: "h:443".into(),
            rejected: Some("closed: bad key pk_live_secret".into()),
        };
        tx.send(Command::Record {
            at_ms: 1_700_000_000_000,
            event: Box::new(event),
        })
        .unwrap();
        let (done, flushed) = tokio::sync::oneshot::channel();
        tx.send(Command::Flush(done)).unwrap();
        flushed.blocking_recv().unwrap();
        let text = std::fs::read_to_string(tmp.path().join("audit/2023-11-14.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains("pk_live_secret"), "{text}");
        assert!(text.contains("bad key pk_…"), "{text}");
    }
}
