//! Dispatch end to end through the real binary: the simulator serves the study,
//! real dcmtk `storescp` processes are the PACS nodes (PROTOCOL.md §3–5,
//! APPLIANCE.md "Dispatch jobs").

mod support;

use std::time::Duration;

use laminate_proxy::sim::study::{SeriesSpec, StudySpec, Syntax};
use laminate_proxy::sim::EntityKind;
use support::*;

const T: Duration = Duration::from_secs(30);

fn status_list(sim: &BackendSim, corr: &str, node: &str) -> Vec<String> {
    statuses(sim, corr, node)
        .iter()
        .filter_map(|s| s["status"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_session_dispatch_reaches_one_node_with_every_status_in_order() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = study(2, 5, 8 * 1024);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_1",
        "corr_s1",
        &["node_1"],
        "high"
    )));
    let last = wait_final(&sim, "corr_s1", "node_1", T)
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(last["progress"], 100);
    assert_eq!(last["files_sent"], 10);
    assert_eq!(last["files_total"], 10);
    assert_eq!(last["error"], Value::Null);
    let seen = status_list(&sim, "corr_s1", "node_1");
    assert_eq!(seen.first().map(String::as_str), Some("queued"), "{seen:?}");
    let order: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "sending")
        .collect();
    assert_eq!(
        order,
        ["queued", "downloading", "extracting", "completed"],
        "{seen:?}"
    );
    assert!(seen.iter().any(|s| s == "sending"), "{seen:?}");
    assert_eq!(scp.sop_uids(), sops);
    let req = sim.download_requests();
    assert_eq!(req.len(), 1);
    assert!(req[0].key_ok);
    // The envelope of a status names the dispatch it reports on.
    let frame = sim
        .wait_frame(T, |f| f["event_type"] == "dispatch.status")
        .expect("status");
    assert_eq!(frame["entity_type"], "session");
    assert_eq!(frame["entity_id"], "sess_1");
    assert_eq!(frame["workspace_id"], "ws_test");
    // The API shows it, the cache holds it, the spool is clean.
    let list = app.get_json("/api/dispatches");
    assert_eq!(list[0]["state"], "completed");
    assert_eq!(app.get_json("/api/dispatches/corr_s1")["id"], list[0]["id"]);
    let sessions = app.get_json("/api/sessions");
    assert_eq!(sessions[0]["instances"], 10);
    assert_eq!(sessions[0]["subject_id"], "subj_1");
    assert_eq!(sessions[0]["scans"].as_array().map(|a| a.len()), Some(2));
    let spool: Vec<_> = std::fs::read_dir(app.data_path("spool"))
        .expect("spool")
        .collect();
    assert!(spool.is_empty(), "spool not cleaned: {spool:?}");
}

#[test]
fn two_nodes_get_their_own_statuses_and_unmanaged_nodes_are_ignored() {
    let sim = sim();
    let (a, b) = (StoreScp::start("PACS_A"), StoreScp::start("PACS_B"));
    let (zip, sops) = study(1, 6, 4096);
    sim.put_download(EntityKind::Subject, "subj_9", zip);
    let (zip2, _) = study(1, 1, 4096);
    sim.put_download(EntityKind::Scan, "scan_7", zip2);
    let nodes = json!([
        node("node_1", "PACS_A", a.port),
        node("node_2", "PACS_B", b.port)
    ]);
    let mut app = Appliance::start_with_nodes(&sim.backend_url(), nodes, None);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    // Only other appliances' nodes: ignored, no status at all.
    assert!(sim.send_event(&dispatch_event(
        "scan",
        "scan_7",
        "corr_other",
        &["node_elsewhere"],
        "normal"
    )));
    assert!(sim.send_event(&dispatch_event(
        "subject",
        "subj_9",
        "corr_two",
        &["node_1", "node_x", "node_2"],
        "normal"
    )));
    for n in ["node_1", "node_2"] {
        let last =
            wait_final(&sim, "corr_two", n, T).unwrap_or_else(|| panic!("{n}:\n{}", app.logs()));
        assert_eq!(last["status"], "completed", "{n}: {last}");
    }
    assert_eq!(a.sop_uids(), sops);
    assert_eq!(b.sop_uids(), sops);
    assert!(statuses(&sim, "corr_two", "node_x").is_empty());
    assert!(sim
        .frames()
        .iter()
        .all(|f| f["correlation_id"] != "corr_other"));
    let req = sim.download_requests();
    assert_eq!(req.len(), 1, "one download for both nodes: {req:?}");
    assert_eq!(req[0].kind, EntityKind::Subject);
    assert_eq!(req[0].id, "subj_9");
    // The same event again is not a second dispatch.
    assert!(sim.send_event(&dispatch_event(
        "subject",
        "subj_9",
        "corr_two",
        &["node_1", "node_2"],
        "normal"
    )));
    assert!(sim.send_event(&event("ping", "after_dup", json!({}))));
    sim.wait_frame(T, is_pong("after_dup")).expect("pong");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sim.download_requests().len(), 1);
    assert_eq!(
        app.get_json("/api/dispatches").as_array().map(|a| a.len()),
        Some(1)
    );
}

