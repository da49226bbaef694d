//! The config actor: owns `nodes.json`, `proxy.json` and `status.json` at run
//! time. It applies `proxy.nodes_changed`, `proxy.config_changed` and
//! `proxy.status_changed` (validated whole, written atomically, the old file kept
//! when anything is wrong) and tells the actors that depend on them.
//!
//! It also reads the site's `node-settings.json` (never writing it), polled and
//! on request (`site.rs`), and publishes the nodes with those settings attached.
//!
//! It may touch: the three files in the data dir and the board's config parts.

mod actor;
mod messages;
mod site;

pub use actor::{ConfigActor, LogLevelHook};
#[cfg(feature = "fault-injection")]
pub use messages::FaultInjected;
pub use messages::{
    ConfigEventReceived, NodeSettingsReloadRequested, NodesUpdated, ProxyStatusUpdated,
    SettingsUpdated,
};
