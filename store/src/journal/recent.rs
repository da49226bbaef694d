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
    use crate::{
        DispatchKind, DispatchRecord, Journal, NodeProgress, NodeStatus, Priority, Stage, Store,
    };

    fn rec(id: &str, status: NodeStatus, updated_at_ms: u64) -> DispatchRecord {
        let mut node = NodeProgress::queued("n1");
        node.status = status;
        DispatchRecord {
            id: id.into(),
            seq: 0,
            correlation_id: format!("c_{id}"),
            workspace_id: "ws".into(),
            entity_type: "session".into(),
            entity_id: "s".into(),
            kind: DispatchKind::Session,
            priority: Priority::Normal,
            subject_id: None,
            session_id: None,
            label: None,
            created_at_ms: 1,
            updated_at_ms,
            stage: Stage::Finished,
            study_uids: vec![],
            nodes: vec![node],
            replays: 0,
        }
    }

    #[test]
    fn only_what_finished_in_the_window_is_listed() {
        let store = Store::open_temporary().expect("store");
        store
            .journal_put(&rec("old", NodeStatus::Failed, 100))
            .unwrap();
        store
            .journal_put(&rec("new", NodeStatus::Failed, 500))
            .unwrap();
        store
            .journal_put(&rec("done", NodeStatus::Completed, 600))
            .unwrap();
        store
            .journal_put(&rec("open", NodeStatus::Retrying, 700))
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
