//! The outbox: the durable, ordered queue of outgoing events (PROTOCOL.md §4).
//!
//! Events are written here before they are sent, kept while the backend is unreachable,
//! and removed once delivered ([`Outbox::outbox_ack`]). Superseded progress for the same
//! coalesce key (one dispatch on one node) is replaced by the newest; state changes are
//! never dropped or reordered.
//!
//! Trees:
//! - `outbox`: key = sequence number (big-endian `u64`), value = a record (`record.rs`).
//! - `outbox_newest_by_key`: key = coalesce key, value = the sequence number of the newest
//!   entry pushed with that key (progress or not). Rebuilt from `outbox` at start-up
//!   (`repair.rs`); an entry pointing at a delivered sequence number is harmless.
//! - `meta`, key `outbox.next_seq`: the next sequence number. It is advanced in the same
//!   transaction as the insert, so sequence numbers survive restarts and never go back,
//!   even when the outbox is empty.

use std::ops::Bound;

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::{IVec, Transactional};

use crate::keys::{decode_u64, display_u64_key, u64_key};
use crate::{Store, StoreError};

#[cfg(test)]
mod model_tests;
mod record;
mod repair;
#[cfg(test)]
mod tests;

/// The sled tree holding the entries.
pub(crate) const OUTBOX_TREE: &str = "outbox";
/// The sled tree mapping a coalesce key to its newest entry.
pub(crate) const NEWEST_TREE: &str = "outbox_newest_by_key";
/// The sled tree of small store-wide values (counters).
pub(crate) const META_TREE: &str = "meta";
/// The key of the next outbox sequence number in [`META_TREE`].
pub(crate) const NEXT_SEQ_KEY: &[u8] = b"outbox.next_seq";
/// The first sequence number, so that `outbox_pending(0, …)` returns everything.
pub(crate) const FIRST_SEQ: u64 = 1;
/// How many entries one acknowledgement transaction removes at most (sled keeps a
/// transaction's writes in memory).
const ACK_BATCH: usize = 512;

/// One queued outgoing event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the queue: strictly increasing, never reused, survives restarts.
    pub seq: u64,
    /// Entries with the same key report on the same thing (one dispatch on one node).
    pub coalesce_key: Option<String>,
    /// A progress report, which a newer progress report with the same key may replace.
    pub progress: bool,
    /// The JSON frame to send, as pushed.
    pub event: Vec<u8>,
}

/// The durable queue of outgoing events.
pub trait Outbox {
    /// Appends `event` at the end and flushes before returning; returns its sequence
    /// number (strictly increasing, also across restarts).
    ///
    /// If `progress` is true and `coalesce_key` is `Some(k)`, and the newest pending entry
    /// with key `k` is also a progress entry, that entry is removed in the same atomic
    /// step: superseded progress is coalesced, and nothing else is dropped or reordered.
    fn outbox_push(
        &self,
        event: &[u8],
        coalesce_key: Option<&str>,
        progress: bool,
    ) -> Result<u64, StoreError>;

