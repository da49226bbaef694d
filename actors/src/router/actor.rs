//! The router actor. See `mod.rs`.

use std::collections::VecDeque;

use actix::prelude::*;
use laminate_store::{SeenEvents, Store};

use super::messages::FrameReceived;
use crate::board::SharedBoard;
use crate::config::ConfigEventReceived;
use crate::deletion::DeletionReceived;
use crate::dispatch::DispatchReceived;
use crate::envelope::{excerpt, parse_incoming, EnvelopeError, EventKind, Incoming, Outgoing};
use crate::health::{ActorHealth, ActorState, Delivered, HandlerFailed, Monitored, Ticket};
use crate::link::EphemeralEventReady;
use crate::peers::PeersCell;

/// An event waiting for its owner, with the mailbox ticket that keeps it
/// counted in the router's mailbox depth until it is handed over.
struct Pending {
    ev: Incoming,
    _ticket: Ticket,
}

pub struct RouterActor {
    health: ActorHealth,
    board: SharedBoard,
    store: Store,
    peers: PeersCell,
    /// Events for the owners, handed over one at a time in arrival order. Pings
    /// and bad frames never wait here: a slow owner (a big deletion) must not
    /// delay a `pong`, which PROTOCOL.md §3 wants "at once".
    queue: VecDeque<Pending>,
    /// The event its owner is working on; put back at the front if the router
    /// restarts before the owner answered (owners are idempotent).
    in_flight: Option<Pending>,
}

impl RouterActor {
    pub fn new(health: ActorHealth, board: SharedBoard, store: Store, peers: PeersCell) -> Self {
        Self {
            health,
            board,
            store,
            peers,
            queue: VecDeque::new(),
            in_flight: None,
        }
    }

    fn bad_frame(&self, err: &EnvelopeError, bytes: &[u8]) {
        self.board
            .counters
            .bad_frames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(error = %err, frame = %excerpt(bytes), "bad frame from the backend ignored");
    }

    fn route(&mut self, ev: Incoming, ticket: Ticket, ctx: &mut Context<Self>) {
        self.board.counters.count_in(&ev.event_type);
        self.board.record_in(&ev);
        if let Some(ws) = ev.workspace_id.as_deref().filter(|w| !w.is_empty()) {
            self.board.set_last_workspace_id(ws);
        }
        match ev.kind {
            EventKind::Ping => self.answer_ping(&ev),
            EventKind::Unknown => self.unknown(&ev, ctx),
            _ => {
                self.queue.push_back(Pending {
                    ev,
                    _ticket: ticket,
                });
                self.next(ctx);
            }
        }
    }

    /// Hands the next queued event over unless one is with its owner already.
    fn next(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight.is_none() {
            let Some(p) = self.queue.pop_front() else {
                return;
            };
            self.hand_over(p, ctx);
        }
    }

    fn answer_ping(&self, ping: &Incoming) {
        let pong = Outgoing::pong(ping, &self.board.last_workspace_id());
        if let Some(peers) = self.peers.get() {
            peers.link.do_send(EphemeralEventReady {
                event_type: "pong",
                frame: pong.to_frame(),
            });
        }
    }

    #[allow(unused_variables)]
    fn unknown(&self, ev: &Incoming, ctx: &mut Context<Self>) {
        #[cfg(feature = "fault-injection")]
        if ev.event_type == "test.panic" {
            self.inject_fault(ev);
            return;
        }
        #[cfg(feature = "fault-injection")]
        if ev.event_type == "test.stall" {
            if let Some(stage) = ev.payload.get("stage").and_then(|v| v.as_str()) {
                crate::faults::stall_next(stage);
            }
            return;
        }
        self.board
            .counters
            .unknown_types
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(event_type = %ev.event_type, correlation_id = %ev.correlation_id, "unknown event type ignored");
    }

    /// Test builds only: makes the named actor's handler panic, to prove that
    /// panics restart actors without taking the appliance down.
    #[cfg(feature = "fault-injection")]
    fn inject_fault(&self, ev: &Incoming) {
        match ev.payload.get("actor").and_then(|v| v.as_str()) {
            Some("router") => panic!("fault injection: router"),
            Some("config") => {
                if let Some(peers) = self.peers.get() {
                    peers.config.do_send(crate::config::FaultInjected);
                }
            }
            Some("node_sender") => {
                let node_id = ev
                    .payload
                    .get("node_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                if let Some(peers) = self.peers.get() {
                    peers
                        .dispatcher
                        .do_send(crate::dispatch::messages::NodePoolKillRequested { node_id });
                }
            }
            other => tracing::warn!(?other, "fault injection: unknown actor"),
        }
    }

