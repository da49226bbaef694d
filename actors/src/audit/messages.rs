//! Messages of the audit actor.

use actix::Message;

use super::event::AuditEvent;

/// Something happened that the audit trail records; stamped when it happened, not
/// when it is written.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct AuditRecorded {
    pub at_ms: u64,
    pub event: AuditEvent,
}

/// Shutdown: answered once every record sent before it is written and synced.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AuditFlushRequested;

impl AuditRecorded {
    pub fn now(event: AuditEvent) -> Self {
        Self {
            at_ms: crate::clock::now_ms(),
            event,
        }
    }
}
