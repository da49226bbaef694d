//! The audit actor. See `mod.rs`.

use std::sync::mpsc::Sender;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{AuditFlushRequested, AuditRecorded};
use super::writer::{self, Command, WriterConfig};
use crate::config::SettingsUpdated;
use crate::health::{ActorHealth, ActorState, Monitored};

/// How often old files are looked for (the day boundary is crossed within this).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct AuditActor {
    health: ActorHealth,
    cfg: WriterConfig,
    audit_days: u64,
    writer: Option<Sender<Command>>,
    /// The last record's time: a record is never stamped before it, so the files
    /// stay in time order ("newest last") even when two hooks race by a millisecond.
    last_ms: u64,
}

impl AuditActor {
    pub fn new(cfg: WriterConfig, audit_days: u64) -> Self {
        Self {
            health: cfg.health.clone(),
            cfg,
            audit_days,
            writer: None,
            last_ms: 0,
        }
    }

    /// Hands a command to the writer thread, starting it (again) when needed.
    fn send(&mut self, cmd: Command) {
        let cmd = match &self.writer {
            Some(w) => match w.send(cmd) {
                Ok(()) => return,
                Err(returned) => {
                    self.health
                        .record_error("audit writer thread ended; restarting it");
                    returned.0
                }
            },
            None => cmd,
        };
        match writer::spawn(self.cfg.clone()) {
            Ok(tx) => {
                if tx.send(cmd).is_ok() {
                    self.writer = Some(tx);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the audit writer; record lost");
                self.health.record_error(format!("audit writer: {e}"));
            }
        }
    }
}

impl Actor for AuditActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
        self.send(Command::Prune(self.audit_days));
        ctx.run_interval(PRUNE_EVERY, |act, _| {
            act.send(Command::Prune(act.audit_days))
        });
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for AuditActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
    }
}

impl Monitored for AuditActor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl Handler<AuditRecorded> for AuditActor {
    type Result = ();
    fn handle(&mut self, msg: AuditRecorded, _: &mut Context<Self>) {
        tracing::debug!(event_id = %msg.event.event_id().code, "audit record");
        self.last_ms = self.last_ms.max(msg.at_ms);
        self.send(Command::Record {
            at_ms: self.last_ms,
            event: Box::new(msg.event),
        });
    }
}

impl Handler<SettingsUpdated> for AuditActor {
    type Result = ();
    fn handle(&mut self, msg: SettingsUpdated, _: &mut Context<Self>) {
        if msg.0.audit_days != self.audit_days {
            self.audit_days = msg.0.audit_days;
            self.send(Command::Prune(self.audit_days));
        }
    }
}

impl Handler<AuditFlushRequested> for AuditActor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: AuditFlushRequested, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Flush(tx));
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

crate::delivered_handlers!(AuditActor: AuditRecorded, SettingsUpdated, AuditFlushRequested);
