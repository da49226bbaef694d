//! `GET /metrics`: Prometheus text format (OpenMetrics flavour, as encoded by
//! the `prometheus-client` crate), built at each scrape from the board and the
//! store: there is no second copy of any figure to keep in step.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `laminate_events_in_total`, `laminate_events_out_total` | counter | `type` |
//! | `laminate_bad_frames_total`, `laminate_duplicate_events_total` | counter | |
//! | `laminate_dispatches` | gauge | `state` |
//! | `laminate_instances_sent_total`, `laminate_sent_bytes_total` | counter | `node_id` |
//! | `laminate_cstore_rtt_seconds` | histogram | |
//! | `laminate_link_up`, `laminate_link_reconnects_total` | gauge, counter | |
//! | `laminate_actor_up`, `laminate_actor_restarts_total`, `laminate_actor_mailbox_messages` | gauge, counter, gauge | `actor` |
//! | `laminate_node_up`, `laminate_node_echo_rtt_seconds` | gauge | `node_id` |
//! | `laminate_store_instances`, `laminate_cache_bytes`, `laminate_store_database_bytes` | gauge | |
//! | `laminate_disk_free_bytes`, `laminate_disk_min_free_bytes` | gauge | |
//! | `laminate_cache_evicted_instances_total`, `laminate_cache_evicted_bytes_total` | counter (since start-up) | |
//! | `laminate_outbox_events` | gauge | |
//! | `laminate_status_feed_clients`, `laminate_status_feed_dropped_clients_total` | gauge, counter | |
//!
//! Sent bytes are each instance's dataset as stored (what goes on the wire
//! when the node takes the file's own transfer syntax).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use laminate_actors::board::{Counters, LinkState};
use laminate_actors::feed::{RttSnapshot, RTT_BUCKETS};
use laminate_actors::health::ActorState;
use laminate_store::{Catalog, Journal};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::hub::Hub;
use super::AppState;

type Labels = Vec<(String, String)>;

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_owned(), v.to_owned())]
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn fgauge(v: f64) -> Gauge<f64, AtomicU64> {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(v);
    g
}

fn counter_family(values: impl IntoIterator<Item = (Labels, u64)>) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    for (l, v) in values {
        f.get_or_create(&l).inc_by(v);
    }
    f
}

fn gauge_family(values: impl IntoIterator<Item = (Labels, i64)>) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    for (l, v) in values {
        f.get_or_create(&l).set(v);
    }
    f
}

/// The C-STORE round-trip histogram as the board counted it.
#[derive(Debug)]
struct RttHistogram(RttSnapshot);

impl EncodeMetric for RttHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        // Per-bucket counts; the encoder makes them cumulative. The last
        // bucket (+Inf) holds what is above the highest bound.
        let mut buckets: Vec<(f64, u64)> = RTT_BUCKETS
            .iter()
            .copied()
            .zip(h.buckets.iter().copied())
            .collect();
        let counted: u64 = h.buckets.iter().sum();
        buckets.push((f64::INFINITY, h.count.saturating_sub(counted)));
        encoder.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

pub async fn metrics(state: web::Data<AppState>, hub: web::Data<Hub>) -> HttpResponse {
    let (clients, dropped) = (hub.clients(), hub.dropped());
    // The store's figures wait on the disk: collected off the HTTP threads.
    let encoded = web::block(move || {
        let mut registry = collect(&state);
        registry.register(
            "status_feed_clients",
            "Browsers connected to the status page's live feed",
            gauge(clients as i64),
        );
        registry.register(
            "status_feed_dropped_clients",
            "Browsers dropped from the live feed for falling behind",
            counter(dropped),
        );
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).map(|()| body)
    })
    .await;
    match encoded {
        Ok(Ok(body)) => HttpResponse::Ok()
            .insert_header((
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ))
            .body(body),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("cannot collect metrics: {e}\n")),
        Ok(Err(e)) => HttpResponse::InternalServerError()
            .content_type("text/plain")
            .body(format!("cannot encode metrics: {e}\n")),
    }
}

