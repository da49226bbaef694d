//! One dispatch's share of a node's pool: a *lot* is the instances of one
//! submission that can share an association's presentation contexts, with
//! the lot's queue, the state its workers share (failures, aborts, who
//! serves it) and the end of the lot, reported once to its submission when
//! the last worker leaves (or, when nobody serves it, when the pool reaps it).
//!
//! Touches only its own queue and state and its submission's channel; the
//! sink records the instances a permanent refusal fails.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::contexts::Proposal;
use super::pool::{lock, PoolStats, Rank, CONVERT_AFTER_ABORTS, MAX_ABORTS};
use super::{BatchOutcome, EventSink, Item, ItemOutcome, SendEvent};

/// One dispatch's submission: its lots and whom to tell at the end.
pub(super) struct Submission {
    state: Mutex<SubmissionState>,
}

struct SubmissionState {
    lots_left: usize,
    outcome: BatchOutcome,
    done: Option<oneshot::Sender<BatchOutcome>>,
}

impl Submission {
    /// A submission of `lots` lots whose end goes to `done`.
    pub(super) fn new(lots: usize, done: oneshot::Sender<BatchOutcome>) -> Arc<Submission> {
        Arc::new(Submission {
            state: Mutex::new(SubmissionState {
                lots_left: lots,
                outcome: BatchOutcome::default(),
                done: Some(done),
            }),
        })
    }

    pub(super) fn lot_done(&self, o: BatchOutcome) {
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
    pub(super) rank: Rank,
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
    /// A lot of `items` that its submission hears the end of.
    pub(super) fn new(
        rank: Rank,
        proposals: Vec<Proposal>,
        prefer: Option<String>,
        items: Vec<Item>,
        cancel: Arc<AtomicBool>,
        sink: Arc<dyn EventSink + Send + Sync>,
        submission: Arc<Submission>,
    ) -> Lot {
        Lot {
            rank,
            proposals,
            prefer,
            queue: Mutex::new(items.into()),
            state: Mutex::new(LotState::default()),
            stop: AtomicBool::new(false),
            cancel,
            sink,
            submission,
            associations: AtomicU32::new(0),
        }
    }

    /// A worker starts serving the lot.
    pub(super) fn joined(&self) {
        lock(&self.state).workers += 1;
    }

    /// Workers serving the lot now.
    pub(super) fn serving(&self) -> usize {
        lock(&self.state).workers
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.queue).is_empty()
    }

    pub(crate) fn halted(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cancel.load(Ordering::SeqCst)
    }

    pub(super) fn is_done(&self) -> bool {
        lock(&self.state).done
    }

    pub(super) fn wants_worker(&self) -> bool {
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
        st.connect_error = Some(error);
        if st.workers <= 1 {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// The node refuses the association for good.
    pub(crate) fn permanent(&self, error: String) {
        lock(&self.state).permanent.get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// A worker left the lot; the last one out of a finished lot reports it.
    pub(super) fn worker_left(&self, stats: &PoolStats) {
        let mut st = lock(&self.state);
        st.workers = st.workers.saturating_sub(1);
        if st.workers == 0 {
            // `full` keeps more workers from joining while others serve; with
            // none left the lot is open again. Otherwise two workers failing
            // to associate at the same moment (each seeing the other still
            // there) would leave a lot nobody serves and nobody ends.
            st.full = false;
        }
        self.finish_locked(&mut st, stats);
    }

    /// Ends the lot if no worker serves it and it is stopped (or empty).
    pub(super) fn finish_if_idle(&self, stats: &PoolStats) {
        let mut st = lock(&self.state);
        self.finish_locked(&mut st, stats);
    }

    fn finish_locked(&self, st: &mut LotState, stats: &PoolStats) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dimse::IMPLICIT_VR_LE;
    use crate::send::tests::{items_of, write_instance};
    use crate::send::{EventSink, Ticket};

    struct NoSink;
    impl EventSink for NoSink {
        fn record(&self, _: SendEvent) -> Ticket {
            0
        }
        fn wait_durable(&self, _: Ticket) {}
    }

    fn lot_of(n: usize, cancel: Arc<AtomicBool>) -> (Lot, oneshot::Receiver<BatchOutcome>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f: Vec<_> = (0..n)
            .map(|_| {
                write_instance(
                    dir.path(),
                    dicom_dictionary_std::uids::CT_IMAGE_STORAGE,
                    IMPLICIT_VR_LE,
                    8,
                    None,
                )
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        let lot = Lot::new(
            Rank {
                priority: 1,
                seq: 1,
            },
            Vec::new(),
            None,
            items_of(&f),
            cancel,
            Arc::new(NoSink),
            Submission::new(1, tx),
        );
        (lot, rx)
    }

    #[test]
    fn two_workers_failing_to_associate_together_leave_a_lot_that_is_served_again() {
        let stats = PoolStats::default();
        let (lot, mut rx) = lot_of(3, Arc::new(AtomicBool::new(false)));
        lot.joined();
        lot.joined();
        // Each fails while the other is still counted: neither stops the lot.
        lot.connect_failed("cannot associate: refused".into());
        lot.connect_failed("cannot associate: refused".into());
        assert!(!lot.wants_worker(), "full while they are there");
        lot.worker_left(&stats);
        lot.worker_left(&stats);
        // Nobody serves it now: it takes a worker again, who alone ends it.
        assert!(lot.wants_worker(), "a lot nobody serves is open again");
        assert!(rx.try_recv().is_err(), "not ended yet");
        lot.joined();
        lot.connect_failed("cannot associate: refused".into());
        lot.worker_left(&stats);
        let outcome = rx.try_recv().expect("ended");
        assert_eq!(outcome.remaining.len(), 3);
        assert_eq!(
            outcome.transient_error.as_deref(),
            Some("cannot associate: refused")
        );
    }

    #[test]
    fn a_cancelled_lot_nobody_serves_ends_when_reaped_and_not_before() {
        let stats = PoolStats::default();
        let cancel = Arc::new(AtomicBool::new(false));
        let (lot, mut rx) = lot_of(2, cancel.clone());
        lot.finish_if_idle(&stats);
        assert!(rx.try_recv().is_err(), "a waiting lot is not ended");
        cancel.store(true, Ordering::SeqCst);
        lot.finish_if_idle(&stats);
        let outcome = rx.try_recv().expect("ended");
        assert_eq!(outcome.transient_error, None);
        assert_eq!(outcome.remaining.len(), 2);
        assert!(lot.is_done());
    }
}
