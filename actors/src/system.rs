//! Starting the actor system: every actor under a `Supervisor`, registered
//! with the health registry, wired through [`Peers`].

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use laminate_config::LoadedConfig;
use laminate_store::Store;

use crate::board::{Board, SharedBoard};
use crate::config::{ConfigActor, LogLevelHook};
use crate::deletion::DeletionActor;
use crate::disk::{DiskActor, DiskState};
use crate::dispatch::extract::ExtractLimits;
use crate::dispatch::{Dispatcher, JobEnv};
use crate::health::{HealthRegistry, Mailbox};
use crate::heartbeat::HeartbeatActor;
use crate::link::{LinkActor, LinkSettings};
use crate::nodes::NodeMonitor;
use crate::peers::{Peers, PeersCell};
use crate::router::RouterActor;
use crate::send::SendOptions;

/// What the actors need to start.
pub struct SystemConfig {
    pub data_dir: PathBuf,
    pub appliance_ae: String,
    pub link: LinkSettings,
    /// The backend's REST base (downloads).
    pub api_url: url::Url,
    pub loaded: LoadedConfig,
    pub store: Store,
    pub log_level_hook: Option<LogLevelHook>,
    /// `host:port` of a syslog collector the audit trail is forwarded to.
    pub audit_syslog: Option<String>,
}

/// The running actors.
#[derive(Clone)]
pub struct Running {
    pub board: SharedBoard,
    pub peers: Peers,
    pub store: Store,
    /// The data dir (the status page reads its disk and `proxy.json`).
    pub data_dir: PathBuf,
    /// The disk's limits and figures (free space, evictions).
    pub disk: Arc<DiskState>,
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
        api_url,
        loaded,
        store,
        log_level_hook,
        audit_syslog,
    } = cfg;
    let heartbeat_interval = loaded.settings.heartbeat_interval_s;
    let disk_state = DiskState::new(data_dir.clone(), &loaded.settings);
    let dispatcher = {
        let h = health.register("dispatcher");
        let jobs = health.register("dispatch-jobs");
        let env = JobEnv {
            store: store.clone(),
            peers: cell.clone(),
            data_dir: data_dir.clone(),
            api_url,
            proxy_key: link.proxy_key.clone(),
            tls: link.tls.clone(),
            appliance_ae: appliance_ae.clone(),
            limits: ExtractLimits::default(),
            send: SendOptions::default(),
            board: board.clone(),
            disk: disk_state.clone(),
            stage_limits: crate::dispatch::shared::StageLimits::from_env(),
            senders: crate::node_sender::NodeSenders::new(
                appliance_ae.clone(),
                SendOptions::default(),
                health.register("node-senders"),
                board.clone(),
            ),
        };
        let (hc, b) = (h.clone(), board.clone());
        let (nodes, settings, status) = (
            loaded.node_settings.apply(&loaded.nodes.nodes),
            loaded.settings.clone(),
            loaded.status.clone(),
        );
        let addr = Supervisor::start(move |_| {
            Dispatcher::new(hc, jobs, b, env, nodes, &settings, &status)
        });
        Mailbox::new(addr, h)
    };
    let audit = {
        let h = health.register("audit");
        let cfg = crate::audit::WriterConfig {
            data_dir: data_dir.clone(),
            appliance_ae: appliance_ae.clone(),
            store: store.clone(),
            proxy_key: link.proxy_key.clone(),
            syslog: audit_syslog,
            health: h.clone(),
            board: board.clone(),
        };
        let days = loaded.settings.audit_days;
        Mailbox::new(
            Supervisor::start(move |_| crate::audit::AuditActor::new(cfg, days)),
            h,
        )
    };
    let deletion = {
        let h = health.register("deletion");
        let (hc, s, d, p) = (h.clone(), store.clone(), data_dir.clone(), cell.clone());
        let addr = Supervisor::start(move |_| DeletionActor::new(hc, s, d, p));
        Mailbox::new(addr, h)
    };
    let disk = {
        let h = health.register("disk");
        let (hc, s, d) = (h.clone(), store.clone(), disk_state.clone());
        let addr = Supervisor::start(move |_| DiskActor::new(hc, s, d));
        Mailbox::new(addr, h)
    };

    let config = {
        let h = health.register("config");
        let (hc, b, p, d) = (h.clone(), board.clone(), cell.clone(), data_dir.clone());
        let addr =
            Supervisor::start(move |_| ConfigActor::new(hc, b, p, d, loaded, log_level_hook));
        Mailbox::new(addr, h)
    };
    let nodes = {
        let h = health.register("nodes");
        let (hc, b, p) = (h.clone(), board.clone(), cell.clone());
        let ae = appliance_ae.clone();
        let addr = Supervisor::start(move |_| NodeMonitor::new(hc, b, &ae, p.clone()));
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
        dispatcher,
        deletion,
        disk,
        audit,
    };
    // Set before any actor runs: they are only polled once this function returns.
    cell.set(peers.clone());
    Running {
        board,
        peers,
        store,
        data_dir,
        disk: disk_state,
    }
}

/// Rebuilds the whole cache index from the files under `storage/` (the operator's
/// `rebuild-index`). Blocking; the appliance must not be running.
pub fn rebuild_cache_index(
    store: &Store,
    data_dir: &std::path::Path,
) -> Result<laminate_store::RepairReport, laminate_store::StoreError> {
    laminate_store::rebuild_catalog(store, data_dir, &index_for_repair)
}

/// Reads a cached file's header into a catalog record (for repair and rebuild).
fn index_for_repair(path: &std::path::Path) -> Option<laminate_store::InstanceRecord> {
    let h = crate::dispatch::index::index_file(path).ok()??;
    let path_rel = laminate_store::instance_rel_path(
        &h.study_instance_uid,
        &h.series_instance_uid,
        &h.sop_instance_uid,
    )
    .ok()?;
    Some(h.into_record(path_rel, laminate_store::InstanceSource::Ingest))
}

/// Start-up repair of the local cache (APPLIANCE.md "The local store"): finishes
/// interrupted deletions, drops index entries whose file is gone, and indexes
/// (or removes, when unreadable) files that have no entry. Blocking; run it
/// before the actors start.
pub fn repair_cache(
    store: &Store,
    data_dir: &std::path::Path,
) -> Result<laminate_store::RepairReport, laminate_store::StoreError> {
    laminate_store::repair(store, data_dir, &index_for_repair)
}
