//! The C-STORE sender (SCU): sends a batch of instances to one PACS node.
//!
//! [`send_batch`] is blocking: it runs one OS thread per association (up to
//! the node's `max_associations`), all taking instances from one shared work
//! list and reusing their association for many instances. It is the
//! dispatch's hot path, so:
//! - the file's dataset bytes are streamed from `dataset_offset` straight into
//!   P-DATA PDUs through one reused buffer, several PDUs per `write`, the
//!   C-STORE-RQ command packed in front of the first data fragment; an
//!   instance is converted (read fully, re-encoded) only when the node refused
//!   its transfer syntax;
//! - `TCP_NODELAY` is set on every association and `TCP_QUICKACK` is re-armed
//!   around every read of a response: stock receivers write each
//!   C-STORE-RSP in two small writes with Nagle on, and a delayed ACK from
//!   us would stall every instance ~40 ms (see `shared/bench/README.md`).
//!
//! Each acknowledgement is handed to an [`EventSink`] that may make it durable
//! later, in one store flush with the others' (group commit): the association
//! sends its next instance meanwhile but holds back that instance's last
//! fragment until the acknowledgement before it is durable. So the flush
//! overlaps the transfer, and after a `kill -9` at most one instance per
//! association can have reached the node twice.
//!
//! # Layout
//! - `item.rs`: [`Item`], one instance to send, and reading it from a file.
//! - `contexts.rs`: the presentation contexts the items need, split in groups of
//!   at most 128, and the choice of context for an item.
//! - `status.rs`: what a C-STORE status means for the instance and the batch.
//! - `wire.rs`: P-DATA framing from the file, response reading with quick ACKs.
//! - `convert.rs`: re-encoding a dataset to a syntax the node accepted.
//! - `association.rs`: one association's thread: establish, send, release.
//! - `pool.rs`: a node's pool: its associations (at most `max_associations`)
//!   shared by every dispatch, its queue of lots, priorities, and the
//!   instances a node keeps aborting on.
//! - `batch.rs`: [`send_batch`]: one batch through a pool of its own (tools, tests).
//! - `commit.rs`: [`request_commitment`]: the Storage Commitment N-ACTION.

mod association;
mod batch;
mod commit;
mod contexts;
mod convert;
mod item;
mod lot;
pub mod pool;
mod status;
mod wire;

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use association::{chain, looks_like_tls, tls_failure};
pub use batch::{send_batch, send_batch_to};
pub use commit::{request_commitment, CommitRequestError};
pub use item::{Item, ItemError};
pub use status::{classify, StatusClass};

/// Connect timeout, also the deadline of the association negotiation.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write deadline on an established association; generous because a
/// node may write and fsync a large instance before it answers.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Our maximum PDU: 256 KiB. Only the node's responses are bounded by it, and
/// our fragments when the node announces "unlimited" (0); measured on
/// loopback, fragments beyond this gain nothing.
pub const DEFAULT_MAX_PDU: u32 = 256 * 1024;

/// The node to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node_id: String,
    pub host: String,
    pub port: u16,
    pub called_ae: String,
    pub calling_ae: String,
    /// Associations in parallel (0 is taken as 1).
    pub max_associations: u32,
    /// DICOM TLS (the site's `node-settings.json`); `None` is plain TCP.
    pub tls: Option<laminate_config::NodeTls>,
    /// Every instance in this native syntax (`prefer_transfer_syntax`).
    pub prefer_ts: Option<String>,
}

/// Deadlines and PDU size of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOptions {
    /// TCP connect and association negotiation (A-ASSOCIATE-AC) deadline.
    pub connect_timeout: Duration,
    /// Read and write deadline once associated, e.g. waiting for a C-STORE-RSP.
    pub io_timeout: Duration,
    /// Our maximum PDU (announced to the node, and the cap of our own
    /// fragments). Clamped to 16 KiB ..= 16 MiB.
    pub max_pdu: u32,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            max_pdu: DEFAULT_MAX_PDU,
        }
    }
}

/// What became of one instance: both variants are final for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// The node accepted it: status 0 or a warning (0x0001, 0x0107, 0x0116, 0xBxxx).
    Stored { status: u16 },
    /// Permanently refused: a failure status (0xA9xx, 0xCxxx, …) with
    /// `status`, or without one for what never reached the node (refused
    /// transfer syntax that cannot be converted, unreadable file, no
    /// accepted context, association rejected permanently).
    Failed { status: Option<u16>, error: String },
}

/// Reported from the sender threads, in the order things happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendEvent {
    /// One instance is done (journal it before returning: the thread waits).
    Acknowledged {
        sop_instance_uid: String,
        outcome: ItemOutcome,
        /// The syntax it was converted to, when not sent as it was.
        converted_to: Option<String>,
        /// From the first byte of the request to the parsed response (zero
        /// when nothing was sent).
        rtt: Duration,
    },
    /// An association failed, was aborted, timed out or the node is out of
    /// resources (0xA7xx): the unacknowledged instances go back to the caller.
    Transient { error: String },
}

/// Orders what [`EventSink::record`] recorded: a later ticket was recorded later.
pub type Ticket = u64;

/// Where a batch's events go, from the sender threads.
pub trait EventSink: Sync {
    /// Records one event (journal an acknowledgement here) and returns its
    /// ticket. It need not be durable yet.
    fn record(&self, ev: SendEvent) -> Ticket;
    /// Blocks until the event with `ticket`, and every one recorded before
    /// it, is durable. Called before an association lets the node complete
    /// its next instance.
    fn wait_durable(&self, ticket: Ticket);
}

/// A sink that handles each event completely in `record` (a plain callback).
pub struct Immediate<'a>(pub &'a (dyn Fn(SendEvent) + Sync));

impl EventSink for Immediate<'_> {
    fn record(&self, ev: SendEvent) -> Ticket {
        (self.0)(ev);
        0
    }

    fn wait_durable(&self, _ticket: Ticket) {}
}

/// The end of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Not acknowledged: after a transient failure (retry them after a
    /// backoff) or a cancel.
    pub remaining: Vec<Item>,
    /// Why `remaining` is not empty, unless it was a cancel.
    pub transient_error: Option<String>,
    /// Associations opened (established) during the batch.
    pub associations: u32,
}
