//! [`repair`], [`rebuild_catalog`] and [`finish_file_deletion`] on real files in a
//! temporary data dir, with the fake DICOM of `test_support.rs`.

use std::fs;

use super::test_support::{fake_index, Env, FakeDicom};
use super::*;

const S1: &str = "1.2.826.1";
const S2: &str = "1.2.826.2";

fn ds(study: &str, series: &str, sop: &str) -> FakeDicom {
    FakeDicom::new(study, series, Some(1), sop).patient("P1")
}

#[test]
fn a_consistent_store_needs_no_repair() {
    let env = Env::new();
    assert_eq!(env.repair(), RepairReport::default());
    env.ingest(&ds(S1, "9.1", "5.1"));
    env.ingest(&ds(S1, "9.2", "5.2"));
    assert_eq!(env.repair(), RepairReport::default());
    env.check_agreement();
}

#[test]
fn an_orphan_file_is_reindexed() {
    let mut env = Env::new();
    env.ingest(&ds(S1, "9.1", "5.1"));
    // Crash between the file's rename and put_instance.
    let orphan = env.write_file(&ds(S1, "9.1", "5.2"));
    env.reopen();
    let report = env.repair();
    assert_eq!(
        report,
        RepairReport {
            reindexed: 1,
            ..RepairReport::default()
        }
    );
    assert_eq!(env.store().get_instance("5.2").unwrap(), Some(orphan));
    assert_eq!(env.check_agreement().len(), 2);
}

#[test]
fn an_unreadable_file_is_removed_and_its_directories_pruned() {
    let env = Env::new();
    env.ingest(&ds(S1, "9.1", "5.1"));
    let junk = env.abs("storage/1.2.826.9/9.9/5.9.dcm");
    fs::create_dir_all(junk.parent().unwrap()).unwrap();
    fs::write(&junk, b"not DICOM").unwrap();
    let report = env.repair();
    assert_eq!(report.removed_unreadable, 1);
    assert_eq!(report.reindexed, 0);
    assert!(!junk.exists());
    assert!(!env.abs("storage/1.2.826.9").exists());
    assert!(env.empty_dirs().is_empty());
    assert_eq!(env.check_agreement().len(), 1);
}

#[test]
fn an_entry_without_its_file_is_dropped() {
    let env = Env::new();
    let (gone, _) = env.ingest(&ds(S1, "9.1", "5.1"));
    env.ingest(&ds(S2, "9.1", "5.2"));
    fs::remove_file(env.abs(&gone.path)).unwrap();
    let report = env.repair();
    assert_eq!(
        report,
        RepairReport {
            dropped_entries: 1,
            ..RepairReport::default()
        }
    );
    assert_eq!(env.store().get_instance("5.1").unwrap(), None);
    assert_eq!(env.store().sessions().unwrap().len(), 1);
    // Files vanishing is not a backend deletion: nothing pending, nothing to unlink.
    assert!(env.store().pending_file_deletions().unwrap().is_empty());
    env.check_agreement();
}

#[test]
fn a_pending_deletion_is_finished_after_a_crash() {
    let mut env = Env::new();
    let (a, _) = env.ingest(&ds(S1, "9.1", "5.1"));
    env.ingest(&ds(S1, "9.2", "5.2"));
    let (keep, _) = env.ingest(&ds(S2, "9.1", "5.3"));
    let deletion = env.store().delete_study(S1).unwrap();
    assert_eq!(deletion.removed.len(), 2);
    // Crash: committed, nothing unlinked.
    env.reopen();
    assert!(env.abs(&a.path).exists());
    let report = env.repair();
    assert_eq!(
        report,
        RepairReport {
            finished_deletions: 1,
            ..RepairReport::default()
        }
    );
    assert!(!env.abs(&format!("storage/{S1}")).exists());
    assert!(env.abs(&keep.path).exists());
    assert!(env.store().pending_file_deletions().unwrap().is_empty());
    env.check_agreement();
}