#[test]
fn a_node_down_at_the_start_is_retried_until_it_comes_up() {
    let sim = sim();
    let port = DownPort::reserve();
    let (zip, sops) = study(1, 4, 4096);
    sim.put_download(EntityKind::Scan, "scan_1", zip);
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("node_1", "PACS_A", port.port())]),
        None,
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "scan",
        "scan_1",
        "corr_down",
        &["node_1"],
        "normal"
    )));
    let retrying = sim
        .wait_frame(T, |f| {
            f["correlation_id"] == "corr_down" && f["payload"]["status"] == "retrying"
        })
        .unwrap_or_else(|| panic!("no retrying:\n{}", app.logs()));
    assert!(
        retrying["payload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("next try in")),
        "{retrying}"
    );
    let scp = StoreScp::start_on(port.release(), "PACS_A", &[]);
    let last = wait_final(&sim, "corr_down", "node_1", Duration::from_secs(60)).expect("final");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(scp.sop_uids(), sops);
    assert_eq!(scp.store_requests(), sops.len(), "nothing sent twice");
}

#[test]
fn mixed_syntaxes_reach_an_all_syntax_node_as_is_and_an_implicit_only_node_converted() {
    let sim = sim();
    let all = StoreScp::start_on(free_port(), "PACS_ALL", &["+xa"]);
    let ivr = StoreScp::start_on(free_port(), "PACS_IVR", &["+xi"]);
    let spec = StudySpec {
        study_uid: laminate_proxy::sim::study::fresh_uid(),
        patient_id: "PAT-MIX".into(),
        series: vec![
            SeriesSpec {
                number: 1,
                uid: laminate_proxy::sim::study::fresh_uid(),
                instances: 3,
                syntax: Syntax::ExplicitLe,
            },
            SeriesSpec {
                number: 2,
                uid: laminate_proxy::sim::study::fresh_uid(),
                instances: 3,
                syntax: Syntax::ImplicitLe,
            },
            SeriesSpec {
                number: 3,
                uid: laminate_proxy::sim::study::fresh_uid(),
                instances: 1,
                syntax: Syntax::JpegBaseline,
            },
        ],
        pixel_bytes: 4096,
    };
    let (zip, instances) = spec.zip_bytes().expect("zip");
    sim.put_download(EntityKind::Session, "sess_mix", zip);
    let nodes = json!([
        node("all", "PACS_ALL", all.port),
        node("ivr", "PACS_IVR", ivr.port)
    ]);
    let mut app = Appliance::start_with_nodes(&sim.backend_url(), nodes, None);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_mix",
        "corr_mix",
        &["all", "ivr"],
        "normal"
    )));
    let a = wait_final(&sim, "corr_mix", "all", T).expect("final all");
    assert_eq!(a["status"], "completed", "{a}\n{}", app.logs());
    let jpeg: Vec<&str> = instances
        .iter()
        .filter(|i| i.transfer_syntax.ends_with(".4.50"))
        .map(|i| i.sop_instance_uid.as_str())
        .collect();
    let got = all.syntaxes();
    assert_eq!(got.len(), 7);
    for i in &instances {
        assert_eq!(
            got.get(&i.sop_instance_uid),
            Some(&i.transfer_syntax),
            "kept as is"
        );
    }
    let b = wait_final(&sim, "corr_mix", "ivr", T).expect("final ivr");
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["files_sent"], 6);
    assert_eq!(b["files_total"], 7);
    let err = b["error"].as_str().unwrap_or_default();
    assert!(err.contains("1 of 7") && err.contains(jpeg[0]), "{err}");
    let got = ivr.syntaxes();
    assert_eq!(got.len(), 6);
    assert!(got.values().all(|ts| ts == "1.2.840.10008.1.2"), "{got:?}");
}

