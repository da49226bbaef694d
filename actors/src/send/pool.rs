//! One PACS node's sender pool: at most `max_associations` associations to
//! the node at once, however many dispatches send to it, taking their
//! instances from one queue of *lots* (one dispatch's instances that can share
//! an association's presentation contexts).
//!
//! - A free association goes to the best lot: highest priority, then oldest
//!   (accepted first). A worker whose lot is outranked by a lot nobody serves,
//!   while every association is taken, finishes its instance in flight and
//!   moves to that lot: a new high-priority dispatch gets the next free
//!   association.
//! - Workers are blocking threads, started on demand and ended when there is
//!   no work; each reuses its association for many instances.
//! - The cap and the node's address change live: workers past the cap stop
//!   after their instance in flight, and a new address makes every worker
//!   finish its instance and reconnect ([`Pool::reconfigure`]).
//! - A panicking worker gives its instance in flight back to its lot's queue;
//!   the pool goes on ([`Pool::restart`] makes every worker start over).
//!
//! Touches the network (associations to its node) and its lots' sinks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::contexts::plan_for;
use super::lot::Submission;
pub(crate) use super::lot::{AbortVerdict, InFlight, Lot};
use super::{association, BatchOutcome, EventSink, Item, SendOptions, Target};

/// After this many aborts of the association while one instance was in
/// flight (the node accepting others meanwhile), that instance fails alone.
pub const MAX_ABORTS: u8 = 3;
/// The try before the last is converted to Explicit VR Little Endian.
pub const CONVERT_AFTER_ABORTS: u8 = 2;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Queues, counters and options: consistent whatever a panicking worker did.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a lot stands in line: lower is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    /// 0 high, 1 normal, 2 low.
    pub priority: u8,
    /// The dispatch's acceptance order.
    pub seq: u64,
}

/// A node's live figures, for the status page and `/api/nodes`.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub open: AtomicU32,
    pub max: AtomicU32,
    pub queued: AtomicU64,
    pub sent_as_is: AtomicU64,
    pub transcoded: AtomicU64,
    pub failed: AtomicU64,
    pub restarts: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl PoolStats {
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
    pub(super) fn set_error(&self, e: &str) {
        *lock(&self.last_error) = Some(e.to_owned());
    }
}

/// One node's pool; cheap to clone.
#[derive(Clone)]
pub struct Pool(Arc<PoolShared>);

pub(crate) struct PoolShared {
    state: Mutex<PoolState>,
    pub(crate) stats: Arc<PoolStats>,
    /// Test builds: every worker panics at its next instance.
    #[cfg(feature = "fault-injection")]
    poisoned: AtomicBool,
}

struct PoolState {
    target: Target,
    opts: SendOptions,
    /// Bumped by a new address or a restart: workers reconnect.
    generation: u64,
    lots: Vec<Arc<Lot>>,
    workers: usize,
}

impl Pool {
    pub fn new(target: Target, opts: SendOptions, stats: Arc<PoolStats>) -> Pool {
        stats
            .max
            .store(target.max_associations.max(1), Ordering::Relaxed);
        Pool(Arc::new(PoolShared {
            state: Mutex::new(PoolState {
                target,
                opts,
                generation: 0,
                lots: Vec::new(),
                workers: 0,
            }),
            stats,
            #[cfg(feature = "fault-injection")]
            poisoned: AtomicBool::new(false),
        }))
    }

    pub fn stats(&self) -> &Arc<PoolStats> {
        &self.0.stats
    }

    /// Queues `items` of one dispatch. The receiver gets the batch's end:
    /// every item acknowledged (through `sink`) or failed, or `cancel` set,
    /// or a transient failure (the unacknowledged items are returned).
    pub fn submit(
        &self,
        items: Vec<Item>,
        rank: Rank,
        cancel: Arc<AtomicBool>,
        sink: Arc<dyn EventSink + Send + Sync>,
    ) -> oneshot::Receiver<BatchOutcome> {
        let (tx, rx) = oneshot::channel();
        let prefer = lock(&self.0.state).target.prefer_ts.clone();
        let groups = plan_for(items, prefer.as_deref());
        let submission = Submission::new(groups.len(), tx);
        if groups.is_empty() {
            submission.lot_done(BatchOutcome::default());
            return rx;
        }
        {
            let mut st = lock(&self.0.state);
            for g in groups {
                self.0
                    .stats
                    .queued
                    .fetch_add(g.items.len() as u64, Ordering::Relaxed);
                st.lots.push(Arc::new(Lot::new(
                    rank,
                    g.proposals,
                    prefer.clone(),
                    g.items,
                    cancel.clone(),
                    sink.clone(),
                    submission.clone(),
                )));
            }
            st.lots.sort_by_key(|l| l.rank);
        }
        self.spawn_needed();
        rx
    }

