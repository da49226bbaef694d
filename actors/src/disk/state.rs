//! What the disk's parts share: the limits from `proxy.json` as they stand, the last
//! free-space reading, the eviction counters, and the wake-ups between them (a download
//! waiting for space, the ingest SCP refusing under the floor, the evictor).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use laminate_config::ProxySettings;
use tokio::sync::Notify;

const UNKNOWN: u64 = u64::MAX;

/// The disk's limits and figures, shared by the evictor, the downloads, the ingest SCP
/// and the status API.
#[derive(Debug)]
pub struct DiskState {
    data_dir: PathBuf,
    min_free: AtomicU64,
    /// `u64::MAX`: unbounded.
    cache_max: AtomicU64,
    retention_ms: AtomicU64,
    park_ms: AtomicU64,
    /// The last reading of the data dir's free space (`u64::MAX`: none yet).
    free: AtomicU64,
    evicted: AtomicU64,
    evicted_bytes: AtomicU64,
    /// Bytes a waiting download asked to be freed (taken by the next pass).
    wanted: AtomicU64,
    /// Space may have come back (an eviction pass freed some, or the limits changed).
    space_changed: Notify,
    /// Someone is short of space: the evictor should run now.
    eviction_wanted: Notify,
}

/// Not enough room: the floor would be crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortage {
    /// Free now.
    pub free: u64,
    /// `min_free_gb` in bytes.
    pub floor: u64,
    /// What was to be written.
    pub need: u64,
}

impl Shortage {
    /// How much must be freed to write `need` and stay above the floor.
    pub fn missing(&self) -> u64 {
        self.floor
            .saturating_add(self.need)
            .saturating_sub(self.free)
    }
}

impl DiskState {
    pub fn new(data_dir: impl Into<PathBuf>, settings: &ProxySettings) -> Arc<DiskState> {
        let state = DiskState {
            data_dir: data_dir.into(),
            min_free: AtomicU64::new(0),
            cache_max: AtomicU64::new(UNKNOWN),
            retention_ms: AtomicU64::new(0),
            park_ms: AtomicU64::new(0),
            free: AtomicU64::new(UNKNOWN),
            evicted: AtomicU64::new(0),
            evicted_bytes: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            space_changed: Notify::new(),
            eviction_wanted: Notify::new(),
        };
        state.apply(settings);
        Arc::new(state)
    }

    /// Takes the limits of `proxy.json` as they now stand (live: `proxy.config_changed`),
    /// and wakes whoever waits for space (a lower floor may be enough).
    pub fn apply(&self, s: &ProxySettings) {
        self.min_free.store(s.min_free_bytes(), Ordering::Relaxed);
        self.cache_max
            .store(s.cache_max_bytes().unwrap_or(UNKNOWN), Ordering::Relaxed);
        self.retention_ms.store(
            s.spool_retention_hours.saturating_mul(3_600_000),
            Ordering::Relaxed,
        );
        self.park_ms
            .store(s.park_hours.saturating_mul(3_600_000), Ordering::Relaxed);
        self.space_changed.notify_waiters();
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The free-space floor (`min_free_gb`) in bytes.
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free.load(Ordering::Relaxed)
    }

    /// The cache's bound (`cache_max_gb`) in bytes, if any.
    pub fn cache_max_bytes(&self) -> Option<u64> {
        Some(self.cache_max.load(Ordering::Relaxed)).filter(|b| *b != UNKNOWN)
    }

    /// `spool_retention_hours` in ms.
    pub fn retention_ms(&self) -> u64 {
        self.retention_ms.load(Ordering::Relaxed)
    }

    /// `park_hours` in ms.
    pub fn park_ms(&self) -> u64 {
        self.park_ms.load(Ordering::Relaxed)
    }

    /// Reads the data dir's free space now (a `statvfs`), and keeps the reading.
    pub fn free_bytes_now(&self) -> std::io::Result<u64> {
        let free = fs2::available_space(&self.data_dir)?;
        self.free.store(free, Ordering::Relaxed);
        Ok(free)
    }

    /// The last reading, if any.
    pub fn free_bytes(&self) -> Option<u64> {
        Some(self.free.load(Ordering::Relaxed)).filter(|b| *b != UNKNOWN)
    }

    /// Whether `need` more bytes can be written without crossing the floor. A free space
    /// that cannot be read is no reason to stop (writing will tell).
    pub fn room_for(&self, need: u64) -> Result<(), Shortage> {
        let Ok(free) = self.free_bytes_now() else {
            return Ok(());
        };
        let floor = self.min_free_bytes();
        if free >= floor.saturating_add(need) {
            Ok(())
        } else {
            Err(Shortage { free, floor, need })
        }
    }

    /// The free space above the floor now; `Err` with the shortage when below it, `None`
    /// when the free space cannot be read.
    pub fn headroom(&self) -> Option<Result<u64, Shortage>> {
        let free = self.free_bytes_now().ok()?;
        let floor = self.min_free_bytes();
        Some(match free.checked_sub(floor) {
            Some(room) => Ok(room),
            None => Err(Shortage {
                free,
                floor,
                need: 0,
            }),
        })
    }