fn collect(state: &AppState) -> Registry {
    let board = &state.running.board;
    let store = &state.running.store;
    let mut r = Registry::with_prefix("laminate");
    let c = &board.counters;

    let by_type = |m: BTreeMap<String, u64>| m.into_iter().map(|(t, n)| (label("type", &t), n));
    r.register(
        "events_in",
        "Events received from the backend, by event type",
        counter_family(by_type(c.in_by_type())),
    );
    r.register(
        "events_out",
        "Events written to the backend, by event type",
        counter_family(by_type(c.out_by_type())),
    );
    r.register(
        "bad_frames",
        "Frames from the backend that were not a valid event",
        counter(Counters::get(&c.bad_frames)),
    );
    r.register(
        "duplicate_events",
        "Events received again and not acted on twice",
        counter(Counters::get(&c.duplicates)),
    );

    if let Ok(c) = store.journal_counts() {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let by_state: BTreeMap<&str, i64> = [
            ("active", n(c.active)),
            ("completed", n(c.completed)),
            ("failed", n(c.failed)),
            ("cancelled", n(c.cancelled)),
        ]
        .into_iter()
        .collect();
        r.register(
            "dispatches",
            "Dispatches in the journal, by state",
            gauge_family(by_state.into_iter().map(|(s, n)| (label("state", s), n))),
        );
    }

    let sent = board.sent.per_node();
    r.register(
        "instances_sent",
        "Instances a node acknowledged as stored",
        counter_family(sent.iter().map(|(n, s)| (label("node_id", n), s.instances))),
    );
    r.register_with_unit(
        "sent",
        "Dataset bytes of the instances a node acknowledged as stored",
        Unit::Bytes,
        counter_family(sent.iter().map(|(n, s)| (label("node_id", n), s.bytes))),
    );
    r.register_with_unit(
        "cstore_rtt",
        "C-STORE round trip, from the first byte of the request to the response",
        Unit::Seconds,
        RttHistogram(board.sent.rtt()),
    );

    let link = board.link();
    r.register(
        "link_up",
        "1 while the backend link is connected",
        gauge(i64::from(link.state == LinkState::Connected)),
    );
    r.register(
        "link_reconnects",
        "Backend connections established after the first one",
        counter(link.reconnects),
    );

    let actors = board.health.reports();
    r.register(
        "actor_up",
        "1 while the actor runs",
        gauge_family(actors.iter().map(|a| {
            (
                label("actor", &a.name),
                i64::from(a.state == ActorState::Running),
            )
        })),
    );
    r.register(
        "actor_restarts",
        "Supervised restarts of the actor",
        counter_family(actors.iter().map(|a| (label("actor", &a.name), a.restarts))),
    );
    r.register(
        "actor_mailbox_messages",
        "Messages waiting in the actor's mailbox",
        gauge_family(
            actors
                .iter()
                .map(|a| (label("actor", &a.name), a.mailbox as i64)),
        ),
    );

    let nodes = board.nodes();
    let node_up = gauge_family(nodes.iter().map(|n| {
        (
            label("node_id", &n.node_id),
            i64::from(board.echo(&n.node_id).online),
        )
    }));
    r.register("node_up", "1 while the node answers C-ECHO", node_up);
    let rtt = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for n in &nodes {
        if let Some(ms) = board.echo(&n.node_id).echo_rtt_ms {
            rtt.get_or_create(&label("node_id", &n.node_id))
                .set(ms / 1000.0);
        }
    }
    r.register_with_unit(
        "node_echo_rtt",
        "Round trip of the node's last successful C-ECHO",
        Unit::Seconds,
        rtt,
    );

    if let Ok(f) = store.figures() {
        r.register(
            "store_instances",
            "DICOM instances in the local cache",
            gauge(f.instances as i64),
        );
        r.register_with_unit(
            "cache",
            "Bytes of the DICOM instances in the local cache",
            Unit::Bytes,
            gauge(f.bytes as i64),
        );
    }
    if let Ok(n) = store.size_on_disk() {
        r.register_with_unit(
            "store_database",
            "Size of the store's database on disk",
            Unit::Bytes,
            fgauge(n as f64),
        );
    }
    let disk = &state.running.disk;
    if let Ok(free) = disk.free_bytes_now() {
        r.register_with_unit(
            "disk_free",
            "Free space of the data dir's file system",
            Unit::Bytes,
            fgauge(free as f64),
        );
    }
    r.register_with_unit(
        "disk_min_free",
        "The free-space floor (min_free_gb)",
        Unit::Bytes,
        fgauge(disk.min_free_bytes() as f64),
    );
    let (evicted, evicted_bytes) = disk.evicted();
    r.register(
        "cache_evicted_instances",
        "Instances the bounded cache evicted since start-up",
        counter(evicted),
    );
    r.register_with_unit(
        "cache_evicted",
        "Bytes the bounded cache evicted since start-up",
        Unit::Bytes,
        counter(evicted_bytes),
    );
    r.register(
        "outbox_events",
        "Events waiting in the durable outbox for the backend",
        gauge(board.outbox_depth() as i64),
    );
    r
}
