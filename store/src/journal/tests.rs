//! Tests of the journal's records, instance sets and acknowledgements.

use super::*;

fn record(id: &str, seq: u64) -> DispatchRecord {
    DispatchRecord {
        id: id.into(),
        seq,
        correlation_id: format!("corr_{id}"),
        workspace_id: "ws".into(),
        entity_type: "session".into(),
        entity_id: "sess_1".into(),
        kind: DispatchKind::Session,
        priority: Priority::Normal,
        subject_id: None,
        session_id: None,
        label: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        stage: Stage::Queued,
        study_uids: vec![],
        nodes: vec![NodeProgress::queued("n1"), NodeProgress::queued("n2")],
        replays: 0,
    }
}

#[test]
fn records_survive_reopen_and_are_found_by_correlation() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(dir.path()).expect("open");
        s.journal_put(&record("d2", 2)).expect("put");
        s.journal_put(&record("d1", 1)).expect("put");
    }
    let s = Store::open(dir.path()).expect("reopen");
    let all = s.journal_all().expect("all");
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["d1", "d2"]
    );
    assert_eq!(
        s.journal_by_correlation("corr_d2")
            .expect("get")
            .map(|r| r.seq),
        Some(2)
    );
    assert_eq!(s.journal_get("nope").expect("get"), None);
}

/// The acknowledgement of an instance stored with status 0x0000.
fn stored() -> Ack {
    Ack {
        stored: true,
        status: Some(0),
        error: None,
        converted_to: None,
    }
}

#[test]
fn acks_are_per_node_and_can_be_cleared() {
    let s = Store::open_temporary().expect("open");
    let ok = stored();
    s.journal_ack("d1", "n1", "1.2.3", &ok).expect("ack");
    s.journal_ack("d1", "n1", "1.2.4", &ok).expect("ack");
    s.journal_ack("d1", "n2", "1.2.3", &ok).expect("ack");
    // A node id that is a prefix of another must not mix.
    s.journal_ack("d1", "n", "9.9", &ok).expect("ack");
    assert_eq!(s.journal_acks("d1", "n1").expect("acks").len(), 2);
    assert_eq!(s.journal_acks("d1", "n").expect("acks").len(), 1);
    s.journal_clear_acks("d1", "n1").expect("clear");
    assert!(s.journal_acks("d1", "n1").expect("acks").is_empty());
    assert_eq!(s.journal_acks("d1", "n2").expect("acks").len(), 1);
}

#[test]
fn deferred_acks_are_read_at_once_and_kept_after_a_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = stored();
    {
        let s = Store::open(dir.path()).expect("open");
        s.journal_ack_deferred("d1", "n1", "1.2.3", &ok)
            .expect("ack");
        s.journal_ack_deferred("d1", "n1", "1.2.4", &ok)
            .expect("ack");
        assert_eq!(s.journal_acks("d1", "n1").expect("acks").len(), 2);
        s.flush().expect("flush");
    }
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        s.journal_acks("d1", "n1")
            .expect("acks")
            .into_keys()
            .collect::<Vec<_>>(),
        ["1.2.3", "1.2.4"]
    );
}

#[test]
fn instance_sets_replace() {
    let s = Store::open_temporary().expect("open");
    s.journal_set_instances("d1", &["1.1".into(), "1.2".into()])
        .expect("set");
    s.journal_set_instances("d10", &["9".into()]).expect("set");
    s.journal_set_instances("d1", &["1.3".into()]).expect("set");
    assert_eq!(s.journal_instances("d1").expect("get"), ["1.3"]);
    assert_eq!(s.journal_instances("d10").expect("get"), ["9"]);
}

#[test]
fn state_follows_the_nodes() {
    let mut r = record("d1", 1);
    assert_eq!(r.state(), DispatchState::Active);
    r.nodes[0].status = NodeStatus::Completed;
    r.nodes[1].status = NodeStatus::Cancelled;
    assert_eq!(r.state(), DispatchState::Cancelled);
    r.nodes[1].status = NodeStatus::Failed;
    assert_eq!(r.state(), DispatchState::Failed);
    r.nodes[1].status = NodeStatus::Completed;
    assert_eq!(r.state(), DispatchState::Completed);
    assert_eq!(r.nodes[1].progress(), 100);
}

#[test]
fn garbage_records_are_typed_errors() {
    let s = Store::open_temporary().expect("open");
    s.journal
        .dispatches
        .insert("bad", &b"{nope"[..])
        .expect("insert");
    assert!(matches!(
        s.journal_get("bad"),
        Err(StoreError::Corrupt { .. })
    ));
}

/// A record created at `created` (ms) whose nodes have `statuses`.
fn record_at(id: &str, seq: u64, created: u64, statuses: &[NodeStatus]) -> DispatchRecord {
    let mut r = record(id, seq);
    r.created_at_ms = created;
    r.updated_at_ms = created;
    r.nodes = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut n = NodeProgress::queued(&format!("n{}", i + 1));
            n.status = *s;
            n
        })
        .collect();
    r
}

