//! `/healthz` (the process runs) and `/readyz` (the store is open and every
//! supervised actor runs). The backend link is deliberately not part of
//! readiness: a backend outage must not get the container restarted.

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.running.board.health.readiness() {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Err(why) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {why}\n")),
    }
}
