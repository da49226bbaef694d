//! The dispatch journal (APPLIANCE.md "Dispatch jobs"): every dispatch is recorded the
//! moment it is accepted and every step after that before it is reported, so start-up can
//! resume each unfinished dispatch at its stage and never re-send an instance a node has
//! acknowledged.
//!
//! Trees:
//! - `dispatches`: key = dispatch id, value = the [`DispatchRecord`] as JSON.
//! - `dispatch_by_correlation`: key = correlation id, value = dispatch id.
//! - `dispatch_instances`: key = `{id}\0{sop uid}`, value = empty — the instances a
//!   dispatch delivers (kept apart from the record: a subject may have thousands).
//! - `dispatch_acks`: key = `{id}\0{node}\0{sop uid}`, value = [`Ack`] as JSON — one small
//!   write per acknowledged instance, flushed before the next instance goes out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

const DISPATCHES: &str = "dispatches";
const BY_CORRELATION: &str = "dispatch_by_correlation";
const INSTANCES: &str = "dispatch_instances";
const ACKS: &str = "dispatch_acks";
const SEP: u8 = 0;

/// Queue priority; queued dispatches start highest first, then oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Normal,
    Low,
}

/// What a dispatch delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatchKind {
    Subject,
    Session,
    Scan,
}

impl DispatchKind {
    /// The download API's path segment (PROTOCOL.md §5).
    pub fn segment(self) -> &'static str {
        match self {
            DispatchKind::Subject => "subjects",
            DispatchKind::Session => "sessions",
            DispatchKind::Scan => "scans",
        }
    }
}

/// Where a dispatch stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Queued,
    Downloading,
    Extracting,
    Sending,
    Finished,
}

/// The status of one target node (PROTOCOL.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Queued,
    Downloading,
    Extracting,
    Sending,
    Retrying,
    Completed,
    Failed,
    Cancelled,
}

impl NodeStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            NodeStatus::Completed | NodeStatus::Failed | NodeStatus::Cancelled
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Queued => "queued",
            NodeStatus::Downloading => "downloading",
            NodeStatus::Extracting => "extracting",
            NodeStatus::Sending => "sending",
            NodeStatus::Retrying => "retrying",
            NodeStatus::Completed => "completed",
            NodeStatus::Failed => "failed",
            NodeStatus::Cancelled => "cancelled",
        }
    }
}

/// One target node's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProgress {
    pub node_id: String,
    pub status: NodeStatus,
    pub files_sent: u64,
    pub files_total: u64,
    pub error: Option<String>,
}

impl NodeProgress {
    pub fn queued(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            status: NodeStatus::Queued,
            files_sent: 0,
            files_total: 0,
            error: None,
        }
    }

    /// `100 * files_sent / files_total` rounded down; 100 once completed.
    pub fn progress(&self) -> u64 {
        if self.status == NodeStatus::Completed {
            100
        } else {
            (100 * self.files_sent)
                .checked_div(self.files_total)
                .map_or(0, |p| p.min(100))
        }
    }
}

/// One dispatch as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchRecord {
    pub id: String,
    /// Acceptance order (for "oldest first").
    pub seq: u64,
    pub correlation_id: String,
    pub workspace_id: String,
    pub entity_type: String,
    pub entity_id: String,
    pub kind: DispatchKind,
    pub priority: Priority,
    pub subject_id: Option<String>,
    pub session_id: Option<String>,
    pub label: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub stage: Stage,
    /// Studies the dispatch's instances belong to (known after extraction).
    #[serde(default)]
    pub study_uids: Vec<String>,
    pub nodes: Vec<NodeProgress>,
    /// Times an operator replayed it.
    #[serde(default)]
    pub replays: u32,
}

/// The dispatch's overall state for the API (APPLIANCE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatchState {
    Active,
    Completed,
    Failed,
    Cancelled,
}

impl DispatchRecord {
    pub fn state(&self) -> DispatchState {
        if self.nodes.iter().any(|n| !n.status.is_final()) {
            DispatchState::Active
        } else if self.nodes.iter().all(|n| n.status == NodeStatus::Completed) {
            DispatchState::Completed
        } else if self.nodes.iter().any(|n| n.status == NodeStatus::Failed) {
            DispatchState::Failed
        } else {
            DispatchState::Cancelled
        }
    }

    pub fn node(&self, node_id: &str) -> Option<&NodeProgress> {
        self.nodes.iter().find(|n| n.node_id == node_id)
    }

    pub fn node_mut(&mut self, node_id: &str) -> Option<&mut NodeProgress> {
        self.nodes.iter_mut().find(|n| n.node_id == node_id)
    }
}

/// One node's answer for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Accepted (success or warning status).
    pub stored: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The transfer syntax it was converted to when the node did not get it
    /// as it was (`None`: sent as it was, or not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_to: Option<String>,
}

