//! Group commit of one batch's answers: each acknowledgement is written to
//! the dispatch journal at once and made durable by one store flush shared by
//! every association waiting at that moment (the first waiter flushes for all,
//! the others wait for it). Events are reported (board, progress) only once
//! durable, so nothing is ever reported that a crash could take back.
//!
//! The sender calls [`EventSink::wait_durable`] before it lets the node
//! complete an association's next instance, so the flush overlaps that
//! instance's transfer instead of stopping the association.
//!
//! Before flushing, the leader waits a moment ([`GROUP_WAIT`] at most) until
//! every association has an answer waiting (commit delay, as databases do):
//! otherwise the associations settle into two cohorts that alternate, each
//! flush serving half of them, and a flush under load costs more than an
//! instance's transfer.
//!
//! Touches the store's journal and the board; runs on the sender's threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use laminate_store::{Ack, Journal, Store};
use tokio::sync::mpsc::UnboundedSender;

use crate::board::SharedBoard;
use crate::send::{EventSink, Item, ItemOutcome, SendEvent, Ticket};

/// How long a flush waits for the other associations' answers to join it.
pub(crate) const GROUP_WAIT: Duration = Duration::from_millis(1);

/// One batch's journal and reporting, shared by its sender threads.
pub(crate) struct AckJournal {
    store: Store,
    dispatch: String,
    node: String,
    board: SharedBoard,
    in_flight: InFlight,
    /// Dataset bytes per instance, for the board's byte counts.
    sizes: HashMap<String, u64>,
    events: UnboundedSender<SendEvent>,
    /// Answers one flush waits for (the batch's associations).
    group: u64,
    state: Mutex<State>,
    /// Signalled when something is recorded and when a flush ends.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The last ticket handed out.
    recorded: Ticket,
    /// Every ticket up to this one is durable.
    durable: Ticket,
    /// A thread is flushing for everyone.
    flushing: bool,
    /// Recorded, not yet durable, in order.
    unreported: Vec<SendEvent>,
}

