//! The node monitor: C-ECHOes every active PACS node every 60 s and whenever
//! the node list changes, and on an operator's request; the results feed the
//! heartbeat's `nodes_online` and `/api/nodes`. A node that answers again after
//! failing to is announced to the dispatcher (`NodeCameBack`: parked dispatches
//! replayed, retrying ones retry now).
//!
//! It may touch: the network (DICOM associations to configured nodes, on
//! blocking threads) and the board's echo views.

mod actor;
pub mod echo;
mod messages;

pub use actor::{echo_every, NodeMonitor};
pub use messages::{EchoRequested, EchoResult};
