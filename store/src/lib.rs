//! The local store of laminate-proxy: one sled database under `{data_dir}/store`
//! (APPLIANCE.md "Data dir"), shared by every part of the appliance through cheap clones
//! of [`Store`].
//!
//! Each area of the store (seen events, outbox, and later patients, sessions, scans,
//! instances and the dispatch journal) owns its sled trees and sits behind a small trait
//! implemented for [`Store`], so callers depend on the behaviour, not on sled. This crate
//! knows nothing of actors.
//!
//! # Layout
//!
//! - [`error`]: [`StoreError`], the one error type every store operation returns.
//! - [`store`]: [`Store`] itself: opening the database, opening each area's trees, flushing.
//! - `keys`: the big-endian `u64` key encoding that keeps sequence-keyed trees in order.
//! - [`seen`]: [`SeenEvents`], de-duplication of incoming events by `correlation_id` over
//!   a persisted 7-day window (PROTOCOL.md §3).
//! - [`outbox`]: [`Outbox`], the durable ordered queue of outgoing events with coalescing
//!   of superseded progress (PROTOCOL.md §4).
#![forbid(unsafe_code)]

pub mod error;
mod keys;
pub mod outbox;
pub mod seen;
pub mod store;

pub use error::StoreError;
pub use outbox::{Outbox, OutboxEntry};
pub use seen::{SeenEvents, SEEN_WINDOW_MS};
pub use store::Store;