    /// Hands an event to its owner unless it was seen before; marks it seen once
    /// the owner has accepted it, so a crash in between means it is acted on again
    /// rather than lost (owners are idempotent). The seen check runs when the
    /// event's turn comes, so a duplicate queued right behind its original finds
    /// it marked.
    fn hand_over(&mut self, p: Pending, ctx: &mut Context<Self>) {
        let ev = &p.ev;
        let now = crate::clock::now_ms();
        match self.store.is_seen(&ev.correlation_id, now) {
            Ok(true) => {
                self.board
                    .counters
                    .duplicates
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(event_type = %ev.event_type, correlation_id = %ev.correlation_id, "duplicate event acknowledged, not acted on again");
                return;
            }
            Ok(false) => {}
            Err(e) => {
                // Acting twice on an idempotent event is safer than dropping it.
                tracing::error!(error = %e, "seen-events table unreadable; acting on the event");
                self.health.record_error(format!("store: {e}"));
            }
        }
        let Some(peers) = self.peers.get() else {
            return;
        };
        let owned = ev.clone();
        let accepted: ResponseFuture<Result<(), HandlerFailed>> = match ev.kind {
            EventKind::NodesChanged | EventKind::ConfigChanged | EventKind::StatusChanged => {
                let req = peers.config.send(ConfigEventReceived(owned));
                Box::pin(async move { req.await.unwrap_or(Err(HandlerFailed::Panicked)) })
            }
            EventKind::SessionDeleted | EventKind::ScanDeleted => {
                let req = peers.deletion.send(DeletionReceived(owned));
                Box::pin(async move { req.await.unwrap_or(Err(HandlerFailed::Panicked)) })
            }
            EventKind::SubjectDispatch | EventKind::SessionDispatch | EventKind::ScanDispatch => {
                let req = peers.dispatcher.send(DispatchReceived(owned));
                Box::pin(async move { req.await.unwrap_or(Err(HandlerFailed::Panicked)) })
            }
            EventKind::Ping | EventKind::Unknown => return,
        };
        self.in_flight = Some(p);
        ctx.spawn(accepted.into_actor(self).map(|res, act, ctx| {
            let Some(done) = act.in_flight.take() else {
                return;
            };
            let ev = &done.ev;
            match res {
                Ok(()) => {
                    if let Err(e) = act.store.mark_seen(&ev.correlation_id, crate::clock::now_ms())
                    {
                        tracing::error!(error = %e, "cannot record a handled event as seen");
                        act.health.record_error(format!("store: {e}"));
                    }
                }
                Err(e) => {
                    tracing::error!(event_type = %ev.event_type, correlation_id = %ev.correlation_id, error = %e, "event handler failed; not marked seen");
                }
            }
            act.next(ctx);
        }));
    }

    fn purge_seen(&self) {
        match self.store.purge_seen(crate::clock::now_ms()) {
            Ok(n) if n > 0 => tracing::info!(removed = n, "expired seen-event ids purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot purge seen-event ids"),
        }
    }
}

/// How often expired seen-event ids are purged.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

impl Actor for RouterActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
        // Pings arrive in bursts; a deep mailbox keeps `do_send` from parking the link.
        ctx.set_mailbox_capacity(4096);
        self.purge_seen();
        ctx.run_interval(PURGE_EVERY, |act, _| act.purge_seen());
        // After a restart, whatever was queued goes on.
        self.next(ctx);
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for RouterActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
        // The owner's answer went with the stopped context; its turn comes again.
        if let Some(p) = self.in_flight.take() {
            self.queue.push_front(p);
        }
    }
}

impl Monitored for RouterActor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl RouterActor {
    fn frame(&mut self, frame: FrameReceived, ticket: Ticket, ctx: &mut Context<Self>) {
        if frame.binary {
            self.bad_frame(&EnvelopeError::Binary, &frame.bytes);
            return;
        }
        match parse_incoming(&frame.bytes) {
            Ok(ev) => self.route(ev, ticket, ctx),
            Err(e) => self.bad_frame(&e, &frame.bytes),
        }
    }
}

/// The panic guard of `delivered_handlers!`, written out because a queued event
/// keeps its mailbox ticket: the router's mailbox depth counts what waits for an owner.
impl Handler<Delivered<FrameReceived>> for RouterActor {
    type Result = ();
    fn handle(&mut self, delivered: Delivered<FrameReceived>, ctx: &mut Context<Self>) {
        let (frame, ticket) = delivered.into_parts();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.frame(frame, ticket, ctx)
        }));
        if let Err(payload) = outcome {
            crate::health::handle_panic(self, ctx, payload.as_ref());
        }
    }
}
