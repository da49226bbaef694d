//! Node outages (APPLIANCE.md "Running for months unattended"): a dispatch waiting to
//! retry holds no slot, and a node whose tries are used up is `failed` and *parked*
//! for `park_hours`: when the node answers C-ECHO again the dispatch is replayed for
//! that node, as an operator's replay would be (from `queued`).
//!
//! The parked state lives in the node's progress (`parked_until_ms`, journaled with
//! the record) and in the store's park index (`laminate_store::Parking`), which
//! finds a node's parked dispatches without reading the history. These functions are
//! the rules; the dispatcher calls them and does the replays.

use std::collections::BTreeMap;

use laminate_store::{
    DispatchRecord, DispatchState, Journal, NodeStatus, Parked, Parking, Store, StoreError,
};

use super::shared::{JobEnv, JobShared};
use crate::board::SharedBoard;
use crate::feed::FeedEvent;

/// Whether every open node of the dispatch waits to retry: the job then holds no
/// dispatch slot (the node's sender pool keeps its place in line by rank).
pub fn in_backoff(rec: &DispatchRecord) -> bool {
    let mut open = rec.nodes.iter().filter(|n| !n.status.is_final()).peekable();
    open.peek().is_some() && open.all(|n| n.status == NodeStatus::Retrying)
}

/// The node's tries are used up: `failed` with `error`, and parked for the
/// policy's `park` time (the index entry first, so a crash in between leaves an
/// entry the sweep drops, never a parked node nobody finds).
pub(super) fn give_up(env: &JobEnv, sh: &JobShared, node_id: &str, error: String) {
    let park = sh.policy.get().park;
    let now = crate::clock::now_ms();
    let mut until = (!park.is_zero())
        .then(|| now.saturating_add(u64::try_from(park.as_millis()).unwrap_or(u64::MAX)));
    if let Some(until_ms) = until {
        let entry = Parked {
            dispatch_id: sh.id(),
            node_id: node_id.to_owned(),
            parked_at_ms: now,
            until_ms,
        };
        if let Err(e) = env.store.park_put(&entry) {
            tracing::error!(error = %e, dispatch = %entry.dispatch_id, node = node_id, "cannot park a dispatch; it stays failed");
            until = None;
        }
    }
    if until.is_some() {
        tracing::info!(dispatch = %sh.id(), node = node_id, "retries used up: failed and parked until the node answers again");
    }
    sh.update_node(env, node_id, |n| {
        n.status = NodeStatus::Failed;
        n.error = Some(error);
        n.parked_until_ms = until;
    });
}

/// What an entry of the index stands for now.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// Nothing (record gone, node replayed, cancelled…): the entry is dropped.
    Stale,
    /// Parked past its time: no longer parked (it stays failed).
    Expired,
    /// Parked, waiting for the node.
    Parked,
}

fn classify(rec: Option<&DispatchRecord>, p: &Parked, now_ms: u64) -> Entry {
    let Some(n) = rec.and_then(|r| r.node(&p.node_id)) else {
        return Entry::Stale;
    };
    match n.parked_until_ms {
        Some(_) if n.status != NodeStatus::Failed => Entry::Stale,
        Some(until) if until <= now_ms => Entry::Expired,
        Some(_) => Entry::Parked,
        None => Entry::Stale,
    }
}

/// Clears the record's parked mark for these nodes (journaled), then the index entries.
fn unpark_record(
    store: &Store,
    board: &SharedBoard,
    mut rec: DispatchRecord,
    nodes: &[String],
) -> Result<(), StoreError> {
    let mut changed = false;
    for n in rec.nodes.iter_mut().filter(|n| nodes.contains(&n.node_id)) {
        changed |= n.parked_until_ms.take().is_some();
    }
    if changed {
        store.journal_put(&rec)?;
        board.publish(FeedEvent::Dispatch(rec.id.clone()));
    }
    for node in nodes {
        store.park_remove(&rec.id, node)?;
    }
    Ok(())
}

/// Removes the index entries of a dispatch's nodes (a replay: the record already
/// says they are queued again).
pub fn unpark(store: &Store, id: &str, nodes: &[String]) {
    for node in nodes {
        if let Err(e) = store.park_remove(id, node) {
            tracing::warn!(error = %e, dispatch = id, node = %node, "cannot remove a parking entry (dropped later)");
        }
    }
}

