//! The [`Catalog`] behaviours, each on a temporary and on an on-disk store; plus the
//! on-disk cases (reopen, corruption). Files are not involved here (`repair_tests.rs`).

use super::test_support::{open_retrying, recount, FakeDicom};
use super::*;

const S1: &str = "1.2.826.1";
/// Has [`S1`] as a string prefix: must never be confused with it.
const S1X: &str = "1.2.826.1.5";
const S2: &str = "1.2.826.2";

/// Runs `check` on a temporary store and on a store in a fresh directory.
fn on_each_store(check: impl Fn(&Store)) {
    check(&Store::open_temporary().unwrap());
    let dir = tempfile::tempdir().unwrap();
    check(&Store::open(dir.path()).unwrap());
}

fn rec(study: &str, series: &str, number: Option<i32>, sop: &str, size: u64) -> InstanceRecord {
    FakeDicom::new(study, series, number, sop).record(size)
}

fn with_patient(mut rec: InstanceRecord, patient: &str) -> InstanceRecord {
    rec.patient_id = Some(patient.into());
    rec
}

fn sops(records: &[InstanceRecord]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r.sop_instance_uid.as_str())
        .collect()
}

fn figures(patients: u64, sessions: u64, scans: u64, instances: u64, bytes: u64) -> StoreFigures {
    StoreFigures {
        patients,
        sessions,
        scans,
        instances,
        bytes,
    }
}

#[test]
fn empty_catalog() {
    on_each_store(|s| {
        assert_eq!(s.figures().unwrap(), StoreFigures::default());
        assert!(s.sessions().unwrap().is_empty());
        assert!(s.all_instances().unwrap().is_empty());
        assert!(s.pending_file_deletions().unwrap().is_empty());
        assert_eq!(s.get_instance("1.2").unwrap(), None);
        assert!(s.instances_of_study(S1).unwrap().is_empty());
    });
}

#[test]
fn put_indexes_study_series_patient_and_counters() {
    on_each_store(|s| {
        let a = with_patient(rec(S1, "9.1", Some(1), "5.1", 100), "P1");
        let b = with_patient(rec(S1, "9.1", Some(1), "5.2", 50), "P1");
        let c = with_patient(rec(S1, "9.2", Some(2), "5.3", 7), "P1");
        let d = rec(S1X, "9.1", None, "5.4", 1);
        for r in [&c, &a, &d, &b] {
            assert_eq!(s.put_instance(r).unwrap(), None);
        }
        assert_eq!(s.get_instance("5.1").unwrap(), Some(a.clone()));
        assert_eq!(
            sops(&s.instances_of_study(S1).unwrap()),
            ["5.1", "5.2", "5.3"]
        );
        assert_eq!(
            sops(&s.instances_of_series(S1, "9.1").unwrap()),
            ["5.1", "5.2"]
        );
        assert_eq!(sops(&s.instances_of_study(S1X).unwrap()), ["5.4"]);
        assert_eq!(s.figures().unwrap(), figures(1, 2, 3, 4, 158));
        assert_eq!(s.figures().unwrap(), recount(&s.all_instances().unwrap()));
        let sessions = s.sessions().unwrap();
        assert_eq!(
            sessions[0],
            SessionSummary {
                study_instance_uid: S1.into(),
                patient_id: Some("P1".into()),
                subject_id: None,
                instances: 3,
                bytes: 157,
                scans: vec![
                    ScanSummary {
                        scan_number: Some(1),
                        series_instance_uid: "9.1".into(),
                        instances: 2,
                        bytes: 150
                    },
                    ScanSummary {
                        scan_number: Some(2),
                        series_instance_uid: "9.2".into(),
                        instances: 1,
                        bytes: 7
                    },
                ],
            }
        );
        assert_eq!(sessions[1].study_instance_uid, S1X);
        assert_eq!(sessions[1].patient_id, None);
    });
}

