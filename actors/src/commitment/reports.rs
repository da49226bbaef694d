//! Storage commitment reports on their way from the ingest SCP, which
//! receives them, to the dispatch that waits for them, by Transaction UID.
//!
//! One table per process: the appliance runs one ingest SCP and one
//! dispatcher, and the SCP's association threads are plain OS threads that
//! hold no actor address, so a locked map (touched once per request and once
//! per report) is the simplest meeting point. A report nobody waits for is
//! dropped: whoever journaled the wait asks the node again when it resumes.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::CommitmentReport;
use crate::health::lock;

static WAITING: Mutex<Option<HashMap<String, mpsc::UnboundedSender<CommitmentReport>>>> =
    Mutex::new(None);

/// A wait for one transaction's report; dropping it stops waiting.
pub struct Expected {
    transaction_uid: String,
    rx: mpsc::UnboundedReceiver<CommitmentReport>,
}

impl Expected {
    /// The next report for this transaction.
    pub async fn report(&mut self) -> Option<CommitmentReport> {
        self.rx.recv().await
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        if let Some(map) = lock(&WAITING).as_mut() {
            map.remove(&self.transaction_uid);
        }
    }
}

/// Starts waiting for `transaction_uid`'s report (before the request goes
/// out: a node may answer before the request's response arrives).
pub fn expect(transaction_uid: &str) -> Expected {
    let (tx, rx) = mpsc::unbounded_channel();
    lock(&WAITING)
        .get_or_insert_with(HashMap::new)
        .insert(transaction_uid.to_owned(), tx);
    Expected {
        transaction_uid: transaction_uid.to_owned(),
        rx,
    }
}

/// Hands a report to its waiter; false when nobody waits for it.
pub fn deliver(report: CommitmentReport) -> bool {
    let waiting = lock(&WAITING);
    match waiting
        .as_ref()
        .and_then(|m| m.get(&report.transaction_uid))
    {
        Some(tx) => tx.send(report).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tx: &str) -> CommitmentReport {
        CommitmentReport {
            transaction_uid: tx.into(),
            committed: vec!["1.2.3".into()],
            failed: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_report_reaches_its_waiter_and_no_other() {
        let mut a = expect("2.25.1001");
        let _b = expect("2.25.1002");
        assert!(deliver(report("2.25.1001")));
        assert_eq!(a.report().await, Some(report("2.25.1001")));
        assert!(!deliver(report("2.25.1003")));
        drop(a);
        assert!(!deliver(report("2.25.1001")), "nobody waits any more");
    }
}
