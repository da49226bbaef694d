//! The journal's secondary indexes, so that what the appliance reads all the time (the
//! active dispatches, the counts by state, a page of the newest) costs the same with
//! 100 000 finished dispatches as with 10 (APPLIANCE.md "History").
//!
//! Trees (`{ms}` is a big-endian `u64`, so keys sort by time; ids end the key):
//! - `dispatch_index`: id → what the record is indexed under ([`IndexEntry`]: state,
//!   created_at, updated_at), so a write removes the old keys without decoding the old
//!   record.
//! - `dispatch_by_created`: `{created_at}{id}` → empty: every dispatch, for paging.
//! - `dispatch_by_state`: `{state byte}{created_at}{id}` → empty: one state's dispatches
//!   (the active ones for scheduling, `?status=` pages).
//! - `dispatch_finished`: `{updated_at}{id}` → empty: finished dispatches by the time they
//!   finished, for pruning.
//! - `dispatch_counts`: state byte → count (big-endian `u64`).
//! - `meta`, key `journal.index_version`: present once the indexes are built. A store
//!   written before the indexes existed lacks it, and [`ensure_built`] builds them once
//!   from the records at open.
//!
//! Every journal write updates the indexes in the same transaction as the record. Readers
//! still check each hit against the record (a stale key is skipped, never shown).

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{decode, DispatchRecord, DispatchState, JournalTrees, DISPATCHES};
use crate::keys::{decode_u64, u64_key};
use crate::StoreError;

pub(crate) const INDEX: &str = "dispatch_index";
pub(crate) const BY_CREATED: &str = "dispatch_by_created";
pub(crate) const BY_STATE: &str = "dispatch_by_state";
pub(crate) const FINISHED: &str = "dispatch_finished";
pub(crate) const COUNTS: &str = "dispatch_counts";
const VERSION_KEY: &[u8] = b"journal.index_version";
/// Bumped when the layout above changes: the indexes are then rebuilt at open.
const VERSION: u64 = 1;

pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

pub(crate) fn state_byte(s: DispatchState) -> u8 {
    match s {
        DispatchState::Active => 0,
        DispatchState::Completed => 1,
        DispatchState::Failed => 2,
        DispatchState::Cancelled => 3,
    }
}

fn state_of_byte(b: u8) -> Option<DispatchState> {
    Some(match b {
        0 => DispatchState::Active,
        1 => DispatchState::Completed,
        2 => DispatchState::Failed,
        3 => DispatchState::Cancelled,
        _ => return None,
    })
}

/// What one record is indexed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) state: DispatchState,
    pub(crate) created_at_ms: u64,
    pub(crate) updated_at_ms: u64,
}

impl IndexEntry {
    pub(crate) fn of(rec: &DispatchRecord) -> IndexEntry {
        IndexEntry {
            state: rec.state(),
            created_at_ms: rec.created_at_ms,
            updated_at_ms: rec.updated_at_ms,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(17);
        v.push(state_byte(self.state));
        v.extend_from_slice(&u64_key(self.created_at_ms));
        v.extend_from_slice(&u64_key(self.updated_at_ms));
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Option<IndexEntry> {
        if v.len() != 17 {
            return None;
        }
        Some(IndexEntry {
            state: state_of_byte(v[0])?,
            created_at_ms: decode_u64(&v[1..9])?,
            updated_at_ms: decode_u64(&v[9..17])?,
        })
    }

    fn finished_key(&self, id: &str) -> Option<Vec<u8>> {
        (self.state != DispatchState::Active).then(|| time_key(self.updated_at_ms, id))
    }
}

/// `{ms}{id}`.
pub(crate) fn time_key(ms: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&u64_key(ms));
    k.extend_from_slice(id.as_bytes());
    k
}

/// `{state}{ms}{id}`.
pub(crate) fn state_key(state: DispatchState, ms: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + id.len());
    k.push(state_byte(state));
    k.extend_from_slice(&time_key(ms, id));
    k
}

/// Splits `{ms}{id}` (a [`time_key`]).
pub(crate) fn split_time_key(k: &[u8]) -> Option<(u64, String)> {
    if k.len() < 8 {
        return None;
    }
    let ms = decode_u64(&k[..8])?;
    let id = String::from_utf8(k[8..].to_vec()).ok()?;
    Some((ms, id))
}

/// The index trees inside one transaction.
pub(crate) struct IndexTx<'a> {
    pub(crate) index: &'a TransactionalTree,
    pub(crate) by_created: &'a TransactionalTree,
    pub(crate) by_state: &'a TransactionalTree,
    pub(crate) finished: &'a TransactionalTree,
    pub(crate) counts: &'a TransactionalTree,
}

