//! Parked dispatches (APPLIANCE.md "Node outages"): a node whose retries were used up is
//! `failed` and, for `park_hours`, *parked*: replayed for that node when the node answers
//! C-ECHO again. The truth is the node's progress in the record
//! ([`NodeProgress::parked_until_ms`](super::NodeProgress)); this tree is its index, so
//! finding the parked dispatches of a node never reads the history.
//!
//! Tree `dispatch_parked`: key = `{node}\0{id}`, value = [`Parked`] as JSON. Written before
//! the record says parked and removed after it stops saying so; readers check each entry
//! against the record, so an entry a crash left behind is dropped, never acted on.

use serde::{Deserialize, Serialize};

use super::{decode, encode, key, prefix};
use crate::{Store, StoreError};

pub(crate) const PARKED: &str = "dispatch_parked";

/// One parked (dispatch, node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub dispatch_id: String,
    pub node_id: String,
    pub parked_at_ms: u64,
    pub until_ms: u64,
}

/// The index of parked dispatches.
pub trait Parking {
    /// Records that (dispatch, node) is parked; flushes.
    fn park_put(&self, p: &Parked) -> Result<(), StoreError>;
    /// Forgets (dispatch, node); flushes. Unknown pairs are fine.
    fn park_remove(&self, dispatch_id: &str, node_id: &str) -> Result<(), StoreError>;
    /// The parked entries of one node.
    fn parked_for(&self, node_id: &str) -> Result<Vec<Parked>, StoreError>;
    /// Every parked entry (what is parked, not the history).
    fn parked_all(&self) -> Result<Vec<Parked>, StoreError>;
}

impl Store {
    fn park_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(PARKED)?)
    }
}

fn collect(it: sled::Iter) -> Result<Vec<Parked>, StoreError> {
    let mut out = Vec::new();
    for kv in it {
        let (k, v) = kv?;
        out.push(decode::<Parked>(PARKED, &k, &v)?);
    }
    Ok(out)
}

impl Parking for Store {
    fn park_put(&self, p: &Parked) -> Result<(), StoreError> {
        self.park_tree()?.insert(
            key(&[&p.node_id, &p.dispatch_id]),
            encode(PARKED, &p.dispatch_id, p)?,
        )?;
        self.db.flush()?;
        Ok(())
    }

    fn park_remove(&self, dispatch_id: &str, node_id: &str) -> Result<(), StoreError> {
        if self
            .park_tree()?
            .remove(key(&[node_id, dispatch_id]))?
            .is_some()
        {
            self.db.flush()?;
        }
        Ok(())
    }

    fn parked_for(&self, node_id: &str) -> Result<Vec<Parked>, StoreError> {
        collect(self.park_tree()?.scan_prefix(prefix(&[node_id])))
    }

    fn parked_all(&self) -> Result<Vec<Parked>, StoreError> {
        collect(self.park_tree()?.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(node: &str, id: &str) -> Parked {
        Parked {
            dispatch_id: id.into(),
            node_id: node.into(),
            parked_at_ms: 1,
            until_ms: 2,
        }
    }

    #[test]
    fn entries_are_found_by_node_and_removed_once() {
        let s = Store::open_temporary().unwrap();
        s.park_put(&p("n1", "d1")).unwrap();
        s.park_put(&p("n1", "d2")).unwrap();
        s.park_put(&p("n10", "d3")).unwrap();
        let ids = |v: Vec<Parked>| v.into_iter().map(|p| p.dispatch_id).collect::<Vec<_>>();
        assert_eq!(ids(s.parked_for("n1").unwrap()), ["d1", "d2"]);
        assert_eq!(ids(s.parked_for("n10").unwrap()), ["d3"]);
        assert_eq!(s.parked_all().unwrap().len(), 3);
        s.park_remove("d1", "n1").unwrap();
        s.park_remove("d1", "n1").unwrap();
        assert_eq!(ids(s.parked_for("n1").unwrap()), ["d2"]);
    }

    #[test]
    fn parking_survives_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.park_put(&p("n1", "d1")).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.parked_for("n1").unwrap(), vec![p("n1", "d1")]);
    }
}
