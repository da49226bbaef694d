//! The heartbeat: `proxy.heartbeat` on every connect (built for the link, which
//! sends it first) and every `heartbeat_interval_s` after, with the payload of
//! PROTOCOL.md §4. A new interval applies from the next beat.
//!
//! It may touch: the board (read) and the data dir's size (read).

mod actor;
mod disk;
mod messages;

pub use actor::HeartbeatActor;
pub use disk::dir_size_bytes;
pub use messages::LinkEstablished;
