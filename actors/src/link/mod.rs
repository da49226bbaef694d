//! The backend link: the WebSocket client of PROTOCOL.md §1.
//!
//! It connects with the proxy key, backs off (long after 4003 or repeated 4000
//! "replaced" closes), pings every 15 s and reconnects after 45 s of silence,
//! hands text frames to the router, sends the heartbeat first on every connect,
//! then drains the durable outbox. It may touch: the socket, the outbox tables
//! of the store, and the board's link view.
//!
//! Files: `actor.rs` the actor, `messages.rs` what it receives, `backoff.rs`
//! the retry schedules, `tls.rs` the rustls client configuration.

mod actor;
pub mod backoff;
mod messages;
pub mod tls;

pub use actor::{LinkActor, LinkSettings};
pub use messages::{EphemeralEventReady, LinkShutdownRequested, OutboxAppended};