fn ids(recs: &[DispatchRecord]) -> Vec<String> {
    recs.iter().map(|r| r.id.clone()).collect()
}

/// Every index read agrees with a full read of the journal, and the index trees hold
/// exactly one key per record (none left behind by a change of state or a removal).
fn assert_indexes_agree(s: &Store) {
    let all = s.journal_all().expect("all");
    let of = |st: DispatchState| all.iter().filter(|r| r.state() == st).count() as u64;
    assert_eq!(
        s.journal_counts().expect("counts"),
        DispatchCounts {
            active: of(DispatchState::Active),
            completed: of(DispatchState::Completed),
            failed: of(DispatchState::Failed),
            cancelled: of(DispatchState::Cancelled),
        }
    );
    let active: Vec<&DispatchRecord> = all
        .iter()
        .filter(|r| r.state() == DispatchState::Active)
        .collect();
    assert_eq!(
        ids(&s.journal_active().expect("active")),
        active.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
    );
    let mut newest = all.clone();
    newest.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
    let page = s.journal_page(None, None, usize::MAX).expect("page");
    assert_eq!(ids(&page.records), ids(&newest));
    assert_eq!(page.next, None);
    for st in [
        DispatchState::Active,
        DispatchState::Completed,
        DispatchState::Failed,
        DispatchState::Cancelled,
    ] {
        let want: Vec<String> = newest
            .iter()
            .filter(|r| r.state() == st)
            .map(|r| r.id.clone())
            .collect();
        let got = s.journal_page(Some(st), None, usize::MAX).expect("page");
        assert_eq!(ids(&got.records), want, "{st:?}");
    }
    let t = &s.journal;
    let finished = all.len() - active.len();
    assert_eq!(t.index.len(), all.len());
    assert_eq!(t.by_created.len(), all.len());
    assert_eq!(t.by_state.len(), all.len());
    assert_eq!(t.finished.len(), finished);
}

use NodeStatus::{Cancelled, Completed, Failed, Queued, Sending};

#[test]
fn indexes_follow_every_write_and_change_of_state() {
    let s = Store::open_temporary().expect("open");
    assert_indexes_agree(&s);
    for i in 0..10u64 {
        // Created out of order, two at the same millisecond.
        let created = 1000 + (i * 7) % 10 * 100 - u64::from(i == 9) * 100;
        s.journal_put(&record_at(&format!("d{i}"), i, created, &[Queued, Queued]))
            .expect("put");
    }
    assert_indexes_agree(&s);
    assert_eq!(s.journal_counts().expect("counts").active, 10);

    let mut r = s.journal_get("d3").expect("get").expect("d3");
    r.nodes[0].status = Sending;
    s.journal_put(&r).expect("put");
    assert_indexes_agree(&s);
    r.nodes[0].status = Completed;
    r.nodes[1].status = Completed;
    r.updated_at_ms = 5000;
    s.journal_put(&r).expect("put");
    assert_indexes_agree(&s);
    for (id, statuses) in [("d4", [Failed, Completed]), ("d5", [Cancelled, Cancelled])] {
        let mut r = s.journal_get(id).expect("get").expect(id);
        r.nodes[0].status = statuses[0];
        r.nodes[1].status = statuses[1];
        r.updated_at_ms = 6000;
        s.journal_put(&r).expect("put");
    }
    assert_indexes_agree(&s);
    assert_eq!(
        s.journal_counts().expect("counts"),
        DispatchCounts {
            active: 7,
            completed: 1,
            failed: 1,
            cancelled: 1
        }
    );
    // A replay makes a finished dispatch active again; writing it twice changes nothing.
    let mut r = s.journal_get("d4").expect("get").expect("d4");
    r.nodes[0] = NodeProgress::queued("n1");
    s.journal_put(&r).expect("put");
    s.journal_put(&r).expect("put");
    assert_indexes_agree(&s);
    assert_eq!(s.journal_counts().expect("counts").failed, 0);
}

#[test]
fn pages_go_newest_first_and_cursors_continue_them() {
    let s = Store::open_temporary().expect("open");
    for i in 0..10u64 {
        let st = if i % 3 == 0 { Failed } else { Completed };
        s.journal_put(&record_at(&format!("d{i}"), i, 100 + i, &[st]))
            .expect("put");
    }
    let mut seen = Vec::new();
    let mut before: Option<JournalCursor> = None;
    loop {
        let page = s.journal_page(None, before.as_ref(), 3).expect("page");
        assert!(page.records.len() <= 3);
        seen.extend(ids(&page.records));
        match page.next {
            // Through its text form, as a client sends it back.
            Some(c) => before = Some(c.to_string().parse().expect("cursor")),
            None => break,
        }
    }
    let want: Vec<String> = (0..10).rev().map(|i| format!("d{i}")).collect();
    assert_eq!(seen, want);

    let failed = s
        .journal_page(Some(DispatchState::Failed), None, 2)
        .expect("page");
    assert_eq!(ids(&failed.records), ["d9", "d6"]);
    let rest = s
        .journal_page(Some(DispatchState::Failed), failed.next.as_ref(), 2)
        .expect("page");
    assert_eq!(ids(&rest.records), ["d3", "d0"]);
    assert_eq!(rest.next, None, "a full last page says there is no more");
    assert!(s
        .journal_page(Some(DispatchState::Active), None, 10)
        .expect("page")
        .records
        .is_empty());

    for bad in ["", "zz", "abc", "00ff", "é0"] {
        assert_eq!(bad.parse::<JournalCursor>(), Err(BadCursor), "{bad:?}");
    }
}

