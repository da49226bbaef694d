//! The local HTTP server (APPLIANCE.md "Status page and local API"): probes,
//! the JSON API and operator actions. It only reads the actors' board and sends
//! them messages; it never changes state by itself.
//!
//! Files: `probes.rs` (`/healthz`, `/readyz`), `api.rs` (JSON reads),
//! `actions.rs` (POST operator actions on nodes), `dispatches.rs` (dispatch reads
//! and actions), `auth.rs` (the token rule), `page.rs` (the status page `/`,
//! with `page.css` and `page.js`), `forms.rs` (the page's actions without
//! JavaScript: `/ui/...` forms answered with a 303 back to `/`), `hub.rs` (the
//! live feed's one renderer), `charts/` (the page's SVG pictures), `ws.rs` (`/ws`, one task per browser),
//! `metrics.rs` (`/metrics`, Prometheus text format), `audit.rs` (`/api/audit`),
//! `operator_audit.rs` (an audit record of every operator action).

mod actions;
mod api;
mod audit;
mod auth;
mod charts;
mod dispatches;
mod forms;
mod hub;
mod metrics;
mod operator_audit;
mod outcomes_view;
mod page;
mod page_rows;
mod probes;
mod ws;

use std::net::SocketAddr;

use actix_web::{web, App, HttpServer};
use laminate_actors::system::Running;

pub use auth::ActionPolicy;
pub use charts::{disk_limits, DEFAULT_MIN_FREE_GB};

/// What every handler can read.
#[derive(Clone)]
pub struct AppState {
    pub running: Running,
    pub policy: ActionPolicy,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page::page))
        .route("/ui/page.css", web::get().to(page::css))
        .route("/ui/page.js", web::get().to(page::js))
        .route("/ui/charts", web::get().to(charts::charts))
        .route("/ui/nodes/{id}/echo", web::post().to(forms::echo))
        .route(
            "/ui/dispatches/replay",
            web::post().to(forms::replay_failed),
        )
        .route("/ui/dispatches/{id}/replay", web::post().to(forms::replay))
        .route("/ui/dispatches/{id}/cancel", web::post().to(forms::cancel))
        .route("/ws", web::get().to(ws::ws))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/healthz", web::get().to(probes::healthz))
        .route("/readyz", web::get().to(probes::readyz))
        .route("/api/status", web::get().to(api::status))
        .route("/api/actors", web::get().to(api::actors))
        .route("/api/nodes", web::get().to(api::nodes))
        .route("/api/nodes/{id}/echo", web::post().to(actions::echo_node))
        .route(
            "/api/nodes/reload",
            web::post().to(actions::reload_node_settings),
        )
        .route("/api/sessions", web::get().to(api::sessions))
        .route("/api/audit", web::get().to(audit::audit))
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

/// Binds the server and starts the live feed's hub; the caller awaits the
/// server. Call inside the actix System.
pub fn serve(addr: SocketAddr, state: AppState) -> std::io::Result<actix_web::dev::Server> {
    let hub = web::Data::new(hub::Hub::start(state.clone()));
    let flashes = web::Data::new(forms::Flashes::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(hub.clone())
            .app_data(flashes.clone())
            .wrap_fn(operator_audit::observe)
            .configure(routes)
    })
    // The status page is light; one worker leaves the second core to DICOM work.
    .workers(1)
    // `/ws` pushes small messages back to back; they must not wait on Nagle.
    .tcp_nodelay(true)
    // Shutdown is ours (signal → actors → store flush), not actix-web's.
    .disable_signals()
    .shutdown_timeout(2)
    .bind(addr)?
    .run();
    Ok(server)
}
