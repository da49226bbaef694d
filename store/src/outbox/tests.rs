//! One test suite for [`Outbox`], written against the trait and run on both a temporary
//! and an on-disk store; plus the store-specific cases (reopen, corruption, repair).

use super::*;

/// Runs `check` on a temporary store and on a store in a fresh directory.
fn on_each_store(check: impl Fn(&dyn Outbox)) {
    check(&Store::open_temporary().unwrap());
    let dir = tempfile::tempdir().unwrap();
    check(&Store::open(dir.path()).unwrap());
}

/// The events of every pending entry, in order.
fn events(s: &dyn Outbox) -> Vec<String> {
    s.outbox_pending(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.event).unwrap())
        .collect()
}

fn push(s: &dyn Outbox, event: &str, key: Option<&str>, progress: bool) -> u64 {
    s.outbox_push(event.as_bytes(), key, progress).unwrap()
}

#[test]
fn empty_outbox() {
    on_each_store(|s| {
        assert!(s.outbox_pending(0, 10).unwrap().is_empty());
        assert_eq!(s.outbox_len().unwrap(), 0);
        assert_eq!(s.outbox_ack(u64::MAX).unwrap(), 0);
    });
}

#[test]
fn push_appends_in_order_with_content() {
    on_each_store(|s| {
        let a = push(s, "a", Some("d1/n1"), false);
        let b = push(s, "b", None, true);
        let c = push(s, "c", Some("d1/n2"), true);
        assert_eq!(a, FIRST_SEQ);
        assert!(a < b && b < c);
        assert_eq!(
            s.outbox_pending(0, 10).unwrap(),
            vec![
                OutboxEntry {
                    seq: a,
                    coalesce_key: Some("d1/n1".into()),
                    progress: false,
                    event: b"a".to_vec()
                },
                OutboxEntry {
                    seq: b,
                    coalesce_key: None,
                    progress: true,
                    event: b"b".to_vec()
                },
                OutboxEntry {
                    seq: c,
                    coalesce_key: Some("d1/n2".into()),
                    progress: true,
                    event: b"c".to_vec()
                },
            ]
        );
        assert_eq!(s.outbox_len().unwrap(), 3);
    });
}

#[test]
fn pending_honours_after_and_limit() {
    on_each_store(|s| {
        let seqs: Vec<u64> = (0..5)
            .map(|i| push(s, &format!("e{i}"), None, false))
            .collect();
        let page: Vec<u64> = s
            .outbox_pending(seqs[1], 2)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(page, vec![seqs[2], seqs[3]]);
        assert!(s.outbox_pending(seqs[4], 10).unwrap().is_empty());
        assert!(s.outbox_pending(u64::MAX, 10).unwrap().is_empty());
        assert!(s.outbox_pending(0, 0).unwrap().is_empty());
    });
}

#[test]
fn progress_replaces_newest_progress_of_same_key() {
    on_each_store(|s| {
        push(s, "p1", Some("k"), true);
        push(s, "other", Some("j"), true);
        let p2 = push(s, "p2", Some("k"), true);
        assert_eq!(events(s), ["other", "p2"]);
        assert_eq!(s.outbox_pending(0, 10).unwrap()[1].seq, p2);
        push(s, "p3", Some("k"), true);
        assert_eq!(events(s), ["other", "p3"]);
    });
}

#[test]
fn state_change_after_progress_prevents_coalescing() {
    on_each_store(|s| {
        push(s, "p1", Some("k"), true);
        push(s, "retrying", Some("k"), false);
        push(s, "p2", Some("k"), true);
        assert_eq!(events(s), ["p1", "retrying", "p2"]);
        // The newest of key k is now progress again: the next progress replaces it only.
        push(s, "p3", Some("k"), true);
        assert_eq!(events(s), ["p1", "retrying", "p3"]);
    });
}

#[test]
fn state_changes_never_replace_anything() {
    on_each_store(|s| {
        push(s, "p1", Some("k"), true);
        push(s, "completed", Some("k"), false);
        push(s, "completed again", Some("k"), false);
        assert_eq!(events(s), ["p1", "completed", "completed again"]);
    });
}

#[test]
fn progress_without_key_is_never_coalesced() {
    on_each_store(|s| {
        push(s, "p1", None, true);
        push(s, "p2", None, true);
        assert_eq!(events(s), ["p1", "p2"]);
    });
}

#[test]
fn delivered_progress_is_not_replaced() {
    on_each_store(|s| {
        let p1 = push(s, "p1", Some("k"), true);
        assert_eq!(s.outbox_ack(p1).unwrap(), 1);
        push(s, "p2", Some("k"), true);
        assert_eq!(events(s), ["p2"]);
        // p2 is now the newest of k and pending: it is replaced.
        push(s, "p3", Some("k"), true);
        assert_eq!(events(s), ["p3"]);
    });
}

#[test]
fn ack_removes_only_up_to() {
    on_each_store(|s| {
        let seqs: Vec<u64> = (0..4)
            .map(|i| push(s, &format!("e{i}"), Some("k"), false))
            .collect();
        assert_eq!(s.outbox_ack(seqs[1]).unwrap(), 2);
        assert_eq!(events(s), ["e2", "e3"]);
        assert_eq!(s.outbox_ack(seqs[1]).unwrap(), 0);
        assert_eq!(s.outbox_ack(0).unwrap(), 0);
        assert_eq!(s.outbox_len().unwrap(), 2);
        assert_eq!(s.outbox_ack(u64::MAX).unwrap(), 2);
        assert_eq!(s.outbox_len().unwrap(), 0);
    });
}

