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

use laminate_store::{DispatchState, Journal, Keep, Stage, Store, StoreError};

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

    /// Whether the instance `sop`, last used at `last_used_ms`, must stay; from the first
    /// one used since a dispatch began indexing on, everything must (the pass ends there).
    pub fn keep(&self, sop: &str, last_used_ms: u64) -> Keep {
        if last_used_ms >= self.young_since_ms {
            Keep::FromHere
        } else if self.sops.contains(sop) {
            Keep::This
        } else {
            Keep::No
        }
    }

    /// Whether the instance `sop`, last used at `last_used_ms`, must stay.
    pub fn needs(&self, sop: &str, last_used_ms: u64) -> bool {
        self.keep(sop, last_used_ms) != Keep::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use laminate_store::testing::dispatch_record;
    use laminate_store::{DispatchRecord, NodeStatus};

    fn put(store: &Store, r: DispatchRecord, sops: &[&str]) {
        store.journal_put(&r).unwrap();
        let sops: Vec<String> = sops.iter().map(|s| (*s).to_owned()).collect();
        store.journal_set_instances(&r.id, &sops).unwrap();
    }

    #[test]
    fn active_retrying_and_recently_failed_dispatches_keep_their_instances() {
        let store = Store::open_temporary().unwrap();
        let hour = 3_600_000;
        let now = 100 * hour;
        put(
            &store,
            dispatch_record(
                "retrying",
                NodeStatus::Retrying,
                Stage::Sending,
                now - 50 * hour,
            ),
            &["1.1"],
        );
        put(
            &store,
            dispatch_record(
                "failed_recently",
                NodeStatus::Failed,
                Stage::Finished,
                now - hour,
            ),
            &["1.2"],
        );
        put(
            &store,
            dispatch_record(
                "failed_long_ago",
                NodeStatus::Failed,
                Stage::Finished,
                now - 80 * hour,
            ),
            &["1.3"],
        );
        put(
            &store,
            dispatch_record(
                "completed",
                NodeStatus::Completed,
                Stage::Finished,
                now - hour,
            ),
            &["1.4"],
        );
        put(
            &store,
            dispatch_record(
                "indexing",
                NodeStatus::Extracting,
                Stage::Extracting,
                now - 2 * hour,
            ),
            &[],
        );
        let needed = Needed::read(&store, now, 72 * hour).unwrap();
        assert!(needed.needs("1.1", 0));
        assert!(needed.needs("1.2", 0));
        assert!(!needed.needs("1.3", 0));
        assert!(!needed.needs("1.4", 0));
        // Stored since the indexing dispatch began: maybe its own.
        assert!(needed.needs("1.9", now - 2 * hour));
        assert!(!needed.needs("1.9", now - 3 * hour));
    }
}
