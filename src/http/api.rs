//! JSON reads: `/api/status`, `/api/actors`, `/api/nodes` (shapes of
//! APPLIANCE.md; `null` where this version does not know a figure yet).
//! `/api/nodes` and most of `/api/status` come from the board; the store's figures
//! (catalog counters, the journal's counts and active dispatches) are read on
//! actix-web's blocking pool, so a slow disk never stalls the HTTP threads.

use std::sync::atomic::Ordering;

use laminate_store::{Catalog, Journal};

use actix_web::{web, HttpResponse};
use laminate_actors::board::{Board, LinkView};
use laminate_config::Node;
use serde_json::{json, Value};

use super::AppState;

pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    // The store's reads wait on the disk: off the HTTP threads.
    let figures = {
        let state = state.clone();
        web::block(move || (store_figures(&state), dispatch_figures(&state))).await
    };
    let (store, dispatches) = match figures {
        Ok(f) => f,
        Err(e) => {
            let e = json!({ "error": e.to_string() });
            (e.clone(), e)
        }
    };
    let board = &state.running.board;
    let link = board.link();
    let proxy = board.proxy_status();
    let c = &board.counters;
    HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "link": link_json(&link),
        "proxy": {
            "status": proxy.status,
            "is_active": proxy.is_active,
            "reason": proxy.reason,
        },
        "router": {
            "events_in": c.events_in.load(Ordering::Relaxed),
            "bad_frames": c.bad_frames.load(Ordering::Relaxed),
            "duplicates": c.duplicates.load(Ordering::Relaxed),
            "unknown_types": c.unknown_types.load(Ordering::Relaxed),
            "events_out": c.events_out.load(Ordering::Relaxed),
        },
        "config": config_json(board),
        "store": store,
        "dispatches": dispatches,
        "outbox": { "depth": board.outbox_depth() },
    }))
}

/// The `config` object of `/api/status`: the last rejected change (kept after valid
/// ones), when, how many, and the unknown `proxy.json` keys.
pub fn config_json(board: &Board) -> Value {
    let r = board.config_rejections();
    json!({
        "last_error": r.last_error,
        "last_error_at": r.last_error_at,
        "rejected": r.rejected,
        "unknown_keys": board.unknown_config_keys(),
    })
}

pub async fn actors(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(actors_json(&state.running.board))
}

/// `/api/actors`: every actor's health; the dispatch jobs' row adds `stages`,
/// each running job's stages with the time since their last progress (what
/// the stage watchdog judges).
pub fn actors_json(board: &laminate_actors::board::Board) -> Value {
    let stages = board.stages.reports();
    let rows: Vec<Value> = board
        .health
        .reports()
        .into_iter()
        .map(|r| {
            let mut v = json!(r);
            if r.name == JOBS_ACTOR {
                v["stages"] = json!(stages);
            }
            v
        })
        .collect();
    Value::Array(rows)
}

/// The health registry's name of the dispatch jobs' pool.
const JOBS_ACTOR: &str = "dispatch-jobs";

/// The `link` object of `/api/status` (also the `link.status` feed message).
pub fn link_json(link: &LinkView) -> Value {
    json!({
        "state": link.state,
        "since": link.since,
        "last_error": link.last_error,
        "reconnects": link.reconnects,
        "notice": link.notice,
        "next_attempt_at": link.next_attempt_at,
    })
}

pub async fn nodes(state: web::Data<AppState>) -> HttpResponse {
    let board = &state.running.board;
    let rows: Vec<Value> = board.nodes().iter().map(|n| node_json(board, n)).collect();
    HttpResponse::Ok().json(rows)
}

/// One row of `/api/nodes` (also the `node.status` feed message).
pub fn node_json(board: &Board, n: &Node) -> Value {
    let echo = board.echo(&n.node_id);
    json!({
        "node_id": n.node_id,
        "name": n.name,
        "ae_title": n.ae_title,
        "host": n.host,
        "port": n.port,
        "is_active": n.is_active,
        "online": echo.online,
        "last_echo_at": echo.last_echo_at,
        "echo_rtt_ms": echo.echo_rtt_ms,
        "last_echo_error": echo.last_error,
        "in_flight": board.sent.in_flight(&n.node_id),
        "sender": sender_json(board, n),
        "tls": n.site.as_ref().is_some_and(|s| s.tls.is_some()),
        "site_settings": site_json(n),
        // The file on disk was rejected: `site_settings` are the previous ones.
        "node_settings_error": board.node_settings_error(),
    })
}