#[test]
fn part_files_are_removed() {
    let env = Env::new();
    env.ingest(&ds(S1, "9.1", "5.1"));
    let part = env.abs(&format!("storage/{S1}/9.1/5.2.dcm{PART_SUFFIX}"));
    fs::write(&part, b"half a file").unwrap();
    let lone = env.abs(&format!("storage/{S2}/9.1/5.3.dcm{PART_SUFFIX}"));
    fs::create_dir_all(lone.parent().unwrap()).unwrap();
    fs::write(&lone, ds(S2, "9.1", "5.3").bytes()).unwrap();
    let report = env.repair();
    assert_eq!(
        report,
        RepairReport {
            removed_temp: 2,
            ..RepairReport::default()
        }
    );
    assert!(!part.exists());
    assert!(!env.abs(&format!("storage/{S2}")).exists());
    env.check_agreement();
}

#[test]
fn a_file_overwritten_after_indexing_is_indexed_again() {
    let env = Env::new();
    env.ingest(&ds(S1, "9.1", "5.1"));
    // Re-sent with more data and another number; crash before put_instance.
    let mut bigger = ds(S1, "9.1", "5.1");
    bigger.filler = "x".repeat(100);
    bigger.number = Some(8);
    let rec = env.write_file(&bigger);
    let report = env.repair();
    assert_eq!(report.reindexed, 1);
    assert_eq!(report.dropped_entries, 0);
    assert_eq!(env.store().get_instance("5.1").unwrap(), Some(rec));
    assert_eq!(
        env.store().sessions().unwrap()[0].scans[0].scan_number,
        Some(8)
    );
    env.check_agreement();
}

#[test]
fn misplaced_files_are_moved_or_removed_as_duplicates() {
    let env = Env::new();
    let (a, _) = env.ingest(&ds(S1, "9.1", "5.1"));
    // A copy of 5.1 elsewhere, and a file for 5.2 in the wrong directory.
    let copy = env.abs(&format!("storage/{S1}/9.2/5.1.dcm"));
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    fs::copy(env.abs(&a.path), &copy).unwrap();
    let stray = env.abs("storage/lost/5.2.dcm");
    fs::create_dir_all(stray.parent().unwrap()).unwrap();
    fs::write(&stray, ds(S2, "9.1", "5.2").bytes()).unwrap();

    let report = env.repair();
    assert_eq!(report.removed_duplicates, 1);
    assert_eq!(report.relocated, 1);
    assert_eq!(report.reindexed, 1);
    assert!(!copy.exists() && !stray.exists());
    let moved = env.store().get_instance("5.2").unwrap().unwrap();
    assert_eq!(moved.path, format!("storage/{S2}/9.1/5.2.dcm"));
    assert!(env.empty_dirs().is_empty());
    env.check_agreement();
}

#[test]
fn an_orphan_claiming_a_cataloged_instance_replaces_it() {
    let env = Env::new();
    let (old, _) = env.ingest(&ds(S1, "9.1", "5.1"));
    // 5.1 re-sent with a corrected study; crash before put_instance.
    let new = env.write_file(&ds(S2, "9.1", "5.1"));
    let report = env.repair();
    assert_eq!(report.reindexed, 1);
    assert_eq!(report.finished_deletions, 1);
    assert!(!env.abs(&old.path).exists());
    assert_eq!(env.store().all_instances().unwrap(), vec![new]);
    env.check_agreement();
}

#[test]
fn damaged_derived_data_is_reconciled() {
    let env = Env::new();
    env.ingest(&ds(S1, "9.1", "5.1"));
    env.ingest(&ds(S1, "9.2", "5.2"));
    env.ingest(&ds(S2, "9.1", "5.3"));
    let before = env.store().sessions().unwrap();
    let c = &env.store().catalog;
    c.counters.insert(tx::INSTANCES, &b"bad"[..]).unwrap();
    c.counters.remove(tx::PATIENTS).unwrap();
    c.scans.remove(record::scan_key(S1, "9.2")).unwrap();
    c.studies.insert(S2, &b"\x01{}"[..]).unwrap();
    c.members
        .remove(record::member_key(S1, "9.1", "5.1"))
        .unwrap();
    c.members
        .insert(record::member_key(S1, "9.9", "5.3"), &[][..])
        .unwrap();
    c.patients
        .insert("ghost", &[0, 0, 0, 0, 0, 0, 0, 1][..])
        .unwrap();
    c.pending_paths
        .insert("storage/1/2/3.dcm", &[0, 0, 0, 0, 0, 0, 0, 9][..])
        .unwrap();
    let report = env.repair();
    assert_eq!(report.fixed_index_entries, 8);
    assert_eq!(report.dropped_entries + report.reindexed, 0);
    assert_eq!(env.store().sessions().unwrap(), before);
    env.check_agreement();
    assert_eq!(env.repair(), RepairReport::default());
}

