//! Messages the config actor receives and publishes.

use std::sync::Arc;

use actix::Message;
use laminate_config::{Node, NodesDiff, ProxySettings, StatusFile};

use crate::envelope::Incoming;
use crate::health::HandlerFailed;

/// A `proxy.*` event for the config actor; answered once it is applied or rejected.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HandlerFailed>")]
pub struct ConfigEventReceived(pub Incoming);

/// Re-read `node-settings.json` now (`laminate-proxy nodes reload`); answers the
/// number of nodes it configures, or why it was rejected.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, String>")]
pub struct NodeSettingsReloadRequested;

/// Published: the node list changed (or the site settings attached to it).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct NodesUpdated {
    pub nodes: Arc<Vec<Node>>,
    pub diff: NodesDiff,
}

/// Published: the proxy status (active / paused / maintenance) changed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ProxyStatusUpdated(pub StatusFile);

/// Published: the runtime settings changed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SettingsUpdated(pub ProxySettings);

/// Test builds only: the next handler panics.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FaultInjected;
