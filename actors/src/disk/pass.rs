//! One eviction pass (blocking): the goals from the limits as they stand, the instances
//! the dispatches need read only if something is to go, then the store's
//! [`laminate_store::evict`].

use std::cell::OnceCell;

use laminate_store::{evict, EvictionGoal, EvictionReport, Keep, Store, StoreError};

use super::needed::Needed;
use super::state::DiskState;

/// The goals of a pass starting at `now_ms`; `wanted` is what a waiting download asked
/// to be freed.
pub fn goal(state: &DiskState, now_ms: u64, wanted: u64) -> EvictionGoal {
    let below_floor = state.room_for(0).err().map_or(0, |s| s.missing());
    EvictionGoal {
        max_cache_bytes: state.cache_max_bytes(),
        unused_before_ms: Some(now_ms.saturating_sub(state.retention_ms())),
        free_bytes: below_floor.max(wanted),
    }
}

/// Runs one pass; records what it evicted in `state`.
pub fn run(
    store: &Store,
    state: &DiskState,
    now_ms: u64,
    wanted: u64,
) -> Result<EvictionReport, StoreError> {
    let goal = goal(state, now_ms, wanted);
    let needed: OnceCell<Result<Needed, StoreError>> = OnceCell::new();
    let keep = |sop: &str, last_used: u64| match needed
        .get_or_init(|| Needed::read(store, now_ms, state.park_ms()))
    {
        Ok(n) => n.keep(sop, last_used),
        // Not knowing what is needed: keep everything.
        Err(_) => Keep::FromHere,
    };
    let report = evict(store, state.data_dir(), &goal, &keep)?;
    if let Some(Err(e)) = needed.into_inner() {
        return Err(e);
    }
    state.record_eviction(report.evicted, report.bytes);
    // A fresh reading for the status page.
    let _ = state.free_bytes_now();
    Ok(report)
}
