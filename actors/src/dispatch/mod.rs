//! Dispatch: download → extract → index → send → report, one supervised job
//! per dispatch, journaled so it resumes after a crash (APPLIANCE.md "Dispatch
//! jobs", PROTOCOL.md §3–5).
//!
//! Files: `dispatcher.rs` the queue and its actor; `job.rs` one dispatch's actor;
//! `pipeline.rs` its stages (`send_stage.rs` the send stage, `commitment.rs` its storage commitment wait); `ack_journal.rs` the group commit of a batch's
//! answers; `shared.rs` what a job's stages share; `accept.rs`
//! payload validation and target nodes; `download.rs` the archive download;
//! `extract.rs` the untrusted-archive extraction; `follow.rs` reading an archive
//! while it downloads; `index.rs` DICOM headers; `index_dir.rs` walking an extracted archive;
//! `cache_index.rs` moving its instances into the cache and listing what it left out;
//! `retry.rs` the retry policy; `parking.rs` node outages (no slot while retrying, parked dispatches); `watchdog.rs` the stages' no-progress limits; `report.rs` `dispatch.status` events; `outcomes.rs` per-instance outcomes for the API;
//! `messages.rs` the messages; `history.rs` pruning the
//! dispatch history. Tests: `extract_tests.rs` (good and hostile
//! archives, property tests), `index_tests.rs`, and `fixtures.rs` (DICOM files
//! and zip archives built in code, hostile ones byte by byte).
//!
//! It may touch: the journal, catalog and outbox tables; `spool/` and `storage/`;
//! the network (downloads from `api_url`, associations to configured nodes).

pub mod accept;
mod ack_journal;
mod cache_index;
pub mod commitment;
pub mod disk_wait;
pub mod dispatcher;
pub mod download;
pub mod extract;
pub mod follow;
pub mod history;
pub mod index;
pub mod index_dir;
pub mod job;
pub mod messages;
pub mod outcomes;
pub mod parking;
pub mod pipeline;
pub mod report;
pub mod retry;
pub mod send_stage;
pub mod shared;
pub mod watchdog;

#[cfg(test)]
mod extract_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod index_tests;

pub use dispatcher::Dispatcher;
pub use messages::{
    CancelRequested, DispatchReceived, NodeCameBack, ReplayFailedRequested, ReplayRequested,
    ShutdownRequested,
};
pub use shared::JobEnv;
