//! The link actor itself. See the module docs in `mod.rs`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_codec::Framed;
use actix_http::ws::Item;
use awc::error::WsProtocolError;
use awc::ws::{CloseCode, CloseReason, Codec, Frame, Message as WsMessage};
use awc::BoxedSocket;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, SplitSink, StreamExt};
use laminate_store::{Outbox, Store};

use super::backoff::{Backoff, ReplacedTracker, HEALTHY_AFTER};
use super::messages::{EphemeralEventReady, LinkShutdownRequested, OutboxAppended};
use crate::board::{LinkState, SharedBoard};
use crate::health::{ActorHealth, ActorState, Monitored};
use crate::heartbeat::LinkEstablished;
use crate::peers::PeersCell;
use crate::router::FrameReceived;

/// Largest frame acted on (PROTOCOL.md §1); bigger → close 1009.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// WebSocket Ping period.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// Silence after which the link is dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// How often silence is checked.
const LIVENESS_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a close we start waits for the backend's Close before dropping the socket.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);
/// Opening handshake deadline.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the link waits for the heartbeat actor on connect.
const HEARTBEAT_WAIT: Duration = Duration::from_secs(5);
/// Outbox events written but not yet confirmed by a Pong.
const OUTBOX_WINDOW: usize = 256;
/// Ephemeral events held while the connect-time heartbeat is being built.
const EPHEMERAL_HOLD: usize = 256;
/// Prefix of the Ping payload that confirms outbox delivery.
const OUTBOX_PING_PREFIX: &str = "ob:";
/// Close codes of PROTOCOL.md §1.
pub const CLOSE_REPLACED: u16 = 4000;
pub const CLOSE_BAD_KEY: u16 = 4003;

/// How to reach the backend.
#[derive(Clone)]
pub struct LinkSettings {
    /// `{backend}/proxy/ws?proxy_key=…` — contains the key: never log it.
    pub ws_url: String,
    /// The key itself, to scrub it from any error text before it is shown.
    pub proxy_key: String,
    pub tls: std::sync::Arc<rustls::ClientConfig>,
}

type WsSink = SplitSink<Framed<BoxedSocket, Codec>, WsMessage>;

/// One item from the socket of connection `generation`; `None` = stream ended.
#[derive(Message)]
#[rtype(result = "()")]
struct SocketEvent {
    generation: u64,
    item: Option<Result<Frame, WsProtocolError>>,
}

pub struct LinkActor {
    health: ActorHealth,
    board: SharedBoard,
    store: Store,
    peers: PeersCell,
    settings: LinkSettings,
    /// Bumped on every connection; events of older ones are ignored.
    generation: u64,
    sink: Option<SinkWrite<WsMessage, WsSink>>,
    stream: Option<SpawnHandle>,
    reconnect: Option<SpawnHandle>,
    connected_at: Option<Instant>,
    last_rx: Instant,
    /// False until the connect-time heartbeat has been written.
    ready: bool,
    held: VecDeque<(&'static str, String)>,
    /// Outbox seqs written on this connection and not yet confirmed.
    unconfirmed: VecDeque<u64>,
    written_upto: u64,
    /// Text split over continuation frames.
    partial: Option<BytesMut>,
    general: Backoff,
    held_back: Backoff,
    replaced: ReplacedTracker,
    ever_connected: bool,
    shutting_down: bool,
    /// Set while a close we started waits for the backend's answer: the error to report then.
    closing: Option<String>,
}

impl LinkActor {
    pub fn new(
        health: ActorHealth,
        board: SharedBoard,
        store: Store,
        peers: PeersCell,
        settings: LinkSettings,
    ) -> Self {
        Self {
            health,
            board,
            store,
            peers,
            settings,
            generation: 0,
            sink: None,
            stream: None,
            reconnect: None,
            connected_at: None,
            last_rx: Instant::now(),
            ready: false,
            held: VecDeque::new(),
            unconfirmed: VecDeque::new(),
            written_upto: 0,
            partial: None,
            general: Backoff::general(),
            held_back: Backoff::held(),
            replaced: ReplacedTracker::default(),
            ever_connected: false,
            shutting_down: false,
            closing: None,
        }
    }

