//! The audit trail (APPLIANCE.md "Data dir", `GET /api/audit`): who sent which
//! patient's study where, what was deleted, which configuration changed, what an
//! operator did and when the backend link authenticated, as DICOM PS3.15 / RFC 3881
//! style records in `audit/YYYY-MM-DD.jsonl`, optionally forwarded to a syslog
//! collector. Records hold identifiers and counts: never the proxy key, a token or
//! pixel data.
//!
//! The other actors and the HTTP server send [`AuditRecorded`] (one line at each
//! hook, [`record`]); the actor hands it to its writer thread (`writer.rs`), which
//! does the file work (`trail.rs`) and the forwarding (`syslog.rs`) off the actix
//! threads. `event.rs` says how each happening becomes a record (`record.rs`).
//!
//! It may touch: files under `audit/`; the catalog, read only (a study's patient).

mod actor;
mod event;
mod messages;
pub mod record;
pub mod syslog;
pub mod trail;
mod writer;

pub use actor::AuditActor;
pub use event::{AuditEvent, TokenUse};
pub use messages::{AuditFlushRequested, AuditRecorded};
pub use record::AuditRecord;
pub use writer::WriterConfig;

use crate::peers::PeersCell;

/// Records `event` now (the hooks' one line).
pub fn record(peers: &PeersCell, event: AuditEvent) {
    if let Some(p) = peers.get() {
        p.audit.do_send(AuditRecorded::now(event));
    }
}
