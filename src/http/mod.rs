//! The local HTTP server (APPLIANCE.md "Status page and local API"): probes,
//! the JSON API and operator actions. It only reads the actors' board and sends
//! them messages; it never changes state by itself.
//!
//! Files: `probes.rs` (`/healthz`, `/readyz`), `api.rs` (JSON reads),
//! `actions.rs` (POST operator actions on nodes), `dispatches.rs` (dispatch reads
//! and actions), `auth.rs` (the token rule).

mod actions;
mod api;
mod auth;
mod dispatches;
mod probes;

use std::net::SocketAddr;

use actix_web::{web, App, HttpServer};
use laminate_actors::system::Running;

pub use auth::ActionPolicy;

/// What every handler can read.
#[derive(Clone)]
pub struct AppState {
    pub running: Running,
    pub policy: ActionPolicy,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(probes::healthz))
        .route("/readyz", web::get().to(probes::readyz))
        .route("/api/status", web::get().to(api::status))
        .route("/api/actors", web::get().to(api::actors))
        .route("/api/nodes", web::get().to(api::nodes))
        .route("/api/nodes/{id}/echo", web::post().to(actions::echo_node))
        .route("/api/sessions", web::get().to(api::sessions))
        .route("/api/dispatches", web::get().to(dispatches::list))
        .route(
            "/api/dispatches/replay",
            web::post().to(dispatches::replay_all),
        )
        .route("/api/dispatches/{id}", web::get().to(dispatches::detail))
        .route(
            "/api/dispatches/{id}/replay",
            web::post().to(dispatches::replay),
        )
        .route(
            "/api/dispatches/{id}/cancel",
            web::post().to(dispatches::cancel),
        );
}

/// Binds the server; the caller awaits it.
pub fn serve(addr: SocketAddr, state: AppState) -> std::io::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(routes)
    })
    // The status page is light; one worker leaves the second core to DICOM work.
    .workers(1)
    // Shutdown is ours (signal → actors → store flush), not actix-web's.
    .disable_signals()
    .shutdown_timeout(2)
    .bind(addr)?
    .run();
    Ok(server)
}
