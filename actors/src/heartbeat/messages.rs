//! Messages the heartbeat actor receives (besides the config actor's
//! `SettingsUpdated` and `ProxyStatusUpdated`).

use actix::Message;

/// The link has just connected; the answer is the heartbeat frame to send first.
#[derive(Debug, Message)]
#[rtype(result = "Option<String>")]
pub struct LinkEstablished;
