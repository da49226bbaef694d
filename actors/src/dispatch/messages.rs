//! Messages of the dispatcher and its jobs.

use actix::Message;
use laminate_store::DispatchRecord;

use crate::envelope::Incoming;
use crate::health::HandlerFailed;

/// A `subject.dispatch`, `session.dispatch` or `scan.dispatch` event; answered once
/// the dispatch is journaled (or found to be for no node of ours, or invalid).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HandlerFailed>")]
pub struct DispatchReceived(pub Incoming);

/// A job reached its end (every node final) or stopped for good.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobFinished {
    pub id: String,
}

/// Every open node of a running job waits to retry: its slot is free meanwhile.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct JobBackingOff {
    pub id: String,
}

/// The node monitor: this node answered C-ECHO after failing to (or for the first
/// time). Its parked dispatches are replayed, its retrying ones retry at once.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct NodeCameBack {
    pub node_id: String,
}

/// An operator cancels a dispatch (all its unfinished nodes).
#[derive(Debug, Message)]
#[rtype(result = "Result<DispatchRecord, String>")]
pub struct CancelRequested {
    pub id: String,
}

/// An operator replays a dispatch in a final state, to all or some of its nodes.
#[derive(Debug, Message)]
#[rtype(result = "Result<DispatchRecord, String>")]
pub struct ReplayRequested {
    pub id: String,
    pub nodes: Option<Vec<String>>,
}

/// An operator replays every failed dispatch (updated since `since_ms`, if given).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, String>")]
pub struct ReplayFailedRequested {
    pub since_ms: Option<u64>,
}

/// To a running job: stop work for these nodes (or all, when `None`) and report them `cancelled`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CancelNodes {
    pub nodes: Option<Vec<String>>,
    pub reason: String,
}

/// Test builds only: kill the named node's sender pool (it restarts).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct NodePoolKillRequested {
    pub node_id: String,
}

/// The appliance is stopping: no new stage or instance starts; answered once every
/// instance in flight has its response (and is journaled).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ShutdownRequested;