#[test]
fn ack_spanning_several_batches() {
    on_each_store(|s| {
        let n = ACK_BATCH * 2 + 3;
        let seqs: Vec<u64> = (0..n)
            .map(|i| push(s, &i.to_string(), None, false))
            .collect();
        assert_eq!(s.outbox_ack(seqs[n - 2]).unwrap(), n - 1);
        assert_eq!(events(s), [(n - 1).to_string()]);
    });
}

#[test]
fn ack_drops_index_entries_of_delivered_keys() {
    let store = Store::open_temporary().unwrap();
    let a = store.outbox_push(b"a", Some("k1"), true).unwrap();
    store.outbox_push(b"b", Some("k2"), false).unwrap();
    store.outbox_ack(a).unwrap();
    let keys: Vec<IVec> = store
        .outbox
        .newest
        .iter()
        .keys()
        .map(Result::unwrap)
        .collect();
    assert_eq!(keys, vec![IVec::from("k2")]);
    store.outbox_ack(u64::MAX).unwrap();
    assert!(store.outbox.newest.is_empty());
}

#[test]
fn order_and_sequence_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let store = Store::open(dir.path()).unwrap();
        push(&store, "a", Some("k"), true);
        push(&store, "b", None, false);
        push(&store, "c", Some("k"), true)
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(events(&store), ["b", "c"]);
    // Coalescing still sees "c" as the newest progress of k after the reopen.
    let d = push(&store, "d", Some("k"), true);
    assert!(d > last);
    assert_eq!(events(&store), ["b", "d"]);
}

#[test]
fn sequence_never_goes_back_when_everything_was_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let store = Store::open(dir.path()).unwrap();
        push(&store, "a", None, false);
        let last = push(&store, "b", None, false);
        store.outbox_ack(last).unwrap();
        last
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 0);
    assert_eq!(push(&store, "c", None, false), last + 1);
}

#[test]
fn concurrent_pushes_get_distinct_ordered_sequences() {
    let store = Store::open_temporary().unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..25 {
                    store
                        .outbox_push(format!("{t}-{i}").as_bytes(), None, false)
                        .unwrap();
                }
            });
        }
    });
    let pending = store.outbox_pending(0, usize::MAX).unwrap();
    let seqs: Vec<u64> = pending.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (FIRST_SEQ..FIRST_SEQ + 100).collect::<Vec<_>>());
    // Each thread's own events stay in the order it pushed them.
    for t in 0..4 {
        let mine: Vec<String> = pending
            .iter()
            .map(|e| String::from_utf8(e.event.clone()).unwrap())
            .filter(|e| e.starts_with(&format!("{t}-")))
            .collect();
        assert_eq!(
            mine,
            (0..25).map(|i| format!("{t}-{i}")).collect::<Vec<_>>()
        );
    }
}

#[test]
fn corrupt_entry_is_a_typed_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        push(&store, "a", Some("k"), true);
        let b = push(&store, "b", Some("k2"), false);
        push(&store, "c", None, false);
        store
            .outbox
            .entries
            .insert(&u64_key(b)[..], &b"\xff"[..])
            .unwrap();
        store.flush().unwrap();
    }
    // Opening still works; reading reports the damaged entry by tree and sequence number.
    let store = Store::open(dir.path()).unwrap();
    match store.outbox_pending(0, 10) {
        Err(StoreError::Corrupt {
            tree: OUTBOX_TREE,
            key,
        }) => assert_eq!(key, "2"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.outbox_pending(0, 1).unwrap().len(), 1);
    assert_eq!(events_after(&store, 2), ["c"]);
    // Pushing progress for a key whose newest entry is damaged does not coalesce it away.
    push(&store, "k2 progress", Some("k2"), true);
    assert_eq!(store.outbox_len().unwrap(), 4);
    // The caller can acknowledge past it.
    assert_eq!(store.outbox_ack(2).unwrap(), 2);
    assert_eq!(events(&store), ["c", "k2 progress"]);
}

fn events_after(s: &dyn Outbox, after: u64) -> Vec<String> {
    s.outbox_pending(after, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.event).unwrap())
        .collect()
}

#[test]
fn damaged_index_disables_coalescing_until_reopen_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        push(&store, "p1", Some("k"), true);
        store.outbox.newest.insert("k", &b"bad"[..]).unwrap();
        store
            .outbox
            .newest
            .insert("stray", &u64_key(99)[..])
            .unwrap();
        // Unreadable index: the push succeeds and replaces nothing.
        push(&store, "p2", Some("k"), true);
        assert_eq!(events(&store), ["p1", "p2"]);
        store.outbox.newest.insert("k", &b"bad"[..]).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(store.outbox.newest.get("stray").unwrap().is_none());
    push(&store, "p3", Some("k"), true);
    assert_eq!(events(&store), ["p1", "p3"]);
}

#[test]
fn damaged_counter_is_a_typed_error_and_repaired_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let store = Store::open(dir.path()).unwrap();
        push(&store, "a", None, false);
        let last = push(&store, "b", None, false);
        store.outbox.meta.insert(NEXT_SEQ_KEY, &b"?"[..]).unwrap();
        match store.outbox_push(b"c", None, false) {
            Err(StoreError::Corrupt {
                tree: META_TREE, ..
            }) => {}
            other => panic!("expected Corrupt, got {other:?}"),
        }
        store
            .outbox
            .meta
            .insert(NEXT_SEQ_KEY, &u64_key(1)[..])
            .unwrap();
        store.flush().unwrap();
        last
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(push(&store, "c", None, false), last + 1);
    assert_eq!(events(&store), ["a", "b", "c"]);
}
