//! Deletions from the local store: `session.deleted` and `scan.deleted`
//! (PROTOCOL.md §3). The catalog transaction (the study or series, its
//! instances, the patient mapping when orphaned, and the files as pending
//! deletions) commits before the event counts as handled; the files are
//! unlinked right after on a blocking thread, so a deletion of thousands of
//! instances never holds up the router. A crash in between is finished by the
//! start-up repair.
//!
//! It may touch: the catalog tables of the store and files under `storage/`.

mod actor;
mod messages;
mod payload;

pub use actor::DeletionActor;
pub use messages::{DeletionReceived, ScanDeleted, StudyDeleted};