#[test]
fn same_sop_again_replaces_and_moves_indexes() {
    on_each_store(|s| {
        let first = with_patient(rec(S1, "9.1", Some(1), "5.1", 100), "P1");
        let other = with_patient(rec(S1, "9.1", Some(1), "5.2", 10), "P1");
        s.put_instance(&first).unwrap();
        s.put_instance(&other).unwrap();
        // Re-sent with a corrected study, series and patient.
        let moved = with_patient(rec(S2, "9.7", Some(3), "5.1", 40), "P2");
        assert_eq!(s.put_instance(&moved).unwrap(), Some(first.clone()));
        assert_eq!(s.get_instance("5.1").unwrap(), Some(moved.clone()));
        assert_eq!(sops(&s.instances_of_study(S1).unwrap()), ["5.2"]);
        assert_eq!(sops(&s.instances_of_series(S2, "9.7").unwrap()), ["5.1"]);
        assert_eq!(s.figures().unwrap(), figures(2, 2, 2, 2, 50));
        // The old file is a pending deletion; the new one is live.
        assert!(s.is_pending_deletion(&first.path).unwrap());
        assert!(!s.is_pending_deletion(&moved.path).unwrap());
        let pending = s.pending_file_deletions().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1, vec![first.path.clone()]);

        // Same path again (same place, new size): replaced in place, nothing pending.
        let resent = with_patient(rec(S2, "9.7", Some(3), "5.1", 41), "P2");
        assert_eq!(s.put_instance(&resent).unwrap(), Some(moved));
        assert_eq!(s.pending_file_deletions().unwrap().len(), 1);
        assert_eq!(s.figures().unwrap(), figures(2, 2, 2, 2, 51));
        assert_eq!(s.figures().unwrap(), recount(&s.all_instances().unwrap()));
    });
}

#[test]
fn put_refuses_bad_uids_and_paths() {
    on_each_store(|s| {
        let mut bad = rec(S1, "9.1", None, "5.1", 1);
        bad.series_instance_uid = "../../etc".into();
        assert!(matches!(
            s.put_instance(&bad),
            Err(StoreError::InvalidUid {
                field: "SeriesInstanceUID",
                ..
            })
        ));
        let mut elsewhere = rec(S1, "9.1", None, "5.1", 1);
        elsewhere.path = "/etc/passwd".into();
        assert!(matches!(
            s.put_instance(&elsewhere),
            Err(StoreError::InvalidRecord { .. })
        ));
        assert!(s.all_instances().unwrap().is_empty());
        assert_eq!(s.figures().unwrap(), StoreFigures::default());
    });
}

#[test]
fn a_batch_put_answers_each_record_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = rec(S1, "9.1", Some(1), "5.1", 10);
    let mut bad = rec(S1, "9.1", None, "5.2", 1);
    bad.series_instance_uid = "../../etc".into();
    let c = rec(S2, "9.2", Some(2), "5.3", 30);
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_instance(&a).unwrap();
        let results = s.put_instances(&[a.clone(), bad, c.clone()]).unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap(), &Some(a.clone()));
        assert!(matches!(results[1], Err(StoreError::InvalidUid { .. })));
        assert_eq!(results[2].as_ref().unwrap(), &None);
    }
    let s = open_retrying(dir.path());
    assert_eq!(sops(&s.all_instances().unwrap()), ["5.1", "5.3"]);
    assert_eq!(s.figures().unwrap(), figures(0, 2, 2, 2, 40));
}

#[test]
fn linking_a_patient_again_keeps_the_link_and_a_new_subject_replaces_it() {
    on_each_store(|s| {
        s.link_subject("P1", "subj_1").unwrap();
        s.link_subject("P1", "subj_1").unwrap();
        assert_eq!(s.subject_of("P1").unwrap().as_deref(), Some("subj_1"));
        s.link_subject("P1", "subj_2").unwrap();
        assert_eq!(s.subject_of("P1").unwrap().as_deref(), Some("subj_2"));
    });
}

#[test]
fn remove_instance_cascades_but_keeps_the_subject_link() {
    on_each_store(|s| {
        let a = with_patient(rec(S1, "9.1", Some(1), "5.1", 10), "P1");
        let b = with_patient(rec(S1, "9.2", Some(2), "5.2", 20), "P1");
        s.put_instance(&a).unwrap();
        s.put_instance(&b).unwrap();
        s.link_subject("P1", "subj_1").unwrap();

        assert_eq!(s.remove_instance("5.1").unwrap(), Some(a.clone()));
        assert_eq!(s.sessions().unwrap()[0].scans.len(), 1);
        assert_eq!(s.figures().unwrap(), figures(1, 1, 1, 1, 20));
        assert!(s.is_pending_deletion(&a.path).unwrap());

        let deletion = s.delete_instance("5.2").unwrap();
        assert_eq!(deletion.removed, vec![b.clone()]);
        assert_ne!(deletion.ticket, NO_TICKET);
        assert_eq!(deletion.patient_mapping_dropped, None);
        assert!(s.sessions().unwrap().is_empty());
        assert_eq!(s.figures().unwrap(), StoreFigures::default());
        assert_eq!(s.subject_of("P1").unwrap().as_deref(), Some("subj_1"));

        assert_eq!(s.remove_instance("5.1").unwrap(), None);
        assert_eq!(s.delete_instance("5.9").unwrap().ticket, NO_TICKET);
    });
}

