//! The doctor's backend checks, one layer at a time so the failing one names
//! the fix: DNS resolution of the backend host, a TCP connect, the TLS
//! handshake (`wss`, with the same roots and `--ca-file` as `run`), and the
//! WebSocket upgrade at `{backend_url}/proxy/ws?proxy_key=…` with the awc client
//! the link uses. The socket is closed right after the upgrade; a backend that
//! refuses the key closes it first with 4003 (PROTOCOL.md §1).
//!
//! When a laminate-proxy already runs here, the WebSocket is not opened: a
//! second connection with the same key would replace the running one. Its own
//! link state is reported instead.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::ws::{CloseCode, Frame, Message as WsMessage};
use futures_util::{SinkExt as _, StreamExt as _};
use laminate_actors::link::tls;
use laminate_config::Settings;
use rustls::pki_types::ServerName;

use super::ports::RunningAppliance;
use super::Report;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
const WS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upgraded socket is watched for the backend's rejection.
const REJECTION_GRACE: Duration = Duration::from_millis(1500);
/// PROTOCOL.md §1: wrong proxy key.
const CLOSE_BAD_KEY: u16 = 4003;

pub fn check(r: &mut Report, s: &Settings, running: Option<&RunningAppliance>) {
    let url = &s.ws_url;
    let secure = url.scheme() == "wss";
    let Some(host) = url
        .host_str()
        .map(|h| h.trim_matches(['[', ']']).to_owned())
    else {
        r.fail(
            "backend dns",
            "the backend URL has no host",
            "set --backend-url to e.g. wss://laminate.example/",
        );
        return;
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if secure { 443 } else { 80 });

    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            r.fail(
                "backend dns",
                format!("cannot resolve {host}: {e}"),
                "check the host name in --backend-url (LAMINATE_BACKEND_URL) and this machine's DNS settings",
            );
            return;
        }
    };
    if host.parse::<IpAddr>().is_ok() {
        r.ok(
            "backend dns",
            format!("{host} is an IP address, nothing to resolve"),
        );
    } else {
        let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        r.ok(
            "backend dns",
            format!("{host} resolves to {}", shown.join(", ")),
        );
    }

    let started = Instant::now();
    let mut last_err = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(st) => {
                stream = Some((st, *a));
                break;
            }
            Err(e) => last_err = Some(format!("{a}: {e}")),
        }
    }
    let Some((stream, addr)) = stream else {
        r.fail(
            "backend tcp",
            format!("cannot connect to port {port}: {}", last_err.unwrap_or_default()),
            "check that this machine may reach the backend (firewall, outbound proxy) and the port in --backend-url",
        );
        return;
    };
    r.ok(
        "backend tcp",
        format!(
            "connected to {addr} in {} ms",
            started.elapsed().as_millis()
        ),
    );

    let tls_config = match tls::client_config(s.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            r.fail(
                "backend tls",
                format!("--ca-file (LAMINATE_PROXY_CA_FILE): {e}"),
                "give a readable PEM file of CA certificates, or leave it unset",
            );
            return;
        }
    };
    if secure {
        match handshake(stream, &host, tls_config.clone()) {
            Ok(version) => r.ok(
                "backend tls",
                format!("handshake with {host} ok ({version}), certificate trusted"),
            ),
            Err(e) => {
                r.fail(
                    "backend tls",
                    format!("handshake with {host} failed: {e}"),
                    "if the backend's certificate comes from a private CA, give that CA with --ca-file (LAMINATE_PROXY_CA_FILE); check the host name and this machine's clock",
                );
                return;
            }
        }
    } else {
        drop(stream);
        let loopback = addrs.iter().all(|a| a.ip().is_loopback());
        if loopback {
            r.ok("backend tls", "not used (ws:// to this machine)");
        } else {
            r.warn(
                "backend tls",
                "not used: ws:// sends the proxy key and all events unencrypted",
                "use a wss:// backend URL",
            );
        }
    }

    match running {
        Some(app) => report_running(r, app),
        None => websocket(r, s, tls_config),
    }
}

