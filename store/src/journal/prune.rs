//! Pruning finished dispatches past the history window (`history_days`, APPLIANCE.md
//! "History"): the record, its indexes, its instance set, its acknowledgements and any of
//! its skipped entries and its status reports still waiting in the outbox go in one transaction per dispatch.
//! Found through `dispatch_finished` (oldest finished first), so a run costs what it
//! removes, plus one pass over the pending outbox when there is something to remove.

use std::collections::HashMap;

use sled::{IVec, Transactional};

use super::index::{split_time_key, IndexTx, TxResult};
use super::{prefix, JournalTrees};
use crate::keys::u64_key;
use crate::outbox::pending_coalesce_keys;
use crate::{Store, StoreError};

/// The keys one dispatch's removal deletes besides its record and indexes (read before
/// the transaction: nothing is iterated inside one).
struct Doomed {
    id: String,
    updated_at_ms: u64,
    instances: Vec<IVec>,
    acks: Vec<IVec>,
    /// Pending outbox entries: (sequence key, coalesce key).
    outbox: Vec<(IVec, String)>,
}

fn keys_with_prefix(tree: &sled::Tree, p: &[u8]) -> Result<Vec<IVec>, StoreError> {
    Ok(tree
        .scan_prefix(p)
        .keys()
        .collect::<Result<Vec<IVec>, sled::Error>>()?)
}

/// The dispatch a coalesce key (`{dispatch id}/{node id}`, see the dispatcher's report)
/// belongs to.
fn dispatch_of(coalesce_key: &str) -> &str {
    coalesce_key
        .split_once('/')
        .map_or(coalesce_key, |(id, _)| id)
}

pub(crate) fn prune(
    store: &Store,
    finished_before_ms: u64,
    max: usize,
) -> Result<usize, StoreError> {
    let t = &store.journal;
    let mut doomed = Vec::new();
    for k in t.finished.range(..u64_key(finished_before_ms)).keys() {
        if doomed.len() >= max {
            break;
        }
        let k = k?;
        let Some((updated_at_ms, id)) = split_time_key(&k) else {
            continue;
        };
        let instances = keys_with_prefix(&t.instances, &prefix(&[&id]))?;
        let acks = keys_with_prefix(&t.acks, &prefix(&[&id]))?;
        doomed.push(Doomed {
            id,
            updated_at_ms,
            instances,
            acks,
            outbox: Vec::new(),
        });
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    let mut outbox: HashMap<String, Vec<(IVec, String)>> = HashMap::new();
    for (seq, key) in pending_coalesce_keys(&store.outbox)? {
        outbox
            .entry(dispatch_of(&key).to_owned())
            .or_default()
            .push((seq, key));
    }
    let mut pruned = 0;
    for mut d in doomed {
        d.outbox = outbox.remove(&d.id).unwrap_or_default();
        if remove(store, t, &d)? {
            pruned += 1;
        }
    }
    store.db.flush()?;
    if pruned > 0 {
        tracing::info!(pruned, "finished dispatches past the history window pruned");
    }
    Ok(pruned)
}

/// Removes one dispatch if it is still finished as of `d.updated_at_ms` (a replay since
/// the scan keeps it); whether it did.
fn remove(store: &Store, t: &JournalTrees, d: &Doomed) -> Result<bool, StoreError> {
    let o = &store.outbox;
    let trees = (
        &t.dispatches,
        &t.by_correlation,
        &t.index,
        &t.by_created,
        &t.by_state,
        &t.finished,
        &t.counts,
        &t.instances,
        &t.acks,
        &t.skipped,
        &o.entries,
        &o.newest,
    );
    let removed = trees.transaction(
        |(
            dispatches,
            by_correlation,
            index,
            by_created,
            by_state,
            finished,
            counts,
            instances,
            acks,
            skipped,
            entries,
            newest,
        )|
         -> TxResult<bool> {
            let ix = IndexTx {
                index,
                by_created,
                by_state,
                finished,
                counts,
            };
            match ix.current(&d.id)? {
                Some(e)
                    if e.state != super::DispatchState::Active
                        && e.updated_at_ms == d.updated_at_ms => {}
                _ => return Ok(false),
            }
            if let Some(v) = dispatches.remove(d.id.as_bytes())? {
                if let Ok(rec) = serde_json::from_slice::<super::DispatchRecord>(&v) {
                    if by_correlation
                        .get(rec.correlation_id.as_bytes())?
                        .as_deref()
                        == Some(d.id.as_bytes())
                    {
                        by_correlation.remove(rec.correlation_id.as_bytes())?;
                    }
                }
            }
            ix.set(&d.id, None)?;
            for k in &d.instances {
                instances.remove(k)?;
            }
            for k in &d.acks {
                acks.remove(k)?;
            }
            skipped.remove(d.id.as_bytes())?;
            for (seq, key) in &d.outbox {
                entries.remove(seq)?;
                if newest.get(key.as_bytes())?.as_deref() == Some(&seq[..]) {
                    newest.remove(key.as_bytes())?;
                }
            }
            Ok(true)
        },
    )?;
    Ok(removed)
}