    /// Removes the proxy key from text that may end up in logs or the API.
    fn scrub(&self, text: &str) -> String {
        if self.settings.proxy_key.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.settings.proxy_key, "pk_…")
        }
    }

    fn set_state(&self, state: LinkState, error: Option<String>, notice: Option<&str>) {
        self.board.update_link(|v| {
            if v.state != state {
                v.since = crate::clock::now_rfc3339();
            }
            v.state = state;
            if error.is_some() {
                v.last_error = error;
            }
            v.notice = notice.map(str::to_owned);
            if state != LinkState::Backoff && state != LinkState::Rejected {
                v.next_attempt_at = None;
            }
        });
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.reconnect = None;
        if self.shutting_down {
            return;
        }
        self.set_state(LinkState::Connecting, None, None);
        let client = crate::http_client::client_builder(self.settings.tls.clone())
            .timeout(HANDSHAKE_TIMEOUT)
            .finish();
        let request = client
            .ws(self.settings.ws_url.as_str())
            .max_frame_size(MAX_FRAME_BYTES);
        let fut = async move { request.connect().await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((_response, framed)) => act.on_open(framed, ctx),
            Err(e) => {
                let msg = act.scrub(&format!("connect: {e}"));
                act.on_down(msg, None, ctx);
            }
        }));
    }

    fn on_open(&mut self, framed: Framed<BoxedSocket, Codec>, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let (sink, stream) = framed.split();
        let events = stream
            .map(move |item| SocketEvent {
                generation,
                item: Some(item),
            })
            .chain(stream::once(async move {
                SocketEvent {
                    generation,
                    item: None,
                }
            }));
        self.stream = Some(ctx.add_stream(events));
        self.sink = Some(SinkWrite::new(sink, ctx));
        if self.ever_connected {
            self.board.update_link(|v| v.reconnects += 1);
        }
        self.ever_connected = true;
        self.connected_at = Some(Instant::now());
        self.last_rx = Instant::now();
        self.ready = false;
        self.unconfirmed.clear();
        self.written_upto = 0;
        self.partial = None;
        self.set_state(LinkState::Connected, None, None);
        tracing::info!(generation, "backend link connected");
        crate::audit::record(
            &self.peers,
            crate::audit::AuditEvent::link(&self.settings.ws_url, None),
        );

        // PROTOCOL.md §1: the heartbeat goes first, then the outbox.
        let Some(peers) = self.peers.get() else {
            self.become_ready(ctx);
            return;
        };
        let request = peers
            .heartbeat
            .send(LinkEstablished)
            .timeout(HEARTBEAT_WAIT);
        ctx.spawn(request.into_actor(self).map(move |res, act, ctx| {
            if act.generation != generation || act.sink.is_none() {
                return;
            }
            match res {
                Ok(Some(frame)) => act.write_text("proxy.heartbeat", frame),
                Ok(None) => tracing::warn!("heartbeat actor gave no heartbeat on connect"),
                Err(e) => tracing::warn!(error = %e, "heartbeat on connect not available"),
            }
            act.become_ready(ctx);
        }));
    }

    fn become_ready(&mut self, ctx: &mut Context<Self>) {
        self.ready = true;
        while let Some((event_type, frame)) = self.held.pop_front() {
            self.write_text(event_type, frame);
        }
        self.drain_outbox(ctx);
    }

    fn write_text(&mut self, event_type: &str, frame: String) {
        if let Some(sink) = self.sink.as_mut() {
            if sink.write(WsMessage::Text(frame.clone().into())).is_ok() {
                self.board.counters.count_out(event_type);
                self.board.record_out(event_type, &frame);
            }
        }
    }

    fn write(&mut self, msg: WsMessage) {
        if let Some(sink) = self.sink.as_mut() {
            let _ = sink.write(msg);
        }
    }

    /// Writes pending outbox events after the last written one, then a Ping
    /// whose Pong confirms (TCP being ordered) that all of them arrived.
    fn drain_outbox(&mut self, _ctx: &mut Context<Self>) {
        if !self.ready || self.sink.is_none() {
            return;
        }
        let room = OUTBOX_WINDOW.saturating_sub(self.unconfirmed.len());
        if room == 0 {
            return;
        }
        let entries = match self.store.outbox_pending(self.written_upto, room) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                self.health.record_error(format!("outbox: {e}"));
                return;
            }
        };
        if entries.is_empty() {
            return;
        }
        for entry in entries {
            let event_type = serde_json::from_slice::<EventTypeOnly>(&entry.event)
                .map(|e| e.event_type)
                .unwrap_or_else(|_| "other".to_owned());
            match String::from_utf8(entry.event) {
                Ok(text) => self.write_text(&event_type, text),
                Err(_) => tracing::error!(seq = entry.seq, "outbox entry is not UTF-8; skipped"),
            }
            self.unconfirmed.push_back(entry.seq);
            self.written_upto = entry.seq;
        }
        let ping = format!("{OUTBOX_PING_PREFIX}{}", self.written_upto);
        self.write(WsMessage::Ping(Bytes::from(ping)));
    }

    fn on_outbox_confirmed(&mut self, upto: u64, ctx: &mut Context<Self>) {
        match self.store.outbox_ack(upto) {
            Ok(_) => {
                while self.unconfirmed.front().is_some_and(|s| *s <= upto) {
                    self.unconfirmed.pop_front();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot remove delivered events from the outbox");
                self.health.record_error(format!("outbox: {e}"));
            }
        }
        self.refresh_outbox_depth();
        self.drain_outbox(ctx);
    }

    fn refresh_outbox_depth(&self) {
        if let Ok(n) = self.store.outbox_len() {
            self.board.set_outbox_depth(n as u64);
        }
    }

    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            if let Frame::Close(_) = frame {
                let error = self.closing.take().unwrap_or_default();
                self.on_down(error, None, ctx);
            }
            return;
        }
        match frame {
            Frame::Text(b) => self.deliver(b, false),
            Frame::Binary(b) => self.deliver(b, true),
            Frame::Continuation(item) => self.on_continuation(item, ctx),
            Frame::Ping(p) => self.write(WsMessage::Pong(p)),
            Frame::Pong(p) => {
                let seq = std::str::from_utf8(&p)
                    .ok()
                    .and_then(|s| s.strip_prefix(OUTBOX_PING_PREFIX))
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(seq) = seq {
                    self.on_outbox_confirmed(seq, ctx);
                }
            }
            Frame::Close(reason) => self.on_close(reason, ctx),
        }
    }

    fn on_continuation(&mut self, item: Item, ctx: &mut Context<Self>) {
        let (chunk, first, binary, last) = match item {
            Item::FirstText(b) => (b, true, false, false),
            Item::FirstBinary(b) => (b, true, true, false),
            Item::Continue(b) => (b, false, false, false),
            Item::Last(b) => (b, false, false, true),
        };
        if first {
            let mut buf = BytesMut::new();
            if binary {
                // Marker so the router counts it as a binary (bad) frame.
                self.partial = None;
                self.deliver(Bytes::new(), true);
                return;
            }
            buf.extend_from_slice(&chunk);
            self.partial = Some(buf);
        } else if let Some(buf) = self.partial.as_mut() {
            buf.extend_from_slice(&chunk);
        }
        if self
            .partial
            .as_ref()
            .is_some_and(|b| b.len() > MAX_FRAME_BYTES)
        {
            self.partial = None;
            self.too_big(ctx);
            return;
        }
        if last {
            if let Some(buf) = self.partial.take() {
                self.deliver(buf.freeze(), false);
            }
        }
    }

    fn deliver(&mut self, bytes: Bytes, binary: bool) {
        if let Some(peers) = self.peers.get() {
            peers.router.do_send(FrameReceived { bytes, binary });
        }
    }

    fn too_big(&mut self, ctx: &mut Context<Self>) {
        tracing::warn!("backend sent a frame over 1 MiB; closing with 1009");
        self.start_close(
            CloseCode::Size,
            "frame over 1 MiB",
            "frame over 1 MiB (closed with 1009)".into(),
            ctx,
        );
    }

    /// Starts the closing handshake: Close out, then down when the backend's
    /// Close arrives or after [`CLOSE_HANDSHAKE`], whichever is first. Frames
    /// arriving meanwhile are not acted on.
    fn start_close(&mut self, code: CloseCode, why: &str, error: String, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        self.write(WsMessage::Close(Some(CloseReason {
            code,
            description: Some(why.to_owned()),
        })));
        self.closing = Some(error);
        let generation = self.generation;
        ctx.run_later(CLOSE_HANDSHAKE, move |act, ctx| {
            if act.generation == generation {
                if let Some(error) = act.closing.take() {
                    act.on_down(error, None, ctx);
                }
            }
        });
    }

    fn on_close(&mut self, reason: Option<CloseReason>, ctx: &mut Context<Self>) {
        let code = reason.as_ref().map(|r| u16::from(r.code));
        let text = match &reason {
            Some(r) => format!(
                "closed by the backend: {} {}",
                u16::from(r.code),
                r.description.as_deref().unwrap_or("")
            ),
            None => "closed by the backend".to_owned(),
        };
        // Answer the close handshake before dropping the socket.
        self.write(WsMessage::Close(reason));
        let text = self.scrub(text.trim_end());
        self.on_down(text, code, ctx);
    }

    /// The connection ended or could not be made: tear down and schedule the next try.
    fn on_down(&mut self, error: String, close_code: Option<u16>, ctx: &mut Context<Self>) {
        self.teardown(ctx);
        if self.shutting_down {
            self.set_state(LinkState::Backoff, None, Some("shutting down"));
            return;
        }
        if self
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= HEALTHY_AFTER)
        {
            self.general.reset();
            self.held_back.reset();
        }
        if close_code == Some(CLOSE_BAD_KEY) {
            crate::audit::record(
                &self.peers,
                crate::audit::AuditEvent::link(&self.settings.ws_url, Some(&error)),
            );
        }
        let jitter: f64 = rand::random();
        let (state, notice, delay) = match close_code {
            Some(CLOSE_BAD_KEY) => (
                LinkState::Rejected,
                Some("authentication rejected"),
                self.held_back.next_delay(jitter),
            ),
            Some(CLOSE_REPLACED) if self.replaced.record(Instant::now()) => (
                LinkState::Backoff,
                Some("replaced by another appliance using the same key"),
                self.held_back.next_delay(jitter),
            ),
            _ => (LinkState::Backoff, None, self.general.next_delay(jitter)),
        };
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "backend link down");
        self.set_state(state, Some(error), notice);
        let due = crate::clock::ms_to_rfc3339(crate::clock::now_ms() + delay.as_millis() as u64);
        self.board.update_link(|v| v.next_attempt_at = Some(due));
        if let Some(h) = self.reconnect.take() {
            ctx.cancel_future(h);
        }
        self.reconnect = Some(ctx.run_later(delay, |act, ctx| act.connect(ctx)));
    }

    fn teardown(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.stream.take() {
            ctx.cancel_future(h);
        }
        if let Some(mut sink) = self.sink.take() {
            sink.close();
        }
        // Events of the old connection are ignored from now on.
        self.generation += 1;
        self.closing = None;
        self.ready = false;
        self.held.clear();
        self.unconfirmed.clear();
        self.partial = None;
    }

    fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        if self.sink.is_some() && self.last_rx.elapsed() > SILENCE_LIMIT {
            self.on_down(
                format!("nothing received for {} s", SILENCE_LIMIT.as_secs()),
                None,
                ctx,
            );
        }
    }
}

