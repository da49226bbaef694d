//! [`evict`] on real files in a temporary data dir (the fake DICOM of `test_support.rs`):
//! the order, each goal, protection, and a crash between an eviction and its unlink.

use std::fs;

use super::evict::order;
use super::test_support::{Env, FakeDicom};
use super::*;

const S1: &str = "1.2.826.1";
const S2: &str = "1.2.826.2";

/// Stores `sop` (study `study`) last used at `ms`; returns its size.
fn put(env: &Env, study: &str, sop: &str, ms: u64) -> u64 {
    let ds = FakeDicom::new(study, "9.1", Some(1), sop).patient("P1");
    let mut rec = env.write_file(&ds);
    rec.stored_at_ms = ms;
    env.store().put_instance(&rec).unwrap();
    rec.size
}

fn run(env: &Env, goal: EvictionGoal, protected: &[&str]) -> EvictionReport {
    evict(env.store(), env.data_dir(), &goal, &|sop, _| {
        if protected.contains(&sop) {
            Keep::This
        } else {
            Keep::No
        }
    })
    .unwrap()
}

fn sops(env: &Env) -> Vec<String> {
    let mut out: Vec<String> = env
        .check_agreement()
        .into_iter()
        .map(|r| r.sop_instance_uid)
        .collect();
    out.sort();
    out
}

#[test]
fn the_least_recently_used_go_first_until_the_cache_fits() {
    let env = Env::new();
    let a = put(&env, S1, "5.1", 100);
    let b = put(&env, S1, "5.2", 200);
    let c = put(&env, S2, "5.3", 300);
    // Sent after the others were stored: now the youngest.
    assert_eq!(
        env.store().touch_instances(&["5.1".into()], 400).unwrap(),
        1
    );
    assert_eq!(order(env.store()), ["5.2", "5.3", "5.1"]);
    assert_eq!(env.store().last_used("5.1").unwrap(), Some(400));

    let report = run(
        &env,
        EvictionGoal {
            max_cache_bytes: Some(a + c),
            ..EvictionGoal::default()
        },
        &[],
    );
    assert_eq!(
        report,
        EvictionReport {
            evicted: 1,
            bytes: b,
            protected: 0
        }
    );
    assert_eq!(sops(&env), ["5.1", "5.3"]);
    assert!(env.store().pending_file_deletions().unwrap().is_empty());
    assert!(env.empty_dirs().is_empty());
    // Within bounds now: a second pass does nothing.
    let again = run(
        &env,
        EvictionGoal {
            max_cache_bytes: Some(a + c),
            ..EvictionGoal::default()
        },
        &[],
    );
    assert_eq!(again, EvictionReport::default());
}

#[test]
fn retention_evicts_what_was_not_used_since_and_keeps_the_rest() {
    let env = Env::new();
    put(&env, S1, "5.1", 100);
    put(&env, S1, "5.2", 200);
    put(&env, S2, "5.3", 300);
    env.store().touch_instances(&["5.1".into()], 500).unwrap();
    // A bump never moves an instance back.
    env.store().touch_instances(&["5.1".into()], 50).unwrap();
    let report = run(
        &env,
        EvictionGoal {
            unused_before_ms: Some(301),
            ..EvictionGoal::default()
        },
        &[],
    );
    assert_eq!(report.evicted, 2);
    assert_eq!(sops(&env), ["5.1"]);
    // The emptied study left the catalog with its last instance.
    assert_eq!(env.store().figures().unwrap().sessions, 1);
}

#[test]
fn protected_instances_are_kept_and_the_pass_goes_on_past_them() {
    let env = Env::new();
    let a = put(&env, S1, "5.1", 100);
    let b = put(&env, S1, "5.2", 200);
    put(&env, S1, "5.3", 300);
    let report = run(
        &env,
        EvictionGoal {
            free_bytes: a.min(b),
            ..EvictionGoal::default()
        },
        &["5.1"],
    );
    assert_eq!(
        report,
        EvictionReport {
            evicted: 1,
            bytes: b,
            protected: 1
        }
    );
    assert_eq!(sops(&env), ["5.1", "5.3"]);

    // Everything too old, but all of it protected: nothing goes.
    let report = run(
        &env,
        EvictionGoal {
            unused_before_ms: Some(u64::MAX),
            ..EvictionGoal::default()
        },
        &["5.1", "5.3"],
    );
    assert_eq!(report.evicted, 0);
    assert_eq!(report.protected, 2);
    assert_eq!(sops(&env), ["5.1", "5.3"]);
}

