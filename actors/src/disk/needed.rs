//! What the dispatches still need from the cache, so the evictor never takes it: the
//! instance sets of every active dispatch (queued, downloading, sending, retrying), of
//! every dispatch that failed within `park_hours` (it may be replayed for its node when
//! that node answers again), and anything stored since a dispatch began extracting (its
//! instance set is journaled only once it is indexed).
//!
//! Read once per eviction pass, and only when the pass finds something to evict.
//! Parked dispatches (kept for `park_hours`) are failed ones within that window; a
//! separate list of them, when the dispatcher keeps one, is added in [`Needed::read`].

use std::collections::HashSet;

use laminate_store::{DispatchState, Journal, Stage, Store, StoreError};

/// The instances no eviction may take, as of one moment.
#[derive(Debug, Default)]
pub struct Needed {
    sops: HashSet<String>,
    /// Anything last used at or after this may belong to a dispatch being indexed.
    young_since_ms: u64,
}

impl Needed {
    /// Reads the journal (blocking). `now_ms` is the pass's start: whatever is stored
    /// after it is kept too.
    pub fn read(store: &Store, now_ms: u64, park_ms: u64) -> Result<Needed, StoreError> {
        let mut needed = Needed {
            sops: HashSet::new(),
            young_since_ms: now_ms,
        };
        for rec in store.journal_active()? {
            if rec.stage == Stage::Extracting {
                needed.young_since_ms = needed.young_since_ms.min(rec.updated_at_ms);
            }
            needed.sops.extend(store.journal_instances(&rec.id)?);
        }
        for rec in store.journal_finished_since(now_ms.saturating_sub(park_ms))? {
            if rec.state() == DispatchState::Failed {
                needed.sops.extend(store.journal_instances(&rec.id)?);
            }
        }
        Ok(needed)
    }

    /// Whether the instance `sop`, last used at `last_used_ms`, must stay.
    pub fn needs(&self, sop: &str, last_used_ms: u64) -> bool {
        last_used_ms >= self.young_since_ms || self.sops.contains(sop)
    }
}
