//! `GET /ws`: the status page's live feed. Each browser gets its own task
//! reading the hub (`hub.rs`) at its own pace; one that cannot keep up (its
//! backlog overflows, or a write stays stuck for [`SEND_DEADLINE`]) is closed
//! with 1013 "try again later" and its page reconnects and re-reads the API.
//! Nothing here ever waits on a browser on behalf of the appliance.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio::time::{sleep, timeout, Instant};

use super::hub::{self, Hub};

/// A `{"type":"ping"}` goes out after this long without any other message.
pub const IDLE_PING: Duration = Duration::from_secs(30);

/// A browser whose write has not gone through by then is dropped (actix-ws
/// holds 32 messages per session; beyond that a write waits for the socket).
const SEND_DEADLINE: Duration = Duration::from_secs(5);

/// Browsers only send control frames; anything big is not ours.
const MAX_INCOMING_FRAME: usize = 4096;

pub async fn ws(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Hub>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let feed = hub.subscribe();
    actix_web::rt::spawn(serve(
        session,
        stream.max_frame_size(MAX_INCOMING_FRAME),
        feed,
        hub.get_ref().clone(),
    ));
    Ok(response)
}

/// Why a session ended.
enum End {
    /// The browser left or the socket broke: nothing more to say.
    Gone,
    /// We close it, with a reason.
    Close(CloseReason),
}

async fn serve(
    mut session: Session,
    mut stream: MessageStream,
    mut feed: Receiver<hub::Message>,
    hub: Hub,
) {
    let idle = sleep(IDLE_PING);
    tokio::pin!(idle);
    let end = loop {
        tokio::select! {
            msg = feed.recv() => match msg {
                Ok(text) => {
                    if !send(&mut session, &text).await {
                        break too_slow();
                    }
                    idle.as_mut().reset(Instant::now() + IDLE_PING);
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "status page browser too slow; dropping its live feed");
                    break too_slow();
                }
                Err(RecvError::Closed) => break End::Close(CloseCode::Away.into()),
            },
            msg = stream.recv() => match msg {
                Some(Ok(Message::Ping(data))) => {
                    if session.pong(&data).await.is_err() {
                        break End::Gone;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Gone,
                Some(Ok(_)) => {}
            },
            _ = &mut idle => {
                if !send(&mut session, r#"{"type":"ping"}"#).await {
                    break too_slow();
                }
                idle.as_mut().reset(Instant::now() + IDLE_PING);
            }
        }
    };
    drop(feed);
    if let End::Close(reason) = end {
        if reason.code == CloseCode::Again {
            hub.count_dropped();
        }
        // The close frame waits behind the same queue: bounded too.
        let _ = timeout(SEND_DEADLINE, session.close(Some(reason))).await;
    }
    // Dropping the session and stream ends the response and the connection.
}

fn too_slow() -> End {
    End::Close(CloseReason {
        code: CloseCode::Again,
        description: Some("too slow for the live feed; reconnect".into()),
    })
}

/// `false` when the browser is gone or did not take the message in time.
async fn send(session: &mut Session, text: &str) -> bool {
    matches!(
        timeout(SEND_DEADLINE, session.text(text.to_owned())).await,
        Ok(Ok(()))
    )
}
