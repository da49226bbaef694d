//! Dispatches in the local API: list (a page at a time, newest first) and detail
//! (read from the journal on a blocking thread), and the operator actions replay,
//! replay-all-failed and cancel (sent to the dispatcher, behind the token rule).
//!
//! The list stays a JSON array; when there is more, the next page's cursor is in the
//! `X-Next-Before` header (and a `Link: <…>; rel="next"` header with the whole URL):
//! `?before={cursor}` continues with the same `limit` and `status`.

use actix_web::{web, HttpRequest, HttpResponse};
use laminate_actors::dispatch::outcomes::dispatch_outcomes;
use laminate_actors::dispatch::{CancelRequested, ReplayFailedRequested, ReplayRequested};
use laminate_store::{DispatchRecord, DispatchState, Journal, JournalCursor};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;

/// The JSON shape of APPLIANCE.md (`stage`, `replays`, `label` and each node's
/// `parked_until` added).
pub fn dispatch_json(r: &DispatchRecord) -> Value {
    let now = laminate_actors::clock::now_ms();
    json!({
        "id": r.id,
        "correlation_id": r.correlation_id,
        "entity_type": r.entity_type,
        "entity_id": r.entity_id,
        "priority": r.priority,
        "state": r.state(),
        "stage": r.stage,
        "label": r.label,
        "replays": r.replays,
        "created_at": laminate_actors::clock::ms_to_rfc3339(r.created_at_ms),
        "updated_at": laminate_actors::clock::ms_to_rfc3339(r.updated_at_ms),
        "nodes": r.nodes.iter().map(|n| json!({
            "node_id": n.node_id,
            "status": n.status,
            "progress": n.progress(),
            "files_sent": n.files_sent,
            "files_total": n.files_total,
            "error": n.error,
            // Failed and parked: replayed when the node answers C-ECHO again, until then.
            "parked_until": n.is_parked(now).then(|| n.parked_until_ms.map(laminate_actors::clock::ms_to_rfc3339)).flatten(),
        })).collect::<Vec<_>>(),
    })
}

/// A page's size when `?limit=` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page (a larger `?limit=` is cut to it).
pub const MAX_LIMIT: usize = 1000;
/// The response header holding the next page's cursor.
pub const NEXT_BEFORE: &str = "x-next-before";

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    /// At most this many (newest first), 1–[`MAX_LIMIT`].
    limit: Option<usize>,
    /// A cursor from [`NEXT_BEFORE`]: only dispatches listed after it.
    before: Option<String>,
}

/// The `state` named by `?status=`; `Err` for a name that no dispatch can have.
fn state_of(s: &str) -> Result<DispatchState, ()> {
    serde_json::from_value(Value::String(s.to_owned())).map_err(|_| ())
}

pub async fn list(state: web::Data<AppState>, q: web::Query<ListQuery>) -> HttpResponse {
    let filter = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => match state_of(s) {
            Ok(st) => Some(st),
            // No dispatch is in that state (as before paging: an empty list).
            Err(()) => return HttpResponse::Ok().json(Vec::<Value>::new()),
        },
    };
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(c) => match c.parse::<JournalCursor>() {
            Ok(c) => Some(c),
            Err(e) => {
                return HttpResponse::BadRequest().json(json!({ "error": format!("before: {e}") }))
            }
        },
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let store = state.running.store.clone();
    let page = web::block(move || store.journal_page(filter, before.as_ref(), limit)).await;
    match page {
        Ok(Ok(page)) => {
            let rows: Vec<Value> = page.records.iter().map(dispatch_json).collect();
            let mut resp = HttpResponse::Ok();
            if let Some(next) = page.next {
                let next = next.to_string();
                let status = q
                    .status
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("&status={s}"))
                    .unwrap_or_default();
                resp.insert_header((NEXT_BEFORE, next.clone()))
                    .insert_header((
                        "link",
                        format!(
                            r#"</api/dispatches?limit={limit}&before={next}{status}>; rel="next""#
                        ),
                    ));
            }
            resp.json(rows)
        }
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({ "error": e.to_string() })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() })),
    }
}

fn find(state: &AppState, id: &str) -> Result<Option<DispatchRecord>, String> {
    let store = &state.running.store;
    match store.journal_get(id).map_err(|e| e.to_string())? {
        Some(r) => Ok(Some(r)),
        None => store.journal_by_correlation(id).map_err(|e| e.to_string()),
    }
}

