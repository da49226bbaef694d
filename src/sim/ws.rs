//! The `/proxy/ws` endpoint (PROTOCOL.md §1): key check, one connection per key,
//! recording of what the appliance sends, and the orders of the test thread.
//!
//! Each accepted connection is owned by one task on the server's worker. The test thread
//! reaches it through an unbounded channel ([`Cmd`]) held in `State::current`, because
//! the handle's methods are synchronous and must not wait for the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::state::{Attempt, Cmd, Conn, Shared};

/// Close code for a connection with a wrong `proxy_key` (PROTOCOL.md §1).
pub const CLOSE_BAD_KEY: u16 = 4003;
/// Close code for the older connection when a newer one uses the same key (PROTOCOL.md §1).
pub const CLOSE_REPLACED: u16 = 4000;

/// Largest frame we accept from the appliance. Well above the 1 MiB the protocol allows,
/// so that an oversized frame is recorded (and visible to a test) instead of ending the
/// connection with a protocol error that would hide what the appliance sent.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// How long we wait for the appliance's Close reply after closing. Waiting for it (the
/// closing handshake) means the socket is shut only after the peer has read our Close
/// frame; shutting it at once could reset the connection while the peer's frames are in
/// flight and lose the close code on the way.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// True when the request asks for a WebSocket upgrade (used to record attempts on wrong paths).
pub(crate) fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn key_ok(req: &HttpRequest, key: &str) -> bool {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.get("proxy_key").map(String::as_str) == Some(key))
        .unwrap_or(false)
}

/// Records an upgrade attempt on a path that is not `…/proxy/ws` (the caller answers 404).
pub(crate) fn record_wrong_path(req: &HttpRequest, shared: &Shared) {
    let key_ok = key_ok(req, &shared.proxy_key);
    shared.update(|s| {
        s.attempts.push(Attempt {
            at: Instant::now(),
            key_ok,
            path_ok: false,
        });
    });
}

/// `GET …/proxy/ws?proxy_key=…`: accepts the upgrade whatever the key, as the real backend does.
pub(crate) async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    shared: Arc<Shared>,
) -> Result<HttpResponse, actix_web::Error> {
    let key_ok = key_ok(&req, &shared.proxy_key);
    shared.update(|s| {
        s.attempts.push(Attempt {
            at: Instant::now(),
            key_ok,
            path_ok: true,
        })
    });

    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let mut stream = stream
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME);

    if !key_ok {
        actix_web::rt::spawn(async move {
            let reason = "authentication rejected";
            close_and_drain(session, &mut stream, CLOSE_BAD_KEY, reason, &shared).await;
        });
        return Ok(response);
    }

    let (tx, rx) = unbounded_channel();
    let id = shared.update(|s| {
        s.connections += 1;
        let id = s.connections;
        if let Some(old) = s.current.replace(Conn { id, tx }) {
            // The old task may already be gone; then there is nothing left to close.
            let _ = old.tx.send(Cmd::Close(
                CLOSE_REPLACED,
                "replaced by a newer connection".into(),
            ));
        }
        id
    });
    actix_web::rt::spawn(serve(id, session, stream, rx, shared));
    Ok(response)
}

/// Runs one correct-key connection until either side closes it or the handle drops it.
async fn serve(
    id: usize,
    mut session: Session,
    mut stream: AggregatedMessageStream,
    mut rx: UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
) {
    loop {
        tokio::select! {
            msg = stream.recv() => match msg {
                Some(Ok(AggregatedMessage::Text(text))) => {
                    let frame = serde_json::from_str::<Value>(&text)
                        .unwrap_or_else(|_| Value::String(text.to_string()));
                    shared.update(|s| s.frames.push(frame));
                }
                Some(Ok(AggregatedMessage::Ping(data))) => {
                    let answer = shared.update(|s| {
                        s.pings += 1;
                        s.answer_pings
                    });
                    if answer && session.pong(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(AggregatedMessage::Close(reason))) => {
                    shared.update(|s| s.closes_received.push(reason.as_ref().map(|r| r.code.into())));
                    // Echo the close to complete the handshake the appliance started.
                    let _ = session.close(reason).await;
                    break;
                }
                Some(Ok(AggregatedMessage::Binary(_) | AggregatedMessage::Pong(_))) => {}
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "sim: websocket protocol error; dropping connection");
                    break;
                }
                None => break,
            },
            cmd = rx.recv() => match cmd {
                Some(Cmd::Text(text)) => {
                    if session.text(text).await.is_err() {
                        break;
                    }
                }
                Some(Cmd::Binary(data)) => {
                    if session.binary(data).await.is_err() {
                        break;
                    }
                }
                Some(Cmd::Close(code, reason)) => {
                    close_and_drain(session, &mut stream, code, &reason, &shared).await;
                    break;
                }
                // The handle dropped this connection (go_down): end it without a Close frame.
                None => break,
            },
        }
    }
    shared.update(|s| {
        if s.current.as_ref().is_some_and(|c| c.id == id) {
            s.current = None;
        }
    });
}

/// Sends a Close frame with `code`, then waits (bounded) for the appliance's Close reply.
async fn close_and_drain(
    session: Session,
    stream: &mut AggregatedMessageStream,
    code: u16,
    reason: &str,
    shared: &Shared,
) {
    let reason = CloseReason {
        code: CloseCode::from(code),
        description: Some(reason.to_owned()),
    };
    let _ = session.close(Some(reason)).await;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(msg)) = stream.recv().await {
            if let AggregatedMessage::Close(reason) = msg {
                shared.update(|s| s.closes_received.push(reason.map(|r| r.code.into())));
                break;
            }
        }
    })
    .await;
}