#[test]
fn an_undecodable_entry_is_dropped_and_its_file_reindexed() {
    let env = Env::new();
    let (a, _) = env.ingest(&ds(S1, "9.1", "5.1"));
    env.store()
        .catalog
        .instances
        .insert("5.1", &b"\x07garbage"[..])
        .unwrap();
    let report = env.repair();
    assert_eq!(report.dropped_entries, 1);
    assert_eq!(report.reindexed, 1);
    // Its aggregates went with it, and came back with the file.
    assert!(report.fixed_index_entries > 0);
    assert_eq!(env.store().get_instance("5.1").unwrap(), Some(a));
    env.check_agreement();
}

#[test]
fn a_ticket_never_unlinks_outside_the_storage_layout() {
    let env = Env::new();
    let victim = env.abs("victim.dcm");
    fs::write(&victim, b"precious").unwrap();
    let c = &env.store().catalog;
    let ticket = u64_key(77);
    let paths = vec![
        "storage/../victim.dcm".to_owned(),
        "/etc/hostname".to_owned(),
    ];
    c.pending
        .insert(ticket, record::encode(PENDING_TREE, &paths).unwrap())
        .unwrap();
    for p in &paths {
        c.pending_paths.insert(p.as_bytes(), &ticket[..]).unwrap();
    }
    let report = env.repair();
    assert_eq!(report.finished_deletions, 1);
    assert!(victim.exists());
    assert!(env.store().pending_file_deletions().unwrap().is_empty());
    // The ticket counter moved past the ticket found.
    env.store()
        .put_instance(&env.write_file(&ds(S1, "9.1", "5.1")))
        .unwrap();
    assert!(env.store().delete_study(S1).unwrap().ticket > 77);
}

#[test]
fn finish_file_deletion_unlinks_prunes_and_completes() {
    let env = Env::new();
    let (a, _) = env.ingest(&ds(S1, "9.1", "5.1"));
    let (b, _) = env.ingest(&ds(S1, "9.2", "5.2"));
    let deletion = env.store().delete_study(S1).unwrap();
    // 5.2 arrives again before the deleting actor ran: its file must stay.
    env.ingest(&ds(S1, "9.2", "5.2"));
    let unlinked = finish_file_deletion(env.store(), env.data_dir(), deletion.ticket).unwrap();
    assert_eq!(unlinked, 1);
    assert!(!env.abs(&a.path).exists());
    assert!(!env.abs(&format!("storage/{S1}/9.1")).exists());
    assert!(env.abs(&b.path).exists());
    assert!(env.store().pending_file_deletions().unwrap().is_empty());
    assert_eq!(
        finish_file_deletion(env.store(), env.data_dir(), deletion.ticket).unwrap(),
        0
    );
    env.check_agreement();
}

#[test]
fn rebuild_restores_the_catalog_from_files() {
    let env = Env::new();
    env.ingest(&ds(S1, "9.1", "5.1"));
    env.ingest(&ds(S1, "9.2", "5.2"));
    env.ingest(&ds(S2, "9.1", "5.3").patient("P2"));
    env.ingest(&ds("1.2.826.3", "9.1", "5.4"));
    env.store().link_subject("P2", "subj_2").unwrap();
    // A deleted study whose files were not unlinked yet must not come back.
    env.store().delete_study("1.2.826.3").unwrap();
    let before = env.store().all_instances().unwrap();
    let sessions = env.store().sessions().unwrap();

    let report = rebuild_catalog(env.store(), env.data_dir(), &fake_index).unwrap();
    assert_eq!(report.reindexed, 3);
    assert_eq!(report.finished_deletions, 1);
    assert_eq!(env.store().all_instances().unwrap(), before);
    assert_eq!(env.store().sessions().unwrap(), sessions);
    assert_eq!(
        env.store().subject_of("P2").unwrap().as_deref(),
        Some("subj_2")
    );
    env.check_agreement();
}

#[test]
fn repair_with_no_storage_dir() {
    let env = Env::new();
    assert!(!env.abs(STORAGE_DIR).exists());
    assert_eq!(env.repair(), RepairReport::default());
}
