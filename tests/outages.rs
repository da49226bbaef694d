//! Node outages and deletions during a download, through the real binary with
//! real dcmtk `storescp` nodes killed and restarted by the test (APPLIANCE.md
//! "Running for months unattended": node outages, deletion during a download).
//! Retry budgets are made small through `proxy.json` and the C-ECHO period
//! through the test build's `LAMINATE_PROXY_TEST_ECHO_EVERY_MS`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use laminate_proxy::sim::{DownloadStep, EntityKind};
use support::*;

const T: Duration = Duration::from_secs(30);

/// An appliance with these nodes and settings, a C-ECHO every half second.
fn appliance(sim: &BackendSim, nodes: Value, proxy: Value) -> Appliance {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.keep_dir(tmp);
    app.write_config("nodes.json", &json!({ "nodes": nodes }));
    app.write_config("proxy.json", &proxy);
    app.env
        .push(("LAMINATE_PROXY_TEST_ECHO_EVERY_MS".into(), "500".into()));
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    app
}

fn has_status(sim: &BackendSim, corr: &str, node: &str, status: &str, timeout: Duration) -> bool {
    let (c, n, s) = (corr.to_owned(), node.to_owned(), status.to_owned());
    sim.wait_frame(timeout, move |f| {
        f["event_type"] == "dispatch.status"
            && f["correlation_id"] == c.as_str()
            && f["payload"]["node_id"] == n.as_str()
            && f["payload"]["status"] == s.as_str()
    })
    .is_some()
}

fn node_view(app: &Appliance, corr: &str) -> Value {
    app.get_json(&format!("/api/dispatches/{corr}"))["nodes"][0].clone()
}

#[test]
fn a_pacs_down_past_its_retries_is_parked_through_a_restart_and_completes_by_itself_when_it_returns(
) {
    let sim = sim();
    let mut scp = StoreScp::start("PACS_A");
    let port = scp.port;
    let (zip, sops) = study(4, 100, 8 * 1024);
    sim.put_download(EntityKind::Session, "sess_park", zip);
    let mut app = appliance(
        &sim,
        json!([node("node_1", "PACS_A", port)]),
        json!({"node_retry_max_attempts": 2, "node_retry_max_backoff_s": 1}),
    );
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_park",
        "c_park",
        &["node_1"],
        "normal"
    )));
    eventually(Duration::from_secs(60), || {
        (scp.store_requests() >= 40).then_some(())
    })
    .unwrap_or_else(|| panic!("sending started:\n{}", app.logs()));
    // The PACS goes down mid-study, for longer than the retry budget.
    scp.stop();
    let failed = wait_final(&sim, "c_park", "node_1", T)
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("gave up after")),
        "{failed}"
    );
    let acknowledged = failed["files_sent"].as_u64().expect("files_sent") as usize;
    assert!(acknowledged < sops.len(), "finished before the outage");
    let parked = node_view(&app, "c_park");
    assert!(parked["parked_until"].is_string(), "{parked}");
    assert_eq!(app.status()["dispatches"]["parked"], 1);
    let page = app.get("/").expect("page").1;
    assert!(page.contains("parked until"), "the page says it is parked");
    // Still down: it stays parked, nothing replays it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(app.get_json("/api/dispatches/c_park")["replays"], 0);
    // Parking is journaled: a restart keeps it.
    assert_eq!(app.terminate(), Some(0), "{}", app.logs());
    app.spawn();
    app.wait_ready(T);
    assert!(node_view(&app, "c_park")["parked_until"].is_string());
    sim.clear_frames();
    // The PACS comes back: the dispatch is replayed for it, from `queued`, and
    // completes; each instance it had not acknowledged arrives once.
    let back = StoreScp::start_on(port, "PACS_A", &[]);
    assert!(
        has_status(
            &sim,
            "c_park",
            "node_1",
            "completed",
            Duration::from_secs(60)
        ),
        "not completed after the node came back:\n{}",
        app.logs()
    );
    let seen: Vec<Value> = statuses(&sim, "c_park", "node_1");
    assert_eq!(seen[0]["status"], "queued", "{seen:?}");
    assert_eq!(
        back.store_requests(),
        sops.len() - acknowledged,
        "every unacknowledged instance once, nothing acknowledged again"
    );
    let all: BTreeSet<String> = scp.sop_uids().union(&back.sop_uids()).cloned().collect();
    assert!(
        all == sops,
        "{} of {} instances arrived",
        all.len(),
        sops.len()
    );
    let d = app.get_json("/api/dispatches/c_park");
    assert_eq!(d["state"], "completed");
    assert_eq!(d["replays"], 1);
    assert_eq!(d["nodes"][0]["parked_until"], Value::Null);
    assert_eq!(app.status()["dispatches"]["parked"], 0);
}