/// A plain rustls handshake over `stream`; the negotiated version on success.
fn handshake(
    mut stream: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TLS_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TLS_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream).map_err(|e| e.to_string())?;
    }
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}").replace('_', "."))
        .unwrap_or_else(|| "TLS".to_owned());
    conn.send_close_notify();
    let _ = conn.complete_io(&mut stream);
    // Nothing more to read: a best-effort drain of the peer's close_notify.
    let mut buf = [0u8; 64];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.read(&mut buf);
    let _ = stream.flush();
    Ok(version)
}

fn report_running(r: &mut Report, app: &RunningAppliance) {
    const CHECK: &str = "backend websocket";
    match app.link_state() {
        Some((state, _)) if state == "connected" => r.ok(
            CHECK,
            "not opened (a second connection would replace the running appliance's); the running appliance is connected",
        ),
        Some((state, err)) => r.fail(
            CHECK,
            format!(
                "not opened (the running appliance holds the key); its link is {state}{}",
                err.map(|e| format!(": {e}")).unwrap_or_default()
            ),
            "see the status page's Backend link section; stop the appliance and run doctor again to test the handshake itself",
        ),
        None => r.warn(
            CHECK,
            "not opened (a laminate-proxy runs here) and its /api/status does not say the link state",
            "stop the appliance and run doctor again to test the handshake",
        ),
    }
}

enum WsOutcome {
    /// Upgraded and not closed within the grace period.
    Accepted,
    /// The backend closed at once with this code and reason.
    Closed(u16, String),
    /// The upgrade itself failed.
    Failed(String),
}

fn websocket(r: &mut Report, s: &Settings, tls_config: Arc<rustls::ClientConfig>) {
    const CHECK: &str = "backend websocket";
    let url = s.ws_url.to_string();
    let outcome = actix_rt::System::new().block_on(async move {
        let client = laminate_actors::http_client::client_builder(tls_config)
            .timeout(WS_TIMEOUT)
            .finish();
        let (_resp, mut framed) = match client.ws(url.as_str()).connect().await {
            Ok(ok) => ok,
            Err(e) => return WsOutcome::Failed(e.to_string()),
        };
        let deadline = tokio::time::Instant::now() + REJECTION_GRACE;
        let outcome = loop {
            match tokio::time::timeout_at(deadline, framed.next()).await {
                Err(_) => break WsOutcome::Accepted,
                Ok(None) => {
                    break WsOutcome::Closed(1006, "connection dropped without a Close".into())
                }
                Ok(Some(Ok(Frame::Close(reason)))) => {
                    let (code, why) = reason
                        .map(|c| (u16::from(c.code), c.description.unwrap_or_default()))
                        .unwrap_or((1005, String::new()));
                    break WsOutcome::Closed(code, why);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => break WsOutcome::Failed(e.to_string()),
            }
        };
        if matches!(outcome, WsOutcome::Accepted) {
            let _ = framed
                .send(WsMessage::Close(Some(CloseCode::Normal.into())))
                .await;
            // Give the Close a moment to be answered; the process ends right after.
            let _ = tokio::time::timeout(Duration::from_millis(300), framed.next()).await;
        }
        outcome
    });
    let at = s.ws_url_redacted();
    match outcome {
        WsOutcome::Accepted => r.ok(
            CHECK,
            format!("{at}: upgraded, the key was accepted (closed again at once)"),
        ),
        WsOutcome::Closed(CLOSE_BAD_KEY, why) => r.fail(
            CHECK,
            format!("{at}: the backend rejected the proxy key (close 4003{})", suffix(&why)),
            "copy this proxy's key again from Laminate into --proxy-key (LAMINATE_PROXY_KEY)",
        ),
        WsOutcome::Closed(code, why) => r.fail(
            CHECK,
            format!("{at}: the backend closed the connection at once (close {code}{})", suffix(&why)),
            "see the backend's logs; 4000 means another appliance uses the same key",
        ),
        WsOutcome::Failed(e) => r.fail(
            CHECK,
            format!("{at}: the WebSocket upgrade failed: {e}"),
            "check the path of --backend-url (the appliance adds /proxy/ws) and any HTTP proxy in between",
        ),
    }
}

fn suffix(why: &str) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    }
}