#[derive(serde::Deserialize)]
struct EventTypeOnly {
    event_type: String,
}

impl Actor for LinkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
        self.refresh_outbox_depth();
        ctx.run_interval(PING_EVERY, |act, _| {
            if act.sink.is_some() {
                act.write(WsMessage::Ping(Bytes::from_static(b"live")));
            }
        });
        ctx.run_interval(LIVENESS_CHECK_EVERY, |act, ctx| act.check_liveness(ctx));
        self.connect(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for LinkActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
        // The old context's futures are gone; forget the connection they served.
        self.sink = None;
        self.stream = None;
        self.reconnect = None;
        self.generation += 1;
        self.ready = false;
        self.held.clear();
        self.unconfirmed.clear();
    }
}

impl Monitored for LinkActor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl StreamHandler<SocketEvent> for LinkActor {
    fn handle(&mut self, ev: SocketEvent, ctx: &mut Context<Self>) {
        if ev.generation != self.generation || self.sink.is_none() {
            return;
        }
        self.last_rx = Instant::now();
        if self.closing.is_some() && !matches!(ev.item, Some(Ok(_))) {
            let error = self.closing.take().unwrap_or_default();
            self.on_down(error, None, ctx);
            return;
        }
        match ev.item {
            Some(Ok(frame)) => self.on_frame(frame, ctx),
            Some(Err(WsProtocolError::Overflow)) => self.too_big(ctx),
            Some(Err(e)) => {
                let msg = format!("protocol error: {e}");
                self.on_down(msg, None, ctx);
            }
            None => self.on_down("connection lost".into(), None, ctx),
        }
    }