#[test]
fn two_dispatches_retrying_a_down_node_do_not_delay_a_third_to_a_healthy_node() {
    let sim = sim();
    let up = StoreScp::start("PACS_UP");
    let down = DownPort::reserve();
    let (zip, sops) = study(1, 3, 2048);
    for id in ["sess_d1", "sess_d2", "sess_ok"] {
        sim.put_download(EntityKind::Session, id, zip.clone());
    }
    // The default budget (10 tries, up to 300 s apart) and two dispatch slots.
    let app = appliance(
        &sim,
        json!([
            node("down", "PACS_DOWN", down.port()),
            node("up", "PACS_UP", up.port)
        ]),
        json!({"max_concurrent_dispatches": 2}),
    );
    for (id, c) in [("sess_d1", "c_d1"), ("sess_d2", "c_d2")] {
        assert!(sim.send_event(&dispatch_event("session", id, c, &["down"], "high")));
    }
    for c in ["c_d1", "c_d2"] {
        assert!(
            has_status(&sim, c, "down", "retrying", T),
            "{c} not retrying:\n{}",
            app.logs()
        );
    }
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_ok",
        "c_ok",
        &["up"],
        "low"
    )));
    let last = wait_final(&sim, "c_ok", "up", T)
        .unwrap_or_else(|| panic!("the healthy node's dispatch waited:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(up.sop_uids(), sops);
    for c in ["c_d1", "c_d2"] {
        assert_eq!(
            app.get_json(&format!("/api/dispatches/{c}"))["state"],
            "active"
        );
    }
}

#[test]
fn a_retrying_dispatch_retries_at_once_when_its_node_answers_again() {
    let sim = sim();
    let port = DownPort::reserve();
    let (zip, sops) = study(1, 4, 2048);
    sim.put_download(EntityKind::Session, "sess_w", zip);
    let app = appliance(
        &sim,
        json!([node("node_1", "PACS_A", port.port())]),
        json!({"node_retry_max_attempts": 20, "node_retry_max_backoff_s": 600}),
    );
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_w",
        "c_w",
        &["node_1"],
        "normal"
    )));
    // Waits of 2, 4, 8 s, then one of 16 s.
    sim.wait_frame(Duration::from_secs(60), |f| {
        f["correlation_id"] == "c_w"
            && f["payload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("next try in 16 s"))
    })
    .unwrap_or_else(|| {
        panic!(
            "no 16 s backoff; statuses {:?}\n{}",
            statuses(&sim, "c_w", "node_1"),
            app.logs()
        )
    });
    let scp = StoreScp::start_on(port.release(), "PACS_A", &[]);
    // Well before the 16 s are up: the node's answer to C-ECHO ended the wait.
    let last = wait_final(&sim, "c_w", "node_1", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still waiting out its backoff:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(scp.sop_uids(), sops);
}

#[test]
fn an_operators_replay_takes_a_dispatch_out_of_parking_and_it_runs_one_replay() {
    let sim = sim();
    let port = DownPort::reserve();
    let (zip, sops) = study(1, 3, 2048);
    sim.put_download(EntityKind::Session, "sess_op", zip);
    let app = appliance(
        &sim,
        json!([node("node_1", "PACS_A", port.port())]),
        json!({"node_retry_max_attempts": 1, "node_retry_max_backoff_s": 60}),
    );
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_op",
        "c_op",
        &["node_1"],
        "normal"
    )));
    let failed = wait_final(&sim, "c_op", "node_1", T).expect("final");
    assert_eq!(failed["status"], "failed");
    assert!(node_view(&app, "c_op")["parked_until"].is_string());
    // Refused while its job still winds down (it reported `failed` first).
    eventually(T, || {
        let (code, _) = app.post("/api/dispatches/c_op/replay", None)?;
        (code == 200).then_some(())
    })
    .expect("the replay is accepted");
    assert_eq!(node_view(&app, "c_op")["parked_until"], Value::Null);
    assert_eq!(app.status()["dispatches"]["parked"], 0);
    // Its retry waits a minute; the node comes back meanwhile. The running
    // replay retries at once; no second replay starts.
    assert!(has_status(&sim, "c_op", "node_1", "retrying", T));
    let scp = StoreScp::start_on(port.release(), "PACS_A", &[]);
    assert!(
        has_status(&sim, "c_op", "node_1", "completed", T),
        "{}",
        app.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    let d = app.get_json("/api/dispatches/c_op");
    assert_eq!(d["replays"], 1, "{d}");
    assert_eq!(d["state"], "completed");
    assert_eq!(scp.store_requests(), sops.len());
}

