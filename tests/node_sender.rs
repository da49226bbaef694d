//! One sender pool per PACS node, through the real binary with real dcmtk
//! `storescp` nodes: the node's `max_associations` holds however many
//! dispatches send to it, and killing one node's pool restarts that pool
//! alone while everything still arrives once (APPLIANCE.md "Dispatch jobs").
#![cfg(feature = "fault-injection")]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::EntityKind;
use support::*;

const T: Duration = Duration::from_secs(30);

fn study(per: usize, bytes: usize) -> (bytes::Bytes, BTreeSet<String>) {
    let (zip, inst) = StudySpec::simple(1, per, bytes)
        .zip_bytes()
        .expect("study zip");
    (zip, inst.into_iter().map(|i| i.sop_instance_uid).collect())
}

/// Our established TCP connections to `port` (the sender's side of every
/// association; a connection we closed leaves this state at once, whereas
/// the receiver's side may linger a moment), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let needle = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[2].ends_with(&needle) && cols[3] == "01"
        })
        .count()
}

/// Samples [`established_to`] until stopped; returns the most seen at once.
fn watch_associations(port: u16) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let most = AtomicUsize::new(0);
        while !s.load(Ordering::Relaxed) {
            let n = established_to(port);
            most.fetch_max(n, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2));
        }
        most.into_inner()
    });
    (stop, h)
}

fn node_with_cap(id: &str, ae: &str, port: u16, max: u32) -> Value {
    let mut n = node(id, ae, port);
    n["max_associations"] = json!(max);
    n
}

#[test]
fn two_dispatches_to_one_node_never_open_more_than_its_max_associations() {
    let sim = sim();
    // --fork: one process per association, so the node takes as many as we open.
    let scp = StoreScp::start_on(free_port(), "PACS_A", &["--fork"]);
    let (zip_a, sops_a) = study(40, 64 * 1024);
    let (zip_b, sops_b) = study(40, 64 * 1024);
    sim.put_download(EntityKind::Session, "sess_a", zip_a);
    sim.put_download(EntityKind::Session, "sess_b", zip_b);
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node_with_cap("node_1", "PACS_A", scp.port, 2)]),
        None,
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    // The node monitor's first C-ECHO is its own association (once a minute
    // after that): let it be done before counting.
    eventually(T, || {
        (app.get_json("/api/nodes")[0]["online"] == true).then_some(())
    })
    .expect("node online");
    eventually(T, || (established_to(scp.port) == 0).then_some(())).expect("echo closed");
    let (stop, watcher) = watch_associations(scp.port);
    for (id, corr) in [("sess_a", "corr_a"), ("sess_b", "corr_b")] {
        assert!(sim.send_event(&dispatch_event("session", id, corr, &["node_1"], "normal")));
    }
    for corr in ["corr_a", "corr_b"] {
        let last = wait_final(&sim, corr, "node_1", Duration::from_secs(90))
            .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
        assert_eq!(last["status"], "completed", "{last}");
    }
    stop.store(true, Ordering::Relaxed);
    let most = watcher.join().expect("watcher");
    assert!(
        most <= 2,
        "{most} associations open at once to a node capped at 2"
    );
    assert!(most >= 1, "the watcher saw the associations");
    let all: BTreeSet<String> = sops_a.union(&sops_b).cloned().collect();
    assert_eq!(scp.sop_uids(), all);
    let nodes = app.get_json("/api/nodes");
    let sender = &nodes[0]["sender"];
    assert_eq!(sender["associations_max"], 2, "{nodes}");
    assert_eq!(sender["sent_as_is"], 80, "{nodes}");
    assert_eq!(sender["queued"], 0, "{nodes}");
}

#[test]
fn killing_one_nodes_pool_restarts_it_alone_and_everything_arrives_once() {
    let sim = sim();
    let scp_1 = StoreScp::start_on(free_port(), "PACS_A", &["--fork"]);
    let scp_2 = StoreScp::start_on(free_port(), "PACS_B", &["--fork"]);
    let mut all = BTreeSet::new();
    for i in 0..3 {
        let (zip, sops) = study(40, 48 * 1024);
        sim.put_download(EntityKind::Session, &format!("sess_k{i}"), zip);
        all.extend(sops);
    }
    let proxy = json!({"max_concurrent_dispatches": 3});
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([
            node_with_cap("node_1", "PACS_A", scp_1.port, 2),
            node_with_cap("node_2", "PACS_B", scp_2.port, 2)
        ]),
        Some(proxy),
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    for i in 0..3 {
        assert!(sim.send_event(&dispatch_event(
            "session",
            &format!("sess_k{i}"),
            &format!("corr_k{i}"),
            &["node_1", "node_2"],
            "normal"
        )));
    }
    // Once node_1 is sending, kill its pool.
    eventually(T, || (scp_1.store_requests() >= 5).then_some(()))
        .unwrap_or_else(|| panic!("node_1 never started:\n{}", app.logs()));
    assert!(sim.send_event(&event(
        "test.panic",
        "kill_pool_1",
        json!({"actor": "node_sender", "node_id": "node_1"})
    )));
    for i in 0..3 {
        for node in ["node_1", "node_2"] {
            let last = wait_final(&sim, &format!("corr_k{i}"), node, Duration::from_secs(90))
                .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
            assert_eq!(
                last["status"],
                "completed",
                "{node}: {last}\n{}",
                app.logs()
            );
        }
    }
    assert_eq!(scp_1.sop_uids(), all);
    assert_eq!(scp_2.sop_uids(), all);
    let nodes = app.get_json("/api/nodes");
    // Each instance stored once per node (a forked storescp's shared log
    // cannot be counted reliably; the pools count every acknowledgement).
    for id in ["node_1", "node_2"] {
        let n = nodes
            .as_array()
            .and_then(|a| a.iter().find(|n| n["node_id"] == id).cloned())
            .unwrap_or_default();
        assert_eq!(n["sender"]["sent_as_is"], all.len(), "{id}: {n}");
    }
    let restarts = |id: &str| {
        nodes
            .as_array()
            .and_then(|a| a.iter().find(|n| n["node_id"] == id))
            .map(|n| n["sender"]["restarts"].clone())
            .unwrap_or_default()
    };
    assert!(
        restarts("node_1").as_u64().is_some_and(|r| r >= 1),
        "{nodes}"
    );
    assert_eq!(
        restarts("node_2"),
        0,
        "the other node's pool never noticed: {nodes}"
    );
    let actors = app.get_json("/api/actors");
    let senders = actors
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "node-senders").cloned())
        .unwrap_or_default();
    assert_eq!(senders["state"], "running", "{actors}");
    assert!(
        senders["restarts"].as_u64().is_some_and(|r| r >= 1),
        "{actors}"
    );
}