#[test]
fn delete_study_cascades_and_drops_the_mapping_with_the_last_study() {
    on_each_store(|s| {
        let a = with_patient(rec(S1, "9.1", Some(1), "5.1", 10), "P1");
        let b = with_patient(rec(S1, "9.2", Some(2), "5.2", 20), "P1");
        let c = with_patient(rec(S2, "9.1", Some(1), "5.3", 30), "P1");
        let x = with_patient(rec(S1X, "9.1", Some(1), "5.4", 40), "P2");
        for r in [&a, &b, &c, &x] {
            s.put_instance(r).unwrap();
        }
        s.link_subject("P1", "subj_1").unwrap();
        s.link_subject("P2", "subj_2").unwrap();

        // P1 keeps S2: the mapping stays.
        let first = s.delete_study(S1).unwrap();
        assert_eq!(first.removed, vec![a.clone(), b.clone()]);
        assert_eq!(first.patient_mapping_dropped, None);
        assert_eq!(s.subject_of("P1").unwrap().as_deref(), Some("subj_1"));
        assert_eq!(
            s.pending_file_deletions().unwrap(),
            vec![(first.ticket, vec![a.path.clone(), b.path.clone()])]
        );
        // S1X (prefixed by S1) is untouched.
        assert_eq!(sops(&s.instances_of_study(S1X).unwrap()), ["5.4"]);
        assert_eq!(s.figures().unwrap(), figures(2, 2, 2, 2, 70));

        let second = s.delete_study(S2).unwrap();
        assert_eq!(second.removed, vec![c]);
        assert_eq!(second.patient_mapping_dropped.as_deref(), Some("P1"));
        assert!(second.ticket > first.ticket);
        assert_eq!(s.subject_of("P1").unwrap(), None);
        assert_eq!(s.subject_of("P2").unwrap().as_deref(), Some("subj_2"));
        assert_eq!(s.figures().unwrap(), figures(1, 1, 1, 1, 40));
        let sessions = s.sessions().unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].subject_id.as_deref(), Some("subj_2"));
    });
}

#[test]
fn deleting_an_unknown_study_is_a_no_op() {
    on_each_store(|s| {
        s.put_instance(&rec(S1, "9.1", None, "5.1", 1)).unwrap();
        for study in [S2, "1.2.826", "", "../1", "1.2.826.1\0"] {
            let deletion = s.delete_study(study).unwrap();
            assert!(deletion.removed.is_empty());
            assert_eq!(deletion.ticket, NO_TICKET);
            assert_eq!(deletion.patient_mapping_dropped, None);
        }
        assert!(s.pending_file_deletions().unwrap().is_empty());
        assert_eq!(s.figures().unwrap().instances, 1);
        s.complete_file_deletion(NO_TICKET).unwrap();
        s.complete_file_deletion(12345).unwrap();
    });
}