#[test]
fn pruning_removes_old_finished_dispatches_with_their_acks_instances_skipped_entries_and_outbox() {
    use crate::Outbox;
    let s = Store::open_temporary().expect("open");
    // d_old: finished long ago; d_live: as old but active; d_new: finished recently.
    let mut old = record_at("d_old", 1, 100, &[Completed, Failed]);
    old.updated_at_ms = 200;
    let live = record_at("d_live", 2, 100, &[Sending]);
    let mut new = record_at("d_new", 3, 100, &[Completed]);
    new.updated_at_ms = 10_000;
    for r in [&old, &live, &new] {
        s.journal_put(r).expect("put");
        s.journal_set_instances(&r.id, &["1.1".into(), "1.2".into()])
            .expect("instances");
        s.journal_ack(&r.id, "n1", "1.1", &stored()).expect("ack");
        let skipped = vec![crate::Skipped {
            file: "README".into(),
            reason: "not DICOM".into(),
        }];
        crate::Findings::journal_set_skipped(&s, &r.id, skipped).expect("skipped");
        s.outbox_push(b"{}", Some(&format!("{}/n1", r.id)), false)
            .expect("push");
    }
    s.outbox_push(b"{}", None, false).expect("push");
    assert_eq!(s.journal_prune(5_000, usize::MAX).expect("prune"), 1);

    assert_eq!(s.journal_get("d_old").expect("get"), None);
    assert_eq!(s.journal_by_correlation("corr_d_old").expect("get"), None);
    assert!(s.journal_instances("d_old").expect("instances").is_empty());
    assert!(s.journal_acks("d_old", "n1").expect("acks").is_empty());
    use crate::Findings;
    assert_eq!(s.journal_skipped("d_old").expect("skipped").total, 0);
    for id in ["d_live", "d_new"] {
        assert_eq!(s.journal_skipped(id).expect("skipped").total, 1, "{id}");
        assert!(s.journal_get(id).expect("get").is_some(), "{id}");
        assert_eq!(s.journal_instances(id).expect("instances").len(), 2);
        assert_eq!(s.journal_acks(id, "n1").expect("acks").len(), 1);
    }
    let pending: Vec<Option<String>> = s
        .outbox_pending(0, 100)
        .expect("pending")
        .into_iter()
        .map(|e| e.coalesce_key)
        .collect();
    assert_eq!(
        pending,
        [
            Some("d_live/n1".to_owned()),
            Some("d_new/n1".to_owned()),
            None
        ]
    );
    assert!(s.outbox.newest.get("d_old/n1").expect("newest").is_none());
    assert_indexes_agree(&s);
    assert_eq!(s.journal_prune(5_000, usize::MAX).expect("prune"), 0);
    // At most `max` per call, oldest finished first.
    assert_eq!(s.journal_prune(u64::MAX, 0).expect("prune"), 0);
    assert_eq!(s.journal_prune(u64::MAX, 1).expect("prune"), 1);
    assert_eq!(ids(&s.journal_all().expect("all")), ["d_live"]);
    assert_indexes_agree(&s);
}

#[test]
fn a_store_written_without_indexes_builds_them_once_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(dir.path()).expect("open");
        for i in 0..6u64 {
            let st = [Queued, Completed, Failed][(i % 3) as usize];
            s.journal_put(&record_at(&format!("d{i}"), i, 50 + i, &[st]))
                .expect("put");
        }
        // As a version before the indexes left it: records only, no marker.
        let t = &s.journal;
        for tree in [&t.index, &t.by_created, &t.by_state, &t.finished, &t.counts] {
            tree.clear().expect("clear");
        }
        index::forget_version(t).expect("forget");
        s.flush().expect("flush");
        assert_eq!(
            s.journal_counts().expect("counts"),
            DispatchCounts::default()
        );
    }
    let s = Store::open(dir.path()).expect("reopen");
    assert_indexes_agree(&s);
    assert_eq!(s.journal_counts().expect("counts").active, 2);
    // Built once: a later open keeps what writes did since.
    s.journal_put(&record_at("d9", 9, 90, &[Cancelled]))
        .expect("put");
    drop(s);
    let s = Store::open(dir.path()).expect("reopen");
    assert_indexes_agree(&s);
    assert_eq!(s.journal_counts().expect("counts").cancelled, 1);
}
