//! Operator actions (POST), each behind the token rule of `auth.rs`.

use actix_web::{web, HttpRequest, HttpResponse};
use laminate_actors::nodes::EchoRequested;

use super::AppState;

/// `POST /api/nodes/{id}/echo`: a C-ECHO now; answers the outcome.
pub async fn echo_node(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(refusal) = state.policy.check(&req) {
        return refusal.response();
    }
    let node_id = path.into_inner();
    match state
        .running
        .peers
        .nodes
        .send(EchoRequested { node_id })
        .await
    {
        Ok(Ok(result)) => HttpResponse::Ok().json(result),
        Ok(Err(e)) => HttpResponse::NotFound().json(serde_json::json!({ "error": e })),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "error": format!("node monitor unavailable: {e}") })),
    }
}

/// `POST /api/nodes/reload`: re-read `node-settings.json` now (it is also polled).
/// 200 `{"ok": true, "nodes": N}` when applied; 422 `{"ok": false, "error"}` when
/// rejected (the previous settings stay).
pub async fn reload_node_settings(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(refusal) = state.policy.check(&req) {
        return refusal.response();
    }
    match state
        .running
        .peers
        .config
        .send(laminate_actors::config::NodeSettingsReloadRequested)
        .await
    {
        Ok(Ok(n)) => HttpResponse::Ok().json(serde_json::json!({ "ok": true, "nodes": n })),
        Ok(Err(e)) => {
            HttpResponse::UnprocessableEntity().json(serde_json::json!({ "ok": false, "error": e }))
        }
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "error": format!("config actor unavailable: {e}") })),
    }
}