#[test]
fn delete_series_by_number() {
    on_each_store(|s| {
        let a = with_patient(rec(S1, "9.1", Some(4), "5.1", 1), "P1");
        let b = with_patient(rec(S1, "9.2", Some(4), "5.2", 2), "P1");
        let c = with_patient(rec(S1, "9.3", Some(-5), "5.3", 4), "P1");
        let d = with_patient(rec(S1, "9.4", None, "5.4", 8), "P1");
        let other_study = rec(S2, "9.1", Some(4), "5.5", 16);
        for r in [&a, &b, &c, &d, &other_study] {
            s.put_instance(r).unwrap();
        }
        s.link_subject("P1", "subj_1").unwrap();

        // Two series share number 4; the other study's series 4 stays.
        let four = s.delete_series_by_number(S1, 4).unwrap();
        assert_eq!(four.removed, vec![a, b]);
        assert_eq!(four.patient_mapping_dropped, None);
        assert_eq!(s.instances_of_study(S2).unwrap().len(), 1);
        let nothing = s.delete_series_by_number(S1, 7).unwrap();
        assert!(nothing.removed.is_empty());
        assert_eq!(nothing.ticket, NO_TICKET);

        assert_eq!(s.delete_series_by_number(S1, -5).unwrap().removed, vec![c]);
        // The unnumbered series is still there, so the session is too.
        assert_eq!(s.sessions().unwrap()[0].scans.len(), 1);
        assert_eq!(s.figures().unwrap(), figures(1, 2, 2, 2, 24));

        // Its last series going takes the study, and the patient's last study the mapping.
        let mut numbered = d.clone();
        numbered.series_number = Some(0);
        assert_eq!(s.put_instance(&numbered).unwrap(), Some(d));
        let last = s.delete_series_by_number(S1, 0).unwrap();
        assert_eq!(last.removed, vec![numbered]);
        assert_eq!(last.patient_mapping_dropped.as_deref(), Some("P1"));
        assert_eq!(s.subject_of("P1").unwrap(), None);
        assert_eq!(s.sessions().unwrap().len(), 1);
        assert_eq!(s.figures().unwrap(), figures(0, 1, 1, 1, 16));
        assert!(s
            .delete_series_by_number("x/..", 4)
            .unwrap()
            .removed
            .is_empty());
    });
}

#[test]
fn the_scan_number_is_the_latest_one_put() {
    on_each_store(|s| {
        s.put_instance(&rec(S1, "9.1", Some(1), "5.1", 1)).unwrap();
        s.put_instance(&rec(S1, "9.1", None, "5.2", 1)).unwrap();
        assert_eq!(s.sessions().unwrap()[0].scans[0].scan_number, Some(1));
        s.put_instance(&rec(S1, "9.1", Some(2), "5.3", 1)).unwrap();
        assert_eq!(s.sessions().unwrap()[0].scans[0].scan_number, Some(2));
        assert!(s.delete_series_by_number(S1, 1).unwrap().removed.is_empty());
        assert_eq!(s.delete_series_by_number(S1, 2).unwrap().removed.len(), 3);
    });
}

#[test]
fn sessions_are_sorted() {
    on_each_store(|s| {
        for (study, series, number) in [
            (S2, "9.5", Some(2)),
            (S1, "9.9", None),
            (S1, "9.3", Some(10)),
            (S1, "9.2", Some(2)),
            (S1, "9.1", None),
            (S1, "9.4", Some(2)),
            (S1X, "9.1", Some(1)),
        ] {
            let sop = format!("5.{}", s.figures().unwrap().instances + 1);
            s.put_instance(&rec(study, series, number, &sop, 1))
                .unwrap();
        }
        let sessions = s.sessions().unwrap();
        let studies: Vec<&str> = sessions
            .iter()
            .map(|s| s.study_instance_uid.as_str())
            .collect();
        assert_eq!(studies, [S1, S1X, S2]);
        let scans: Vec<(Option<i32>, &str)> = sessions[0]
            .scans
            .iter()
            .map(|s| (s.scan_number, s.series_instance_uid.as_str()))
            .collect();
        assert_eq!(
            scans,
            [
                (Some(2), "9.2"),
                (Some(2), "9.4"),
                (Some(10), "9.3"),
                (None, "9.1"),
                (None, "9.9")
            ]
        );
    });
}

#[test]
fn subject_links() {
    on_each_store(|s| {
        assert_eq!(s.subject_of("P1").unwrap(), None);
        s.link_subject("P1", "subj_1").unwrap();
        s.link_subject("P1", "subj_2").unwrap();
        assert_eq!(s.subject_of("P1").unwrap().as_deref(), Some("subj_2"));
        s.put_instance(&with_patient(rec(S1, "9.1", None, "5.1", 1), "P1"))
            .unwrap();
        assert_eq!(
            s.sessions().unwrap()[0].subject_id.as_deref(),
            Some("subj_2")
        );
    });
}

