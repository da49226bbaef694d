//! Eviction of a bounded cache (APPLIANCE.md "Disk"): the least recently used instances
//! go first, each in one transaction with its index entries, until the cache is within
//! its bound, nothing is older than the retention and enough space is freed.
//!
//! The pass walks the last-used index (`lru.rs`) from its oldest end and stops at the
//! first instance no goal wants gone, so its cost is what it evicts plus what it skips
//! (instances a dispatch still needs, which the caller names through `protected`), never
//! the whole catalog. Each eviction is the same transaction as a deletion: the entry and
//! its indexes leave the catalog and the file is recorded as a pending deletion; the files
//! of a batch are unlinked once the batch is flushed, and a crash in between is finished by
//! the start-up [`super::repair`]. An instance sent or stored again after the pass read the
//! index (its last-used time moved) is not evicted, and a path put again after its eviction
//! committed is not unlinked (its pending mark is checked right before each unlink). What
//! remains is a window of a few milliseconds: the ingest SCP renames a new file for the same
//! SOP Instance UID into place just before the unlink and indexes it just after; then the
//! entry has no file, the send stage reports the instance as no longer cached, and the
//! start-up repair drops the entry. It needs the least recently used instance to arrive again
//! at that moment.

use std::path::Path;

use super::repair::finish;
use super::Catalog;
use crate::{Store, StoreError};

/// Instances looked at per index read (and at most evicted per flush).
const BATCH: usize = 256;

/// What one pass is to achieve; every goal that is set is met unless only protected
/// instances are left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvictionGoal {
    /// Evict until the cached instances take at most this many bytes (`cache_max_gb`).
    pub max_cache_bytes: Option<u64>,
    /// Evict every instance last stored or sent before this time, ms since the epoch
    /// (now minus `spool_retention_hours`).
    pub unused_before_ms: Option<u64>,
    /// Evict until at least this many bytes are freed (to get back above the free-space
    /// floor); 0 for none.
    pub free_bytes: u64,
}

/// The caller's answer for one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Not needed: evict it if a goal wants it gone.
    No,
    /// Needed: keep it, look at the next one.
    This,
    /// Needed, and so is everything used later: the pass ends here (the walk is by
    /// last-used time, so nothing after this one can go).
    FromHere,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvictionReport {
    /// Instances evicted.
    pub evicted: u64,
    /// Their bytes (as cataloged).
    pub bytes: u64,
    /// Instances a goal wanted gone but `keep` kept (not counting those after a
    /// [`Keep::FromHere`]).
    pub protected: u64,
}

/// Runs one eviction pass over the cache in `data_dir` towards `goal`. `keep` is asked
/// about every candidate (SOP Instance UID, last-used ms) a goal wants gone (the caller's
/// "a dispatch still needs it"). Flushes before returning; files are unlinked after their
/// eviction is durable.
pub fn evict(
    store: &Store,
    data_dir: &Path,
    goal: &EvictionGoal,
    keep: &dyn Fn(&str, u64) -> Keep,
) -> Result<EvictionReport, StoreError> {
    let c = &store.catalog;
    let mut report = EvictionReport::default();
    let mut cache_bytes = store.figures()?.bytes;
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = c.lru_page(cursor.as_deref(), BATCH)?;
        let Some((last, _, _)) = page.last() else {
            break;
        };
        cursor = Some(last.clone());
        let full = page.len() == BATCH;
        let mut tickets = Vec::new();
        let mut done = false;
        for (_, last_used, sop) in &page {
            let wanted = goal.max_cache_bytes.is_some_and(|max| cache_bytes > max)
                || goal.unused_before_ms.is_some_and(|t| *last_used < t)
                || report.bytes < goal.free_bytes;
            if !wanted {
                done = true;
                break;
            }
            match keep(sop, *last_used) {
                Keep::No => {}
                Keep::This => {
                    report.protected += 1;
                    continue;
                }
                Keep::FromHere => {
                    done = true;
                    break;
                }
            }
            let deletion = c.delete(std::slice::from_ref(sop), false, |tx, _| {
                // Used again since the index was read: keep it.
                Ok(tx.lru_get(sop)? == Some(*last_used))
            })?;
            for rec in &deletion.removed {
                report.evicted += 1;
                report.bytes = report.bytes.saturating_add(rec.size);
                cache_bytes = cache_bytes.saturating_sub(rec.size);
            }
            if deletion.ticket != super::NO_TICKET {
                tickets.push(deletion.ticket);
            }
        }
        if !tickets.is_empty() {
            // Durable before any file goes: a crash leaves pending tickets, not entries
            // whose files are gone.
            store.flush()?;
            for ticket in tickets {
                finish(c, data_dir, ticket)?;
            }
            store.flush()?;
        }
        if done || !full {
            break;
        }
    }
    Ok(report)
}

/// Used by tests: the instances in eviction order, oldest first.
#[cfg(test)]
pub(super) fn order(store: &Store) -> Vec<String> {
    store
        .catalog
        .lru_page(None, usize::MAX)
        .expect("lru")
        .into_iter()
        .map(|(_, _, sop)| sop)
        .collect()
}
