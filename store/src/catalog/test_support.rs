//! Test helpers shared by the catalog's test files: a fake "DICOM" file format (JSON) with
//! its `index` function, an ingest that writes files the way the real one does, and the
//! agreement check between the catalog and the files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::*;

pub(crate) const STORED_AT: u64 = 1_760_000_000_000;

/// What a fake DICOM file holds: the dataset's identifying attributes and some filler so
/// sizes vary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FakeDicom {
    pub(crate) study: String,
    pub(crate) series: String,
    pub(crate) number: Option<i32>,
    pub(crate) sop: String,
    pub(crate) patient: Option<String>,
    pub(crate) filler: String,
}

impl FakeDicom {
    pub(crate) fn new(study: &str, series: &str, number: Option<i32>, sop: &str) -> FakeDicom {
        FakeDicom {
            study: study.into(),
            series: series.into(),
            number,
            sop: sop.into(),
            patient: None,
            filler: String::new(),
        }
    }

    pub(crate) fn patient(mut self, patient: &str) -> FakeDicom {
        self.patient = Some(patient.into());
        self
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap()
    }

    /// The record the ingest makes of this dataset stored in a file of `size` bytes.
    pub(crate) fn record(&self, size: u64) -> InstanceRecord {
        InstanceRecord {
            sop_instance_uid: self.sop.clone(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            study_instance_uid: self.study.clone(),
            series_instance_uid: self.series.clone(),
            series_number: self.number,
            patient_id: self.patient.clone(),
            path: instance_rel_path(&self.study, &self.series, &self.sop).unwrap_or_default(),
            size,
            source: InstanceSource::Ingest,
            stored_at_ms: STORED_AT,
        }
    }
}

/// Opens the store in `dir`, retrying while a just-dropped store's background threads
/// still hold sled's file lock.
pub(crate) fn open_retrying(dir: &Path) -> Store {
    for _ in 0..100 {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(StoreError::Open { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
    Store::open(dir).unwrap()
}

/// The `index` function for fake files: `None` unless the file parses.
pub(crate) fn fake_index(path: &Path) -> Option<InstanceRecord> {
    let bytes = fs::read(path).ok()?;
    let dataset: FakeDicom = serde_json::from_slice(&bytes).ok()?;
    Some(dataset.record(u64::try_from(bytes.len()).ok()?))
}

/// A data dir in a temporary directory, with its store at `{data_dir}/store`.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: Option<Store>,
}

impl Env {
    pub(crate) fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Some(open_retrying(&dir.path().join("store")));
        Env { dir, store }
    }

    pub(crate) fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    pub(crate) fn abs(&self, rel: &str) -> PathBuf {
        self.data_dir().join(rel)
    }

    /// Closes and opens the store again (what a restart does), without repair.
    pub(crate) fn reopen(&mut self) {
        drop(self.store.take());
        self.store = Some(open_retrying(&self.data_dir().join("store")));
    }

    pub(crate) fn repair(&self) -> RepairReport {
        repair(self.store(), self.data_dir(), &fake_index).unwrap()
    }

    /// Writes the file as the ingest does (`.part`, then rename), without indexing it.
    pub(crate) fn write_file(&self, dataset: &FakeDicom) -> InstanceRecord {
        let bytes = dataset.bytes();
        let rec = dataset.record(bytes.len() as u64);
        let abs = self.abs(&rec.path);
        fs::create_dir_all(abs.parent().unwrap()).unwrap();
        let part = PathBuf::from(format!("{}{PART_SUFFIX}", abs.display()));
        fs::write(&part, &bytes).unwrap();
        fs::rename(&part, &abs).unwrap();
        rec
    }

    /// Writes the file and indexes it; returns the record and what it replaced.
    pub(crate) fn ingest(&self, dataset: &FakeDicom) -> (InstanceRecord, Option<InstanceRecord>) {
        let rec = self.write_file(dataset);
        let old = self.store().put_instance(&rec).unwrap();
        (rec, old)
    }

    /// Unlinks the files of every pending deletion, as the deleting actor does.
    pub(crate) fn finish_pending(&self) -> usize {
        let mut unlinked = 0;
        for (ticket, _) in self.store().pending_file_deletions().unwrap() {
            unlinked += finish_file_deletion(self.store(), self.data_dir(), ticket).unwrap();
        }
        assert!(self.store().pending_file_deletions().unwrap().is_empty());
        unlinked
    }

    /// Every regular file under `storage/`, relative path → size.
    pub(crate) fn files(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let root = self.abs(STORAGE_DIR);
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    let rel = entry.path();
                    let rel = rel.strip_prefix(self.data_dir()).unwrap();
                    out.insert(
                        rel.to_str().unwrap().to_owned(),
                        entry.metadata().unwrap().len(),
                    );
                }
            }
        }
        out
    }

    /// Directories under `storage/` with nothing in them.
    pub(crate) fn empty_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.abs(STORAGE_DIR)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let entries: Vec<_> = entries.map(Result::unwrap).collect();
            if entries.is_empty() && dir != self.abs(STORAGE_DIR) {
                out.push(dir.clone());
            }
            for entry in entries {
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        out
    }

    /// The catalog and the files agree exactly, and every derived view matches a recount
    /// of the instances. Returns the instances.
    pub(crate) fn check_agreement(&self) -> Vec<InstanceRecord> {
        let s = self.store();
        let all = s.all_instances().unwrap();
        let in_catalog: BTreeMap<String, u64> =
            all.iter().map(|r| (r.path.clone(), r.size)).collect();
        assert_eq!(in_catalog.len(), all.len(), "two entries share a path");
        assert_eq!(in_catalog, self.files(), "catalog and files disagree");
        for rec in &all {
            assert!(
                !s.is_pending_deletion(&rec.path).unwrap(),
                "{} live and pending",
                rec.path
            );
            assert_eq!(
                s.get_instance(&rec.sop_instance_uid).unwrap().as_ref(),
                Some(rec)
            );
        }
        assert_eq!(s.figures().unwrap(), recount(&all));
        assert_eq!(
            super::evict::order(s).len(),
            all.len(),
            "every instance has one place in the eviction order"
        );
        check_sessions(s, &all);
        all
    }
}

