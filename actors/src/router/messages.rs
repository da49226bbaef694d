//! Messages the router receives.

use actix::Message;
use bytes::Bytes;

/// A complete data frame arrived from the backend.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FrameReceived {
    pub bytes: Bytes,
    /// Binary frames are never events (PROTOCOL.md §1: UTF-8 JSON text frames).
    pub binary: bool,
}
