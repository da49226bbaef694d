//! What the board tells the status page as it happens: the live feed (a
//! `tokio::sync::broadcast` channel the HTTP layer subscribes to), the ring of
//! recent events in and out, and the send figures behind `/metrics`.
//!
//! Publishing never waits: a broadcast send is O(1) and a subscriber that
//! falls behind loses messages (it sees `Lagged`), never the publisher.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::envelope::Incoming;
use crate::health::lock;
use crate::throughput::{minute_of, Minute, ThroughputHistory};

/// How many recent events the board keeps (the page shows them all).
pub const RECENT_EVENTS: usize = 100;

/// Room in the feed channel: the HTTP layer's hub reads it at once, so this
/// only has to absorb a burst while the hub is busy rendering.
const FEED_CAPACITY: usize = 1024;

/// Longest field kept from an untrusted event (type, correlation id, summary).
const MAX_FIELD: usize = 160;

/// Something changed; the subscriber reads the current value from the board
/// (or the store) itself, so a lost message costs nothing but a late update.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// The backend link view changed.
    Link,
    /// A node's echo view changed (node id).
    Node(String),
    /// A dispatch record was journaled (dispatch id).
    Dispatch(String),
    /// An event went in or out.
    Recorded(RecentEvent),
}

/// The board's broadcast channel.
#[derive(Debug)]
pub struct Feed(broadcast::Sender<FeedEvent>);

impl Default for Feed {
    fn default() -> Self {
        Feed(broadcast::channel(FEED_CAPACITY).0)
    }
}

impl Feed {
    /// Never blocks; without subscribers the event is dropped.
    pub fn publish(&self, ev: FeedEvent) {
        let _ = self.0.send(ev);
    }
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.0.subscribe()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

/// One event in or out, as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentEvent {
    pub direction: Direction,
    pub event_type: String,
    pub correlation_id: String,
    /// RFC 3339 time it was parsed (in) or written (out).
    pub at: String,
    /// A few words on what it carried, from known fields only.
    pub summary: String,
}

impl RecentEvent {
    /// An event parsed by the router.
    pub fn incoming(ev: &Incoming) -> RecentEvent {
        RecentEvent {
            direction: Direction::In,
            event_type: clip(&ev.event_type),
            correlation_id: clip(&ev.correlation_id),
            at: crate::clock::now_rfc3339(),
            summary: clip(&summarize(
                &ev.event_type,
                ev.entity_type.as_deref(),
                ev.entity_id.as_deref(),
                &ev.payload,
            )),
        }
    }

    /// A frame written by the link (built by us, so it parses; if not, the
    /// event is still listed without details).
    pub fn outgoing(event_type: &str, frame: &str) -> RecentEvent {
        let v: Value = serde_json::from_str(frame).unwrap_or(Value::Null);
        let payload = v["payload"].as_object().cloned().unwrap_or_default();
        RecentEvent {
            direction: Direction::Out,
            event_type: clip(event_type),
            correlation_id: clip(v["correlation_id"].as_str().unwrap_or_default()),
            at: crate::clock::now_rfc3339(),
            summary: clip(&summarize(
                event_type,
                v["entity_type"].as_str(),
                v["entity_id"].as_str(),
                &payload,
            )),
        }
    }
}

