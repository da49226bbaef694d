//! The index stage's work on one extracted archive (blocking): every DICOM file
//! moves into the cache (`storage/{study}/{series}/{sop}.dcm`) and into the
//! catalog, with one store flush for the whole archive, and every entry that is
//! not delivered is listed with why (APPLIANCE.md "Per-instance outcome": not
//! DICOM, no Study Instance UID, duplicate SOP Instance UID, truncated).
//!
//! It may touch: the catalog, `storage/` and the job's spool.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use laminate_store::{instance_rel_path, Catalog, InstanceSource, Skipped};

use super::index_dir::index_dir_with;
use super::watchdog::Beat;

/// What one archive gave the cache.
#[derive(Debug, Default)]
pub(super) struct CacheIndexed {
    /// (SOP Instance UID, archive entry) of every instance indexed, by UID.
    pub files: Vec<(String, String)>,
    /// The studies they belong to.
    pub studies: BTreeSet<String>,
    /// The entries left out, with why.
    pub skipped: Vec<Skipped>,
}

/// The entry's path inside the archive (`dir` is where it was extracted).
fn entry_name(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Moves every DICOM file under `dir` into the cache and indexes it; `Err` when
/// the index could not be made durable.
pub(super) fn index_into_cache(
    store: &laminate_store::Store,
    data_dir: &Path,
    dir: &Path,
    subject_id: Option<&str>,
    beat: &Beat,
) -> Result<CacheIndexed, String> {
    let walked = index_dir_with(dir, &|| beat.tick());
    let mut out = CacheIndexed::default();
    let mut skip = |path: &Path, reason: String| {
        out.skipped.push(Skipped {
            file: entry_name(dir, path),
            reason,
        })
    };
    for path in &walked.not_dicom {
        skip(path, "not DICOM".into());
    }
    for (path, e) in &walked.failed {
        tracing::warn!(file = %path.display(), error = %e, "unreadable DICOM file in the archive skipped");
        skip(path, e.summary());
    }
    let mut records = Vec::with_capacity(walked.found.len());
    let mut entries: Vec<String> = Vec::with_capacity(walked.found.len());
    // The first entry (by path) of a SOP Instance UID is delivered.
    let mut first_of: HashMap<String, String> = HashMap::new();
    let mut links = BTreeSet::new();
    for (path, h) in walked.found {
        let entry = entry_name(dir, &path);
        if let Some(first) = first_of.get(&h.sop_instance_uid) {
            skip(
                &path,
                format!(
                    "duplicate SOP Instance UID {} (as {first})",
                    h.sop_instance_uid
                ),
            );
            continue;
        }
        let rel = match instance_rel_path(
            &h.study_instance_uid,
            &h.series_instance_uid,
            &h.sop_instance_uid,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "instance with unusable UIDs skipped");
                skip(&path, format!("unusable UIDs: {e}"));
                continue;
            }
        };
        let target: PathBuf = data_dir.join(&rel);
        if let Some(parent) = target.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                tracing::error!(error = %e, dir = %parent.display(), "cannot create a cache folder");
                skip(&path, format!("cannot create its cache folder: {e}"));
                continue;
            }
        }
        beat.tick();
        if let Err(e) = std::fs::rename(&path, &target) {
            tracing::error!(error = %e, file = %path.display(), "cannot move an instance into the cache");
            skip(&path, format!("cannot move it into the cache: {e}"));
            continue;
        }
        if let (Some(patient), Some(subject)) = (h.patient_id.as_deref(), subject_id) {
            links.insert((patient.to_owned(), subject.to_owned()));
        }
        first_of.insert(h.sop_instance_uid.clone(), entry.clone());
        entries.push(entry);
        records.push(h.into_record(rel, InstanceSource::Dispatch));
    }
    // A crash before this flush leaves files in the cache without entries: the
    // start-up repair indexes them, and the journal still says `extracting`.
    let results = store
        .put_instances(&records)
        .map_err(|e| format!("cannot index the instances: {e}"))?;
    for ((rec, entry), result) in records.into_iter().zip(entries).zip(results) {
        if let Err(e) = result {
            tracing::error!(error = %e, sop = %rec.sop_instance_uid, "cannot index an instance");
            out.skipped.push(Skipped {
                file: entry,
                reason: format!("cannot index it: {e}"),
            });
            continue;
        }
        out.studies.insert(rec.study_instance_uid);
        out.files.push((rec.sop_instance_uid, entry));
    }
    for (patient, subject) in &links {
        if let Err(e) = store.link_subject(patient, subject) {
            tracing::warn!(error = %e, "cannot record the patient ↔ subject link");
        }
    }
    out.files.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dispatch::fixtures::CtInstance;
    use crate::dispatch::watchdog::JobWatch;
    use laminate_store::{Catalog, Store};

    const STUDY: &str = "1.2.826.0.1.3680043.8.498.1";
    const SERIES: &str = "1.2.826.0.1.3680043.8.498.1.1";

    fn put(dir: &Path, name: &str, bytes: &[u8]) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn instances_move_into_the_cache_and_every_other_entry_is_listed_with_why() {
        let data = tempfile::tempdir().expect("tempdir");
        let spool = tempfile::tempdir().expect("tempdir");
        let store = Store::open_temporary().expect("store");
        let good = CtInstance::new(STUDY, SERIES, "1.2.3.1").to_bytes();
        put(spool.path(), "a/IM1", &good);
        put(spool.path(), "b/copy-of-IM1.dcm", &good);
        put(
            spool.path(),
            "IM2.dcm",
            &CtInstance::new(STUDY, SERIES, "1.2.3.2").to_bytes(),
        );
        put(spool.path(), "README.txt", b"a manifest, not DICOM");
        let whole = CtInstance::new(STUDY, SERIES, "1.2.3.3").to_bytes();
        put(spool.path(), "cut.dcm", &whole[..whole.len() - 10]);
        let beat = JobWatch::default().lane("index", None);

        let got =
            index_into_cache(&store, data.path(), spool.path(), None, &beat).expect("indexed");

        assert_eq!(
            got.files,
            vec![
                ("1.2.3.1".to_owned(), "a/IM1".to_owned()),
                ("1.2.3.2".to_owned(), "IM2.dcm".to_owned()),
            ]
        );
        assert_eq!(got.studies.len(), 1);
        assert!(store.get_instance("1.2.3.1").expect("get").is_some());
        let reasons: BTreeMap<&str, &str> = got
            .skipped
            .iter()
            .map(|s| (s.file.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(reasons["README.txt"], "not DICOM");
        assert!(reasons["cut.dcm"].starts_with("truncated"), "{reasons:?}");
        assert_eq!(
            reasons["b/copy-of-IM1.dcm"],
            "duplicate SOP Instance UID 1.2.3.1 (as a/IM1)"
        );
    }
}
