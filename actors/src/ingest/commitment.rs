//! Storage commitment reports (N-EVENT-REPORT of the Storage Commitment Push
//! Model) that PACS nodes send on associations they open to the ingest SCP:
//! read and handed to the dispatch waiting for their Transaction UID
//! (`crate::commitment`).

use super::command::{STATUS_PROCESSING_FAILURE, STATUS_SUCCESS};
use crate::commitment::{deliver, event_report_from};

/// The largest storage commitment report we take (about 100 000 instances).
pub(super) const MAX_REPORT: usize = 16 * 1024 * 1024;

/// A storage commitment report (N-EVENT-REPORT) arrived whole: handed
/// to the dispatch waiting for its transaction. The status answered.
pub(super) fn take_report(calling_ae: &str, bytes: &[u8], ts: &str) -> u16 {
    match event_report_from(bytes, ts) {
        Ok(report) => {
            // Logged before it is handed over: the dispatch settles at once.
            tracing::info!(
                calling_ae = %calling_ae,
                transaction_uid = %report.transaction_uid,
                committed = report.committed.len(),
                failed = report.failed.len(),
                "storage commitment report received"
            );
            let tx = report.transaction_uid.clone();
            if !deliver(report) {
                tracing::info!(transaction_uid = %tx, "nobody waits for this storage commitment report (its dispatch asks again when it resumes)");
            }
            STATUS_SUCCESS
        }
        Err(e) => {
            tracing::warn!(calling_ae = %calling_ae, error = %e, "unreadable storage commitment report");
            STATUS_PROCESSING_FAILURE
        }
    }
}
