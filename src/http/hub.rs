//! The live feed's hub: one task reads the board's feed (and polls what has no
//! event of its own: actor health every second, store and dispatch figures
//! every two, the charts every five), renders each change to its JSON message once, and broadcasts the
//! text to every `/ws` session.
//!
//! Each session reads the hub's broadcast channel at its own pace: the channel
//! keeps the last [`BACKLOG`] messages, and a session that falls further behind
//! sees `Lagged` and is dropped (`ws.rs`). Nobody waits for a browser: the
//! actors' `publish` and the hub's `send` never block.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use laminate_actors::feed::FeedEvent;
use laminate_store::Journal;
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use super::api::{config_json, dispatch_figures, link_json, node_json, store_figures};
use super::charts::{Charts, DailyTally};
use super::dispatches::dispatch_json;
use super::AppState;

/// Messages a browser may have unread (beyond what its socket holds) before
/// it counts as too slow: a burst of events must not drop a healthy one.
pub const BACKLOG: usize = 1024;

/// How often actor health is compared with what was last sent.
const ACTOR_POLL: Duration = Duration::from_secs(1);

/// Store and dispatch figures are compared every this many actor polls.
const STORE_POLL_EVERY: u32 = 2;

/// The charts are redrawn (and sent when they changed) every this many actor
/// polls: their finest unit is a minute, a few seconds' lag is invisible.
const CHARTS_POLL_EVERY: u32 = 5;

/// A rendered feed message, shared by every session.
pub type Message = Arc<str>;

/// The handle sessions subscribe through.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Message>,
    dropped: Arc<AtomicU64>,
    daily: Arc<DailyTally>,
}

impl Hub {
    /// Starts the hub task on the current actix/tokio runtime.
    pub fn start(state: AppState) -> Hub {
        let (tx, _) = broadcast::channel(BACKLOG);
        let daily = Arc::new(DailyTally::default());
        actix_web::rt::spawn(run(state, tx.clone(), daily.clone()));
        Hub {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            daily,
        }
    }

    /// The dispatches-per-day tally the hub keeps up to date.
    pub fn daily(&self) -> &DailyTally {
        &self.daily
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.tx.subscribe()
    }

    /// Browsers connected to the feed now.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A browser was dropped for being too slow.
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn run(state: AppState, tx: broadcast::Sender<Message>, daily: Arc<DailyTally>) {
    let board = state.running.board.clone();
    let mut feed = board.subscribe();
    let mut actors: BTreeMap<String, Value> = BTreeMap::new();
    let mut store = Value::Null;
    let mut charts = Value::Null;
    let mut tick = tokio::time::interval(ACTOR_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            ev = feed.recv() => match ev {
                Ok(ev) => {
                    // No store read: the tally reads the dispatch when it is next drawn.
                    if let FeedEvent::Dispatch(id) = &ev {
                        daily.touched(id);
                    }
                    // Rendering reads the store: skip it while nobody watches.
                    if tx.receiver_count() > 0 {
                        if let Some(msg) = render(&state, ev) {
                            let _ = tx.send(msg);
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    // The hub itself fell behind: send what is current now
                    // (dispatches come with their next update).
                    tracing::debug!(missed = n, "status feed hub lagged; resending link and nodes");
                    daily.lost_track();
                    let _ = tx.send(render_link(&state));
                    for n in board.nodes() {
                        let _ = tx.send(message("node.status", "node", node_json(&board, &n)));
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let rows = match super::api::actors_json(&board) {
                    Value::Array(rows) => rows,
                    _ => Vec::new(),
                };
                for report in rows {
                    let name = report["name"].as_str().unwrap_or_default().to_owned();
                    if actors.get(&name) != Some(&report) {
                        let _ = tx.send(message("actor.status", "actor", report.clone()));
                        actors.insert(name, report);
                    }
                }
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(STORE_POLL_EVERY) && tx.receiver_count() > 0 {
                    let now = json!({
                        "store": store_figures(&state),
                        "dispatches": dispatch_figures(&state),
                        "outbox": { "depth": board.outbox_depth() },
                        "config": config_json(&board),
                    });
                    if now != store {
                        let mut msg = now.clone();
                        msg["type"] = json!("store.status");
                        let _ = tx.send(msg.to_string().into());
                        store = now;
                    }
                }
                if ticks.is_multiple_of(CHARTS_POLL_EVERY) && tx.receiver_count() > 0 {
                    let now = Charts::now(&state, &daily).json();
                    if now != charts {
                        let mut msg = now.clone();
                        msg["type"] = json!("charts.update");
                        let _ = tx.send(msg.to_string().into());
                        charts = now;
                    }
                }
            }
        }
    }
}

fn message(kind: &str, key: &str, body: Value) -> Message {
    json!({ "type": kind, key: body }).to_string().into()
}

fn render_link(state: &AppState) -> Message {
    message(
        "link.status",
        "link",
        link_json(&state.running.board.link()),
    )
}

/// The message for one feed event; `None` when there is nothing to show.
fn render(state: &AppState, ev: FeedEvent) -> Option<Message> {
    let board = &state.running.board;
    match ev {
        FeedEvent::Link => Some(render_link(state)),
        FeedEvent::Node(id) => {
            let node = board.nodes().into_iter().find(|n| n.node_id == id)?;
            Some(message("node.status", "node", node_json(board, &node)))
        }
        FeedEvent::Dispatch(id) => match state.running.store.journal_get(&id) {
            Ok(Some(rec)) => Some(message("dispatch.update", "dispatch", dispatch_json(&rec))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, dispatch = %id, "status feed cannot read a dispatch");
                None
            }
        },
        FeedEvent::Recorded(e) => Some(message("event", "event", json!(e))),
    }
}
