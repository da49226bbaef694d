//! The status board: what the actors have observed, in one shared place the
//! HTTP API, `/readyz` and the heartbeat read without asking (and so without
//! waiting on) any actor.
//!
//! Each part has one writer: the link writes `link`, the router `router`, the
//! config actor `proxy_status`/`config_rejections`/`nodes`, the node monitor `echo`.
//!
//! The board also tells the status page what changes as it happens (`feed`,
//! see [`crate::feed`]), keeps the last events in and out (`recent`), and the
//! send figures of `/metrics` (`sent`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use laminate_config::{Node, StatusFile};
use serde::Serialize;

use crate::feed::{Feed, FeedEvent, RecentEvent, RecentEvents, SendStats};
use crate::health::{lock, HealthRegistry};

/// Backend link state (APPLIANCE.md `/api/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Connecting,
    Connected,
    Backoff,
    Rejected,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkView {
    pub state: LinkState,
    /// RFC 3339 time of the last state change.
    pub since: String,
    pub last_error: Option<String>,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// An operator-facing sentence when the link is held back on purpose
    /// ("authentication rejected", "replaced by another appliance using the same key").
    pub notice: Option<String>,
    /// When the next connection attempt is due, while in backoff.
    pub next_attempt_at: Option<String>,
}

impl Default for LinkView {
    fn default() -> Self {
        Self {
            state: LinkState::Connecting,
            since: crate::clock::now_rfc3339(),
            last_error: None,
            reconnects: 0,
            notice: None,
            next_attempt_at: None,
        }
    }
}

/// Event counters kept by the router (and the link for outgoing).
#[derive(Debug, Default)]
pub struct Counters {
    pub events_in: AtomicU64,
    pub bad_frames: AtomicU64,
    pub duplicates: AtomicU64,
    pub unknown_types: AtomicU64,
    pub events_out: AtomicU64,
    by_type_in: Mutex<BTreeMap<String, u64>>,
    by_type_out: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn count_in(&self, event_type: &str) {
        self.events_in.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_type_in)
            .entry(bounded_type(event_type))
            .or_default() += 1;
    }
    pub fn count_out(&self, event_type: &str) {
        self.events_out.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_type_out)
            .entry(bounded_type(event_type))
            .or_default() += 1;
    }
    pub fn in_by_type(&self) -> BTreeMap<String, u64> {
        lock(&self.by_type_in).clone()
    }
    pub fn out_by_type(&self) -> BTreeMap<String, u64> {
        lock(&self.by_type_out).clone()
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Keeps per-type maps bounded against a backend that invents event types.
fn bounded_type(t: &str) -> String {
    const KNOWN: &[&str] = &[
        "ping",
        "pong",
        "session.deleted",
        "scan.deleted",
        "subject.dispatch",
        "session.dispatch",
        "scan.dispatch",
        "proxy.nodes_changed",
        "proxy.config_changed",
        "proxy.status_changed",
        "dispatch.status",
        "proxy.heartbeat",
    ];
    if KNOWN.contains(&t) {
        t.to_owned()
    } else {
        "other".to_owned()
    }
}

/// The latest C-ECHO of a node.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct EchoView {
    pub online: bool,
    pub last_echo_at: Option<String>,
    /// Epoch ms of the last echo, to age it.
    #[serde(skip)]
    pub last_echo_ms: Option<u64>,
    pub echo_rtt_ms: Option<f64>,
    pub last_error: Option<String>,
}

/// Rejected configuration changes (APPLIANCE.md "Rejected configuration stays
/// visible"): the most recent one and how many, never cleared by a later valid change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigRejections {
    /// Why the most recent rejected event was rejected.
    pub last_error: Option<String>,
    /// When (RFC 3339).
    pub last_error_at: Option<String>,
    /// Rejected events since start-up.
    pub rejected: u64,
}

/// Everything observed, shared by `Arc`.
#[derive(Debug, Default)]
pub struct Board {
    pub health: HealthRegistry,
    pub counters: Counters,
    /// Instances and bytes sent per node, C-STORE round trips.
    pub sent: SendStats,
    /// Every running dispatch job's stages and their last progress.
    pub stages: crate::dispatch::watchdog::Watchdogs,
    feed: Feed,
    recent: RecentEvents,
    link: Mutex<LinkView>,
    proxy_status: Mutex<StatusFile>,
    config_rejections: Mutex<ConfigRejections>,
    unknown_config_keys: Mutex<Vec<String>>,
    /// Why the current `node-settings.json` is not in force (cleared once one is).
    node_settings_error: Mutex<Option<String>>,
    nodes: Mutex<Vec<Node>>,
    echoes: Mutex<BTreeMap<String, EchoView>>,
    last_workspace_id: Mutex<String>,
    /// The echo period, to age echoes ("online" needs one at most 2 periods old).
    echo_period_ms: AtomicU64,
    outbox_depth: AtomicU64,
    active_dispatches: AtomicU64,
}

pub type SharedBoard = Arc<Board>;