#[test]
fn a_pass_ends_where_everything_later_is_needed() {
    let env = Env::new();
    put(&env, S1, "5.1", 100);
    put(&env, S1, "5.2", 200);
    put(&env, S1, "5.3", 300);
    let asked = std::cell::Cell::new(0);
    let report = evict(
        env.store(),
        env.data_dir(),
        &EvictionGoal {
            free_bytes: u64::MAX,
            ..EvictionGoal::default()
        },
        &|_, last_used| {
            asked.set(asked.get() + 1);
            if last_used >= 200 {
                Keep::FromHere
            } else {
                Keep::No
            }
        },
    )
    .unwrap();
    assert_eq!(report.evicted, 1);
    assert_eq!(report.protected, 0);
    assert_eq!(asked.get(), 2, "nothing after 5.2 is looked at");
    assert_eq!(sops(&env), ["5.2", "5.3"]);
}

#[test]
fn a_pass_walks_more_than_one_batch() {
    let env = Env::new();
    for i in 0..300u64 {
        put(&env, S1, &format!("5.{i}"), 1000 + i);
    }
    let report = run(
        &env,
        EvictionGoal {
            unused_before_ms: Some(1000 + 290),
            ..EvictionGoal::default()
        },
        &[],
    );
    assert_eq!(report.evicted, 290);
    assert_eq!(sops(&env).len(), 10);
}

#[test]
fn an_eviction_cut_short_before_its_file_is_unlinked_is_finished_at_start_up() {
    let mut env = Env::new();
    put(&env, S1, "5.1", 100);
    put(&env, S1, "5.2", 200);
    let path = env.store().get_instance("5.1").unwrap().unwrap().path;
    // The pass's transaction committed and flushed; killed before the unlink.
    let deletion = env
        .store()
        .catalog
        .delete(&["5.1".to_owned()], false, |_, _| Ok(true))
        .unwrap();
    env.store().flush().unwrap();
    assert_ne!(deletion.ticket, NO_TICKET);
    assert!(env.abs(&path).exists());
    env.reopen();
    let report = env.repair();
    assert_eq!(report.finished_deletions, 1);
    assert!(!env.abs(&path).exists());
    assert_eq!(sops(&env), ["5.2"]);
    assert_eq!(order(env.store()), ["5.2"]);
}

#[test]
fn an_eviction_killed_after_the_unlink_leaves_index_and_files_agreeing() {
    let mut env = Env::new();
    put(&env, S1, "5.1", 100);
    put(&env, S1, "5.2", 200);
    let path = env.store().get_instance("5.1").unwrap().unwrap().path;
    env.store()
        .catalog
        .delete(&["5.1".to_owned()], false, |_, _| Ok(true))
        .unwrap();
    env.store().flush().unwrap();
    // Unlinked, killed before the ticket was completed.
    fs::remove_file(env.abs(&path)).unwrap();
    env.reopen();
    let report = env.repair();
    assert_eq!(report.finished_deletions, 1);
    assert_eq!(report.dropped_entries, 0);
    assert_eq!(sops(&env), ["5.2"]);
    // Nothing left to do at the next start.
    assert_eq!(env.repair(), RepairReport::default());
}

#[test]
fn an_older_store_gets_its_last_used_index_at_start_up() {
    let mut env = Env::new();
    put(&env, S1, "5.1", 200);
    put(&env, S1, "5.2", 100);
    env.store().catalog.lru.clear().unwrap();
    // A stale entry for an instance that is gone.
    env.store()
        .catalog
        .lru
        .insert(lru::sop_key("5.9"), &7u64.to_be_bytes()[..])
        .unwrap();
    env.store().flush().unwrap();
    env.reopen();
    let report = env.repair();
    assert_eq!(report.fixed_index_entries, 5);
    assert_eq!(order(env.store()), ["5.2", "5.1"]);
    assert_eq!(env.store().last_used("5.9").unwrap(), None);
    assert_eq!(env.repair(), RepairReport::default());
}