fn paused_status() -> Value {
    json!({"status": "paused", "is_active": false, "reason": "maintenance window", "updated_at": "2025-10-04T10:30:00.000Z"})
}

#[test]
fn queued_dispatches_start_by_priority_then_age_and_pause_holds_them() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    for id in ["s_low", "s_normal", "s_high", "s_high2"] {
        sim.put_download(EntityKind::Session, id, study(1, 1, 1024).0);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.write_config(
        "nodes.json",
        &json!({"nodes": [node("node_1", "PACS_A", scp.port)]}),
    );
    app.write_config("proxy.json", &json!({"max_concurrent_dispatches": 1}));
    app.write_config("status.json", &paused_status());
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    for (id, prio) in [
        ("s_low", "low"),
        ("s_normal", "normal"),
        ("s_high", "high"),
        ("s_high2", "high"),
    ] {
        assert!(sim.send_event(&dispatch_event(
            "session",
            id,
            &format!("c_{id}"),
            &["node_1"],
            prio
        )));
    }
    for id in ["s_low", "s_normal", "s_high", "s_high2"] {
        sim.wait_frame(T, move |f| {
            f["correlation_id"] == format!("c_{id}") && f["payload"]["status"] == "queued"
        })
        .expect("queued");
    }
    // Paused: nothing is downloaded.
    std::thread::sleep(Duration::from_secs(1));
    assert!(sim.download_requests().is_empty());
    assert_eq!(app.status()["dispatches"]["queued"], 4);
    assert!(sim.send_event(&event(
        "proxy.status_changed",
        "resume",
        json!({"status": "active", "is_active": true, "reason": ""})
    )));
    for id in ["s_low", "s_normal", "s_high", "s_high2"] {
        let last = wait_final(&sim, &format!("c_{id}"), "node_1", T).expect("final");
        assert_eq!(last["status"], "completed");
    }
    let order: Vec<String> = sim.download_requests().into_iter().map(|r| r.id).collect();
    assert_eq!(order, ["s_high", "s_high2", "s_normal", "s_low"]);
}

#[test]
fn kill_9_while_sending_resumes_after_restart_without_resending_acknowledged_instances() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = study(4, 400, 16 * 1024);
    sim.put_download(EntityKind::Session, "sess_big", zip);
    let mut app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_big",
        "corr_k9",
        &["node_1"],
        "normal"
    )));
    eventually(Duration::from_secs(60), || {
        (scp.store_requests() >= 100).then_some(())
    })
    .expect("sending started");
    app.kill9();
    let before = scp.store_requests();
    assert!(
        before < sops.len(),
        "the dispatch finished before the kill; make it bigger"
    );
    app.spawn();
    app.wait_ready(T);
    let last = wait_final(&sim, "corr_k9", "node_1", Duration::from_secs(90))
        .unwrap_or_else(|| panic!("{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["files_sent"], sops.len());
    assert_eq!(scp.sop_uids(), sops, "exactly the instance set");
    // At most one instance per association (4) may be sent twice.
    let total = scp.store_requests();
    assert!(
        total <= sops.len() + 4,
        "{total} requests for {} instances",
        sops.len()
    );
    assert_eq!(sim.download_requests().len(), 1, "no second download");
}

#[test]
fn a_dispatch_finishing_while_the_backend_is_down_reports_after_reconnect() {
    let sim = sim();
    let port = DownPort::reserve();
    let (zip, sops) = study(1, 3, 4096);
    sim.put_download(EntityKind::Session, "sess_bd", zip);
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("node_1", "PACS_A", port.port())]),
        None,
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_bd",
        "corr_bd",
        &["node_1"],
        "normal"
    )));
    // Downloaded, now waiting for the node: the backend goes away.
    sim.wait_frame(T, |f| {
        f["correlation_id"] == "corr_bd" && f["payload"]["status"] == "retrying"
    })
    .expect("retrying");
    sim.go_down();
    let scp = StoreScp::start_on(port.release(), "PACS_A", &[]);
    eventually(Duration::from_secs(60), || {
        (scp.sop_uids() == sops).then_some(())
    })
    .expect("delivered while the backend is down");
    eventually(T, || {
        (app.status()["outbox"]["depth"].as_u64()? > 0).then_some(())
    })
    .expect("statuses wait in the outbox");
    sim.clear_frames();
    sim.come_up().expect("up");
    let last = wait_final(&sim, "corr_bd", "node_1", Duration::from_secs(60))
        .expect("final after reconnect");
    assert_eq!(last["status"], "completed");
    eventually(T, || (app.status()["outbox"]["depth"] == 0).then_some(())).expect("outbox drained");
}

