//! One test suite for [`SeenEvents`], written against the trait and run on both a
//! temporary and an on-disk store; plus the store-specific cases (reopen, corruption).

use super::*;

const T0: u64 = 1_760_000_000_000;

/// Runs `check` on a temporary store and on a store in a fresh directory.
fn on_each_store(check: impl Fn(&dyn SeenEvents)) {
    check(&Store::open_temporary().unwrap());
    let dir = tempfile::tempdir().unwrap();
    check(&Store::open(dir.path()).unwrap());
}

#[test]
fn unknown_id_is_not_seen() {
    on_each_store(|s| {
        assert!(!s.is_seen("corr_1", T0).unwrap());
        assert_eq!(s.seen_count().unwrap(), 0);
    });
}

#[test]
fn mark_then_duplicate() {
    on_each_store(|s| {
        assert!(s.mark_seen("corr_1", T0).unwrap());
        assert!(s.is_seen("corr_1", T0).unwrap());
        assert!(!s.mark_seen("corr_1", T0 + 1).unwrap());
        assert!(!s.is_seen("corr_2", T0).unwrap());
        assert_eq!(s.seen_count().unwrap(), 1);
    });
}

#[test]
fn window_expires_after_seven_days() {
    on_each_store(|s| {
        s.mark_seen("corr_1", T0).unwrap();
        assert!(s.is_seen("corr_1", T0 + SEEN_WINDOW_MS - 1).unwrap());
        assert!(!s.is_seen("corr_1", T0 + SEEN_WINDOW_MS).unwrap());
        // Expired: marking again counts as new and restarts the window.
        let later = T0 + SEEN_WINDOW_MS;
        assert!(s.mark_seen("corr_1", later).unwrap());
        assert!(s.is_seen("corr_1", later + SEEN_WINDOW_MS - 1).unwrap());
        assert!(!s.mark_seen("corr_1", later + 5).unwrap());
    });
}

#[test]
fn duplicate_does_not_extend_window() {
    on_each_store(|s| {
        s.mark_seen("corr_1", T0).unwrap();
        assert!(!s.mark_seen("corr_1", T0 + SEEN_WINDOW_MS - 1).unwrap());
        assert!(!s.is_seen("corr_1", T0 + SEEN_WINDOW_MS).unwrap());
    });
}

#[test]
fn record_from_the_future_counts_as_seen() {
    on_each_store(|s| {
        s.mark_seen("corr_1", T0 + 60_000).unwrap();
        assert!(s.is_seen("corr_1", T0).unwrap());
        assert!(!s.mark_seen("corr_1", T0).unwrap());
    });
}

#[test]
fn purge_removes_only_expired() {
    on_each_store(|s| {
        s.mark_seen("old", T0).unwrap();
        s.mark_seen("edge", T0 + 1).unwrap();
        s.mark_seen("new", T0 + SEEN_WINDOW_MS).unwrap();
        let now = T0 + SEEN_WINDOW_MS;
        assert_eq!(s.purge_seen(now).unwrap(), 1);
        assert_eq!(s.seen_count().unwrap(), 2);
        assert!(s.is_seen("edge", now).unwrap());
        assert!(s.is_seen("new", now).unwrap());
        assert_eq!(s.purge_seen(now).unwrap(), 0);
        assert_eq!(s.purge_seen(now + 1).unwrap(), 1);
        assert_eq!(s.seen_count().unwrap(), 1);
    });
}

#[test]
fn seen_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert!(store.mark_seen("corr_1", T0).unwrap());
        // No explicit flush: mark_seen itself must have made the record durable.
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(store.is_seen("corr_1", T0 + 1).unwrap());
    assert!(!store.mark_seen("corr_1", T0 + 2).unwrap());
    assert_eq!(store.seen_count().unwrap(), 1);
}

#[test]
fn corrupt_record_is_a_typed_error_and_purged() {
    let store = Store::open_temporary().unwrap();
    store.seen.events.insert("corr_bad", &b"xyz"[..]).unwrap();
    let is_corrupt = |r: Result<bool, StoreError>| matches!(r, Err(StoreError::Corrupt { tree: SEEN_TREE, key }) if key == "corr_bad");
    assert!(is_corrupt(store.is_seen("corr_bad", T0)));
    assert!(is_corrupt(store.mark_seen("corr_bad", T0)));
    store.mark_seen("corr_ok", T0).unwrap();
    assert_eq!(store.purge_seen(T0).unwrap(), 1);
    assert!(!store.is_seen("corr_bad", T0).unwrap());
    assert!(store.mark_seen("corr_bad", T0).unwrap());
    assert_eq!(store.seen_count().unwrap(), 2);
}

#[test]
fn concurrent_marks_of_one_id_admit_exactly_one() {
    let store = Store::open_temporary().unwrap();
    let winners: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                scope.spawn(move || store.mark_seen("corr_race", T0).unwrap())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum()
    });
    assert_eq!(winners, 1);
}
