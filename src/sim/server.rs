//! The simulator's thread: one actix `System` that starts and stops the HTTP server on
//! orders from the handle, and the request router.
//!
//! The server is a plain `HttpServer` with one worker. Stopping it non-gracefully ends
//! the worker's runtime, which drops every open connection at once: that is exactly a
//! backend outage as the appliance sees it.

use std::io;
use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{http::Method, web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::state::Shared;
use super::{downloads, ws};

/// An order for the simulator's thread; each carries the channel for its answer.
pub(crate) enum Ctl {
    /// Serve on this (already bound) listener.
    Up(TcpListener, mpsc::Sender<io::Result<()>>),
    /// Stop serving and drop every connection.
    Down(mpsc::Sender<()>),
}

/// Starts the simulator's thread; it serves with TLS when `tls` is given. Dropping the returned sender ends the thread (after
/// stopping the server); join the handle to wait for that.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    tls: Option<rustls::ServerConfig>,
) -> io::Result<(UnboundedSender<Ctl>, JoinHandle<()>)> {
    let (tx, mut rx) = unbounded_channel::<Ctl>();
    let thread = std::thread::Builder::new()
        .name("backend-sim".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut server: Option<ServerHandle> = None;
                while let Some(ctl) = rx.recv().await {
                    match ctl {
                        Ctl::Up(listener, reply) => {
                            if let Some(old) = server.take() {
                                old.stop(false).await;
                            }
                            let started = start(listener, tls.clone(), shared.clone())
                                .map(|h| server = Some(h));
                            let _ = reply.send(started);
                        }
                        Ctl::Down(reply) => {
                            if let Some(old) = server.take() {
                                old.stop(false).await;
                            }
                            // The connection tasks died with the worker; forget their channels.
                            shared.update(|s| s.current = None);
                            let _ = reply.send(());
                        }
                    }
                }
                if let Some(old) = server.take() {
                    old.stop(false).await;
                }
            });
        })?;
    Ok((tx, thread))
}

fn start(
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    shared: Arc<Shared>,
) -> io::Result<ServerHandle> {
    let data = web::Data::from(shared);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(route))
    })
    .workers(1)
    // Like a real backend: small frames pushed back to back must not wait on Nagle.
    .tcp_nodelay(true)
    // The simulator lives inside test processes and the demo: signals belong to them.
    .disable_signals()
    .shutdown_timeout(0);
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config)?,
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// Routes by path suffix, so that a backend URL with a path prefix (`/laminate/proxy/ws`)
/// works like the bare one (PROTOCOL.md §1, §5).
async fn route(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, actix_web::Error> {
    let path = req.path().to_owned();
    if path.ends_with("/proxy/ws") {
        return ws::upgrade(req, body, shared.into_inner()).await;
    }
    if let Some((kind, id)) = downloads::parse_path(&path) {
        if req.method() == Method::GET {
            return Ok(downloads::serve(&req, kind, id, &shared));
        }
        return Ok(HttpResponse::MethodNotAllowed().finish());
    }
    if ws::is_upgrade(&req) {
        ws::record_wrong_path(&req, &shared);
    }
    Ok(HttpResponse::NotFound().finish())
}