#[test]
fn replay_resends_from_the_cache_and_the_cli_lists_and_replays() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = study(1, 4, 4096);
    sim.put_download(EntityKind::Session, "sess_rp", zip);
    let app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_rp",
        "corr_rp",
        &["node_1"],
        "normal"
    )));
    assert_eq!(
        wait_final(&sim, "corr_rp", "node_1", T).expect("final")["status"],
        "completed"
    );
    let id = app.get_json("/api/dispatches")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    sim.clear_frames();
    // Right after its last status the job may still be winding down: 409 "still
    // active" until the dispatcher has seen it finish.
    let (code, body) = eventually(T, || {
        let (code, body) = app
            .post(&format!("/api/dispatches/{id}/replay"), None)
            .expect("answer");
        (code != 409).then_some((code, body))
    })
    .expect("the replay is taken");
    assert_eq!(code, 200, "{body}");
    let last = wait_final(&sim, "corr_rp", "node_1", T).expect("final after replay");
    assert_eq!(last["status"], "completed");
    assert_eq!(
        status_list(&sim, "corr_rp", "node_1")
            .first()
            .map(String::as_str),
        Some("queued")
    );
    assert_eq!(scp.store_requests(), 2 * sops.len());
    assert_eq!(sim.download_requests().len(), 1, "replayed from the cache");
    let http_addr = format!("127.0.0.1:{}", app.http_port);
    let (code, out) = run_binary(&["dispatches", "list", "--http-addr", &http_addr], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&id) && out.contains("completed"), "{out}");
    sim.clear_frames();
    let (code, out) = eventually(T, || {
        let (code, out) = run_binary(
            &["dispatches", "replay", &id, "--http-addr", &http_addr],
            &[],
        );
        (!out.contains("still active")).then_some((code, out))
    })
    .expect("the replay is taken");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        wait_final(&sim, "corr_rp", "node_1", T).expect("final")["status"],
        "completed"
    );
    // An active dispatch cannot be replayed; an unknown one is 404.
    let (code, _) = app
        .post("/api/dispatches/nope/replay", None)
        .expect("answer");
    assert_eq!(code, 404);
}

