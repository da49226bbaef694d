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
//! - `dispatch_skipped` (`findings.rs`): key = dispatch id, value = the archive entries
//!   extraction left out, with why; the `dispatch_instances` values name each instance's entry.
//! - the secondary indexes of `index.rs` (active dispatches, by state, by time, counts),
//!   written in the same transaction as each record, so reading active work and pages
//!   does not grow with history; `page.rs` reads them, `prune.rs` removes dispatches
//!   finished before the history window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::{Store, StoreError};

mod findings;
mod index;
mod page;
mod park;
mod prune;
mod recent;
#[cfg(test)]
mod tests;

pub use findings::{Findings, Skipped, SkippedEntries, MAX_SKIPPED_LISTED};
use index::{IndexEntry, IndexTx, TxResult};
pub use page::{BadCursor, DispatchCounts, JournalCursor, JournalPage};
pub use park::{Parked, Parking};

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
    /// Failed with its retries used up and parked until then (`park.rs`): replayed
    /// for this node when the node answers C-ECHO again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_until_ms: Option<u64>,
}

impl NodeProgress {
    pub fn queued(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            status: NodeStatus::Queued,
            files_sent: 0,
            files_total: 0,
            error: None,
            parked_until_ms: None,
        }
    }

    /// Parked at `now_ms` (failed, its parking not yet over).
    pub fn is_parked(&self, now_ms: u64) -> bool {
        self.status == NodeStatus::Failed && self.parked_until_ms.is_some_and(|u| u > now_ms)
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
    /// Every record, oldest first. Reads the whole journal: for tests and tools, not for
    /// anything that runs often (see [`Journal::journal_active`], [`Journal::journal_page`]).
    fn journal_all(&self) -> Result<Vec<DispatchRecord>, StoreError>;
    /// The active dispatches (any node not final), oldest (`seq`) first. Costs what is
    /// active, not the history.
    fn journal_active(&self) -> Result<Vec<DispatchRecord>, StoreError>;
    /// How many dispatches are in each state (kept with every write: a few reads).
    fn journal_counts(&self) -> Result<DispatchCounts, StoreError>;
    /// Up to `limit` dispatches (of `state` only, when given), newest (`created_at`) first,
    /// created before `before` when given; the page's `next` continues it.
    fn journal_page(
        &self,
        state: Option<DispatchState>,
        before: Option<&JournalCursor>,
        limit: usize,
    ) -> Result<JournalPage, StoreError>;
    /// Removes up to `max` dispatches that finished (last updated) before
    /// `finished_before_ms`, with their instance sets, acknowledgements and pending outbox
    /// entries, oldest first; one transaction each, one flush. Returns how many.
    fn journal_prune(&self, finished_before_ms: u64, max: usize) -> Result<usize, StoreError>;
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
    skipped: sled::Tree,
    index: sled::Tree,
    by_created: sled::Tree,
    by_state: sled::Tree,
    finished: sled::Tree,
    counts: sled::Tree,
    meta: sled::Tree,
}

impl JournalTrees {
    /// Opens the trees and builds the indexes if this store has none yet.
    pub(crate) fn open(db: &sled::Db) -> Result<JournalTrees, StoreError> {
        let trees = JournalTrees {
            dispatches: db.open_tree(DISPATCHES)?,
            by_correlation: db.open_tree(BY_CORRELATION)?,
            instances: db.open_tree(INSTANCES)?,
            acks: db.open_tree(ACKS)?,
            skipped: db.open_tree(findings::SKIPPED)?,
            index: db.open_tree(index::INDEX)?,
            by_created: db.open_tree(index::BY_CREATED)?,
            by_state: db.open_tree(index::BY_STATE)?,
            finished: db.open_tree(index::FINISHED)?,
            counts: db.open_tree(index::COUNTS)?,
            meta: db.open_tree(crate::outbox::META_TREE)?,
        };
        index::ensure_built(&trees, db)?;
        Ok(trees)
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
        // Encoded once, outside the closure (which may run more than once).
        let value = sled::IVec::from(encode(DISPATCHES, &rec.id, rec)?);
        let entry = IndexEntry::of(rec);
        (
            &t.dispatches,
            &t.by_correlation,
            &t.index,
            &t.by_created,
            &t.by_state,
            &t.finished,
            &t.counts,
        )
            .transaction(
                |(dispatches, by_correlation, index, by_created, by_state, finished, counts)|
                 -> TxResult<()> {
                    dispatches.insert(rec.id.as_bytes(), value.clone())?;
                    by_correlation.insert(rec.correlation_id.as_bytes(), rec.id.as_bytes())?;
                    IndexTx {
                        index,
                        by_created,
                        by_state,
                        finished,
                        counts,
                    }
                    .set(&rec.id, Some(entry))
                },
            )?;
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

    fn journal_active(&self) -> Result<Vec<DispatchRecord>, StoreError> {
        page::active(self)
    }

    fn journal_counts(&self) -> Result<DispatchCounts, StoreError> {
        let t = &self.journal;
        Ok(DispatchCounts {
            active: index::count(t, DispatchState::Active)?,
            completed: index::count(t, DispatchState::Completed)?,
            failed: index::count(t, DispatchState::Failed)?,
            cancelled: index::count(t, DispatchState::Cancelled)?,
        })
    }

    fn journal_page(
        &self,
        state: Option<DispatchState>,
        before: Option<&JournalCursor>,
        limit: usize,
    ) -> Result<JournalPage, StoreError> {
        page::page(self, state, before, limit)
    }

    fn journal_prune(&self, finished_before_ms: u64, max: usize) -> Result<usize, StoreError> {
        prune::prune(self, finished_before_ms, max)
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
