//! Model test: random sequences of ingests, deletions, removals, subject links, restarts
//! and crashes, on real files in a temporary data dir, applied both to the store and to a
//! plain model. After every step the catalog and the files on disk agree exactly (every
//! entry has its file, every `.dcm` under `storage/` has an entry, no `.part` is left),
//! `figures()` equals a recount, and the records, Series Numbers and subject links match
//! the model.
//!
//! A crash is simulated by stopping half-way (a deletion committed but not unlinked, a
//! file written but not indexed, a `.part` left behind, garbage where a file belongs, a
//! file lost behind the catalog's back), then reopening the store and running `repair`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use proptest::prelude::*;

use super::test_support::{Env, FakeDicom};
use super::*;

/// "1.2.826.1" is a string prefix of "1.2.826.1.5": keys must not confuse them.
const STUDIES: [&str; 3] = ["1.2.826.1", "1.2.826.1.5", "1.2.826.2"];
const SERIES: [&str; 3] = ["9.1", "9.1.1", "9.2"];
const SOPS: usize = 10;
const PATIENTS: [&str; 2] = ["P1", "P2"];
const NUMBERS: [i32; 3] = [0, 1, -1];

fn sop(i: usize) -> String {
    format!("5.{i}")
}

#[derive(Debug, Clone)]
struct Put {
    sop: usize,
    study: usize,
    series: usize,
    number: Option<usize>,
    patient: Option<usize>,
    filler: usize,
}

impl Put {
    fn dataset(&self) -> FakeDicom {
        FakeDicom {
            study: STUDIES[self.study].into(),
            series: SERIES[self.series].into(),
            number: self.number.map(|n| NUMBERS[n]),
            sop: sop(self.sop),
            patient: self.patient.map(|p| PATIENTS[p].into()),
            filler: "f".repeat(self.filler),
        }
    }
}

#[derive(Debug, Clone)]
enum Crash {
    /// `delete_study` committed, its files not unlinked.
    UnfinishedDelete(usize),
    /// `delete_study` committed, then one of the deleted instances sent again (same path,
    /// new content) before anything was unlinked.
    ResentBeforeUnlink(usize, prop::sample::Index, usize),
    /// A file written, never indexed (skipped if the SOP is cataloged).
    Unindexed(Put),
    /// A `.part` left behind.
    Part(Put),
    /// Unreadable bytes at a new instance's path (skipped if the SOP is cataloged).
    Garbage(Put),
    /// The file of a cataloged instance vanished.
    LostFile(prop::sample::Index),
}

#[derive(Debug, Clone)]
enum Op {
    Put(Put),
    DeleteStudy(usize),
    DeleteSeries(usize, usize),
    RemoveInstance(usize),
    Link(usize, u8),
    Reopen,
    Crash(Crash),
}

