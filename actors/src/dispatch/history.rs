//! Pruning the dispatch history (APPLIANCE.md "History"): finished dispatches last
//! updated more than `history_days` ago leave the journal, with their acknowledgements,
//! instance sets and pending outbox entries. The dispatcher runs it at start-up, every
//! hour, and when `history_days` shrinks.
//!
//! It may touch: the journal (and the outbox entries of what it prunes), on a blocking
//! thread, so the dispatcher's arbiter (shared with nothing slow) never waits on the disk.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use laminate_store::{Journal, Store, StoreError};

use crate::health::ActorHealth;

/// How often the history is pruned while running.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Dispatches removed per store call: a first run over years of history is many
/// small steps, each one flush, rather than one long one.
const PRUNE_BATCH: usize = 1000;

/// Starts prune runs, at most one at a time.
#[derive(Debug, Default)]
pub struct HistoryPruner {
    running: Rc<Cell<bool>>,
}

impl HistoryPruner {
    /// Prunes what finished more than `history_ms` before now, in the background. Does
    /// nothing while a run is still going. Call inside the actix system.
    pub fn run(&self, store: Store, history_ms: u64, health: ActorHealth) {
        if self.running.replace(true) {
            return;
        }
        let running = self.running.clone();
        let cutoff = crate::clock::now_ms().saturating_sub(history_ms);
        actix::spawn(async move {
            let outcome = tokio::task::spawn_blocking(move || prune_all(&store, cutoff)).await;
            running.set(false);
            match outcome {
                Ok(Ok(0)) => {}
                Ok(Ok(pruned)) => tracing::info!(
                    pruned,
                    before = %crate::clock::ms_to_rfc3339(cutoff),
                    "dispatch history pruned"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot prune the dispatch history");
                    health.record_error(format!("history pruning: {e}"));
                }
                Err(e) => tracing::warn!(error = %e, "the history pruning task failed"),
            }
        });
    }
}

/// Prunes in batches until nothing older than `cutoff_ms` is left; how many.
pub fn prune_all(store: &Store, cutoff_ms: u64) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = store.journal_prune(cutoff_ms, PRUNE_BATCH)?;
        total += n;
        if n < PRUNE_BATCH {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use laminate_store::testing::dispatch_record;
    use laminate_store::{NodeStatus, Stage};

    #[test]
    fn prune_all_goes_past_one_batch() {
        let store = Store::open_temporary().expect("store");
        for i in 0..(PRUNE_BATCH as u64 + 5) {
            store
                .journal_put(&dispatch_record(
                    &format!("d{i:05}"),
                    NodeStatus::Completed,
                    Stage::Finished,
                    10 + i,
                ))
                .expect("put");
        }
        store
            .journal_put(&dispatch_record(
                "recent",
                NodeStatus::Completed,
                Stage::Finished,
                1_000_000,
            ))
            .expect("put");
        assert_eq!(prune_all(&store, 500_000).expect("prune"), PRUNE_BATCH + 5);
        let left: Vec<String> = store
            .journal_all()
            .expect("all")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["recent"]);
    }
}
