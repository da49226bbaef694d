//! Start-up repair: after a crash at any point, the catalog and the files under
//! `{data_dir}/storage` agree again (APPLIANCE.md "The local store").
//!
//! Pure filesystem + catalog: reading DICOM is the caller's `index` function, which turns
//! a file into an [`InstanceRecord`] (or `None` if it is not readable DICOM). Runs before
//! the store is shared: nothing else may write the catalog or `storage/` meanwhile.
//!
//! Order (each step relies on the ones before):
//! 1. reconcile derived data with the instances (`reconcile.rs`);
//! 2. finish pending file deletions: unlink each listed file still marked pending, prune
//!    emptied directories, complete the ticket;
//! 3. drop catalog entries whose file is gone; an entry whose file has another size was
//!    overwritten after a crash and is indexed again from the file;
//! 4. walk `storage/`: remove `*.part` leftovers (the ingest writer's `{sop}.dcm.part`,
//!    renamed when complete); give every `*.dcm` without a catalog entry for its path to
//!    `index`: `None` → the file is removed (logged at warn); a record → indexed. A file
//!    whose dataset belongs elsewhere is moved to [`instance_rel_path`] of its UIDs, or
//!    removed if a file is already there. Emptied directories are pruned;
//! 5. finish the deletions step 4 queued (an orphan replacing an entry at another path
//!    is the newer write: a file without an entry only arises between write and index).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::paths::{parse_instance_rel_path, DCM_SUFFIX, PART_SUFFIX, STORAGE_DIR};
use super::{decode_instance, instance_rel_path, reconcile, Catalog, CatalogTrees};
use crate::keys::u64_key;
use crate::{InstanceRecord, Store, StoreError};

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Catalog entries dropped: their file was gone (or the entry was undecodable).
    pub dropped_entries: usize,
    /// Files indexed from `storage/` (orphans, overwritten files, moved files).
    pub reindexed: usize,
    /// Files removed because `index` could not read them (or their UIDs are invalid).
    pub removed_unreadable: usize,
    /// Pending file deletions finished (tickets completed).
    pub finished_deletions: usize,
    /// `*.part` leftovers removed.
    pub removed_temp: usize,
    /// Of `reindexed`: files moved to the path their UIDs call for.
    pub relocated: usize,
    /// Misplaced files removed because the file their UIDs call for already exists.
    pub removed_duplicates: usize,
    /// Derived catalog entries (indexes, aggregates, counters, pending marks) corrected.
    pub fixed_index_entries: usize,
}

impl RepairReport {
    fn is_empty(&self) -> bool {
        *self == RepairReport::default()
    }
}

/// At start-up, makes the catalog and `{data_dir}/storage` agree (see the module docs for
/// the steps). `index` is called with `data_dir` joined to a file's relative path; the
/// record it returns gets the file's actual path and size. Flushes before returning.
pub fn repair(
    store: &Store,
    data_dir: &Path,
    index: &dyn Fn(&Path) -> Option<InstanceRecord>,
) -> Result<RepairReport, StoreError> {
    let mut report = RepairReport::default();
    let reconciled = reconcile::reconcile(&store.catalog)?;
    report.dropped_entries += reconciled.dropped;
    report.fixed_index_entries += reconciled.fixed;
    report.finished_deletions += finish_all(store, data_dir)?;
    check_entries(store, data_dir, index, &mut report)?;
    let storage = data_dir.join(STORAGE_DIR);
    let mut walk = Walk {
        store,
        data_dir,
        index,
        report: &mut report,
    };
    walk.dir(&storage, true)?;
    report.finished_deletions += finish_all(store, data_dir)?;
    store.flush()?;
    if report.is_empty() {
        tracing::debug!("catalog and storage agree");
    } else {
        tracing::info!(
            dropped_entries = report.dropped_entries,
            reindexed = report.reindexed,
            removed_unreadable = report.removed_unreadable,
            finished_deletions = report.finished_deletions,
            removed_temp = report.removed_temp,
            relocated = report.relocated,
            removed_duplicates = report.removed_duplicates,
            fixed_index_entries = report.fixed_index_entries,
            "catalog repaired"
        );
    }
    Ok(report)
}