/// Known fields only: an event's payload may carry anything, and the page
/// must show nothing it was not meant to.
fn summarize(
    event_type: &str,
    entity_type: Option<&str>,
    entity_id: Option<&str>,
    p: &Map<String, Value>,
) -> String {
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
    let n = |k: &str| p.get(k).map(|v| v.to_string()).unwrap_or_default();
    let entity = match (entity_type, entity_id) {
        (Some(t), Some(i)) if !t.is_empty() || !i.is_empty() => format!("{t} {i}"),
        _ => String::new(),
    };
    match event_type {
        "dispatch.status" => format!(
            "{entity}: {} {} {}/{}",
            s("node_id"),
            s("status"),
            n("files_sent"),
            n("files_total")
        ),
        "subject.dispatch" | "session.dispatch" | "scan.dispatch" => {
            let nodes: Vec<&str> = p
                .get("nodes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("{entity} → {} ({})", nodes.join(", "), s("priority"))
        }
        "proxy.heartbeat" => format!(
            "{}, nodes {}/{}, active dispatches {}",
            s("status"),
            n("nodes_online"),
            n("nodes_total"),
            n("active_dispatches")
        ),
        "proxy.nodes_changed" => {
            let count = p.get("nodes").and_then(Value::as_array).map(Vec::len);
            format!("{} nodes", count.unwrap_or(0))
        }
        "proxy.status_changed" => format!("{} {}", s("status"), s("reason")),
        _ => entity,
    }
    .trim()
    .to_owned()
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_FIELD) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The last [`RECENT_EVENTS`] events, oldest first.
#[derive(Debug, Default)]
pub struct RecentEvents(Mutex<VecDeque<RecentEvent>>);

impl RecentEvents {
    pub fn push(&self, ev: RecentEvent) {
        let mut q = lock(&self.0);
        if q.len() == RECENT_EVENTS {
            q.pop_front();
        }
        q.push_back(ev);
    }
    pub fn snapshot(&self) -> Vec<RecentEvent> {
        lock(&self.0).iter().cloned().collect()
    }
}

/// Upper bounds (seconds) of the C-STORE round-trip histogram buckets.
pub const RTT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Instances a node acknowledged as stored, and their dataset bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeSent {
    pub instances: u64,
    pub bytes: u64,
}

/// C-STORE round trips: per-bucket counts (not cumulative), sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct RttSnapshot {
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Default for RttSnapshot {
    fn default() -> Self {
        Self {
            buckets: vec![0; RTT_BUCKETS.len()],
            sum_seconds: 0.0,
            count: 0,
        }
    }
}

/// What the senders did, for `/metrics`.
#[derive(Debug, Default)]
pub struct SendStats {
    per_node: Mutex<BTreeMap<String, NodeSent>>,
    rtt: Mutex<RttSnapshot>,
    /// Instances handed to a node's senders and not yet acknowledged.
    in_flight: Mutex<BTreeMap<String, u64>>,
    /// Each node's sender pool figures (associations, queue, outcomes).
    pools: Mutex<BTreeMap<String, std::sync::Arc<crate::send::pool::PoolStats>>>,
    /// Per node, the last hour minute by minute (the page's sparklines).
    history: ThroughputHistory,
}

impl SendStats {
    pub fn register_pool(
        &self,
        node_id: &str,
        stats: std::sync::Arc<crate::send::pool::PoolStats>,
    ) {
        lock(&self.pools).insert(node_id.to_owned(), stats);
    }
    pub fn unregister_pool(&self, node_id: &str) {
        lock(&self.pools).remove(node_id);
    }
    pub fn pool(&self, node_id: &str) -> Option<std::sync::Arc<crate::send::pool::PoolStats>> {
        lock(&self.pools).get(node_id).cloned()
    }
    pub fn add_in_flight(&self, node_id: &str, n: u64) {
        *lock(&self.in_flight).entry(node_id.to_owned()).or_default() += n;
    }
    pub fn settle_in_flight(&self, node_id: &str, n: u64) {
        let mut m = lock(&self.in_flight);
        if let Some(v) = m.get_mut(node_id) {
            *v = v.saturating_sub(n);
            if *v == 0 {
                m.remove(node_id);
            }
        }
    }
    pub fn in_flight(&self, node_id: &str) -> u64 {
        lock(&self.in_flight).get(node_id).copied().unwrap_or(0)
    }
    /// One instance acknowledged as stored by `node_id`.
    pub fn stored(&self, node_id: &str, bytes: u64, rtt: Duration) {
        {
            let mut m = lock(&self.per_node);
            let e = m.entry(node_id.to_owned()).or_default();
            e.instances += 1;
            e.bytes += bytes;
        }
        self.history
            .record(node_id, bytes, minute_of(crate::clock::now_ms()));
        let secs = rtt.as_secs_f64();
        let mut h = lock(&self.rtt);
        if let Some(i) = RTT_BUCKETS.iter().position(|b| secs <= *b) {
            h.buckets[i] += 1;
        }
        h.sum_seconds += secs;
        h.count += 1;
    }
    pub fn per_node(&self) -> BTreeMap<String, NodeSent> {
        lock(&self.per_node).clone()
    }
    pub fn rtt(&self) -> RttSnapshot {
        lock(&self.rtt).clone()
    }
    /// `node_id`'s last hour up to `now_ms`, minute by minute, oldest first.
    pub fn last_hour(&self, node_id: &str, now_ms: u64) -> Vec<Minute> {
        self.history.last_hour(node_id, minute_of(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_hundred() {
        let r = RecentEvents::default();
        for i in 0..150 {
            r.push(RecentEvent::outgoing(
                "pong",
                &format!(r#"{{"correlation_id":"c{i}","payload":{{}}}}"#),
            ));
        }
        let s = r.snapshot();
        assert_eq!(s.len(), RECENT_EVENTS);
        assert_eq!(s[0].correlation_id, "c50");
        assert_eq!(s[99].correlation_id, "c149");
    }

    #[test]
    fn summaries_use_known_fields_and_are_bounded() {
        let frame = serde_json::json!({
            "event_type": "dispatch.status", "correlation_id": "corr_1",
            "entity_type": "session", "entity_id": "sess_1",
            "payload": {"node_id": "n1", "status": "sending", "files_sent": 2, "files_total": 5, "secret": "x"}
        })
        .to_string();
        let e = RecentEvent::outgoing("dispatch.status", &frame);
        assert_eq!(e.summary, "session sess_1: n1 sending 2/5");
        assert_eq!(e.direction, Direction::Out);
        let long = RecentEvent::outgoing("x".repeat(500).as_str(), "not json");
        assert!(long.event_type.chars().count() <= MAX_FIELD + 1);
        assert_eq!(long.correlation_id, "");
    }

    #[test]
    fn rtt_lands_in_its_bucket() {
        let s = SendStats::default();
        s.stored("n1", 100, Duration::from_millis(3));
        s.stored("n1", 50, Duration::from_secs(100));
        let h = s.rtt();
        assert_eq!(h.count, 2);
        assert_eq!(h.buckets[2], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(
            h.buckets.iter().sum::<u64>(),
            1,
            "over 30 s is only in +Inf"
        );
        assert_eq!(
            s.per_node()["n1"],
            NodeSent {
                instances: 2,
                bytes: 150
            }
        );
        let hour = s.last_hour("n1", crate::clock::now_ms());
        assert_eq!(
            hour.iter().map(|m| m.bytes).sum::<u64>(),
            150,
            "the sparkline sees them"
        );
    }

    #[test]
    fn publishing_without_subscribers_or_to_a_slow_one_never_blocks() {
        let f = Feed::default();
        f.publish(FeedEvent::Link);
        let mut rx = f.subscribe();
        for i in 0..(FEED_CAPACITY + 10) {
            f.publish(FeedEvent::Dispatch(i.to_string()));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