impl IndexTx<'_> {
    /// What `id` is indexed under now (`None`: not indexed, or undecodable).
    pub(crate) fn current(&self, id: &str) -> TxResult<Option<IndexEntry>> {
        Ok(self
            .index
            .get(id.as_bytes())?
            .and_then(|v| IndexEntry::decode(&v)))
    }

    /// Indexes `id` under `new` (`None`: forgets it), replacing what it was indexed under.
    pub(crate) fn set(&self, id: &str, new: Option<IndexEntry>) -> TxResult<()> {
        let old = self.current(id)?;
        if old == new {
            return Ok(());
        }
        if let Some(old) = old {
            self.by_created.remove(time_key(old.created_at_ms, id))?;
            self.by_state
                .remove(state_key(old.state, old.created_at_ms, id))?;
            if let Some(k) = old.finished_key(id) {
                self.finished.remove(k)?;
            }
            self.add_count(old.state, -1)?;
        }
        match new {
            Some(new) => {
                self.index.insert(id.as_bytes(), new.encode())?;
                self.by_created
                    .insert(time_key(new.created_at_ms, id), &[][..])?;
                self.by_state
                    .insert(state_key(new.state, new.created_at_ms, id), &[][..])?;
                if let Some(k) = new.finished_key(id) {
                    self.finished.insert(k, &[][..])?;
                }
                self.add_count(new.state, 1)?;
            }
            None => {
                self.index.remove(id.as_bytes())?;
            }
        }
        Ok(())
    }

    fn add_count(&self, state: DispatchState, delta: i64) -> TxResult<()> {
        let key = [state_byte(state)];
        let now = self
            .counts
            .get(key)?
            .and_then(|v| decode_u64(&v))
            .unwrap_or(0);
        let next = now.saturating_add_signed(delta);
        self.counts.insert(&key[..], &u64_key(next)[..])?;
        Ok(())
    }
}

/// The count of one state.
pub(crate) fn count(trees: &JournalTrees, state: DispatchState) -> Result<u64, StoreError> {
    let key = [state_byte(state)];
    match trees.counts.get(key)? {
        None => Ok(0),
        Some(v) => decode_u64(&v).ok_or_else(|| StoreError::Corrupt {
            tree: COUNTS,
            key: format!("{state:?}").to_lowercase(),
        }),
    }
}

/// Builds the indexes from the records if this store has none yet (written by a version
/// without them, or a build interrupted by a crash: the marker is written last). Runs at
/// open, before anyone else can use the store, so it needs no transaction.
pub(crate) fn ensure_built(trees: &JournalTrees, db: &sled::Db) -> Result<(), StoreError> {
    if trees.meta.get(VERSION_KEY)?.as_deref() == Some(&u64_key(VERSION)[..]) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    for tree in [
        &trees.index,
        &trees.by_created,
        &trees.by_state,
        &trees.finished,
        &trees.counts,
    ] {
        tree.clear()?;
    }
    let mut counts = [0u64; 4];
    let (mut records, mut undecodable) = (0usize, 0usize);
    for kv in trees.dispatches.iter() {
        let (k, v) = kv?;
        let Ok(rec) = decode::<DispatchRecord>(DISPATCHES, &k, &v) else {
            undecodable += 1;
            continue;
        };
        let e = IndexEntry::of(&rec);
        let id = rec.id.as_str();
        trees.index.insert(id.as_bytes(), e.encode())?;
        trees
            .by_created
            .insert(time_key(e.created_at_ms, id), &[][..])?;
        trees
            .by_state
            .insert(state_key(e.state, e.created_at_ms, id), &[][..])?;
        if let Some(fk) = e.finished_key(id) {
            trees.finished.insert(fk, &[][..])?;
        }
        counts[usize::from(state_byte(e.state))] += 1;
        records += 1;
    }
    for (b, n) in counts.iter().enumerate() {
        // b < 4: the array's length.
        #[allow(clippy::cast_possible_truncation)]
        trees.counts.insert([b as u8], &u64_key(*n)[..])?;
    }
    trees.meta.insert(VERSION_KEY, &u64_key(VERSION)[..])?;
    db.flush()?;
    tracing::info!(
        records,
        undecodable,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dispatch journal indexes built"
    );
    Ok(())
}

/// Forgets the version marker (tests: a store as an older version left it).
#[cfg(test)]
pub(crate) fn forget_version(trees: &JournalTrees) -> Result<(), StoreError> {
    trees.meta.remove(VERSION_KEY)?;
    Ok(())
}
