//! The local store of laminate-proxy: one sled database under `{data_dir}/store`
//! (APPLIANCE.md "Data dir"), shared by every part of the appliance through cheap clones
//! of [`Store`].
//!
//! Each area of the store (seen events, outbox, the catalog of patients, sessions, scans and
//! instances, and later the dispatch journal) owns its sled trees and sits behind a small trait
//! implemented for [`Store`], so callers depend on the behaviour, not on sled. This crate
//! knows nothing of actors.
//!
//! # Layout
//!
//! - [`error`]: [`StoreError`], the one error type every store operation returns.
//! - [`store`]: [`Store`] itself: opening the database, opening each area's trees, flushing.
//! - `keys`: the big-endian `u64` key encoding that keeps sequence-keyed trees in order.
//! - [`seen`]: [`SeenEvents`], de-duplication of incoming events by `correlation_id` over
//!   a persisted 7-day window (PROTOCOL.md §3).
//! - [`journal`]: [`Journal`], the dispatch journal: records, instance sets and per-node acks,
//!   with indexes (active, by state, by time, counts), pages and pruning.
//! - [`commitment`]: [`Commitments`], the journaled storage commitment waits of nodes.
//! - [`outbox`]: [`Outbox`], the durable ordered queue of outgoing events with coalescing
//!   of superseded progress (PROTOCOL.md §4).
//! - [`catalog`]: [`Catalog`], the index of the local DICOM cache (patients ↔ sessions ↔
//!   scans ↔ instances, subject links, pending file deletions) kept in step with
//!   `{data_dir}/storage` by transactions and by [`repair`] at start-up; a last-used index
//!   and [`evict`] bound the cache (least recently used first).
#![forbid(unsafe_code)]

pub mod catalog;
pub mod commitment;
pub mod error;
pub mod journal;
mod keys;
pub mod outbox;
pub mod seen;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use catalog::{
    audit, evict, finish_file_deletion, instance_rel_path, is_valid_uid, rebuild_catalog, repair,
    AuditReport, Catalog, Deletion, EvictionGoal, EvictionReport, InstanceRecord, InstanceSource,
    Keep, RepairReport, ScanSummary, SessionSummary, StoreFigures, MAX_UID_LEN, NO_TICKET,
    PART_SUFFIX, STORAGE_DIR,
};
pub use commitment::{CommitmentWait, Commitments};
pub use error::StoreError;
pub use journal::{
    Ack, BadCursor, DispatchCounts, DispatchKind, DispatchRecord, DispatchState, Findings, Journal,
    JournalCursor, JournalPage, NodeProgress, NodeStatus, Parked, Parking, Priority, Skipped,
    SkippedEntries, Stage, MAX_SKIPPED_LISTED,
};
pub use outbox::{Outbox, OutboxEntry};
pub use seen::{SeenEvents, SEEN_WINDOW_MS};
pub use store::Store;