/// A deletion event for a session or scan.
fn deleted(kind: &str, corr: &str, entity: &str, payload: Value) -> Value {
    let mut ev = event(&format!("{kind}.deleted"), corr, payload);
    ev["entity_type"] = json!(kind);
    ev["entity_id"] = json!(entity);
    ev
}

fn spool_entries(app: &Appliance) -> Vec<String> {
    std::fs::read_dir(app.data_path("spool"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn deleting_a_session_or_a_scan_while_it_downloads_cancels_the_dispatch_and_removes_its_spool() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, _) = study(1, 40, 16 * 1024);
    let half = zip.len() / 2;
    sim.put_download(EntityKind::Session, "sess_del", zip.clone());
    sim.put_download(EntityKind::Scan, "scan_del", zip);
    // Half the archive, then a body that never comes: the download is stuck
    // part-way with half the archive in the spool.
    for (kind, id) in [
        (EntityKind::Session, "sess_del"),
        (EntityKind::Scan, "scan_del"),
    ] {
        sim.script_download(
            kind,
            id,
            vec![DownloadStep::CutAfter(half), DownloadStep::Stall],
        );
    }
    let app = appliance(
        &sim,
        json!([node("node_1", "PACS_A", scp.port)]),
        json!({"max_concurrent_dispatches": 4, "node_retry_max_backoff_s": 1}),
    );
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_del",
        "c_sdel",
        &["node_1"],
        "normal"
    )));
    assert!(sim.send_event(&dispatch_event(
        "scan",
        "scan_del",
        "c_kdel",
        &["node_1"],
        "normal"
    )));
    for c in ["c_sdel", "c_kdel"] {
        assert!(
            has_status(&sim, c, "node_1", "retrying", T),
            "{}",
            app.logs()
        );
    }
    // Downloading again (resumed), into the stall.
    eventually(T, || (sim.download_requests().len() >= 4).then_some(()))
        .expect("both stuck in their second body request");
    assert_eq!(
        spool_entries(&app).len(),
        2,
        "both archives part-way in the spool"
    );
    assert!(sim.send_event(&deleted(
        "session",
        "del_s",
        "sess_del",
        json!({"study_instance_uid": "1.2.3.4"})
    )));
    assert!(sim.send_event(&deleted(
        "scan",
        "del_k",
        "scan_del",
        json!({"study_instance_uid": "1.2.3.5", "scan_number": 1})
    )));
    for c in ["c_sdel", "c_kdel"] {
        let last = wait_final(&sim, c, "node_1", T)
            .unwrap_or_else(|| panic!("{c} not cancelled:\n{}", app.logs()));
        assert_eq!(last["status"], "cancelled", "{c}: {last}");
    }
    eventually(T, || spool_entries(&app).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("spool left: {:?}", spool_entries(&app)));
    assert_eq!(scp.store_requests(), 0);
    assert_eq!(app.status()["dispatches"]["active"], 0);
}