    /// Up to `limit` entries with `seq > after`, oldest first.
    fn outbox_pending(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Removes every entry with `seq <= upto` (delivered) and flushes; returns how many.
    fn outbox_ack(&self, upto: u64) -> Result<usize, StoreError>;

    /// How many entries are pending.
    fn outbox_len(&self) -> Result<usize, StoreError>;
}

/// The trees of the outbox area.
#[derive(Clone)]
pub(crate) struct OutboxTrees {
    pub(crate) entries: sled::Tree,
    pub(crate) newest: sled::Tree,
    pub(crate) meta: sled::Tree,
}

impl OutboxTrees {
    /// Opens the trees and runs the start-up repair.
    pub(crate) fn open(db: &sled::Db) -> Result<OutboxTrees, StoreError> {
        let trees = OutboxTrees {
            entries: db.open_tree(OUTBOX_TREE)?,
            newest: db.open_tree(NEWEST_TREE)?,
            meta: db.open_tree(META_TREE)?,
        };
        repair::repair(&trees)?;
        Ok(trees)
    }
}

/// What a push did to the previous entry of its key (reported after the transaction, so
/// the closure has no side effects).
enum Coalesced {
    Nothing,
    Replaced(u64),
    /// The index or the entry it points at could not be decoded: nothing was replaced.
    Unreadable,
}

/// Decides, inside the push transaction, whether the newest entry with `key` is progress
/// to be replaced, and removes it if so.
fn coalesce(
    entries: &TransactionalTree,
    newest: &TransactionalTree,
    key: &str,
) -> Result<Coalesced, ConflictableTransactionError<StoreError>> {
    let Some(pointer) = newest.get(key.as_bytes())? else {
        return Ok(Coalesced::Nothing);
    };
    let Some(prev_seq) = decode_u64(&pointer) else {
        return Ok(Coalesced::Unreadable);
    };
    // Missing: already delivered; then there is nothing pending to replace.
    let Some(value) = entries.get(u64_key(prev_seq))? else {
        return Ok(Coalesced::Nothing);
    };
    let Ok(prev) = record::decode(prev_seq, &value) else {
        return Ok(Coalesced::Unreadable);
    };
    if prev.progress && prev.coalesce_key.as_deref() == Some(key) {
        entries.remove(&u64_key(prev_seq)[..])?;
        Ok(Coalesced::Replaced(prev_seq))
    } else {
        Ok(Coalesced::Nothing)
    }
}

/// The next sequence number as stored in `meta`.
fn next_seq(meta: &TransactionalTree) -> Result<u64, ConflictableTransactionError<StoreError>> {
    match meta.get(NEXT_SEQ_KEY)? {
        None => Ok(FIRST_SEQ),
        Some(value) => decode_u64(&value)
            .filter(|seq| *seq < u64::MAX)
            .ok_or_else(|| ConflictableTransactionError::Abort(corrupt_next_seq())),
    }
}

pub(crate) fn corrupt_next_seq() -> StoreError {
    StoreError::Corrupt {
        tree: META_TREE,
        key: String::from_utf8_lossy(NEXT_SEQ_KEY).into_owned(),
    }
}

/// Every pending entry that has a coalesce key: (sequence key, coalesce key). Undecodable
/// entries are skipped (they are reported by `outbox_pending`). For the journal's pruning.
pub(crate) fn pending_coalesce_keys(
    trees: &OutboxTrees,
) -> Result<Vec<(IVec, String)>, StoreError> {
    let mut out = Vec::new();
    for item in trees.entries.iter() {
        let (key, value) = item?;
        let entry = decode_u64(&key).and_then(|seq| record::decode(seq, &value).ok());
        if let Some(ck) = entry.and_then(|e| e.coalesce_key) {
            out.push((key, ck));
        }
    }
    Ok(out)
}

impl Outbox for Store {
    fn outbox_push(
        &self,
        event: &[u8],
        coalesce_key: Option<&str>,
        progress: bool,
    ) -> Result<u64, StoreError> {
        let t = &self.outbox;
        // Encoded once, outside the closure (which may run more than once).
        let value = IVec::from(record::encode(coalesce_key, progress, event));
        // sled runs transactions one at a time (a global write lock), so sequence numbers
        // are handed out in commit order: a reader never sees seq n+1 before seq n.
        let (seq, coalesced) =
            (&t.entries, &t.newest, &t.meta).transaction(|(entries, newest, meta)| {
                let seq = next_seq(meta)?;
                let coalesced = match coalesce_key {
                    Some(key) if progress => coalesce(entries, newest, key)?,
                    _ => Coalesced::Nothing,
                };
                entries.insert(&u64_key(seq)[..], value.clone())?;
                if let Some(key) = coalesce_key {
                    newest.insert(key.as_bytes(), &u64_key(seq)[..])?;
                }
                meta.insert(NEXT_SEQ_KEY, &u64_key(seq + 1)[..])?;
                Ok((seq, coalesced))
            })?;
        self.db.flush()?;
        match coalesced {
            Coalesced::Nothing => {}
            Coalesced::Replaced(prev) => {
                tracing::trace!(seq, replaced = prev, "outbox progress coalesced");
            }
            Coalesced::Unreadable => tracing::warn!(
                seq,
                coalesce_key = coalesce_key.unwrap_or_default(),
                "outbox coalescing skipped: undecodable index or entry"
            ),
        }
        Ok(seq)
    }

    fn outbox_pending(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let after = u64_key(after);
        self.outbox
            .entries
            .range::<&[u8], _>((Bound::Excluded(&after[..]), Bound::Unbounded))
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                decode_u64(&key)
                    .and_then(|seq| record::decode(seq, &value).ok())
                    .ok_or_else(|| {
                        tracing::warn!(
                            tree = OUTBOX_TREE,
                            key = %display_u64_key(&key),
                            "undecodable outbox entry"
                        );
                        StoreError::Corrupt {
                            tree: OUTBOX_TREE,
                            key: display_u64_key(&key),
                        }
                    })
            })
            .collect()
    }

    fn outbox_ack(&self, upto: u64) -> Result<usize, StoreError> {
        let t = &self.outbox;
        let keys = t
            .entries
            .range(..=u64_key(upto))
            .keys()
            .collect::<Result<Vec<IVec>, sled::Error>>()?;
        let mut removed = 0;
        for batch in keys.chunks(ACK_BATCH) {
            removed += (&t.entries, &t.newest).transaction(|(entries, newest)| {
                let mut n = 0;
                for key in batch {
                    // Gone already: replaced by a newer progress entry since the scan.
                    let Some(value) = entries.remove(key)? else {
                        continue;
                    };
                    n += 1;
                    // Drop the index entry if it points here, so the index does not grow
                    // with every delivered dispatch. An undecodable entry is removed all
                    // the same: it was acknowledged.
                    let coalesce_key = decode_u64(key)
                        .and_then(|seq| record::decode(seq, &value).ok())
                        .and_then(|entry| entry.coalesce_key);
                    if let Some(ck) = coalesce_key {
                        if newest.get(ck.as_bytes())?.as_deref() == Some(&key[..]) {
                            newest.remove(ck.as_bytes())?;
                        }
                    }
                }
                Ok::<usize, ConflictableTransactionError<StoreError>>(n)
            })?;
        }
        self.db.flush()?;
        Ok(removed)
    }

    fn outbox_len(&self) -> Result<usize, StoreError> {
        Ok(self.outbox.entries.len())
    }
}