impl AckJournal {
    /// Counts `items` as in flight for `node` on the board until answered;
    /// `associations` is how many answers a flush may wait for.
    pub(crate) fn new(
        store: Store,
        dispatch: &str,
        node: &str,
        board: SharedBoard,
        items: &[Item],
        associations: u32,
        events: UnboundedSender<SendEvent>,
    ) -> AckJournal {
        AckJournal {
            in_flight: InFlight::new(board.clone(), node, items.len() as u64),
            sizes: dataset_sizes(items),
            store,
            dispatch: dispatch.to_owned(),
            node: node.to_owned(),
            board,
            events,
            group: u64::from(associations.max(1)).min(items.len().max(1) as u64),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters and a list: still consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes everything recorded durable and reported (the batch's end).
    pub(crate) fn finish(&self) {
        let last = self.lock().recorded;
        self.wait_durable(last);
    }

    fn report(&self, events: Vec<SendEvent>) {
        for ev in events {
            if let SendEvent::Acknowledged {
                sop_instance_uid,
                outcome,
                rtt,
                ..
            } = &ev
            {
                self.in_flight.settle_one();
                if matches!(outcome, ItemOutcome::Stored { .. }) {
                    let bytes = self.sizes.get(sop_instance_uid).copied().unwrap_or(0);
                    self.board.sent.stored(&self.node, bytes, *rtt);
                }
            }
            let _ = self.events.send(ev);
        }
    }
}

impl EventSink for AckJournal {
    fn record(&self, ev: SendEvent) -> Ticket {
        if let SendEvent::Acknowledged {
            sop_instance_uid,
            outcome,
            converted_to,
            ..
        } = &ev
        {
            let ack = match outcome {
                ItemOutcome::Stored { status } => Ack {
                    stored: true,
                    status: Some(*status),
                    error: None,
                    converted_to: converted_to.clone(),
                },
                ItemOutcome::Failed { status, error } => Ack {
                    stored: false,
                    status: *status,
                    error: Some(error.clone()),
                    converted_to: None,
                },
            };
            // Written before the ticket exists: a flush that starts after
            // the ticket was handed out covers it.
            if let Err(e) =
                self.store
                    .journal_ack_deferred(&self.dispatch, &self.node, sop_instance_uid, &ack)
            {
                tracing::error!(error = %e, dispatch = %self.dispatch, "cannot journal an acknowledgement");
            }
        }
        let mut st = self.lock();
        st.recorded += 1;
        st.unreported.push(ev);
        let ticket = st.recorded;
        drop(st);
        self.changed.notify_all();
        ticket
    }

    fn wait_durable(&self, ticket: Ticket) {
        let mut st = self.lock();
        while st.durable < ticket {
            if st.flushing {
                st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.flushing = true;
            let until = Instant::now() + GROUP_WAIT;
            while st.recorded - st.durable < self.group {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                st = self
                    .changed
                    .wait_timeout(st, until - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            let upto = st.recorded;
            let events = std::mem::take(&mut st.unreported);
            drop(st);
            // Resets `flushing` and wakes the others even if this unwinds.
            let leader = Leader(self);
            if let Err(e) = self.store.flush() {
                tracing::error!(error = %e, dispatch = %self.dispatch, "cannot flush the journal's acknowledgements");
            }
            self.report(events);
            st = self.lock();
            st.durable = upto;
            drop(st);
            drop(leader);
            st = self.lock();
        }
    }
}

/// The flushing thread's duty to let the others go on.
struct Leader<'a>(&'a AckJournal);

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.0.lock().flushing = false;
        self.0.changed.notify_all();
    }
}

/// Counts a batch's instances as in flight on the board (`/api/nodes`) until each
/// is acknowledged; whatever is left when the batch ends is settled on drop.
struct InFlight {
    board: SharedBoard,
    node: String,
    left: AtomicU64,
}

impl InFlight {
    fn new(board: SharedBoard, node: &str, n: u64) -> Self {
        board.sent.add_in_flight(node, n);
        Self {
            board,
            node: node.to_owned(),
            left: AtomicU64::new(n),
        }
    }

    fn settle_one(&self) {
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1));
        if taken.is_ok() {
            self.board.sent.settle_in_flight(&self.node, 1);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = *self.left.get_mut();
        self.board.sent.settle_in_flight(&self.node, left);
    }
}

/// Each item's dataset size (what goes on the wire when the node takes the
/// file's own transfer syntax), for the `/metrics` byte counts: one `stat`
/// per file.
fn dataset_sizes(items: &[Item]) -> HashMap<String, u64> {
    items
        .iter()
        .map(|i| {
            let len = std::fs::metadata(&i.path).map(|m| m.len()).unwrap_or(0);
            (
                i.sop_instance_uid.clone(),
                len.saturating_sub(i.dataset_offset),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn stored(uid: &str) -> SendEvent {
        SendEvent::Acknowledged {
            sop_instance_uid: uid.into(),
            outcome: ItemOutcome::Stored { status: 0 },
            converted_to: None,
            rtt: Duration::ZERO,
        }
    }

    #[test]
    fn answers_are_reported_only_once_durable_and_one_flush_serves_many() {
        let store = Store::open_temporary().expect("store");
        let board = SharedBoard::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let j = Arc::new(AckJournal::new(
            store.clone(),
            "d1",
            "n1",
            board,
            &[],
            4,
            tx,
        ));
        let t1 = j.record(stored("1.1"));
        let t2 = j.record(stored("1.2"));
        assert!(t2 > t1);
        // Journaled at once, not reported yet.
        assert_eq!(store.journal_acks("d1", "n1").expect("acks").len(), 2);
        assert!(rx.try_recv().is_err());
        // Waiting for the first makes both durable and reports both, in order.
        j.wait_durable(t1);
        let got: Vec<SendEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got, vec![stored("1.1"), stored("1.2")]);
        j.wait_durable(t2);
        assert!(rx.try_recv().is_err(), "nothing reported twice");
        // Many threads waiting at once all return, each event reported once.
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let j = j.clone();
                std::thread::spawn(move || {
                    let t = j.record(stored(&format!("2.{i}")));
                    j.wait_durable(t);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        j.finish();
        let got: Vec<SendEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(store.journal_acks("d1", "n1").expect("acks").len(), 6);
    }
}