/// The dispatch journal.
pub trait Journal {
    /// The next acceptance sequence number (durable, increasing).
    fn journal_next_seq(&self) -> Result<u64, StoreError>;
    /// Writes (creates or replaces) a record and its correlation index; flushes.
    fn journal_put(&self, rec: &DispatchRecord) -> Result<(), StoreError>;
    fn journal_get(&self, id: &str) -> Result<Option<DispatchRecord>, StoreError>;
    fn journal_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Option<DispatchRecord>, StoreError>;
    /// Every record, oldest first.
    fn journal_all(&self) -> Result<Vec<DispatchRecord>, StoreError>;
    /// Replaces the dispatch's instance set; flushes.
    fn journal_set_instances(&self, id: &str, sops: &[String]) -> Result<(), StoreError>;
    fn journal_instances(&self, id: &str) -> Result<Vec<String>, StoreError>;
    /// Records one node's answer for one instance; flushes.
    fn journal_ack(&self, id: &str, node_id: &str, sop: &str, ack: &Ack) -> Result<(), StoreError>;
    /// Records one node's answer without flushing: it is durable after the
    /// next [`Store::flush`](crate::Store::flush), so several associations'
    /// answers can share one flush (group commit).
    fn journal_ack_deferred(
        &self,
        id: &str,
        node_id: &str,
        sop: &str,
        ack: &Ack,
    ) -> Result<(), StoreError>;
    /// The answers of one node, by SOP Instance UID.
    fn journal_acks(&self, id: &str, node_id: &str) -> Result<BTreeMap<String, Ack>, StoreError>;
    /// Forgets one node's answers (a replay sends everything again); flushes.
    fn journal_clear_acks(&self, id: &str, node_id: &str) -> Result<(), StoreError>;
}

#[derive(Clone)]
pub(crate) struct JournalTrees {
    dispatches: sled::Tree,
    by_correlation: sled::Tree,
    instances: sled::Tree,
    acks: sled::Tree,
}

impl JournalTrees {
    pub(crate) fn open(db: &sled::Db) -> Result<JournalTrees, StoreError> {
        Ok(JournalTrees {
            dispatches: db.open_tree(DISPATCHES)?,
            by_correlation: db.open_tree(BY_CORRELATION)?,
            instances: db.open_tree(INSTANCES)?,
            acks: db.open_tree(ACKS)?,
        })
    }
}

fn key(parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(SEP);
    k
}

fn last_part(k: &[u8]) -> Option<String> {
    let start = k
        .iter()
        .rposition(|b| *b == SEP)
        .map(|i| i + 1)
        .unwrap_or(0);
    String::from_utf8(k[start..].to_vec()).ok()
}

fn decode<T: for<'de> Deserialize<'de>>(
    tree: &'static str,
    k: &[u8],
    v: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|_| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(k).replace('\0', "/"),
    })
}

fn encode<T: Serialize>(tree: &'static str, id: &str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|_| StoreError::Corrupt {
        tree,
        key: id.to_owned(),
    })
}

