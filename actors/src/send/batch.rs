//! [`send_batch`] and [`send_batch_to`]: one batch sent to one node through a
//! pool of its own, for callers that own no node pool (tests, tools). The
//! appliance's dispatches go through each node's shared pool instead
//! (`pool.rs`, the NodeSender actor).
//!
//! The caller's sink and cancel flag are borrowed, the pool's workers are
//! threads of their own: events are forwarded to the calling thread, which
//! hands them to the sink and answers, so the sink's rules (journal before
//! the next item, durable before the next instance completes) hold as if the
//! workers called it themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pool::{Pool, PoolStats, Rank};
use super::{BatchOutcome, EventSink, Immediate, Item, SendEvent, SendOptions, Target, Ticket};

/// How often the calling thread looks at the cancel flag and the batch's end
/// while no event arrives.
const POLL: Duration = Duration::from_millis(5);

/// Sends every item once to `target`, over up to `max_associations`
/// associations in parallel taking items from one shared work list, each
/// association reused for many items.
///
/// `on_event` is called for each acknowledgement before that item's worker
/// takes its next item (journal it there), and for each transient failure.
///
/// Returns when every item is acknowledged or failed; when `cancel` is set
/// (each in-flight instance gets its response first; the rest is returned in
/// `remaining`, `transient_error` stays `None`); or after a transient failure
/// (association failed, node unavailable, out of resources): `remaining`
/// holds every unacknowledged item for a retry after a backoff. An
/// association rejected permanently (or with no accepted context) fails the
/// items that needed it, each through `on_event`.
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

/// [`send_batch`] with events going to `sink`, which may make
/// acknowledgements durable in groups: each association holds back the last
/// fragment of its next instance until its previous acknowledgement is
/// durable.
pub fn send_batch_to(
    target: &Target,
    items: Vec<Item>,
    opts: &SendOptions,
    cancel: &AtomicBool,
    sink: &dyn EventSink,
) -> BatchOutcome {
    let pool = Pool::new(target.clone(), opts.clone(), Arc::new(PoolStats::default()));
    let (tx, rx) = mpsc::channel::<Request>();
    let forward = Arc::new(Forward {
        requests: Mutex::new(tx),
    });
    let flag = Arc::new(AtomicBool::new(cancel.load(Ordering::SeqCst)));
    let mut done = pool.submit(
        items,
        Rank {
            priority: 1,
            seq: 0,
        },
        flag.clone(),
        forward,
    );
    // The flag is copied before each answer: a sink that sets `cancel` while
    // recording an acknowledgement stops the worker before its next item.
    let serve = |req: Request| match req {
        Request::Record(ev, reply) => {
            let ticket = sink.record(ev);
            sync_cancel(cancel, &flag);
            let _ = reply.send(ticket);
        }
        Request::WaitDurable(t, reply) => {
            sink.wait_durable(t);
            sync_cancel(cancel, &flag);
            let _ = reply.send(t);
        }
    };
    loop {
        sync_cancel(cancel, &flag);
        match rx.recv_timeout(POLL) {
            Ok(req) => serve(req),
            Err(RecvTimeoutError::Timeout) => {}
            // Every worker is gone and so is the pool's copy of the sink.
            Err(RecvTimeoutError::Disconnected) => {}
        }
        match done.try_recv() {
            Ok(outcome) => {
                // Events recorded just before the end.
                while let Ok(req) = rx.try_recv() {
                    serve(req);
                }
                return outcome;
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                return BatchOutcome {
                    remaining: Vec::new(),
                    transient_error: Some("the sender pool ended unexpectedly".into()),
                    associations: 0,
                };
            }
        }
    }
}

fn sync_cancel(cancel: &AtomicBool, flag: &AtomicBool) {
    if cancel.load(Ordering::SeqCst) {
        flag.store(true, Ordering::SeqCst);
    }
}

enum Request {
    Record(SendEvent, mpsc::Sender<Ticket>),
    WaitDurable(Ticket, mpsc::Sender<Ticket>),
}

/// The pool's sink: every call is answered by the calling thread.
struct Forward {
    requests: Mutex<mpsc::Sender<Request>>,
}

impl Forward {
    fn ask(&self, req: impl FnOnce(mpsc::Sender<Ticket>) -> Request) -> Ticket {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(req(tx));
        match sent {
            Ok(()) => rx.recv().unwrap_or(0),
            Err(_) => 0,
        }
    }
}

impl EventSink for Forward {
    fn record(&self, ev: SendEvent) -> Ticket {
        self.ask(|tx| Request::Record(ev, tx))
    }

    fn wait_durable(&self, ticket: Ticket) {
        self.ask(|tx| Request::WaitDurable(ticket, tx));
    }
}
