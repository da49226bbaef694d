//! `GET /api/audit?since=RFC3339&limit=N`: the audit trail's records, oldest first
//! (newest last), read from the day files off the actix threads. With `since`, the
//! first `limit` records at or after it and, when more follow, `next`: the `since`
//! that reads on. Without `since`, the newest `limit` records.

use actix_web::{web, HttpResponse};
use laminate_actors::audit::trail;
use serde::Deserialize;
use serde_json::json;

use super::AppState;

/// Records per answer unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 1000;
/// The most one answer holds.
pub const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
pub struct AuditQuery {
    since: Option<String>,
    limit: Option<usize>,
}

pub async fn audit(state: web::Data<AppState>, q: web::Query<AuditQuery>) -> HttpResponse {
    let since = match q.since.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => match super::dispatches::parse_since(t) {
            Ok(ms) => Some(i128::from(ms)),
            Err(e) => return HttpResponse::BadRequest().json(json!({ "error": e })),
        },
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let dir = state.running.data_dir.clone();
    match web::block(move || trail::read(&dir, since, limit)).await {
        Ok(Ok(page)) => {
            HttpResponse::Ok().json(json!({ "records": page.records, "next": page.next }))
        }
        Ok(Err(e)) => HttpResponse::InternalServerError()
            .json(json!({ "error": format!("cannot read the audit trail: {e}") })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() })),
    }
}
