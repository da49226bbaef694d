//! DICOM Storage Commitment Push Model (PS3.4 Annex J), the parts both sides
//! of the appliance share: the N-ACTION request's and the N-EVENT-REPORT's
//! command sets and data sets (`dataset.rs`), and the reports waiting to be
//! handed over (`reports.rs`): the ingest SCP receives a node's
//! N-EVENT-REPORT on an association the node opens to us, and the dispatch
//! waiting for that Transaction UID gets it.
//!
//! The request itself goes out on the node's own association code
//! (`send/commit.rs`); the wait, its journal and its timeout are the send
//! stage's (`dispatch/commitment.rs`).

mod dataset;
mod reports;

pub use dataset::{
    action_data_set, event_report_from, failure_reason, n_action_rq, new_transaction_uid,
    CommitmentReport, ReportError, ACTION_REQUEST_COMMITMENT, N_ACTION_RQ, N_ACTION_RSP,
    N_EVENT_REPORT_RQ, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE,
};
pub use reports::{deliver, expect, Expected};