impl Board {
    pub fn new(health: HealthRegistry) -> SharedBoard {
        Arc::new(Board {
            health,
            ..Default::default()
        })
    }

    pub fn link(&self) -> LinkView {
        lock(&self.link).clone()
    }
    pub fn update_link(&self, f: impl FnOnce(&mut LinkView)) {
        f(&mut lock(&self.link));
        self.publish(FeedEvent::Link);
    }

    pub fn proxy_status(&self) -> StatusFile {
        lock(&self.proxy_status).clone()
    }
    pub fn set_proxy_status(&self, s: StatusFile) {
        *lock(&self.proxy_status) = s;
    }

    pub fn config_rejections(&self) -> ConfigRejections {
        lock(&self.config_rejections).clone()
    }
    /// Records a rejected configuration change at `at` (RFC 3339).
    pub fn record_config_rejection(&self, why: String, at: String) {
        let mut r = lock(&self.config_rejections);
        r.last_error = Some(why);
        r.last_error_at = Some(at);
        r.rejected += 1;
    }

    /// Keys of `proxy.json` this version does not know (kept, not used).
    /// Why the file on disk is not the `node-settings.json` in force, if it is not.
    pub fn node_settings_error(&self) -> Option<String> {
        lock(&self.node_settings_error).clone()
    }
    pub fn set_node_settings_error(&self, why: Option<String>) {
        *lock(&self.node_settings_error) = why;
    }

    pub fn unknown_config_keys(&self) -> Vec<String> {
        lock(&self.unknown_config_keys).clone()
    }
    pub fn set_unknown_config_keys(&self, keys: Vec<String>) {
        *lock(&self.unknown_config_keys) = keys;
    }

    pub fn nodes(&self) -> Vec<Node> {
        lock(&self.nodes).clone()
    }
    pub fn set_nodes(&self, nodes: Vec<Node>) {
        let ids: Vec<String> = nodes.iter().map(|n| n.node_id.clone()).collect();
        *lock(&self.nodes) = nodes;
        lock(&self.echoes).retain(|id, _| ids.contains(id));
    }

    pub fn echo(&self, node_id: &str) -> EchoView {
        let mut e = lock(&self.echoes).get(node_id).cloned().unwrap_or_default();
        e.online = e.online && self.echo_is_fresh(&e);
        e
    }
    pub fn set_echo(&self, node_id: &str, e: EchoView) {
        lock(&self.echoes).insert(node_id.to_owned(), e);
        self.publish(FeedEvent::Node(node_id.to_owned()));
    }
    pub fn set_echo_period_ms(&self, ms: u64) {
        self.echo_period_ms.store(ms, Ordering::Relaxed);
    }
    fn echo_is_fresh(&self, e: &EchoView) -> bool {
        let period = self.echo_period_ms.load(Ordering::Relaxed);
        match e.last_echo_ms {
            Some(at) => period == 0 || crate::clock::now_ms().saturating_sub(at) <= 2 * period,
            None => false,
        }
    }

    /// (online, total) over active nodes (PROTOCOL.md §4).
    pub fn nodes_online(&self) -> (usize, usize) {
        let nodes = self.nodes();
        let active: Vec<&Node> = nodes.iter().filter(|n| n.is_active).collect();
        let online = active
            .iter()
            .filter(|n| self.echo(&n.node_id).online)
            .count();
        (online, active.len())
    }

    pub fn last_workspace_id(&self) -> String {
        lock(&self.last_workspace_id).clone()
    }
    pub fn set_last_workspace_id(&self, ws: &str) {
        let mut cur = lock(&self.last_workspace_id);
        if cur.as_str() != ws {
            *cur = ws.to_owned();
        }
    }

    pub fn outbox_depth(&self) -> u64 {
        self.outbox_depth.load(Ordering::Relaxed)
    }
    pub fn set_outbox_depth(&self, n: u64) {
        self.outbox_depth.store(n, Ordering::Relaxed);
    }

    pub fn active_dispatches(&self) -> u64 {
        self.active_dispatches.load(Ordering::Relaxed)
    }
    pub fn set_active_dispatches(&self, n: u64) {
        self.active_dispatches.store(n, Ordering::Relaxed);
    }
}

/// The live feed and the recent events.
impl Board {
    /// Tells the feed's subscribers; never waits.
    pub fn publish(&self, ev: FeedEvent) {
        self.feed.publish(ev);
    }
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<FeedEvent> {
        self.feed.subscribe()
    }

    /// An incoming event the router parsed.
    pub fn record_in(&self, ev: &crate::envelope::Incoming) {
        self.record(RecentEvent::incoming(ev));
    }
    /// An event frame the link wrote.
    pub fn record_out(&self, event_type: &str, frame: &str) {
        self.record(RecentEvent::outgoing(event_type, frame));
    }
    fn record(&self, ev: RecentEvent) {
        self.recent.push(ev.clone());
        self.publish(FeedEvent::Recorded(ev));
    }
    /// The last events in and out, oldest first.
    pub fn recent_events(&self) -> Vec<RecentEvent> {
        self.recent.snapshot()
    }
}
