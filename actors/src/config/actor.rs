//! The config actor. See `mod.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use laminate_config::{
    apply_nodes_change, merge_config_change, parse_status_change, save_nodes, save_proxy,
    save_status, LoadedConfig,
};
use serde_json::Value;

use super::messages::{ConfigEventReceived, NodesUpdated, ProxyStatusUpdated, SettingsUpdated};
use crate::board::SharedBoard;
use crate::envelope::EventKind;
use crate::health::{ActorHealth, ActorState, HandlerFailed, Monitored};
use crate::peers::PeersCell;

/// Applies a new log level (the binary owns the subscriber).
pub type LogLevelHook = Arc<dyn Fn(&str) + Send + Sync>;

pub struct ConfigActor {
    health: ActorHealth,
    pub(super) board: SharedBoard,
    pub(super) peers: PeersCell,
    pub(super) data_dir: PathBuf,
    /// Raw files as on disk; nodes are published with `node_settings` applied.
    pub(super) current: LoadedConfig,
    /// What `node-settings.json` and its TLS files looked like when last read (`site.rs`).
    pub(super) site_stamp: Vec<laminate_config::FileStamp>,
    log_level_hook: Option<LogLevelHook>,
}

impl ConfigActor {
    pub fn new(
        health: ActorHealth,
        board: SharedBoard,
        peers: PeersCell,
        data_dir: PathBuf,
        current: LoadedConfig,
        log_level_hook: Option<LogLevelHook>,
    ) -> Self {
        board.set_nodes(current.node_settings.apply(&current.nodes.nodes));
        board.set_proxy_status(current.status.clone());
        Self {
            health,
            board,
            peers,
            site_stamp: laminate_config::node_settings_stamp(&data_dir, &current.node_settings),
            data_dir,
            current,
            log_level_hook,
        }
    }

    pub(super) fn reject(&self, event_type: &str, why: String) {
        let msg = format!("{event_type} rejected: {why}");
        tracing::error!(error = %msg, "configuration change rejected; the current configuration stays in force");
        self.board
            .record_config_rejection(msg, crate::clock::now_rfc3339());
    }

    fn nodes_changed(&mut self, payload: &Value) -> Result<(), String> {
        let (nodes, diff) =
            apply_nodes_change(&self.current.nodes, payload).map_err(|e| e.to_string())?;
        save_nodes(&self.data_dir, &nodes).map_err(|e| e.to_string())?;
        self.current.nodes = nodes;
        let list = Arc::new(self.current.node_settings.apply(&self.current.nodes.nodes));
        self.board.set_nodes(list.as_ref().clone());
        tracing::info!(added = ?diff.added, removed = ?diff.removed, updated = ?diff.updated, "nodes changed");
        if let Some(peers) = self.peers.get() {
            let update = NodesUpdated { nodes: list, diff };
            peers.dispatcher.do_send(update.clone());
            peers.nodes.do_send(update);
        }
        Ok(())
    }

    fn config_changed(&mut self, payload: &Value) -> Result<(), String> {
        let merge = merge_config_change(&self.current.proxy, payload).map_err(|e| e.to_string())?;
        save_proxy(&self.data_dir, &merge.file).map_err(|e| e.to_string())?;
        if !merge.unknown.is_empty() {
            tracing::warn!(keys = ?merge.unknown, "proxy.config_changed: unknown keys kept in proxy.json but not used");
        }
        self.board.set_unknown_config_keys(merge.unknown.clone());
        let level_changed = merge.settings.log_level != self.current.settings.log_level;
        self.current.proxy = merge.file;
        self.current.settings = merge.settings.clone();
        tracing::info!(changed = ?merge.changed, "proxy settings changed");
        if level_changed {
            if let Some(hook) = &self.log_level_hook {
                hook(merge.settings.log_level.as_str());
            }
        }
        if let Some(peers) = self.peers.get() {
            peers
                .dispatcher
                .do_send(SettingsUpdated(merge.settings.clone()));
            peers.disk.do_send(SettingsUpdated(merge.settings.clone()));
            peers.audit.do_send(SettingsUpdated(merge.settings.clone()));
            peers.heartbeat.do_send(SettingsUpdated(merge.settings));
        }
        Ok(())
    }

    fn status_changed(&mut self, payload: &Value) -> Result<(), String> {
        let status = parse_status_change(payload, &crate::clock::now_rfc3339())
            .map_err(|e| e.to_string())?;
        save_status(&self.data_dir, &status).map_err(|e| e.to_string())?;
        tracing::info!(status = ?status.status, is_active = status.is_active, reason = %status.reason, "proxy status changed");
        self.current.status = status.clone();
        self.board.set_proxy_status(status.clone());
        if let Some(peers) = self.peers.get() {
            peers.dispatcher.do_send(ProxyStatusUpdated(status));
        }
        Ok(())
    }
}

impl Actor for ConfigActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
        ctx.run_interval(super::site::POLL_EVERY, |a, _| a.poll_site());
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for ConfigActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
    }
}

impl Monitored for ConfigActor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl Handler<ConfigEventReceived> for ConfigActor {
    type Result = Result<(), HandlerFailed>;
    fn handle(&mut self, msg: ConfigEventReceived, _: &mut Context<Self>) -> Self::Result {
        let ev = msg.0;
        let payload = Value::Object(ev.payload.clone());
        let outcome = match ev.kind {
            EventKind::NodesChanged => self.nodes_changed(&payload),
            EventKind::ConfigChanged => self.config_changed(&payload),
            EventKind::StatusChanged => self.status_changed(&payload),
            _ => Err("not a configuration event".to_owned()),
        };
        crate::audit::record(
            &self.peers,
            crate::audit::AuditEvent::config_change(&ev, &outcome),
        );
        // A valid change leaves the last rejection shown: a burst of valid events must
        // not hide it from the page.
        if let Err(why) = outcome {
            self.reject(&ev.event_type, why);
        }
        // Applied or rejected, the event has been acted on.
        Ok(())
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::messages::FaultInjected> for ConfigActor {
    type Result = ();
    fn handle(&mut self, _: super::messages::FaultInjected, _: &mut Context<Self>) {
        panic!("fault injection: config");
    }
}

crate::delivered_handlers!(ConfigActor: ConfigEventReceived);
#[cfg(feature = "fault-injection")]
crate::delivered_handlers!(ConfigActor: super::messages::FaultInjected);
