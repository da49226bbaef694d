//! The node monitor: C-ECHOes every active PACS node every 60 s and whenever
//! the node list changes, and on an operator's request; the results feed the
//! heartbeat's `nodes_online` and `/api/nodes`.
//!
//! It may touch: the network (DICOM associations to configured nodes, on
//! blocking threads) and the board's echo views.

mod actor;
pub mod echo;
mod messages;

pub use actor::NodeMonitor;
pub use messages::{EchoRequested, EchoResult};
