//! The bounded disk (APPLIANCE.md "Disk"): the cache under `storage/` is kept within
//! `cache_max_gb` and `spool_retention_hours`, and the free-space floor `min_free_gb` is
//! never crossed.
//!
//! - [`DiskState`] (`state.rs`): the limits as `proxy.json` has them now, the last
//!   free-space reading and the eviction counters (`/api/status` `store.free_bytes`,
//!   `store.evicted`, `/metrics`), shared by the downloads (which wait for space), the
//!   ingest SCP (which answers 0xA700 under the floor, [`Floor`]) and this actor.
//! - [`DiskActor`] (`actor.rs`): runs eviction passes on a blocking thread, one at a
//!   time: at start-up, every [`EVICT_EVERY`], when a dispatch ends (after marking its
//!   instances used), when the settings change and when someone is short of space.
//! - `pass.rs`: one pass: the goals, then the store's `evict` (least recently used first,
//!   one transaction per instance, files unlinked once durable).
//! - `needed.rs`: what no pass may take: the instances of active dispatches and of those
//!   that failed within `park_hours`, and whatever a dispatch being indexed just stored.
//!
//! It may touch: the catalog tables and files under `storage/` (evictions), reads the
//! journal; never the dispatches themselves.

mod actor;
mod messages;
mod needed;
mod pass;
mod state;

pub use actor::{DiskActor, EVICT_EVERY};
pub use messages::DispatchEnded;
pub use needed::Needed;
pub use state::{DiskState, Floor, Shortage};
