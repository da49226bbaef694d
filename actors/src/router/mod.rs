//! The router: parses and validates every incoming frame, answers `ping` at
//! once, de-duplicates the rest by correlation id (7 days, persisted), and hands
//! each event to the actor that owns it. A bad frame is logged (first 512
//! bytes) and counted and changes nothing else: the link stays up.
//!
//! It may touch: the seen-events table of the store and the board's counters.

mod actor;
mod messages;

pub use actor::RouterActor;
pub use messages::FrameReceived;
