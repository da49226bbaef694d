//! Messages the node monitor receives (besides the config actor's `NodesUpdated`).

use actix::Message;

/// An operator asked for a C-ECHO of one node now.
#[derive(Debug, Message)]
#[rtype(result = "Result<EchoResult, String>")]
pub struct EchoRequested {
    pub node_id: String,
}

/// The outcome of one C-ECHO.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct EchoResult {
    pub node_id: String,
    pub ok: bool,
    pub rtt_ms: Option<f64>,
    pub error: Option<String>,
    pub at: String,
}