/// The node's settings from the site's `node-settings.json`, `null` when it has none.
fn site_json(n: &Node) -> Value {
    let Some(s) = &n.site else {
        return Value::Null;
    };
    json!({
        "tls": s.tls.as_ref().map(|t| json!({
            "ca_file": t.ca_file,
            "cert_file": t.cert_file,
            "key_file": t.key_file,
            "verify_hostname": t.verify_hostname,
            "mutual": t.cert_file.is_some(),
        })),
        "storage_commitment": s.storage_commitment,
        "commitment_timeout_s": s.commitment_timeout_s,
        "max_associations": s.max_associations,
        "prefer_transfer_syntax": s.prefer_transfer_syntax.as_str(),
    })
}

/// A node's sender pool: associations open / max, queue depth, instances
/// sent as they were, transcoded, failed, its last error.
fn sender_json(board: &Board, n: &Node) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    match board.sent.pool(&n.node_id) {
        Some(p) => json!({
            "associations_open": p.open.load(Relaxed),
            "associations_max": p.max.load(Relaxed),
            "queued": p.queued.load(Relaxed),
            "sent_as_is": p.sent_as_is.load(Relaxed),
            "transcoded": p.transcoded.load(Relaxed),
            "failed": p.failed.load(Relaxed),
            "restarts": p.restarts.load(Relaxed),
            "last_error": p.last_error(),
        }),
        // Nothing sent to it since start-up.
        None => json!({
            "associations_open": 0,
            "associations_max": n.max_associations(),
            "queued": 0,
            "sent_as_is": 0,
            "transcoded": 0,
            "failed": 0,
            "restarts": 0,
            "last_error": null,
        }),
    }
}

/// The `store` object of `/api/status`.
///
/// `free_bytes` is the data dir's free space read now; `evicted` / `evicted_bytes` count
/// the instances the bounded cache evicted since start-up.
pub fn store_figures(state: &AppState) -> Value {
    let store = &state.running.store;
    let disk = &state.running.disk;
    let free_bytes = disk.free_bytes_now().ok();
    let (evicted, evicted_bytes) = disk.evicted();
    let mut out = match store.figures() {
        Ok(f) => json!({
            "patients": f.patients,
            "sessions": f.sessions,
            "scans": f.scans,
            "instances": f.instances,
            "bytes": f.bytes,
            "db_bytes": store.size_on_disk().ok(),
        }),
        Err(e) => {
            json!({ "error": e.to_string(), "patients": null, "sessions": null, "scans": null, "instances": null, "bytes": null })
        }
    };
    out["free_bytes"] = json!(free_bytes);
    out["min_free_bytes"] = json!(disk.min_free_bytes());
    out["evicted"] = json!(evicted);
    out["evicted_bytes"] = json!(evicted_bytes);
    out
}

/// The `dispatches` object of `/api/status`: the journal's counts, and the active
/// dispatches alone for `queued` (so it costs the same with any amount of history).
pub fn dispatch_figures(state: &AppState) -> Value {
    let store = &state.running.store;
    let figures = store.journal_counts().and_then(|c| {
        let active = store.journal_active()?;
        let parked = laminate_store::Parking::parked_all(store)?.len();
        Ok((c, active, parked))
    });
    match figures {
        Ok((c, active, parked)) => {
            let queued = active
                .iter()
                .filter(|r| r.stage == laminate_store::Stage::Queued)
                .count();
            json!({
                "active": c.active,
                "queued": queued,
                "failed": c.failed,
                "completed": c.completed,
                "cancelled": c.cancelled,
                "parked": parked,
            })
        }
        Err(e) => json!({ "error": e.to_string(), "active": null, "queued": null, "failed": null }),
    }
}

pub async fn sessions(state: web::Data<AppState>) -> HttpResponse {
    let store = state.running.store.clone();
    match web::block(move || store.sessions()).await {
        Ok(Ok(s)) => HttpResponse::Ok().json(s),
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({ "error": e.to_string() })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() })),
    }
}