/// Takes out of parking every parked (dispatch, node) for which `hit` holds (the
/// entity was deleted, the node removed); they stay failed.
pub fn unpark_where(
    store: &Store,
    board: &SharedBoard,
    hit: impl Fn(&DispatchRecord, &str) -> bool,
) {
    let run = || -> Result<(), StoreError> {
        for p in store.parked_all()? {
            let rec = store.journal_get(&p.dispatch_id)?;
            match rec {
                Some(rec) if hit(&rec, &p.node_id) => {
                    tracing::info!(dispatch = %p.dispatch_id, node = %p.node_id, "no longer parked");
                    unpark_record(store, board, rec, std::slice::from_ref(&p.node_id))?;
                }
                _ => {}
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        tracing::error!(error = %e, "cannot read the parked dispatches");
    }
}

/// Goes through the parked dispatches (of `came_back` only, when a node just
/// answered C-ECHO again): drops stale entries, ends parking past its time, and
/// returns the dispatches to replay now with their nodes: those whose node came
/// back, or (in a sweep) answered C-ECHO after the dispatch was parked. A
/// dispatch still active (another of its nodes at work) waits for a later sweep.
pub fn due(
    store: &Store,
    board: &SharedBoard,
    came_back: Option<&str>,
    now_ms: u64,
) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
    let entries = match came_back {
        Some(node) => store.parked_for(node)?,
        None => store.parked_all()?,
    };
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in entries {
        let rec = store.journal_get(&p.dispatch_id)?;
        match classify(rec.as_ref(), &p, now_ms) {
            Entry::Stale => store.park_remove(&p.dispatch_id, &p.node_id)?,
            Entry::Expired => {
                if let Some(rec) = rec {
                    tracing::info!(dispatch = %p.dispatch_id, node = %p.node_id, "parked past park_hours: stays failed");
                    unpark_record(store, board, rec, std::slice::from_ref(&p.node_id))?;
                }
            }
            Entry::Parked => {
                let answered = came_back == Some(p.node_id.as_str()) || {
                    let echo = board.echo(&p.node_id);
                    echo.online && echo.last_echo_ms.is_some_and(|t| t > p.parked_at_ms)
                };
                let active = rec
                    .as_ref()
                    .is_some_and(|r| r.state() == DispatchState::Active);
                if answered && !active {
                    out.entry(p.dispatch_id).or_default().push(p.node_id);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use laminate_store::{NodeProgress, Stage};

    fn rec(nodes: Vec<NodeProgress>) -> DispatchRecord {
        let mut r =
            laminate_store::testing::dispatch_record("d1", NodeStatus::Queued, Stage::Finished, 1);
        r.nodes = nodes;
        r
    }

    fn node(id: &str, status: NodeStatus, parked: Option<u64>) -> NodeProgress {
        NodeProgress {
            status,
            parked_until_ms: parked,
            ..NodeProgress::queued(id)
        }
    }

    fn entry(node: &str) -> Parked {
        Parked {
            dispatch_id: "d1".into(),
            node_id: node.into(),
            parked_at_ms: 100,
            until_ms: 1000,
        }
    }

    #[test]
    fn a_job_backs_off_only_when_every_open_node_waits_to_retry() {
        let r = |a, b| rec(vec![node("a", a, None), node("b", b, None)]);
        use NodeStatus::*;
        assert!(in_backoff(&r(Retrying, Retrying)));
        assert!(in_backoff(&r(Retrying, Completed)));
        assert!(!in_backoff(&r(Retrying, Sending)));
        assert!(!in_backoff(&r(Downloading, Downloading)));
        assert!(!in_backoff(&r(Failed, Completed)), "nothing open");
    }

    #[test]
    fn an_entry_is_parked_until_its_time_and_stale_once_the_record_moved_on() {
        let parked = rec(vec![node("a", NodeStatus::Failed, Some(1000))]);
        assert_eq!(classify(Some(&parked), &entry("a"), 999), Entry::Parked);
        assert_eq!(classify(Some(&parked), &entry("a"), 1000), Entry::Expired);
        assert_eq!(classify(None, &entry("a"), 1), Entry::Stale);
        assert_eq!(classify(Some(&parked), &entry("b"), 1), Entry::Stale);
        // Replayed (queued again), or crashed between the entry and the record.
        let replayed = rec(vec![node("a", NodeStatus::Queued, None)]);
        assert_eq!(classify(Some(&replayed), &entry("a"), 1), Entry::Stale);
        let retrying = rec(vec![node("a", NodeStatus::Retrying, None)]);
        assert_eq!(classify(Some(&retrying), &entry("a"), 1), Entry::Stale);
    }

    #[test]
    fn due_replays_a_node_that_came_back_and_expires_and_drops_the_rest() {
        let store = Store::open_temporary().unwrap();
        let board = crate::board::Board::new(crate::health::HealthRegistry::default());
        let mut r = rec(vec![
            node("a", NodeStatus::Failed, Some(1000)),
            node("b", NodeStatus::Failed, Some(500)),
        ]);
        store.journal_put(&r).unwrap();
        store.park_put(&entry("a")).unwrap();
        store.park_put(&entry("b")).unwrap();
        store
            .park_put(&Parked {
                dispatch_id: "gone".into(),
                ..entry("a")
            })
            .unwrap();
        // A sweep: nobody answered C-ECHO since; b's time is over; the unknown one goes.
        let d = due(&store, &board, None, 600).unwrap();
        assert!(d.is_empty(), "{d:?}");
        let left: Vec<_> = store.parked_all().unwrap();
        assert_eq!(left, vec![entry("a")]);
        r = store.journal_get("d1").unwrap().unwrap();
        assert_eq!(r.node("b").unwrap().parked_until_ms, None);
        assert_eq!(r.node("b").unwrap().status, NodeStatus::Failed);
        // Node a answers again.
        let d = due(&store, &board, Some("a"), 700).unwrap();
        assert_eq!(d.get("d1"), Some(&vec!["a".to_owned()]));
        // Another node coming back does not replay a's.
        assert!(due(&store, &board, Some("b"), 700).unwrap().is_empty());
    }
}
