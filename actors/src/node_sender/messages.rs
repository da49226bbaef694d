//! What a NodeSender is told.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::prelude::*;
use laminate_config::Node;
use tokio::sync::oneshot;

use crate::send::pool::Rank;
use crate::send::{BatchOutcome, EventSink, Item, SendOptions};

/// A dispatch hands the node instances to send. The answer is where the
/// batch's end will arrive (every item acknowledged through `sink`, or the
/// `cancel` flag set, or a transient failure with what is left).
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<BatchOutcome>")]
pub struct InstancesHanded {
    pub items: Vec<Item>,
    pub rank: Rank,
    pub cancel: Arc<AtomicBool>,
    pub sink: Arc<dyn EventSink + Send + Sync>,
}

/// A dispatch stopped its batch (cancel, pause, its watchdog): lots of it that
/// wait for an association end now instead of when one frees up.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BatchStopped;

/// The node's settings (address, AE titles, cap) or the send deadlines changed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct NodeChanged {
    pub node: Node,
    pub opts: SendOptions,
}

/// Test builds only: the node's pool is killed (its workers and its actor panic).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PoolKilled;
