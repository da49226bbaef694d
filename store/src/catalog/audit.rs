//! A read-only look at whether the catalog and `{data_dir}/storage` agree: what
//! [`super::repair`] would find to do, counted without doing any of it. For
//! `laminate-proxy doctor`, which must change nothing.
//!
//! It reads the catalog's instance entries and walks `storage/`; it never writes the
//! store nor touches a file (symbolic links are not followed). Derived entries
//! (aggregates, counters) are not recomputed here: start-up reconciliation fixes those
//! quietly, and they cannot lose an instance.

use std::fs;
use std::path::Path;

use super::paths::{parse_instance_rel_path, DCM_SUFFIX, PART_SUFFIX, STORAGE_DIR};
use super::{check_record, decode_instance};
use crate::{Catalog, Store, StoreError};

/// What [`audit`] found. All zero except `entries` and `files` means the index and the
/// files agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Instance entries in the catalog.
    pub entries: usize,
    /// `*.dcm` files under `storage/`.
    pub files: usize,
    /// Entries whose file is gone (repair drops them).
    pub entries_without_file: usize,
    /// Entries whose file has another size than recorded (repair indexes them again).
    pub entries_size_mismatch: usize,
    /// Entries that do not decode or break the record rules (repair removes them).
    pub bad_entries: usize,
    /// `*.dcm` files without an entry for their path and not awaiting deletion
    /// (repair indexes or removes them).
    pub files_without_entry: usize,
    /// `*.part` leftovers of interrupted writes (repair removes them).
    pub partial_files: usize,
    /// File deletions recorded but not finished (repair finishes them).
    pub pending_deletions: usize,
}

impl AuditReport {
    /// `true` when repair would find nothing to do with the instances and files.
    pub fn agrees(&self) -> bool {
        self.entries_without_file == 0
            && self.entries_size_mismatch == 0
            && self.bad_entries == 0
            && self.files_without_entry == 0
            && self.partial_files == 0
            && self.pending_deletions == 0
    }
}

/// Compares the catalog with the files under `{data_dir}/storage`, changing nothing.
pub fn audit(store: &Store, data_dir: &Path) -> Result<AuditReport, StoreError> {
    let c = &store.catalog;
    let mut report = AuditReport::default();
    for item in c.instances.iter() {
        let (key, value) = item?;
        report.entries += 1;
        let rec = match decode_instance(&key, &value) {
            Ok(rec)
                if rec.sop_instance_uid.as_bytes() == &key[..] && check_record(&rec).is_ok() =>
            {
                rec
            }
            _ => {
                report.bad_entries += 1;
                continue;
            }
        };
        let abs = data_dir.join(&rec.path);
        match fs::symlink_metadata(&abs) {
            Ok(meta) if meta.is_file() && meta.len() == rec.size => {}
            Ok(meta) if meta.is_file() => report.entries_size_mismatch += 1,
            Ok(_) => report.entries_without_file += 1,
            Err(e) if is_missing(&e) => report.entries_without_file += 1,
            Err(e) => return Err(StoreError::io(&abs, e)),
        }
    }
    report.pending_deletions = c.pending.len();
    walk(store, data_dir, &data_dir.join(STORAGE_DIR), &mut report)?;
    Ok(report)
}

fn walk(
    store: &Store,
    data_dir: &Path,
    dir: &Path,
    report: &mut AuditReport,
) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| StoreError::io(&path, e))?;
        if kind.is_dir() {
            walk(store, data_dir, &path, report)?;
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(PART_SUFFIX) {
            report.partial_files += 1;
            continue;
        }
        if !name.ends_with(DCM_SUFFIX) {
            continue;
        }
        report.files += 1;
        let rel = path.strip_prefix(data_dir).ok().and_then(Path::to_str);
        let known = match rel {
            Some(rel) => is_cataloged(store, rel)? || store.is_pending_deletion(rel)?,
            None => false,
        };
        if !known {
            report.files_without_entry += 1;
        }
    }
    Ok(())
}

fn is_cataloged(store: &Store, rel: &str) -> Result<bool, StoreError> {
    let Some((_, _, sop)) = parse_instance_rel_path(rel) else {
        return Ok(false);
    };
    Ok(match store.catalog.instances.get(sop.as_bytes())? {
        Some(value) => decode_instance(sop.as_bytes(), &value).is_ok_and(|rec| rec.path == rel),
        None => false,
    })
}

fn is_missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_support::{Env, FakeDicom};

    #[test]
    fn each_kind_of_disagreement_is_counted_and_nothing_changes_until_repair() {
        let env = Env::new();
        let (a, _) = env.ingest(&FakeDicom::new("1.2", "1.2.3", Some(1), "1.2.3.1"));
        let (b, _) = env.ingest(&FakeDicom::new("1.2", "1.2.3", Some(1), "1.2.3.2"));
        let clean = audit(env.store(), env.data_dir()).expect("audit");
        assert!(clean.agrees(), "{clean:?}");
        assert_eq!((clean.entries, clean.files), (2, 2));

        // b's file goes, an orphan and a leftover appear, a's file changes size.
        fs::remove_file(env.abs(&b.path)).expect("rm");
        let orphan = env.write_file(&FakeDicom::new("1.2", "1.2.4", Some(2), "1.2.4.1"));
        let mut grown = FakeDicom::new("1.2", "1.2.3", Some(1), "1.2.3.1");
        grown.filler = "x".repeat(100);
        env.write_file(&grown);
        let part = env.abs(&format!("{}{PART_SUFFIX}", a.path));
        fs::write(&part, b"half").expect("part");
        let found = audit(env.store(), env.data_dir()).expect("audit");
        assert!(!found.agrees());
        assert_eq!(found.entries_without_file, 1, "{found:?}");
        assert_eq!(found.entries_size_mismatch, 1, "{found:?}");
        assert_eq!(found.files_without_entry, 1, "{found:?}");
        assert_eq!(found.partial_files, 1, "{found:?}");
        assert_eq!(found.bad_entries + found.pending_deletions, 0, "{found:?}");
        // Nothing was changed: a second look finds the same.
        assert!(part.exists());
        assert_eq!(audit(env.store(), env.data_dir()).expect("audit"), found);
        assert!(env
            .store()
            .get_instance(&b.sop_instance_uid)
            .expect("get")
            .is_some());
        assert!(env
            .store()
            .get_instance(&orphan.sop_instance_uid)
            .expect("get")
            .is_none());

        // What repair does is exactly what the audit reported.
        env.repair();
        let after = audit(env.store(), env.data_dir()).expect("audit");
        assert!(after.agrees(), "{after:?}");
        assert_eq!((after.entries, after.files), (2, 2));
    }
}