    /// Instances evicted and their bytes, since start-up.
    pub fn evicted(&self) -> (u64, u64) {
        (
            self.evicted.load(Ordering::Relaxed),
            self.evicted_bytes.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn record_eviction(&self, instances: u64, bytes: u64) {
        self.evicted.fetch_add(instances, Ordering::Relaxed);
        self.evicted_bytes.fetch_add(bytes, Ordering::Relaxed);
        if instances > 0 {
            self.space_changed.notify_waiters();
        }
    }

    /// Asks the evictor for a pass now (cheap, never blocks; several asks before the pass
    /// starts make one).
    pub fn want_eviction(&self) {
        self.eviction_wanted.notify_one();
    }

    /// Asks the evictor to free at least `bytes` now (beyond its other goals).
    pub fn want_space(&self, bytes: u64) {
        self.wanted.fetch_max(bytes, Ordering::Relaxed);
        self.want_eviction();
    }

    pub(crate) fn take_wanted(&self) -> u64 {
        self.wanted.swap(0, Ordering::Relaxed)
    }

    pub(crate) async fn eviction_wanted(&self) {
        self.eviction_wanted.notified().await;
    }

    /// Resolves when space may have come back (an eviction, new limits).
    pub async fn space_changed(&self) {
        self.space_changed.notified().await;
    }
}

/// The ingest SCP's free-space floor: `min_free_gb` as it stands, or a fixed one
/// (`--ingest-min-free-bytes`, which overrides it); and the evictor to tell when the floor
/// is hit or the cache grew.
#[derive(Debug, Clone, Default)]
pub struct Floor {
    fixed: Option<u64>,
    disk: Option<Arc<DiskState>>,
}

/// The ingest SCP asks the evictor to look after this many bytes received.
const GREW_BY: u64 = 64 * 1024 * 1024;

impl Floor {
    /// A fixed floor, no evictor (tests, benches).
    pub fn fixed(bytes: u64) -> Floor {
        Floor {
            fixed: Some(bytes),
            disk: None,
        }
    }

    /// `min_free_gb` as it stands, or `fixed` when set.
    pub fn live(disk: Arc<DiskState>, fixed: Option<u64>) -> Floor {
        Floor {
            fixed,
            disk: Some(disk),
        }
    }

    pub fn bytes(&self) -> u64 {
        match (self.fixed, &self.disk) {
            (Some(b), _) => b,
            (None, Some(d)) => d.min_free_bytes(),
            (None, None) => 0,
        }
    }

    /// The floor was hit: the evictor should free space now.
    pub fn hit(&self) {
        if let Some(d) = &self.disk {
            d.want_eviction();
        }
    }

    /// The cache grew from `before` to `after` bytes received: every [`GREW_BY`], the
    /// evictor looks (`cache_max_gb`).
    pub fn grew(&self, before: u64, after: u64) {
        if before / GREW_BY != after / GREW_BY {
            self.hit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_settings_and_shortage_says_how_much_is_missing() {
        let mut s = ProxySettings::default();
        let state = DiskState::new(std::env::temp_dir(), &s);
        assert_eq!(state.min_free_bytes(), 2_000_000_000);
        assert_eq!(state.cache_max_bytes(), None);
        assert_eq!(state.retention_ms(), 24 * 3_600_000);
        s.min_free_gb = 0.5;
        s.cache_max_gb = Some(1.25);
        s.spool_retention_hours = 0;
        state.apply(&s);
        assert_eq!(state.min_free_bytes(), 500_000_000);
        assert_eq!(state.cache_max_bytes(), Some(1_250_000_000));
        assert_eq!(state.retention_ms(), 0);
        let short = Shortage {
            free: 100,
            floor: 80,
            need: 50,
        };
        assert_eq!(short.missing(), 30);
        // Nothing can be that free.
        s.min_free_gb = 100_000.0;
        state.apply(&s);
        let short = state.room_for(0).unwrap_err();
        assert!(short.missing() > 0);
        assert_eq!(state.free_bytes(), Some(short.free));
    }

    #[tokio::test]
    async fn the_ingest_floor_follows_min_free_gb_unless_fixed_and_wakes_the_evictor() {
        let mut s = ProxySettings::default();
        let state = DiskState::new(std::env::temp_dir(), &s);
        let live = Floor::live(state.clone(), None);
        let pinned = Floor::live(state.clone(), Some(7));
        assert_eq!(live.bytes(), 2_000_000_000);
        s.min_free_gb = 3.0;
        state.apply(&s);
        assert_eq!(live.bytes(), 3_000_000_000);
        assert_eq!(pinned.bytes(), 7);
        assert_eq!(Floor::fixed(5).bytes(), 5);

        // Under one step of growth: no wake-up; across it: one.
        live.grew(0, GREW_BY - 1);
        let woken = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            state.eviction_wanted(),
        );
        assert!(woken.await.is_err());
        live.grew(GREW_BY - 1, GREW_BY + 1);
        let woken = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            state.eviction_wanted(),
        );
        assert!(woken.await.is_ok());
    }
}
