//! Messages of the disk actor.

use actix::Message;

/// A dispatch job ended: its instances were just sent (they become the most recently
/// used), and what the cache may now let go is looked at.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DispatchEnded {
    pub id: String,
}

/// An eviction pass finished (sent by the pass to its own actor).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct PassFinished;

/// Someone is short of space (a waiting download, the ingest SCP at its floor).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct EvictionWanted;
