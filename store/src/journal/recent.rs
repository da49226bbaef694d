//! The dispatches that finished recently, through `dispatch_finished` (by finish time), so
//! the cost is what finished in the window, never the whole history. The disk's evictor
//! keeps the instances of dispatches that failed within `park_hours` (they may be replayed).

use super::index::{split_time_key, FINISHED};
use super::Journal;
use crate::keys::u64_key;
use crate::{DispatchRecord, Store, StoreError};

impl Store {
    /// Finished dispatches last updated at or after `since_ms`, oldest first.
    pub fn journal_finished_since(&self, since_ms: u64) -> Result<Vec<DispatchRecord>, StoreError> {
        let mut out = Vec::new();
        for key in self.journal.finished.range(u64_key(since_ms)..).keys() {
            let key = key?;
            let Some((_, id)) = split_time_key(&key) else {
                tracing::warn!(tree = FINISHED, "undecodable finished-dispatch key skipped");
                continue;
            };
            // The index may be stale: the record decides.
            if let Some(rec) = self.journal_get(&id)? {
                if rec.updated_at_ms >= since_ms && rec.nodes.iter().all(|n| n.status.is_final()) {
                    out.push(rec);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::dispatch_record;
    use crate::{Journal, NodeStatus, Stage, Store};

    #[test]
    fn only_what_finished_in_the_window_is_listed() {
        let store = Store::open_temporary().expect("store");
        store
            .journal_put(&dispatch_record(
                "old",
                NodeStatus::Failed,
                Stage::Finished,
                100,
            ))
            .unwrap();
        store
            .journal_put(&dispatch_record(
                "new",
                NodeStatus::Failed,
                Stage::Finished,
                500,
            ))
            .unwrap();
        store
            .journal_put(&dispatch_record(
                "done",
                NodeStatus::Completed,
                Stage::Finished,
                600,
            ))
            .unwrap();
        store
            .journal_put(&dispatch_record(
                "open",
                NodeStatus::Retrying,
                Stage::Finished,
                700,
            ))
            .unwrap();
        let ids: Vec<String> = store
            .journal_finished_since(200)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["new", "done"]);
    }
}