    /// A new address or cap: associations finish their instance in flight
    /// and reconnect (address) or stop (past the cap); more start if allowed.
    pub fn reconfigure(&self, target: Target, opts: SendOptions) {
        {
            let mut st = lock(&self.0.state);
            let address_changed = st.target.host != target.host
                || st.target.port != target.port
                || st.target.called_ae != target.called_ae
                || st.target.calling_ae != target.calling_ae
                || st.target.tls != target.tls;
            if address_changed {
                st.generation += 1;
            }
            self.0
                .stats
                .max
                .store(target.max_associations.max(1), Ordering::Relaxed);
            st.target = target;
            st.opts = opts;
        }
        self.spawn_needed();
    }

    /// Every worker finishes its instance in flight and starts over.
    pub fn restart(&self) {
        #[cfg(feature = "fault-injection")]
        self.0.poisoned.store(false, Ordering::SeqCst);
        lock(&self.0.state).generation += 1;
        self.0.stats.restarts.fetch_add(1, Ordering::Relaxed);
        self.spawn_needed();
    }

    /// Ends every lot that no worker serves and that will not be served: its
    /// dispatch stopped it (cancel, pause, a watchdog) while it waited for an
    /// association. Its items go back to the dispatch as remaining. Workers
    /// reap too whenever they look for work; a dispatch that stops its batch
    /// asks for it at once (`BatchStopped`), so a stopped lot behind a long one
    /// does not wait for that one to end.
    pub fn reap(&self) {
        let mut st = lock(&self.0.state);
        for lot in &st.lots {
            lot.finish_if_idle(&self.0.stats);
        }
        st.lots.retain(|l| !l.is_done());
    }

    /// Test builds: every worker panics at its next instance.
    #[cfg(feature = "fault-injection")]
    pub fn poison(&self) {
        self.0.poisoned.store(true, Ordering::SeqCst);
    }

    /// Starts workers while the cap allows and some lot has work nobody takes.
    fn spawn_needed(&self) {
        loop {
            {
                let mut st = lock(&self.0.state);
                let cap = st.target.max_associations.max(1) as usize;
                let demand = st.lots.iter().any(|l| l.wants_worker());
                if st.workers >= cap || !demand {
                    return;
                }
                st.workers += 1;
            }
            let pool = self.clone();
            let node = lock(&self.0.state).target.node_id.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("c-store-{node}"))
                .spawn(move || pool.worker());
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a C-STORE sender thread");
                self.0
                    .stats
                    .set_error(&format!("cannot start a sender thread: {e}"));
                lock(&self.0.state).workers -= 1;
                return;
            }
        }
    }

    /// The best lot for a free worker, counted as served by it; `None` ends
    /// the worker (no work, or past the cap).
    fn next_lot(&self) -> Option<(Arc<Lot>, Target, SendOptions, u64)> {
        let mut st = lock(&self.0.state);
        for lot in &st.lots {
            lot.finish_if_idle(&self.0.stats);
        }
        st.lots.retain(|l| !l.is_done());
        let cap = st.target.max_associations.max(1) as usize;
        let busy = st.workers;
        let found = (busy <= cap)
            .then(|| st.lots.iter().find(|l| l.wants_worker()).cloned())
            .flatten();
        match found {
            Some(lot) => {
                lot.joined();
                Some((lot, st.target.clone(), st.opts.clone(), st.generation))
            }
            None => {
                st.workers -= 1;
                None
            }
        }
    }

    /// Whether a worker on `lot` (connected in `generation`) should leave it
    /// after its instance in flight.
    pub(crate) fn should_yield(&self, lot: &Lot, generation: u64) -> bool {
        let st = lock(&self.0.state);
        if st.generation != generation {
            return true;
        }
        let cap = st.target.max_associations.max(1) as usize;
        if st.workers > cap {
            return true;
        }
        st.workers >= cap
            && st
                .lots
                .iter()
                .take_while(|l| l.rank < lot.rank)
                .any(|l| l.wants_worker() && l.serving() == 0)
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn poisoned(&self) -> bool {
        self.0.poisoned.load(Ordering::SeqCst)
    }

    #[cfg(not(feature = "fault-injection"))]
    pub(crate) fn poisoned(&self) -> bool {
        false
    }

    fn worker(self) {
        while let Some((lot, target, opts, generation)) = self.next_lot() {
            let run = catch_unwind(AssertUnwindSafe(|| {
                association::serve(&self, &lot, &target, &opts, generation)
            }));
            if run.is_err() {
                tracing::error!(node = %target.node_id, "a C-STORE sender thread panicked; its instance goes back to the queue");
                self.0
                    .stats
                    .set_error("a sender thread panicked (restarted)");
                self.0.stats.restarts.fetch_add(1, Ordering::Relaxed);
            }
            lot.worker_left(&self.0.stats);
            // A lot that ended may leave work to others; a panic may have
            // left the pool short of workers.
            self.spawn_needed();
        }
    }

    pub(crate) fn stats_ref(&self) -> &PoolStats {
        &self.0.stats
    }
}