/// Rebuilds the whole catalog from `storage/` (the operator's last resort): empties the
/// catalog's file-derived trees, then [`repair`]. Subject links, pending file deletions
/// (finished first, so a deleted study does not come back) and the ticket counter stay.
pub fn rebuild_catalog(
    store: &Store,
    data_dir: &Path,
    index: &dyn Fn(&Path) -> Option<InstanceRecord>,
) -> Result<RepairReport, StoreError> {
    for tree in store.catalog.derived() {
        tree.clear()?;
    }
    store.flush()?;
    tracing::warn!("catalog cleared; rebuilding from storage");
    repair(store, data_dir, index)
}

/// Finishes one pending file deletion: unlinks each of its files still marked pending
/// (absent ones are fine), prunes the directories this empties under `storage/`, then
/// completes the ticket and flushes. Returns how many files were unlinked; an unknown
/// ticket is a no-op. A failed unlink leaves the ticket pending ([`StoreError::Io`]).
///
/// Paths are checked to be exactly `storage/{uid}/{uid}/{uid}.dcm` before anything is
/// unlinked; any other path in a ticket is skipped (logged).
pub fn finish_file_deletion(
    store: &Store,
    data_dir: &Path,
    ticket: u64,
) -> Result<usize, StoreError> {
    let unlinked = finish(&store.catalog, data_dir, ticket)?.unwrap_or(0);
    store.flush()?;
    Ok(unlinked)
}

/// [`finish_file_deletion`] without the flush; `None` if the ticket is unknown.
pub(super) fn finish(
    c: &CatalogTrees,
    data_dir: &Path,
    ticket: u64,
) -> Result<Option<usize>, StoreError> {
    let Some(paths) = c.pending_paths_of(ticket)? else {
        return Ok(None);
    };
    let mut unlinked = 0;
    for rel in &paths {
        if parse_instance_rel_path(rel).is_none() {
            tracing::warn!(ticket, path = %rel, "not unlinking a path outside the storage layout");
            continue;
        }
        // Put again since the ticket was read (a writer other than the deleter: the
        // evictor runs beside the ingest SCP): live again, not ours to unlink.
        if c.pending_paths.get(rel.as_bytes())?.as_deref() != Some(&u64_key(ticket)[..]) {
            continue;
        }
        let abs = data_dir.join(rel);
        match fs::remove_file(&abs) {
            Ok(()) => unlinked += 1,
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(StoreError::io(&abs, e)),
        }
        prune_parents(data_dir, &abs);
    }
    c.complete(ticket)?;
    tracing::debug!(ticket, unlinked, "pending file deletion finished");
    Ok(Some(unlinked))
}

/// Finishes every pending file deletion; returns how many.
fn finish_all(store: &Store, data_dir: &Path) -> Result<usize, StoreError> {
    let mut finished = 0;
    for (ticket, _) in store.pending_file_deletions()? {
        if finish(&store.catalog, data_dir, ticket)?.is_some() {
            finished += 1;
        }
    }
    Ok(finished)
}

/// Removes the empty directories from `file`'s parent up to (not including) `storage/`.
fn prune_parents(data_dir: &Path, file: &Path) {
    let storage = data_dir.join(STORAGE_DIR);
    let mut dir = file.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(&storage) && *d != storage) {
        // Fails when not empty (or already gone): then the ancestors are not empty either.
        if fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// The file does not exist (or a parent is not a directory).
fn is_missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Step 3: entries whose file is gone are dropped; overwritten files indexed again.
fn check_entries(
    store: &Store,
    data_dir: &Path,
    index: &dyn Fn(&Path) -> Option<InstanceRecord>,
    report: &mut RepairReport,
) -> Result<(), StoreError> {
    let c = &store.catalog;
    for item in c.instances.iter() {
        let (key, value) = item?;
        // Reconciliation removed whatever does not decode.
        let Ok(rec) = decode_instance(&key, &value) else {
            continue;
        };
        let abs = data_dir.join(&rec.path);
        match fs::symlink_metadata(&abs) {
            Ok(meta) if meta.is_file() && meta.len() == rec.size => {}
            Ok(meta) if meta.is_file() => {
                tracing::info!(path = %rec.path, recorded = rec.size, found = meta.len(), "file changed since it was indexed");
                c.forget(&rec.sop_instance_uid)?;
                let mut walk = Walk {
                    store,
                    data_dir,
                    index,
                    report,
                };
                walk.adopt(&abs, Some(&rec.path))?;
            }
            Ok(_) => {
                drop_entry(c, &rec, report)?;
            }
            Err(e) if is_missing(&e) => drop_entry(c, &rec, report)?,
            Err(e) => return Err(StoreError::io(&abs, e)),
        }
    }
    Ok(())
}

fn drop_entry(
    c: &CatalogTrees,
    rec: &InstanceRecord,
    report: &mut RepairReport,
) -> Result<(), StoreError> {
    tracing::info!(path = %rec.path, sop = %rec.sop_instance_uid, "dropping a catalog entry whose file is gone");
    c.forget(&rec.sop_instance_uid)?;
    report.dropped_entries += 1;
    Ok(())
}

/// Step 4: the walk of `storage/`.
struct Walk<'a> {
    store: &'a Store,
    data_dir: &'a Path,
    index: &'a dyn Fn(&Path) -> Option<InstanceRecord>,
    report: &'a mut RepairReport,
}

