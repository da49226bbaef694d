//! Storage commitment waits: a node that commits what it stores is
//! `completed` only once it reports every instance committed, and the wait
//! for that report survives a restart. One entry per (dispatch, node) while
//! the node is asked and waited for, removed when the wait ends.
//!
//! Tree `dispatch_commitments`: key = `{dispatch_id}\0{node_id}`, value = a
//! [`CommitmentWait`] as JSON. Entries of pruned dispatches go with them the
//! next time that node's wait ends or is looked up by a replay; an entry
//! whose `replays` differs from its dispatch's is stale and replaced.

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

const COMMITMENTS: &str = "dispatch_commitments";

/// One node's wait for its storage commitment report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitmentWait {
    /// The Transaction UID the node was asked under (asked again after a restart).
    pub transaction_uid: String,
    /// When it was first asked, milliseconds since the Unix epoch; the
    /// timeout counts from here.
    pub requested_at_ms: u64,
    /// The dispatch's replay count when asked (a replay starts a new wait).
    pub replays: u32,
}

/// The storage commitment waits.
pub trait Commitments {
    /// The wait of one node of one dispatch, if any.
    fn commitment_get(&self, id: &str, node_id: &str)
        -> Result<Option<CommitmentWait>, StoreError>;
    /// Records (replaces) it; flushes, so it is durable before the node is asked.
    fn commitment_put(&self, id: &str, node_id: &str, w: &CommitmentWait)
        -> Result<(), StoreError>;
    /// Forgets it; flushes.
    fn commitment_remove(&self, id: &str, node_id: &str) -> Result<(), StoreError>;
}

fn key(id: &str, node_id: &str) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(node_id.as_bytes());
    k
}

impl Commitments for Store {
    fn commitment_get(
        &self,
        id: &str,
        node_id: &str,
    ) -> Result<Option<CommitmentWait>, StoreError> {
        let k = key(id, node_id);
        match self.db.open_tree(COMMITMENTS)?.get(&k)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|_| StoreError::Corrupt {
                    tree: COMMITMENTS,
                    key: format!("{id}/{node_id}"),
                }),
            None => Ok(None),
        }
    }

    fn commitment_put(
        &self,
        id: &str,
        node_id: &str,
        w: &CommitmentWait,
    ) -> Result<(), StoreError> {
        let v = serde_json::to_vec(w).map_err(|_| StoreError::Corrupt {
            tree: COMMITMENTS,
            key: format!("{id}/{node_id}"),
        })?;
        self.db
            .open_tree(COMMITMENTS)?
            .insert(key(id, node_id), v)?;
        self.db.flush()?;
        Ok(())
    }

    fn commitment_remove(&self, id: &str, node_id: &str) -> Result<(), StoreError> {
        self.db.open_tree(COMMITMENTS)?.remove(key(id, node_id))?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_survives_reopening_and_is_forgotten_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let w = CommitmentWait {
            transaction_uid: "2.25.5".into(),
            requested_at_ms: 1_700_000_000_000,
            replays: 0,
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.commitment_put("d1", "node_1", &w).unwrap();
            assert_eq!(s.commitment_get("d1", "node_2").unwrap(), None);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.commitment_get("d1", "node_1").unwrap(), Some(w));
        s.commitment_remove("d1", "node_1").unwrap();
        assert_eq!(s.commitment_get("d1", "node_1").unwrap(), None);
    }
}