#[test]
fn cancelling_a_parked_dispatch_stops_its_automatic_replay_and_it_stays_failed() {
    let sim = sim();
    let port = DownPort::reserve();
    sim.put_download(EntityKind::Session, "sess_stop", study(1, 2, 1024).0);
    let app = appliance(
        &sim,
        json!([node("node_1", "PACS_A", port.port())]),
        json!({"node_retry_max_attempts": 0}),
    );
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_stop",
        "c_stop",
        &["node_1"],
        "normal"
    )));
    assert_eq!(
        wait_final(&sim, "c_stop", "node_1", T).expect("final")["status"],
        "failed"
    );
    assert!(node_view(&app, "c_stop")["parked_until"].is_string());
    let (code, body) = app
        .post("/api/dispatches/c_stop/cancel", None)
        .expect("answer");
    assert_eq!(code, 200, "{body}");
    let d = app.get_json("/api/dispatches/c_stop");
    assert_eq!(d["state"], "failed");
    assert_eq!(d["nodes"][0]["parked_until"], Value::Null);
    // Not parked any more: a second cancel is refused like any finished dispatch's.
    let (code, _) = app
        .post("/api/dispatches/c_stop/cancel", None)
        .expect("answer");
    assert_eq!(code, 409);
    // The node comes back: nothing is replayed.
    let scp = StoreScp::start_on(port.release(), "PACS_A", &[]);
    eventually(T, || {
        (app.get_json("/api/nodes")[0]["online"] == true).then_some(())
    })
    .expect("the node answers C-ECHO");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(app.get_json("/api/dispatches/c_stop")["replays"], 0);
    assert_eq!(scp.store_requests(), 0);
}

#[test]
fn replay_every_failed_dispatch_since_a_time_after_an_outage() {
    let sim = sim();
    let port = DownPort::reserve();
    for id in ["sess_f1", "sess_f2"] {
        sim.put_download(EntityKind::Session, id, study(1, 2, 1024).0);
    }
    // No retries: a node that is down fails the dispatch at once.
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("node_1", "PACS_A", port.port())]),
        Some(json!({"node_retry_max_attempts": 0})),
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    let before = laminate_actors::clock::now_rfc3339();
    for (id, c) in [("sess_f1", "cf1"), ("sess_f2", "cf2")] {
        assert!(sim.send_event(&dispatch_event("session", id, c, &["node_1"], "normal")));
        assert_eq!(
            wait_final(&sim, c, "node_1", T).expect("final")["status"],
            "failed"
        );
    }
    assert_eq!(app.status()["dispatches"]["failed"], 2);
    let scp = StoreScp::start_on(port.release(), "PACS_A", &[]);
    // Nothing failed after a future time.
    let (code, body) = app
        .post(
            "/api/dispatches/replay?status=failed&since=2999-01-01T00:00:00Z",
            None,
        )
        .expect("answer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"replayed\":[]"), "{body}");
    sim.clear_frames();
    let http_addr = format!("127.0.0.1:{}", app.http_port);
    let (code, out) = run_binary(
        &[
            "dispatches",
            "replay",
            "--failed",
            "--since",
            &before,
            "--http-addr",
            &http_addr,
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("replayed 2"), "{out}");
    for c in ["cf1", "cf2"] {
        assert_eq!(
            wait_final(&sim, c, "node_1", T).expect("final")["status"],
            "completed"
        );
    }
    assert_eq!(scp.sop_uids().len(), 4);
}