#[test]
fn putting_a_pending_path_again_lifts_its_mark() {
    on_each_store(|s| {
        let a = rec(S1, "9.1", None, "5.1", 1);
        let b = rec(S1, "9.1", None, "5.2", 1);
        s.put_instance(&a).unwrap();
        s.put_instance(&b).unwrap();
        let deletion = s.delete_study(S1).unwrap();
        // The study is sent again before its files were unlinked.
        s.put_instance(&a).unwrap();
        assert!(!s.is_pending_deletion(&a.path).unwrap());
        assert!(s.is_pending_deletion(&b.path).unwrap());
        assert_eq!(
            s.pending_file_deletions().unwrap(),
            vec![(deletion.ticket, vec![b.path.clone()])]
        );
        s.complete_file_deletion(deletion.ticket).unwrap();
        assert!(!s.is_pending_deletion(&b.path).unwrap());
        assert!(s.pending_file_deletions().unwrap().is_empty());
    });
}

#[test]
fn pending_deletions_survive_reopen_until_completed() {
    let dir = tempfile::tempdir().unwrap();
    let a = rec(S1, "9.1", None, "5.1", 1);
    let ticket = {
        let s = Store::open(dir.path()).unwrap();
        s.put_instance(&a).unwrap();
        s.delete_study(S1).unwrap().ticket
    };
    let s = open_retrying(dir.path());
    assert_eq!(
        s.pending_file_deletions().unwrap(),
        vec![(ticket, vec![a.path.clone()])]
    );
    assert!(s.is_pending_deletion(&a.path).unwrap());
    s.complete_file_deletion(ticket).unwrap();
    drop(s);
    let s = open_retrying(dir.path());
    assert!(s.pending_file_deletions().unwrap().is_empty());
    assert!(!s.is_pending_deletion(&a.path).unwrap());
    // Tickets are never reused, across restarts too.
    s.put_instance(&a).unwrap();
    assert!(s.delete_study(S1).unwrap().ticket > ticket);
}

#[test]
fn the_catalog_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = with_patient(rec(S1, "9.1", Some(3), "5.1", 10), "P1");
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_instance(&a).unwrap();
        s.link_subject("P1", "subj_1").unwrap();
    }
    let s = open_retrying(dir.path());
    assert_eq!(s.all_instances().unwrap(), vec![a]);
    assert_eq!(s.figures().unwrap(), figures(1, 1, 1, 1, 10));
    assert_eq!(
        s.sessions().unwrap()[0].subject_id.as_deref(),
        Some("subj_1")
    );
}

#[test]
fn corrupt_entries_are_typed_errors() {
    on_each_store(|s| {
        s.put_instance(&rec(S1, "9.1", None, "5.1", 1)).unwrap();
        s.catalog
            .instances
            .insert("5.1", &b"\x01{not json"[..])
            .unwrap();
        assert!(matches!(
            s.get_instance("5.1"),
            Err(StoreError::Corrupt { tree: INSTANCES_TREE, ref key }) if key == "5.1"
        ));
        assert!(matches!(s.all_instances(), Err(StoreError::Corrupt { .. })));
        // A transaction touching it aborts with the same error and changes nothing.
        assert!(matches!(
            s.delete_study(S1),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(s.pending_file_deletions().unwrap().is_empty());

        s.catalog.counters.insert(tx::BYTES, &b"xx"[..]).unwrap();
        assert!(matches!(
            s.figures(),
            Err(StoreError::Corrupt {
                tree: COUNTERS_TREE,
                ..
            })
        ));
        s.catalog.subjects.insert("P1", &[0xff][..]).unwrap();
        assert!(matches!(
            s.subject_of("P1"),
            Err(StoreError::Corrupt { .. })
        ));
    });
}

#[test]
fn invalid_lookups_find_nothing() {
    on_each_store(|s| {
        s.put_instance(&rec(S1, "9.1", None, "5.1", 1)).unwrap();
        // "1.2.826.1\0" would be a prefix of S1's keys if it were used unchecked.
        assert!(s
            .instances_of_study("1.2.826.1\u{0}9.1")
            .unwrap()
            .is_empty());
        assert!(s.instances_of_series(S1, "9.1\u{0}5.1").unwrap().is_empty());
        assert!(s.instances_of_series(S1, "9").unwrap().is_empty());
        assert!(s.instances_of_study("1.2.826").unwrap().is_empty());
    });
}
