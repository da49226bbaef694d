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