impl Walk<'_> {
    /// Handles every file under `dir` (symbolic links are not followed), then removes
    /// `dir` if it ended up empty (never `storage/` itself).
    fn dir(&mut self, dir: &Path, is_root: bool) -> Result<(), StoreError> {
        // One directory's listing at a time: memory stays bounded by the largest series.
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::io(dir, e))?,
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(StoreError::io(dir, e)),
        };
        for entry in entries {
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| StoreError::io(&path, e))?;
            if kind.is_dir() {
                self.dir(&path, false)?;
            } else if kind.is_file() {
                self.file(&path, &entry.file_name().to_string_lossy())?;
            } else {
                tracing::warn!(path = %path.display(), "ignoring a non-regular file in storage");
            }
        }
        if !is_root {
            // Fails unless empty; a non-empty directory is simply kept.
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, name: &str) -> Result<(), StoreError> {
        if name.ends_with(PART_SUFFIX) {
            tracing::info!(path = %path.display(), "removing a partly written file");
            remove(path)?;
            self.report.removed_temp += 1;
            return Ok(());
        }
        if !name.ends_with(DCM_SUFFIX) {
            return Ok(());
        }
        let rel = path
            .strip_prefix(self.data_dir)
            .ok()
            .and_then(Path::to_str)
            .map(str::to_owned);
        if let Some(rel) = &rel {
            // A file still to be unlinked (replaced by a newer one elsewhere) is no orphan.
            if self.is_cataloged(rel)? || self.store.is_pending_deletion(rel)? {
                return Ok(());
            }
        }
        self.adopt(path, rel.as_deref())
    }

    /// `true` if the catalog has an entry for the file at `rel`.
    fn is_cataloged(&self, rel: &str) -> Result<bool, StoreError> {
        let Some((_, _, sop)) = parse_instance_rel_path(rel) else {
            return Ok(false);
        };
        Ok(self
            .store
            .catalog
            .get(sop)?
            .is_some_and(|rec| rec.path == rel))
    }

    /// Indexes the file at `path` (relative path `rel`, if it has one in UTF-8), moving it
    /// to where its UIDs say it belongs, or removes it.
    fn adopt(&mut self, path: &Path, rel: Option<&str>) -> Result<(), StoreError> {
        let Some(mut rec) = (self.index)(path) else {
            tracing::warn!(path = %path.display(), "removing a file that is not readable DICOM");
            remove(path)?;
            self.report.removed_unreadable += 1;
            return Ok(());
        };
        let canonical = match instance_rel_path(
            &rec.study_instance_uid,
            &rec.series_instance_uid,
            &rec.sop_instance_uid,
        ) {
            Ok(canonical) => canonical,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "removing a file whose UIDs cannot be stored");
                remove(path)?;
                self.report.removed_unreadable += 1;
                return Ok(());
            }
        };
        let target: PathBuf = self.data_dir.join(&canonical);
        if rel != Some(canonical.as_str()) {
            match fs::symlink_metadata(&target) {
                Ok(_) => {
                    tracing::warn!(path = %path.display(), target = %canonical, "removing a misplaced copy of an existing file");
                    remove(path)?;
                    self.report.removed_duplicates += 1;
                    return Ok(());
                }
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(StoreError::io(&target, e)),
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
            }
            fs::rename(path, &target).map_err(|e| StoreError::io(path, e))?;
            tracing::info!(from = %path.display(), to = %canonical, "moved a misplaced file");
            self.report.relocated += 1;
        }
        rec.size = fs::metadata(&target)
            .map_err(|e| StoreError::io(&target, e))?
            .len();
        rec.path = canonical;
        self.store.catalog.put(&rec)?;
        self.report.reindexed += 1;
        Ok(())
    }
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}