/// The figures, counted from scratch.
pub(crate) fn recount(all: &[InstanceRecord]) -> StoreFigures {
    let patients: BTreeSet<&String> = all.iter().filter_map(|r| r.patient_id.as_ref()).collect();
    let sessions: BTreeSet<&String> = all.iter().map(|r| &r.study_instance_uid).collect();
    let scans: BTreeSet<(&String, &String)> = all
        .iter()
        .map(|r| (&r.study_instance_uid, &r.series_instance_uid))
        .collect();
    StoreFigures {
        patients: patients.len() as u64,
        sessions: sessions.len() as u64,
        scans: scans.len() as u64,
        instances: all.len() as u64,
        bytes: all.iter().map(|r| r.size).sum(),
    }
}

/// sessions(), instances_of_study() and instances_of_series() agree with the instances.
fn check_sessions(s: &Store, all: &[InstanceRecord]) {
    let sessions = s.sessions().unwrap();
    let mut by_study: BTreeMap<&str, Vec<&InstanceRecord>> = BTreeMap::new();
    for rec in all {
        by_study
            .entry(&rec.study_instance_uid)
            .or_default()
            .push(rec);
    }
    let studies: Vec<&str> = sessions
        .iter()
        .map(|s| s.study_instance_uid.as_str())
        .collect();
    assert_eq!(studies, by_study.keys().copied().collect::<Vec<_>>());
    for session in &sessions {
        let members = &by_study[session.study_instance_uid.as_str()];
        assert_eq!(session.instances, members.len() as u64);
        assert_eq!(session.bytes, members.iter().map(|r| r.size).sum::<u64>());
        if let Some(p) = &session.patient_id {
            assert_eq!(session.subject_id, s.subject_of(p).unwrap());
        }
        let mut study_records = s.instances_of_study(&session.study_instance_uid).unwrap();
        study_records.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
        let mut want: Vec<InstanceRecord> = members.iter().map(|r| (*r).clone()).collect();
        want.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
        assert_eq!(study_records, want);
        let mut seen = BTreeSet::new();
        for scan in &session.scans {
            let series = s
                .instances_of_series(&session.study_instance_uid, &scan.series_instance_uid)
                .unwrap();
            assert!(!series.is_empty());
            assert_eq!(scan.instances, series.len() as u64);
            assert_eq!(scan.bytes, series.iter().map(|r| r.size).sum::<u64>());
            seen.insert(scan.series_instance_uid.clone());
        }
        let series_uids: BTreeSet<String> = members
            .iter()
            .map(|r| r.series_instance_uid.clone())
            .collect();
        assert_eq!(seen, series_uids);
        let order: Vec<(bool, Option<i32>, &str)> = session
            .scans
            .iter()
            .map(|s| {
                (
                    s.scan_number.is_none(),
                    s.scan_number,
                    s.series_instance_uid.as_str(),
                )
            })
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "scans out of order");
    }
}
