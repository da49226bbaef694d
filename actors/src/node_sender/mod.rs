//! NodeSender: one supervised actor per PACS node, owning that node's sender
//! pool (`send/pool.rs`): its associations (at most `max_associations` at
//! once, shared by every dispatch), its queue, its figures. Dispatch jobs hand
//! it instances ([`InstancesHanded`]) and hear back per instance through the
//! sink they gave (journaled `InstanceStored`/`InstanceFailed` acknowledgements,
//! `send::SendEvent`); they never open associations themselves.
//!
//! A panic in a node's actor restarts that actor alone: its pool makes every
//! worker finish (or give back) its instance in flight and start over, and
//! other nodes never notice. A changed address or cap applies live; a removed
//! node's actor ends once the registry ([`NodeSenders`]) lets it go, and the
//! dispatches cancel their own work for it.
//!
//! Files: `messages.rs` what it is told; `actor.rs` the actor; `registry.rs`
//! the per-node addresses and figures. It may touch: its node's associations
//! (through its pool) and the board's send figures.

mod actor;
mod messages;
mod registry;

pub use actor::NodeSender;
pub use messages::{BatchStopped, InstancesHanded, NodeChanged};
pub use registry::NodeSenders;