/// One dispatch with what the list leaves out (APPLIANCE.md "Per-instance
/// outcome"): `skipped` (archive entries not delivered, with why;
/// `skipped_total` counts them all when the list is cut) and per node
/// `outcomes` (every instance that failed or was transcoded). Blocking.
pub fn detail_json(
    store: &laminate_store::Store,
    rec: &DispatchRecord,
) -> Result<Value, laminate_store::StoreError> {
    let node_ids: Vec<String> = rec.nodes.iter().map(|n| n.node_id.clone()).collect();
    let found = dispatch_outcomes(store, &rec.id, &node_ids)?;
    let mut v = dispatch_json(rec);
    v["skipped"] = json!(found.skipped.entries);
    v["skipped_total"] = json!(found.skipped.total);
    if let Some(nodes) = v["nodes"].as_array_mut() {
        for n in nodes {
            n["outcomes"] = n["node_id"]
                .as_str()
                .and_then(|id| found.nodes.get(id))
                .map_or_else(|| json!([]), |o| json!(o));
        }
    }
    Ok(v)
}

fn detail_of(state: &AppState, id: &str) -> Result<Option<Value>, String> {
    match find(state, id)? {
        Some(rec) => detail_json(&state.running.store, &rec)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

pub async fn detail(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let id = path.into_inner();
    let found = {
        let (state, id) = (state.clone(), id.clone());
        web::block(move || detail_of(&state, &id)).await
    };
    match found {
        Ok(Ok(Some(v))) => HttpResponse::Ok().json(v),
        Ok(Ok(None)) => {
            HttpResponse::NotFound().json(json!({ "error": format!("no dispatch {id}") }))
        }
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({ "error": e })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() })),
    }
}

#[derive(Deserialize, Default)]
pub struct ReplayBody {
    nodes: Option<Vec<String>>,
}

pub async fn replay(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(refusal) = state.policy.check(&req) {
        return refusal.response();
    }
    let body: ReplayBody = if body.is_empty() {
        ReplayBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return HttpResponse::BadRequest()
                    .json(json!({ "error": format!("body must be {{\"nodes\": [...]}}: {e}") }))
            }
        }
    };
    let msg = ReplayRequested {
        id: path.into_inner(),
        nodes: body.nodes,
    };
    answer(state.running.peers.dispatcher.send(msg).await)
}

pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    if let Err(refusal) = state.policy.check(&req) {
        return refusal.response();
    }
    let msg = CancelRequested {
        id: path.into_inner(),
    };
    answer(state.running.peers.dispatcher.send(msg).await)
}

fn answer(res: Result<Result<DispatchRecord, String>, actix::MailboxError>) -> HttpResponse {
    match res {
        Ok(Ok(r)) => HttpResponse::Ok().json(dispatch_json(&r)),
        Ok(Err(e)) if e.starts_with("no dispatch") => {
            HttpResponse::NotFound().json(json!({ "error": e }))
        }
        Ok(Err(e)) => HttpResponse::Conflict().json(json!({ "error": e })),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(json!({ "error": format!("dispatcher unavailable: {e}") })),
    }
}

#[derive(Deserialize)]
pub struct ReplayAllQuery {
    status: Option<String>,
    since: Option<String>,
}

pub async fn replay_all(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<ReplayAllQuery>,
) -> HttpResponse {
    if let Err(refusal) = state.policy.check(&req) {
        return refusal.response();
    }
    if q.status.as_deref().is_some_and(|s| s != "failed") {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "only status=failed can be replayed in bulk" }));
    }
    let since_ms = match q.since.as_deref() {
        None | Some("") => None,
        Some(t) => match parse_since(t) {
            Ok(ms) => Some(ms),
            Err(e) => return HttpResponse::BadRequest().json(json!({ "error": e })),
        },
    };
    match state
        .running
        .peers
        .dispatcher
        .send(ReplayFailedRequested { since_ms })
        .await
    {
        Ok(Ok(ids)) => HttpResponse::Ok().json(json!({ "replayed": ids })),
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({ "error": e })),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(json!({ "error": format!("dispatcher unavailable: {e}") })),
    }
}

/// `since` of a bulk replay: an RFC 3339 time, as epoch ms.
pub fn parse_since(t: &str) -> Result<u64, String> {
    match time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        Ok(t) => Ok(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)),
        Err(_) => Err(format!(
            "since must be an RFC 3339 time like 2025-10-04T06:00:00Z, got {t}"
        )),
    }
}
