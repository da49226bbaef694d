//! Messages the link actor receives.

use actix::Message;

/// An event that is meaningful only now (`pong`, `proxy.heartbeat`): sent if
/// the link is up, dropped otherwise (PROTOCOL.md §4: not queued).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EphemeralEventReady {
    pub event_type: &'static str,
    pub frame: String,
}

/// Something was appended to the durable outbox; drain it if connected.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OutboxAppended;

/// The appliance is shutting down: close the link normally and stay down.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LinkShutdownRequested;
