//! JSON reads: `/api/status`, `/api/actors`, `/api/nodes` (shapes of
//! APPLIANCE.md; `null` where this version does not know a figure yet).

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let board = &state.running.board;
    let link = board.link();
    let proxy = board.proxy_status();
    let c = &board.counters;
    HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "link": {
            "state": link.state,
            "since": link.since,
            "last_error": link.last_error,
            "reconnects": link.reconnects,
            "notice": link.notice,
            "next_attempt_at": link.next_attempt_at,
        },
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
        "config": {
            "last_error": board.config_error(),
            "unknown_keys": board.unknown_config_keys(),
        },
        "store": {
            "patients": null,
            "sessions": null,
            "scans": null,
            "instances": null,
            "bytes": state.running.store.size_on_disk().ok(),
        },
        "dispatches": {
            "active": board.active_dispatches(),
            "queued": null,
            "failed": null,
        },
        "outbox": { "depth": board.outbox_depth() },
    }))
}

pub async fn actors(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.running.board.health.reports())
}

pub async fn nodes(state: web::Data<AppState>) -> HttpResponse {
    let board = &state.running.board;
    let rows: Vec<serde_json::Value> = board
        .nodes()
        .into_iter()
        .map(|n| {
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
                "in_flight": null,
            })
        })
        .collect();
    HttpResponse::Ok().json(rows)
}
