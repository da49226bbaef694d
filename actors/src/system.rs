//! Starting the actor system: every actor under a `Supervisor`, registered
//! with the health registry, wired through [`Peers`].

use std::path::PathBuf;

use actix::prelude::*;
use laminate_config::LoadedConfig;
use laminate_store::Store;

use crate::board::{Board, SharedBoard};
use crate::config::{ConfigActor, LogLevelHook};
use crate::health::{HealthRegistry, Mailbox};
use crate::heartbeat::HeartbeatActor;
use crate::link::{LinkActor, LinkSettings};
use crate::nodes::NodeMonitor;
use crate::peers::{Peers, PeersCell};
use crate::router::RouterActor;

/// What the actors need to start.
pub struct SystemConfig {
    pub data_dir: PathBuf,
    pub appliance_ae: String,
    pub link: LinkSettings,
    pub loaded: LoadedConfig,
    pub store: Store,
    pub log_level_hook: Option<LogLevelHook>,
}

/// The running actors.
#[derive(Clone)]
pub struct Running {
    pub board: SharedBoard,
    pub peers: Peers,
    pub store: Store,
}

/// Starts every actor on the current arbiter. Call inside a running actix System.
pub fn start(cfg: SystemConfig) -> Running {
    let health = HealthRegistry::new();
    health.set_store_open(true);
    let board = Board::new(health.clone());
    let cell = PeersCell::new();
    let SystemConfig {
        data_dir,
        appliance_ae,
        link,
        loaded,
        store,
        log_level_hook,
    } = cfg;
    let heartbeat_interval = loaded.settings.heartbeat_interval_s;

    let config = {
        let h = health.register("config");
        let (hc, b, p, d) = (h.clone(), board.clone(), cell.clone(), data_dir.clone());
        let addr =
            Supervisor::start(move |_| ConfigActor::new(hc, b, p, d, loaded, log_level_hook));
        Mailbox::new(addr, h)
    };
    let nodes = {
        let h = health.register("nodes");
        let (hc, b) = (h.clone(), board.clone());
        let ae = appliance_ae.clone();
        let addr = Supervisor::start(move |_| NodeMonitor::new(hc, b, &ae));
        Mailbox::new(addr, h)
    };
    let heartbeat = {
        let h = health.register("heartbeat");
        let (hc, b, p, d) = (h.clone(), board.clone(), cell.clone(), data_dir.clone());
        let addr = Supervisor::start(move |_| HeartbeatActor::new(hc, b, p, d, heartbeat_interval));
        Mailbox::new(addr, h)
    };
    let router = {
        let h = health.register("router");
        let (hc, b, s, p) = (h.clone(), board.clone(), store.clone(), cell.clone());
        let addr = Supervisor::start(move |_| RouterActor::new(hc, b, s, p));
        Mailbox::new(addr, h)
    };
    let link = {
        let h = health.register("link");
        let (hc, b, s, p) = (h.clone(), board.clone(), store.clone(), cell.clone());
        let addr = Supervisor::start(move |_| LinkActor::new(hc, b, s, p, link));
        Mailbox::new(addr, h)
    };
    let peers = Peers {
        link,
        router,
        config,
        heartbeat,
        nodes,
    };
    // Set before any actor runs: they are only polled once this function returns.
    cell.set(peers.clone());
    Running {
        board,
        peers,
        store,
    }
}