#[test]
fn cancel_during_retry_removal_of_a_node_and_session_deletion_stop_the_work() {
    let sim = sim();
    let (p1, p2, p3) = (
        DownPort::reserve(),
        DownPort::reserve(),
        DownPort::reserve(),
    );
    for id in ["sess_c1", "sess_c2", "sess_c3"] {
        sim.put_download(EntityKind::Session, id, study(1, 2, 1024).0);
    }
    let nodes = json!([
        node("n1", "PACS_A", p1.port()),
        node("n2", "PACS_B", p2.port()),
        node("n3", "PACS_C", p3.port())
    ]);
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        nodes,
        Some(json!({"max_concurrent_dispatches": 4})),
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_c1",
        "c1",
        &["n1"],
        "normal"
    )));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_c2",
        "c2",
        &["n2"],
        "normal"
    )));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_c3",
        "c3",
        &["n3"],
        "normal"
    )));
    for c in ["c1", "c2", "c3"] {
        sim.wait_frame(T, move |f| {
            f["correlation_id"] == c && f["payload"]["status"] == "retrying"
        })
        .expect("retrying");
    }
    // Operator cancel.
    let (code, body) = app.post("/api/dispatches/c1/cancel", None).expect("answer");
    assert_eq!(code, 200, "{body}");
    let c1 = wait_final(&sim, "c1", "n1", T).expect("final c1");
    assert_eq!(c1["status"], "cancelled");
    // Node removed.
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "rm_n2",
        json!({"action": "removed", "nodes": [{"node_id": "n2"}]})
    )));
    let c2 = wait_final(&sim, "c2", "n2", T).expect("final c2");
    assert_eq!(c2["status"], "cancelled");
    // Session deleted.
    let mut del = event(
        "session.deleted",
        "del_c3",
        json!({"study_instance_uid": "1.2.3.999"}),
    );
    del["entity_type"] = json!("session");
    del["entity_id"] = json!("sess_c3");
    assert!(sim.send_event(&del));
    let c3 = wait_final(&sim, "c3", "n3", T).expect("final c3");
    assert_eq!(c3["status"], "cancelled");
    // Nodes coming up later receive nothing.
    let late = StoreScp::start_on(p1.release(), "PACS_A", &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(late.store_requests(), 0);
    assert_eq!(app.status()["dispatches"]["active"], 0);
}

#[test]
fn orthanc_receives_exactly_the_instance_set() {
    let sim = sim();
    let orthanc = Orthanc::start("ORTHANC");
    let (zip, sops) = study(3, 10, 16 * 1024);
    sim.put_download(EntityKind::Session, "sess_o", zip);
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("orthanc", "ORTHANC", orthanc.dicom_port)]),
        None,
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_o",
        "corr_o",
        &["orthanc"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_o", "orthanc", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(orthanc.sop_uids(), sops);
}

#[test]
fn sigterm_while_sending_exits_cleanly_in_time_and_the_restart_resends_nothing() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = study(4, 400, 16 * 1024);
    sim.put_download(EntityKind::Session, "sess_term", zip);
    let mut app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_term",
        "corr_term",
        &["node_1"],
        "normal"
    )));
    eventually(Duration::from_secs(60), || {
        (scp.store_requests() >= 100).then_some(())
    })
    .expect("sending started");
    let in_flight = app.get_json("/api/nodes")[0]["in_flight"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        in_flight > 0,
        "instances handed to the senders show as in flight"
    );
    let started = std::time::Instant::now();
    let code = app.terminate();
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{}", app.logs());
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let before = scp.store_requests();
    assert!(
        before < sops.len(),
        "finished before the signal; make it bigger"
    );
    app.spawn();
    app.wait_ready(T);
    let last = wait_final(&sim, "corr_term", "node_1", Duration::from_secs(90))
        .unwrap_or_else(|| panic!("{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(scp.sop_uids(), sops);
    assert_eq!(
        scp.store_requests(),
        sops.len(),
        "a graceful stop re-sends nothing"
    );
    eventually(T, || {
        (app.get_json("/api/nodes")[0]["in_flight"] == 0).then_some(())
    })
    .expect("nothing stays in flight after completion");
}

#[test]
fn a_node_that_is_down_does_not_hold_up_the_other() {
    let sim = sim();
    let up = StoreScp::start("PACS_UP");
    let down_port = DownPort::reserve();
    let (zip, sops) = study(1, 5, 2048);
    sim.put_download(EntityKind::Session, "sess_two", zip);
    let nodes = json!([
        node("up", "PACS_UP", up.port),
        node("down", "PACS_DOWN", down_port.port())
    ]);
    let mut app = Appliance::start_with_nodes(&sim.backend_url(), nodes, None);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_two",
        "c_two",
        &["up", "down"],
        "normal"
    )));
    let done = wait_final(&sim, "c_two", "up", T).expect("the healthy node finishes");
    assert_eq!(done["status"], "completed");
    assert_eq!(up.sop_uids(), sops);
    let down = statuses(&sim, "c_two", "down");
    assert_eq!(
        down.last().map(|s| s["status"].clone()),
        Some(json!("retrying")),
        "{down:?}"
    );
    assert_eq!(app.get_json("/api/dispatches/c_two")["state"], "active");
}
