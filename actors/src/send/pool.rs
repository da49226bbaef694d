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

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::contexts::{plan_for, Proposal};
use super::{
    association, BatchOutcome, EventSink, Item, ItemOutcome, SendEvent, SendOptions, Target,
};

/// After this many aborts of the association while one instance was in
/// flight (the node accepting others meanwhile), that instance fails alone.
pub const MAX_ABORTS: u8 = 3;
/// The try before the last is converted to Explicit VR Little Endian.
pub const CONVERT_AFTER_ABORTS: u8 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
    fn set_error(&self, e: &str) {
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
        let submission = Arc::new(Submission {
            state: Mutex::new(SubmissionState {
                lots_left: groups.len(),
                outcome: BatchOutcome::default(),
                done: Some(tx),
            }),
        });
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
                st.lots.push(Arc::new(Lot {
                    rank,
                    proposals: g.proposals,
                    prefer: prefer.clone(),
                    queue: Mutex::new(g.items.into()),
                    state: Mutex::new(LotState::default()),
                    stop: AtomicBool::new(false),
                    cancel: cancel.clone(),
                    sink: sink.clone(),
                    submission: submission.clone(),
                    associations: AtomicU32::new(0),
                }));
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
        st.lots.retain(|l| !l.is_done());
        let cap = st.target.max_associations.max(1) as usize;
        let busy = st.workers;
        let found = (busy <= cap)
            .then(|| st.lots.iter().find(|l| l.wants_worker()).cloned())
            .flatten();
        match found {
            Some(lot) => {
                lock(&lot.state).workers += 1;
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
                .any(|l| l.wants_worker() && lock(&l.state).workers == 0)
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

/// One dispatch's submission: its lots and whom to tell at the end.
struct Submission {
    state: Mutex<SubmissionState>,
}

struct SubmissionState {
    lots_left: usize,
    outcome: BatchOutcome,
    done: Option<oneshot::Sender<BatchOutcome>>,
}

impl Submission {
    fn lot_done(&self, o: BatchOutcome) {
        let mut st = lock(&self.state);
        st.outcome.associations += o.associations;
        st.outcome.remaining.extend(o.remaining);
        if o.transient_error.is_some() {
            st.outcome.transient_error = o.transient_error;
        }
        st.lots_left = st.lots_left.saturating_sub(1);
        if st.lots_left == 0 {
            let outcome = std::mem::take(&mut st.outcome);
            if let Some(tx) = st.done.take() {
                let _ = tx.send(outcome);
            }
        }
    }
}

#[derive(Default)]
struct LotState {
    /// In-flight items that failed transiently.
    returned: Vec<Item>,
    /// The first transient failure of an established association.
    transient: Option<String>,
    /// The last failure to associate.
    connect_error: Option<String>,
    /// A permanent refusal of the association: the lot's items fail.
    permanent: Option<String>,
    /// Workers serving the lot now.
    workers: usize,
    /// The instance of the last abort, and whether another one was stored since.
    last_abort: Option<String>,
    stored_since_abort: bool,
    /// A worker could not associate while others served: no more join.
    full: bool,
    done: bool,
}

/// Instances of one dispatch that can share associations (one context group).
pub(crate) struct Lot {
    rank: Rank,
    pub(crate) proposals: Vec<Proposal>,
    /// The node's preferred syntax when the lot was planned (its contexts
    /// propose it alone).
    pub(crate) prefer: Option<String>,
    queue: Mutex<VecDeque<Item>>,
    state: Mutex<LotState>,
    /// Set by a transient or permanent failure: take no more items.
    stop: AtomicBool,
    cancel: Arc<AtomicBool>,
    pub(crate) sink: Arc<dyn EventSink + Send + Sync>,
    submission: Arc<Submission>,
    pub(crate) associations: AtomicU32,
}

/// What became of an instance whose association was aborted (or timed out).
pub(crate) enum AbortVerdict {
    /// Attributed to the instance: queued again (converted when `convert`).
    Requeued,
    /// The instance failed alone after [`MAX_ABORTS`].
    FailedAlone(String),
    /// The node refuses everything: the lot stops, the job retries later.
    Outage,
}

impl Lot {
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.queue).is_empty()
    }

    pub(crate) fn halted(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cancel.load(Ordering::SeqCst)
    }

    fn is_done(&self) -> bool {
        lock(&self.state).done
    }

    fn wants_worker(&self) -> bool {
        if self.halted() {
            return false;
        }
        let st = lock(&self.state);
        !st.done && !st.full && st.workers < lock(&self.queue).len()
    }

    pub(crate) fn take(&self, stats: &PoolStats) -> Option<Item> {
        let item = lock(&self.queue).pop_front();
        if item.is_some() {
            stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        item
    }

    /// Back to the queue (a panic, a yield before sending).
    pub(crate) fn put_back(&self, item: Item, stats: &PoolStats) {
        stats.queued.fetch_add(1, Ordering::Relaxed);
        lock(&self.queue).push_front(item);
    }

    /// An instance was stored: a later abort is the instance's, not the node's.
    pub(crate) fn stored_one(&self) {
        lock(&self.state).stored_since_abort = true;
    }

    /// An in-flight item failed transiently: keep it and stop the lot.
    pub(crate) fn give_back(&self, item: Item, error: String) {
        let mut st = lock(&self.state);
        st.returned.push(item);
        st.transient.get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The association was aborted (or its answer timed out) while `item`
    /// was in flight. Two different instances aborting in a row with nothing
    /// stored between is the node's doing (an outage); the same instance
    /// again, or one after a store, is that instance's: it goes to the back
    /// of the queue, converted for its last try, and fails alone after
    /// [`MAX_ABORTS`].
    pub(crate) fn aborted(&self, mut item: Item, error: &str, stats: &PoolStats) -> AbortVerdict {
        let mut st = lock(&self.state);
        let outage = st
            .last_abort
            .as_deref()
            .is_some_and(|last| last != item.sop_instance_uid && !st.stored_since_abort);
        if outage {
            st.returned.push(item);
            st.transient.get_or_insert(error.to_owned());
            self.stop.store(true, Ordering::SeqCst);
            return AbortVerdict::Outage;
        }
        st.last_abort = Some(item.sop_instance_uid.clone());
        st.stored_since_abort = false;
        item.aborts = item.aborts.saturating_add(1);
        if item.aborts >= MAX_ABORTS {
            return AbortVerdict::FailedAlone(format!(
                "node aborted the association on this instance {} times (last: {error})",
                item.aborts
            ));
        }
        if item.aborts >= CONVERT_AFTER_ABORTS {
            item.force_native = true;
        }
        drop(st);
        stats.queued.fetch_add(1, Ordering::Relaxed);
        lock(&self.queue).push_back(item);
        AbortVerdict::Requeued
    }

    /// This worker could not associate. With others serving the lot it just
    /// leaves; alone, the lot stops with the error (retried later).
    pub(crate) fn connect_failed(&self, error: String) {
        let mut st = lock(&self.state);
        st.full = true;
        if st.workers <= 1 {
            st.connect_error = Some(error);
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// The node refuses the association for good.
    pub(crate) fn permanent(&self, error: String) {
        lock(&self.state).permanent.get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// A worker left the lot; the last one out of a finished lot reports it.
    fn worker_left(&self, stats: &PoolStats) {
        let mut st = lock(&self.state);
        st.workers = st.workers.saturating_sub(1);
        let queue_empty = lock(&self.queue).is_empty();
        if st.workers > 0 || st.done || !(queue_empty || self.halted()) {
            return;
        }
        st.done = true;
        let mut left: Vec<Item> = std::mem::take(&mut st.returned);
        {
            let mut q = lock(&self.queue);
            stats.queued.fetch_sub(q.len() as u64, Ordering::Relaxed);
            left.extend(q.drain(..));
        }
        if let Some(error) = st.permanent.take() {
            for item in left.drain(..) {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                self.sink.record(SendEvent::Acknowledged {
                    sop_instance_uid: item.sop_instance_uid,
                    outcome: ItemOutcome::Failed {
                        status: None,
                        error: error.clone(),
                    },
                    converted_to: None,
                    rtt: Duration::ZERO,
                });
            }
        }
        let transient_error = if left.is_empty() {
            None
        } else if let Some(e) = st.transient.take().or(st.connect_error.take()) {
            Some(e)
        } else if self.cancel.load(Ordering::SeqCst) {
            None
        } else {
            Some("instances left unsent".to_string())
        };
        if let Some(e) = &transient_error {
            stats.set_error(e);
        }
        let outcome = BatchOutcome {
            remaining: left,
            transient_error,
            associations: self.associations.load(Ordering::Relaxed),
        };
        drop(st);
        self.submission.lot_done(outcome);
    }
}

/// Guards an item while it is sent: if the worker panics before
/// [`InFlight::done`], the item goes back to its lot's queue.
pub(crate) struct InFlight<'a> {
    lot: &'a Lot,
    stats: &'a PoolStats,
    item: Option<Item>,
}

impl<'a> InFlight<'a> {
    pub(crate) fn new(lot: &'a Lot, stats: &'a PoolStats, item: &Item) -> InFlight<'a> {
        InFlight {
            lot,
            stats,
            item: Some(item.clone()),
        }
    }

    pub(crate) fn done(mut self) {
        self.item = None;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.lot.put_back(item, self.stats);
        }
    }
}