fn put() -> impl Strategy<Value = Put> {
    (
        0..SOPS,
        0..STUDIES.len(),
        0..SERIES.len(),
        prop::option::weighted(0.8, 0..NUMBERS.len()),
        prop::option::weighted(0.8, 0..PATIENTS.len()),
        0usize..30,
    )
        .prop_map(|(sop, study, series, number, patient, filler)| Put {
            sop,
            study,
            series,
            number,
            patient,
            filler,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => put().prop_map(Op::Put),
        2 => (0..STUDIES.len()).prop_map(Op::DeleteStudy),
        2 => (0..STUDIES.len(), 0..NUMBERS.len()).prop_map(|(s, n)| Op::DeleteSeries(s, n)),
        2 => (0..SOPS).prop_map(Op::RemoveInstance),
        1 => (0..PATIENTS.len(), any::<u8>()).prop_map(|(p, n)| Op::Link(p, n)),
        1 => Just(Op::Reopen),
        3 => prop_oneof![
            (0..STUDIES.len()).prop_map(Crash::UnfinishedDelete),
            (0..STUDIES.len(), any::<prop::sample::Index>(), 0usize..30)
                .prop_map(|(s, at, filler)| Crash::ResentBeforeUnlink(s, at, filler)),
            put().prop_map(Crash::Unindexed),
            put().prop_map(Crash::Part),
            put().prop_map(Crash::Garbage),
            any::<prop::sample::Index>().prop_map(Crash::LostFile),
        ]
        .prop_map(Op::Crash),
    ]
}

/// The catalog as simply as it can be said.
#[derive(Default)]
struct Model {
    instances: BTreeMap<String, InstanceRecord>,
    /// (study, series) → Series Number, for every non-empty series: the latest `Some`
    /// put, kept until the series empties.
    numbers: BTreeMap<(String, String), Option<i32>>,
    /// study → PatientID, for every non-empty study: the latest `Some` put, kept until
    /// the study empties.
    study_patients: BTreeMap<String, Option<String>>,
    subjects: BTreeMap<String, String>,
}

impl Model {
    fn series_key(rec: &InstanceRecord) -> (String, String) {
        (
            rec.study_instance_uid.clone(),
            rec.series_instance_uid.clone(),
        )
    }

    fn patients(&self) -> BTreeSet<String> {
        self.instances
            .values()
            .filter_map(|r| r.patient_id.clone())
            .collect()
    }

    fn remove(&mut self, sop: &str) -> Option<InstanceRecord> {
        let rec = self.instances.remove(sop)?;
        let key = Model::series_key(&rec);
        if !self.instances.values().any(|r| Model::series_key(r) == key) {
            self.numbers.remove(&key);
        }
        let study = &rec.study_instance_uid;
        if !self
            .instances
            .values()
            .any(|r| &r.study_instance_uid == study)
        {
            self.study_patients.remove(study);
        }
        Some(rec)
    }

    fn put(&mut self, rec: InstanceRecord) -> Option<InstanceRecord> {
        let old = self.remove(&rec.sop_instance_uid);
        let key = Model::series_key(&rec);
        let number = rec
            .series_number
            .or(self.numbers.get(&key).copied().flatten());
        self.numbers.insert(key, number);
        let study = rec.study_instance_uid.clone();
        let patient = rec
            .patient_id
            .clone()
            .or(self.study_patients.get(&study).cloned().flatten());
        self.study_patients.insert(study, patient);
        self.instances.insert(rec.sop_instance_uid.clone(), rec);
        old
    }

    /// Removes `sops` as a backend deletion; returns the records and the patient whose
    /// mapping went (the first of those left with no study).
    fn delete(&mut self, sops: &[String]) -> (Vec<InstanceRecord>, Option<String>) {
        let before = self.patients();
        let removed: Vec<InstanceRecord> = sops.iter().filter_map(|s| self.remove(s)).collect();
        let after = self.patients();
        let emptied: Vec<String> = before.difference(&after).cloned().collect();
        for p in &emptied {
            self.subjects.remove(p);
        }
        (removed, emptied.into_iter().next())
    }

    fn sops_where(&self, f: impl Fn(&InstanceRecord) -> bool) -> Vec<String> {
        // The store removes in key order: series UID, then SOP Instance UID.
        let mut recs: Vec<&InstanceRecord> = self.instances.values().filter(|r| f(r)).collect();
        recs.sort_by(|a, b| {
            (&a.series_instance_uid, &a.sop_instance_uid)
                .cmp(&(&b.series_instance_uid, &b.sop_instance_uid))
        });
        recs.iter().map(|r| r.sop_instance_uid.clone()).collect()
    }
}

/// Applies one step to the store, the files and the model.
fn step(env: &mut Env, model: &mut Model, op: Op) -> Result<(), TestCaseError> {
    match op {
        Op::Put(put) => {
            let (rec, old) = env.ingest(&put.dataset());
            prop_assert_eq!(old, model.put(rec));
            env.finish_pending();
        }
        Op::DeleteStudy(s) => {
            let study = STUDIES[s];
            let want = model.delete(&model.sops_where(|r| r.study_instance_uid == study));
            let got = env.store().delete_study(study).unwrap();
            prop_assert_eq!((got.removed, got.patient_mapping_dropped), want);
            env.finish_pending();
        }
        Op::DeleteSeries(s, n) => {
            let (study, number) = (STUDIES[s], NUMBERS[n]);
            let sops = model.sops_where(|r| {
                r.study_instance_uid == study
                    && model.numbers[&Model::series_key(r)] == Some(number)
            });
            let want = model.delete(&sops);
            let got = env.store().delete_series_by_number(study, number).unwrap();
            prop_assert_eq!((got.removed, got.patient_mapping_dropped), want);
            env.finish_pending();
        }
        Op::RemoveInstance(i) => {
            let got = env.store().remove_instance(&sop(i)).unwrap();
            prop_assert_eq!(got, model.remove(&sop(i)));
            env.finish_pending();
        }
        Op::Link(p, n) => {
            let subject = format!("subj_{n}");
            env.store().link_subject(PATIENTS[p], &subject).unwrap();
            model.subjects.insert(PATIENTS[p].into(), subject);
        }
        Op::Reopen => {
            env.reopen();
            prop_assert_eq!(env.repair(), RepairReport::default());
        }
        Op::Crash(crash) => crash_and_repair(env, model, crash)?,
    }
    Ok(())
}

fn crash_and_repair(env: &mut Env, model: &mut Model, crash: Crash) -> Result<(), TestCaseError> {
    let mut want = RepairReport::default();
    match crash {
        Crash::UnfinishedDelete(s) => {
            let study = STUDIES[s];
            let (removed, _) = model.delete(&model.sops_where(|r| r.study_instance_uid == study));
            let got = env.store().delete_study(study).unwrap();
            prop_assert_eq!(got.removed.len(), removed.len());
            want.finished_deletions = usize::from(!removed.is_empty());
        }
        Crash::ResentBeforeUnlink(s, at, filler) => {
            let study = STUDIES[s];
            let (removed, _) = model.delete(&model.sops_where(|r| r.study_instance_uid == study));
            env.store().delete_study(study).unwrap();
            if !removed.is_empty() {
                let again = &removed[at.index(removed.len())];
                let dataset = FakeDicom {
                    study: again.study_instance_uid.clone(),
                    series: again.series_instance_uid.clone(),
                    number: again.series_number,
                    sop: again.sop_instance_uid.clone(),
                    patient: again.patient_id.clone(),
                    filler: "r".repeat(filler),
                };
                let (rec, old) = env.ingest(&dataset);
                prop_assert_eq!(old, model.put(rec));
                want.finished_deletions = 1;
            }
        }
        Crash::Unindexed(put) => {
            if !model.instances.contains_key(&sop(put.sop)) {
                model.put(env.write_file(&put.dataset()));
                want.reindexed = 1;
            }
        }
        Crash::Part(put) => {
            let rec = put.dataset().record(0);
            let part = env.abs(&format!("{}{PART_SUFFIX}", rec.path));
            fs::create_dir_all(part.parent().unwrap()).unwrap();
            fs::write(part, &put.dataset().bytes()[..put.filler]).unwrap();
            want.removed_temp = 1;
        }
        Crash::Garbage(put) => {
            if !model.instances.contains_key(&sop(put.sop)) {
                let path = env.abs(&put.dataset().record(0).path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, b"\x00\x01 not DICOM").unwrap();
                want.removed_unreadable = 1;
            }
        }
        Crash::LostFile(at) => {
            if !model.instances.is_empty() {
                let sops: Vec<String> = model.instances.keys().cloned().collect();
                let rec = model.remove(&sops[at.index(sops.len())]).unwrap();
                fs::remove_file(env.abs(&rec.path)).unwrap();
                want.dropped_entries = 1;
            }
        }
    }
    env.reopen();
    prop_assert_eq!(env.repair(), want);
    Ok(())
}

/// Everything the store says matches the model (the files are checked by
/// `check_agreement`).
fn check_model(env: &Env, model: &Model) -> Result<(), TestCaseError> {
    let all = env.check_agreement();
    let want: Vec<InstanceRecord> = model.instances.values().cloned().collect();
    prop_assert_eq!(all, want);
    let s = env.store();
    let mut numbers = BTreeMap::new();
    let mut patients = BTreeMap::new();
    for session in s.sessions().unwrap() {
        patients.insert(session.study_instance_uid.clone(), session.patient_id);
        for scan in session.scans {
            numbers.insert(
                (session.study_instance_uid.clone(), scan.series_instance_uid),
                scan.scan_number,
            );
        }
    }
    prop_assert_eq!(&numbers, &model.numbers);
    prop_assert_eq!(&patients, &model.study_patients);
    for patient in PATIENTS {
        prop_assert_eq!(
            s.subject_of(patient).unwrap(),
            model.subjects.get(patient).cloned()
        );
    }
    prop_assert!(s.pending_file_deletions().unwrap().is_empty());
    prop_assert!(env.empty_dirs().is_empty(), "{:?}", env.empty_dirs());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn catalog_and_files_agree(ops in prop::collection::vec(op(), 1..40)) {
        let mut env = Env::new();
        let mut model = Model::default();
        for op in ops {
            step(&mut env, &mut model, op)?;
            check_model(&env, &model)?;
        }
    }
}