    /// The socket stream ending must not stop the actor (the default does).
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl WriteHandler<WsProtocolError> for LinkActor {
    fn error(&mut self, err: WsProtocolError, ctx: &mut Self::Context) -> Running {
        let msg = format!("write failed: {err}");
        self.on_down(msg, None, ctx);
        Running::Continue
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<EphemeralEventReady> for LinkActor {
    type Result = ();
    fn handle(&mut self, ev: EphemeralEventReady, _: &mut Context<Self>) {
        if self.sink.is_none() {
            tracing::debug!(
                event_type = ev.event_type,
                "link down; ephemeral event dropped"
            );
        } else if self.ready {
            self.write_text(ev.event_type, ev.frame);
        } else if self.held.len() < EPHEMERAL_HOLD {
            self.held.push_back((ev.event_type, ev.frame));
        }
    }
}

impl Handler<OutboxAppended> for LinkActor {
    type Result = ();
    fn handle(&mut self, _: OutboxAppended, ctx: &mut Context<Self>) {
        self.refresh_outbox_depth();
        self.drain_outbox(ctx);
    }
}

impl Handler<LinkShutdownRequested> for LinkActor {
    type Result = ();
    fn handle(&mut self, _: LinkShutdownRequested, ctx: &mut Context<Self>) {
        self.shutting_down = true;
        if let Some(h) = self.reconnect.take() {
            ctx.cancel_future(h);
        }
        self.write(WsMessage::Close(Some(CloseReason {
            code: CloseCode::Normal,
            description: Some("appliance shutting down".into()),
        })));
        self.teardown(ctx);
        self.set_state(LinkState::Backoff, None, Some("shutting down"));
    }
}

crate::delivered_handlers!(LinkActor: EphemeralEventReady, OutboxAppended, LinkShutdownRequested);
