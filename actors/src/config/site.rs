//! The site's `node-settings.json` at run time: polled every few seconds (its
//! modification time and length, and those of the TLS files it names: a
//! certificate renewed in place is a change) and re-read on
//! `laminate-proxy nodes reload`.
//! A valid file replaces the settings in force and the nodes are published again
//! with them attached; an invalid one is rejected whole (`config.last_error`) and
//! the previous settings stay. A deleted file is the same as an empty one.
//!
//! Polling rather than inotify: nothing in the tree watches files, a poll costs
//! one `stat`, and it also works on the network and overlay file systems a data
//! dir may live on.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use laminate_config::{load_node_settings, node_settings_stamp, NodesDiff, NODE_SETTINGS_FILE};

use super::actor::ConfigActor;
use super::messages::{NodeSettingsReloadRequested, NodesUpdated};

/// How often the file's stamp is checked.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

impl ConfigActor {
    /// Re-reads the file if it changed since it was last read.
    pub(super) fn poll_site(&mut self) {
        let stamp = node_settings_stamp(&self.data_dir, &self.current.node_settings);
        if stamp != self.site_stamp {
            let _ = self.reload_site();
        }
    }

    /// Reads and applies the file; on success the number of nodes it configures.
    pub(super) fn reload_site(&mut self) -> Result<usize, String> {
        let loaded = match load_node_settings(&self.data_dir) {
            Ok(f) => f.unwrap_or_default(),
            Err(e) => {
                // Not read again until the file or a TLS file in force changes.
                self.site_stamp = node_settings_stamp(&self.data_dir, &self.current.node_settings);
                let why = e.to_string();
                self.reject(NODE_SETTINGS_FILE, why.clone());
                self.board.set_node_settings_error(Some(why.clone()));
                return Err(why);
            }
        };
        let count = loaded.nodes.len();
        self.board.set_node_settings_error(None);
        let old = self.current.node_settings.apply(&self.current.nodes.nodes);
        self.current.node_settings = loaded;
        self.site_stamp = node_settings_stamp(&self.data_dir, &self.current.node_settings);
        let new = self.current.node_settings.apply(&self.current.nodes.nodes);
        let diff = NodesDiff::between(&old, &new);
        tracing::info!(configured = count, updated = ?diff.updated, "node-settings.json applied");
        self.board.set_nodes(new.clone());
        if let Some(peers) = self.peers.get() {
            let update = NodesUpdated {
                nodes: Arc::new(new),
                diff,
            };
            peers.dispatcher.do_send(update.clone());
            peers.nodes.do_send(update);
        }
        Ok(count)
    }
}

impl Handler<NodeSettingsReloadRequested> for ConfigActor {
    type Result = Result<usize, String>;
    fn handle(&mut self, _: NodeSettingsReloadRequested, _: &mut Context<Self>) -> Self::Result {
        self.reload_site()
    }
}
crate::delivered_handlers!(ConfigActor: NodeSettingsReloadRequested);
