//! [`Store`]: the sled database and the trees of every area, opened together.
//!
//! Adding an area means one file (its trait, its trees, its `impl … for Store`) and one
//! field here, opened in `Store::from_db`.

use std::fmt;
use std::path::Path;

use crate::catalog::CatalogTrees;
use crate::journal::JournalTrees;
use crate::outbox::OutboxTrees;
use crate::seen::SeenTrees;
use crate::StoreError;

/// How long `open` waits for a just-dropped handle's lock: 40 × 50 ms.
const LOCK_RETRIES: u32 = 40;
/// sled's page cache, in bytes. Its default (1 GiB) would let the cache follow the
/// store's size for months; the hot paths touch only the active-work indexes, so
/// a small cache costs them nothing, and the appliance's RSS stays bounded.
const CACHE_CAPACITY: u64 = 4 * 1024 * 1024;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The local store. Cloning is cheap (sled handles are reference counted) and every clone
/// sees the same data, so one `Store` is opened at start-up and handed to whoever needs it.
#[derive(Clone)]
pub struct Store {
    /// The database; flushing it flushes every tree.
    pub(crate) db: sled::Db,
    /// De-duplication of incoming events (`seen.rs`).
    pub(crate) seen: SeenTrees,
    /// The outgoing event queue (`outbox.rs`).
    pub(crate) outbox: OutboxTrees,
    pub(crate) journal: JournalTrees,
    /// The DICOM cache's catalog (`catalog.rs`).
    pub(crate) catalog: CatalogTrees,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, normally `{data_dir}/store`.
    ///
    /// Only one process may hold the directory at a time: a second open fails with
    /// [`StoreError::Open`]. Start-up repairs run here (see each area).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        // A `Db` dropped a moment ago (a restart within one process) keeps its directory
        // lock until sled's flusher thread has noticed; wait that out, but no longer.
        let mut tries = 0;
        let db = loop {
            match sled::Config::new()
                .cache_capacity(CACHE_CAPACITY)
                .path(dir)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if tries < LOCK_RETRIES && e.to_string().contains("could not acquire lock") =>
                {
                    tries += 1;
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                Err(source) => {
                    return Err(StoreError::Open {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
            }
        };
        tracing::debug!(path = %dir.display(), "store opened");
        Store::from_db(db)
    }

    /// Opens an empty store that lives only as long as its last clone (for tests).
    pub fn open_temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| StoreError::Open {
                path: "<temporary>".into(),
                source,
            })?;
        Store::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        let seen = SeenTrees::open(&db)?;
        let outbox = OutboxTrees::open(&db)?;
        let catalog = CatalogTrees::open(&db)?;
        let journal = JournalTrees::open(&db)?;
        Ok(Store {
            db,
            seen,
            outbox,
            catalog,
            journal,
        })
    }

    /// Writes everything written so far to disk (sled otherwise flushes every 500 ms, and
    /// writes after the last flush can be lost in a crash).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// The size of the database files, in bytes (for the status page and heartbeat).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

// Not derived: sled's `Debug` for trees prints their whole contents.
impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}

    #[test]
    fn store_is_cheap_to_share() {
        assert_shareable::<Store>();
    }

    #[test]
    fn open_flush_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        store.flush().unwrap();
        assert!(store.size_on_disk().unwrap() > 0);
        assert_eq!(format!("{store:?}"), "Store { .. }");
    }

    #[test]
    fn temporary_store_opens() {
        let store = Store::open_temporary().unwrap();
        store.flush().unwrap();
        store.size_on_disk().unwrap();
    }

    #[test]
    fn second_open_of_same_dir_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::Open { path, .. }) => assert_eq!(path, dir.path()),
            other => panic!("expected StoreError::Open, got {other:?}"),
        }
    }

    #[test]
    fn clones_share_data() {
        use crate::SeenEvents;
        let store = Store::open_temporary().unwrap();
        let clone = store.clone();
        assert!(clone.mark_seen("a", 1).unwrap());
        assert!(store.is_seen("a", 2).unwrap());
    }
}
