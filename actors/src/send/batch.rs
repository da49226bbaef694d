//! [`send_batch`]: the items split in context groups, each group sent over up
//! to `max_associations` threads sharing one work list.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::contexts::{plan, Group};
use super::{
    association, BatchOutcome, EventSink, Immediate, Item, ItemOutcome, SendEvent, SendOptions,
    Target,
};

/// Sends every item once to `target`, over up to `max_associations`
/// associations in parallel taking items from one shared work list, each
/// association reused for many items.
///
/// `on_event` is called from the sender threads, for each acknowledgement
/// before that thread takes its next item (journal it there), and for each
/// transient failure of an established association (a failure to associate
/// only shows in the returned `transient_error`). Items failed wholesale by a
/// permanent rejection are reported from the calling thread.
///
/// Returns when every item is acknowledged or failed; when `cancel` is set
/// (each in-flight instance gets its response first; the rest is returned
/// in `remaining`, `transient_error` stays `None`); or after a transient
/// failure (association failed, aborted, timed out, out of resources): the
/// other associations finish their in-flight instance and stop, and
/// `remaining` holds every unacknowledged item for a retry after a backoff.
/// An association rejected permanently (or with no accepted context) fails
/// the items that needed it, each through `on_event`.
///
/// Blocking: call it from a blocking thread.
pub fn send_batch(
    target: &Target,
    items: Vec<Item>,
    opts: &SendOptions,
    cancel: &AtomicBool,
    on_event: &(dyn Fn(SendEvent) + Sync),
) -> BatchOutcome {
    send_batch_to(target, items, opts, cancel, &Immediate(on_event))
}

/// [`send_batch`] with events going to `sink`, which may make acknowledgements
/// durable in groups: each association holds back the last fragment of its
/// next instance until its previous acknowledgement is durable.
pub fn send_batch_to(
    target: &Target,
    items: Vec<Item>,
    opts: &SendOptions,
    cancel: &AtomicBool,
    sink: &dyn EventSink,
) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    for group in plan(items) {
        if cancel.load(Ordering::SeqCst) || outcome.transient_error.is_some() {
            outcome.remaining.extend(group.items);
            continue;
        }
        let done = send_group(target, group, opts, cancel, sink);
        outcome.associations += done.associations;
        outcome.remaining.extend(done.remaining);
        if done.transient_error.is_some() {
            outcome.transient_error = done.transient_error;
        }
    }
    outcome
}

fn send_group(
    target: &Target,
    group: Group,
    opts: &SendOptions,
    cancel: &AtomicBool,
    sink: &dyn EventSink,
) -> BatchOutcome {
    let threads = (target.max_associations.max(1) as usize).min(group.items.len());
    if threads == 0 {
        return BatchOutcome::default();
    }
    let shared = Shared {
        queue: Mutex::new(group.items.into()),
        stop: AtomicBool::new(false),
        cancel,
        sink,
        state: Mutex::new(State::default()),
        associations: AtomicU32::new(0),
    };
    let proposals = &group.proposals;
    std::thread::scope(|scope| {
        for i in 0..threads {
            let shared = &shared;
            let spawned = std::thread::Builder::new()
                .name(format!("c-store-{i}"))
                .spawn_scoped(scope, move || {
                    // A panic must not lose the in-flight item (its guard gives
                    // it back while unwinding) nor take the batch down.
                    let run = catch_unwind(AssertUnwindSafe(|| {
                        association::run(shared, target, proposals, opts)
                    }));
                    if run.is_err() {
                        tracing::error!(node = %target.node_id, "a C-STORE sender thread panicked");
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a C-STORE sender thread");
                shared.connect_failed(format!("cannot start a sender thread: {e}"));
                break;
            }
        }
    });

    let associations = shared.associations.load(Ordering::Relaxed);
    let mut state = lock(&shared.state);
    let mut left: Vec<Item> = std::mem::take(&mut state.returned);
    left.extend(lock(&shared.queue).drain(..));
    if let Some(error) = state.permanent.take() {
        for item in left.drain(..) {
            shared.sink.record(SendEvent::Acknowledged {
                sop_instance_uid: item.sop_instance_uid,
                outcome: ItemOutcome::Failed {
                    status: None,
                    error: error.clone(),
                },
                rtt: Duration::ZERO,
            });
        }
    }
    let transient_error = if left.is_empty() {
        None
    } else if let Some(e) = state.transient.take().or(state.connect_error.take()) {
        Some(e)
    } else if cancel.load(Ordering::SeqCst) {
        None
    } else {
        Some("instances left unsent".to_string())
    };
    BatchOutcome {
        remaining: left,
        transient_error,
        associations,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking sender thread cannot leave these in a broken state (plain
    // pushes and pops), so a poisoned lock is still good.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct State {
    /// In-flight items that failed transiently.
    returned: Vec<Item>,
    /// The first transient failure of an established association.
    transient: Option<String>,
    /// The last failure to associate (only matters if items are left).
    connect_error: Option<String>,
    /// A permanent refusal of the association: the group's items fail.
    permanent: Option<String>,
}

/// What the threads of one group share.
pub(crate) struct Shared<'a> {
    queue: Mutex<VecDeque<Item>>,
    /// Set by a transient or permanent failure: take no more items.
    stop: AtomicBool,
    cancel: &'a AtomicBool,
    pub(crate) sink: &'a dyn EventSink,
    state: Mutex<State>,
    pub(crate) associations: AtomicU32,
}

impl Shared<'_> {
    pub(crate) fn halted(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cancel.load(Ordering::SeqCst)
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.queue).is_empty()
    }

    pub(crate) fn take(&self) -> Option<Item> {
        lock(&self.queue).pop_front()
    }

    /// An in-flight item failed transiently: keep it and stop the batch.
    pub(crate) fn give_back(&self, item: Item, error: String) {
        let mut state = lock(&self.state);
        state.returned.push(item);
        state.transient.get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// This thread could not associate; the others carry on.
    pub(crate) fn connect_failed(&self, error: String) {
        lock(&self.state).connect_error = Some(error);
    }

    /// The node refuses the association for good.
    pub(crate) fn permanent(&self, error: String) {
        lock(&self.state).permanent.get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Guards an item while it is sent: if the thread panics before
    /// [`InFlight::done`], the item goes back to the caller.
    pub(crate) fn in_flight(&self, item: &Item) -> InFlight<'_, '_> {
        InFlight {
            shared: self,
            item: Some(item.clone()),
        }
    }
}

pub(crate) struct InFlight<'s, 'a> {
    shared: &'s Shared<'a>,
    item: Option<Item>,
}

impl InFlight<'_, '_> {
    pub(crate) fn done(mut self) {
        self.item = None;
    }
}

impl Drop for InFlight<'_, '_> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.shared
                .give_back(item, "a sender thread panicked".to_string());
        }
    }
}
