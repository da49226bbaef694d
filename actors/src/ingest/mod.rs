//! The DICOM ingest SCP: modalities send studies to the appliance's AE title
//! with C-STORE (and check it with C-ECHO), and PACS nodes report storage
//! commitment to it (N-EVENT-REPORT); every accepted instance is
//! written to `{data_dir}/storage/{study}/{series}/{sop}.dcm`, fsynced and
//! indexed in the catalog *before* the success response (APPLIANCE.md
//! "The local store").
//!
//! It may touch: the network (the listening socket and the associations
//! peers open), `{data_dir}/storage/` (write) and the store's catalog.
//!
//! # Pieces
//! - `actor.rs`: [`IngestActor`], supervised; binds the listener (and the
//!   DICOM TLS one, `--dicom-tls-addr`, sharing everything else) once at
//!   [`IngestActor::start`], accepts, caps simultaneous associations
//!   (A-ASSOCIATE-RJ transient beyond the cap) and starts one thread per
//!   association. Logs [`InstanceIngested`] events.
//! - `scp.rs`: one association: negotiation (called AE check, any abstract
//!   syntax, first known transfer syntax the peer proposes) and the PDV loop.
//! - `command.rs`: request command sets read, responses built, status codes.
//! - `commitment.rs`: storage commitment reports (N-EVENT-REPORT) from the
//!   PACS nodes, handed to the dispatch waiting for them.
//! - `header.rs`: the few attributes the catalog needs, read from the
//!   untrusted data set with every declared length checked first.
//! - `writer.rs`: one instance streamed to a temporary file, then checked,
//!   fsynced, renamed into place and indexed.
//! - `pdu_in.rs`: PDUs read off the socket whole, PDVs lent as slices.
//! - `indexer.rs`: each association's catalog thread.
//! - `drain.rs`: closing the associations at shutdown.
//!
//! # Blocking threads, not the async API
//! Each association runs blocking dicom-ul on a dedicated OS thread
//! (`ServerAssociationOptions::establish` on a std `TcpStream`), at most
//! `max_associations` of them. Everything an association does per instance
//! is blocking anyway (file writes, `fsync`, the sled transaction and
//! flush), so an async association would need `spawn_blocking` around most
//! steps; on actix's single-threaded arbiters a slow disk would otherwise
//! stall every other association and actor. A thread per association also
//! isolates peers: a stalled or malicious peer holds only its own thread
//! (until the 60 s idle timeout), and a panic ends only its association.
//! Only the accept loop is async (a tokio listener on the actor's arbiter),
//! so the actor can stop and restart it without blocking.
//!
//! # Per instance
//! Command PDV → parse (message id, affected SOP class/instance) → free-space
//! check (under `min_free_bytes`: 0xA700, nothing written) → data PDVs
//! streamed to `storage/.incoming/*.part` behind a built file meta group →
//! header read back (up to Pixel Data) → UIDs checked and sanitised → fsync →
//! rename over `storage/{study}/{series}/{sop}.dcm` (a duplicate replaces the
//! old copy atomically) → directory fsync, and meanwhile on the association's
//! catalog thread `Catalog::put_instance` (one transaction + flush) → C-STORE-RSP, one PDU in
//! one write on a TCP_NODELAY socket. Statuses: 0x0000 stored; 0xA700 disk floor or write failure;
//! 0xA900 data set UIDs differ from the command's; 0xC000 unparseable or
//! missing UIDs; 0xC001 a UID that is not digits and single dots; 0x0110 the
//! store failed. Abort, a dropped connection or a failure status removes the
//! temporary file.
//!
//! # Shutdown
//! [`IngestShutdownRequested`] stops accepting; every association finishes
//! the instance it is receiving (stored, indexed, answered), then closes with
//! A-ABORT, and one waiting for its next request closes at once (`drain.rs`).
//! The answer comes when every association thread has ended.

mod actor;
pub(crate) mod command;
mod commitment;
mod drain;
mod header;
mod indexer;
mod messages;
mod pdu_in;
mod scp;
mod writer;

#[cfg(test)]
mod tests;

pub use actor::{
    IngestActor, IngestError, IngestHandle, IngestSettings, IngestTls, DEFAULT_MAX_ASSOCIATIONS,
    DEFAULT_MIN_FREE_BYTES,
};
pub use messages::{IngestShutdownRequested, InstanceIngested};
pub use scp::{IDLE_TIMEOUT, MAX_PDU_LENGTH};
pub use writer::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