impl Journal for Store {
    fn journal_next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    fn journal_put(&self, rec: &DispatchRecord) -> Result<(), StoreError> {
        let t = &self.journal;
        t.dispatches
            .insert(rec.id.as_bytes(), encode(DISPATCHES, &rec.id, rec)?)?;
        t.by_correlation
            .insert(rec.correlation_id.as_bytes(), rec.id.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn journal_get(&self, id: &str) -> Result<Option<DispatchRecord>, StoreError> {
        match self.journal.dispatches.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode(DISPATCHES, id.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    fn journal_by_correlation(
        &self,
        correlation_id: &str,
    ) -> Result<Option<DispatchRecord>, StoreError> {
        match self.journal.by_correlation.get(correlation_id.as_bytes())? {
            Some(id) => {
                let id = String::from_utf8_lossy(&id).into_owned();
                self.journal_get(&id)
            }
            None => Ok(None),
        }
    }

    fn journal_all(&self) -> Result<Vec<DispatchRecord>, StoreError> {
        let mut all = Vec::new();
        for kv in self.journal.dispatches.iter() {
            let (k, v) = kv?;
            all.push(decode::<DispatchRecord>(DISPATCHES, &k, &v)?);
        }
        all.sort_by_key(|r| r.seq);
        Ok(all)
    }

    fn journal_set_instances(&self, id: &str, sops: &[String]) -> Result<(), StoreError> {
        let t = &self.journal.instances;
        let mut batch = sled::Batch::default();
        for kv in t.scan_prefix(prefix(&[id])) {
            let (k, _) = kv?;
            batch.remove(k);
        }
        for sop in sops {
            batch.insert(key(&[id, sop]), &[][..]);
        }
        t.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn journal_instances(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.journal.instances.scan_prefix(prefix(&[id])) {
            let (k, _) = kv?;
            if let Some(sop) = last_part(&k) {
                out.push(sop);
            }
        }
        Ok(out)
    }

    fn journal_ack(&self, id: &str, node_id: &str, sop: &str, ack: &Ack) -> Result<(), StoreError> {
        self.journal_ack_deferred(id, node_id, sop, ack)?;
        self.db.flush()?;
        Ok(())
    }

    fn journal_ack_deferred(
        &self,
        id: &str,
        node_id: &str,
        sop: &str,
        ack: &Ack,
    ) -> Result<(), StoreError> {
        self.journal
            .acks
            .insert(key(&[id, node_id, sop]), encode(ACKS, id, ack)?)?;
        Ok(())
    }

    fn journal_acks(&self, id: &str, node_id: &str) -> Result<BTreeMap<String, Ack>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.journal.acks.scan_prefix(prefix(&[id, node_id])) {
            let (k, v) = kv?;
            if let Some(sop) = last_part(&k) {
                out.insert(sop, decode(ACKS, &k, &v)?);
            }
        }
        Ok(out)
    }

    fn journal_clear_acks(&self, id: &str, node_id: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for kv in self.journal.acks.scan_prefix(prefix(&[id, node_id])) {
            let (k, _) = kv?;
            batch.remove(k);
        }
        self.journal.acks.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, seq: u64) -> DispatchRecord {
        DispatchRecord {
            id: id.into(),
            seq,
            correlation_id: format!("corr_{id}"),
            workspace_id: "ws".into(),
            entity_type: "session".into(),
            entity_id: "sess_1".into(),
            kind: DispatchKind::Session,
            priority: Priority::Normal,
            subject_id: None,
            session_id: None,
            label: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            stage: Stage::Queued,
            study_uids: vec![],
            nodes: vec![NodeProgress::queued("n1"), NodeProgress::queued("n2")],
            replays: 0,
        }
    }

    #[test]
    fn records_survive_reopen_and_are_found_by_correlation() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            s.journal_put(&record("d2", 2)).expect("put");
            s.journal_put(&record("d1", 1)).expect("put");
        }
        let s = Store::open(dir.path()).expect("reopen");
        let all = s.journal_all().expect("all");
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["d1", "d2"]
        );
        assert_eq!(
            s.journal_by_correlation("corr_d2")
                .expect("get")
                .map(|r| r.seq),
            Some(2)
        );
        assert_eq!(s.journal_get("nope").expect("get"), None);
    }

    /// The acknowledgement of an instance stored with status 0x0000.
    fn stored() -> Ack {
        Ack {
            stored: true,
            status: Some(0),
            error: None,
            converted_to: None,
        }
    }

    #[test]
    fn acks_are_per_node_and_can_be_cleared() {
        let s = Store::open_temporary().expect("open");
        let ok = stored();
        s.journal_ack("d1", "n1", "1.2.3", &ok).expect("ack");
        s.journal_ack("d1", "n1", "1.2.4", &ok).expect("ack");
        s.journal_ack("d1", "n2", "1.2.3", &ok).expect("ack");
        // A node id that is a prefix of another must not mix.
        s.journal_ack("d1", "n", "9.9", &ok).expect("ack");
        assert_eq!(s.journal_acks("d1", "n1").expect("acks").len(), 2);
        assert_eq!(s.journal_acks("d1", "n").expect("acks").len(), 1);
        s.journal_clear_acks("d1", "n1").expect("clear");
        assert!(s.journal_acks("d1", "n1").expect("acks").is_empty());
        assert_eq!(s.journal_acks("d1", "n2").expect("acks").len(), 1);
    }

    #[test]
    fn deferred_acks_are_read_at_once_and_kept_after_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = stored();
        {
            let s = Store::open(dir.path()).expect("open");
            s.journal_ack_deferred("d1", "n1", "1.2.3", &ok)
                .expect("ack");
            s.journal_ack_deferred("d1", "n1", "1.2.4", &ok)
                .expect("ack");
            assert_eq!(s.journal_acks("d1", "n1").expect("acks").len(), 2);
            s.flush().expect("flush");
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            s.journal_acks("d1", "n1")
                .expect("acks")
                .into_keys()
                .collect::<Vec<_>>(),
            ["1.2.3", "1.2.4"]
        );
    }

    #[test]
    fn instance_sets_replace() {
        let s = Store::open_temporary().expect("open");
        s.journal_set_instances("d1", &["1.1".into(), "1.2".into()])
            .expect("set");
        s.journal_set_instances("d10", &["9".into()]).expect("set");
        s.journal_set_instances("d1", &["1.3".into()]).expect("set");
        assert_eq!(s.journal_instances("d1").expect("get"), ["1.3"]);
        assert_eq!(s.journal_instances("d10").expect("get"), ["9"]);
    }

    #[test]
    fn state_follows_the_nodes() {
        let mut r = record("d1", 1);
        assert_eq!(r.state(), DispatchState::Active);
        r.nodes[0].status = NodeStatus::Completed;
        r.nodes[1].status = NodeStatus::Cancelled;
        assert_eq!(r.state(), DispatchState::Cancelled);
        r.nodes[1].status = NodeStatus::Failed;
        assert_eq!(r.state(), DispatchState::Failed);
        r.nodes[1].status = NodeStatus::Completed;
        assert_eq!(r.state(), DispatchState::Completed);
        assert_eq!(r.nodes[1].progress(), 100);
    }

    #[test]
    fn garbage_records_are_typed_errors() {
        let s = Store::open_temporary().expect("open");
        s.journal
            .dispatches
            .insert("bad", &b"{nope"[..])
            .expect("insert");
        assert!(matches!(
            s.journal_get("bad"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
