//! The addresses of every actor, filled once after they have all started.
//!
//! Actors refer to each other in cycles (the link hands frames to the router,
//! the router answers pings through the link), so nobody gets addresses at
//! construction: the system starts all of them, then sets this cell before any
//! actor has run. An actor that finds it empty (impossible after start-up)
//! logs and drops the message.

use std::sync::{Arc, OnceLock};

use crate::audit::AuditActor;
use crate::config::ConfigActor;
use crate::deletion::DeletionActor;
use crate::disk::DiskActor;
use crate::dispatch::Dispatcher;
use crate::health::Mailbox;
use crate::heartbeat::HeartbeatActor;
use crate::link::LinkActor;
use crate::nodes::NodeMonitor;
use crate::router::RouterActor;

#[derive(Clone)]
pub struct Peers {
    pub link: Mailbox<LinkActor>,
    pub router: Mailbox<RouterActor>,
    pub config: Mailbox<ConfigActor>,
    pub heartbeat: Mailbox<HeartbeatActor>,
    pub nodes: Mailbox<NodeMonitor>,
    pub dispatcher: Mailbox<Dispatcher>,
    pub deletion: Mailbox<DeletionActor>,
    pub disk: Mailbox<DiskActor>,
    pub audit: Mailbox<AuditActor>,
}

/// Shared, set-once holder of [`Peers`].
#[derive(Clone, Default)]
pub struct PeersCell(Arc<OnceLock<Peers>>);

impl PeersCell {
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the peers; a second call is ignored.
    pub fn set(&self, peers: Peers) {
        let _ = self.0.set(peers);
    }
    pub fn get(&self) -> Option<&Peers> {
        let p = self.0.get();
        if p.is_none() {
            tracing::error!("actor peers used before the system finished starting");
        }
        p
    }
}
