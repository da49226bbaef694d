//! Incoming events through the real binary (PROTOCOL.md §2–3, §6): ping/pong,
//! bad frames, de-duplication, config events and the heartbeat.

mod support;

use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(20);

fn connected() -> (BackendSim, Appliance) {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T), "{}", app.logs());
    sim.wait_frame(T, is_type("proxy.heartbeat"))
        .expect("heartbeat");
    (sim, app)
}

fn node(id: &str, port: u16) -> Value {
    json!({"node_id": id, "name": format!("PACS {id}"), "ae_title": "STORESCP", "host": "127.0.0.1",
           "port": port, "storage_path": "/data/dicom/main", "is_active": true})
}

#[test]
fn ping_is_answered_with_pong_and_the_same_correlation_id() {
    let (sim, _app) = connected();
    assert!(sim.send_event(&event("ping", "corr_ping_1", json!({"ignored": true}))));
    let pong = sim.wait_frame(T, is_pong("corr_ping_1")).expect("pong");
    for f in [
        "event_type",
        "workspace_id",
        "timestamp",
        "correlation_id",
        "entity_type",
        "entity_id",
        "payload",
    ] {
        assert!(pong.get(f).is_some(), "pong lacks {f}: {pong}");
    }
    assert_eq!(pong["workspace_id"], "ws_test");
    assert_eq!(pong["payload"], json!({}));
    let ts = pong["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
}

#[test]
fn two_hundred_pings_in_a_burst_get_two_hundred_pongs() {
    let (sim, _app) = connected();
    for i in 0..200 {
        assert!(sim.send_event(&event("ping", &format!("burst_{i}"), json!({}))));
    }
    let pongs = sim.wait_frames(T, 200, |v| {
        v["event_type"] == "pong"
            && v["correlation_id"]
                .as_str()
                .is_some_and(|c| c.starts_with("burst_"))
    });
    assert_eq!(pongs.len(), 200);
    // Pings are never de-duplicated: the same id again is answered again.
    assert!(sim.send_event(&event("ping", "burst_0", json!({}))));
    let again = sim.wait_frames(T, 2, is_pong("burst_0"));
    assert_eq!(again.len(), 2);
}

#[test]
fn bad_frames_are_counted_and_the_link_stays_up() {
    let (sim, app) = connected();
    let bad = [
        "this is not json".to_owned(),
        "[1,2,3]".to_owned(),
        "{}".to_owned(),
        r#"{"event_type": 42}"#.to_owned(),
        r#"{"event_type": "ping", "correlation_id": 7}"#.to_owned(),
        r#"{"event_type": "ping", "payload": "nope"}"#.to_owned(),
        r#"{"event_type": "session.dispatch", "entity_id": ["x"]}"#.to_owned(),
        "{\"event_type\": \"ping\"".to_owned(),
    ];
    for b in &bad {
        assert!(sim.send_text(b));
    }
    assert!(sim.send_binary(&[0xff, 0x00, 0x13]));
    assert!(sim.send_event(&event("future.event_type", "unknown_1", json!({}))));
    assert!(sim.send_event(&event("ping", "after_bad", json!({}))));
    sim.wait_frame(T, is_pong("after_bad"))
        .expect("pong after bad frames");
    assert_eq!(sim.connections(), 1, "the link never dropped");
    let st = app.status();
    assert_eq!(st["router"]["bad_frames"], bad.len() as u64 + 1);
    assert_eq!(st["router"]["unknown_types"], 1);
    assert!(
        app.logs().contains("this is not json"),
        "bad frames are logged"
    );
}

#[test]
fn a_duplicate_correlation_id_is_acted_on_once_also_after_a_restart() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    let add = event(
        "proxy.nodes_changed",
        "corr_dup",
        json!({"action": "added", "nodes": [node("node_1", 11112)]}),
    );
    assert!(sim.send_event(&add));
    eventually(T, || {
        (app.read_config("nodes.json")["nodes"].as_array()?.len() == 1).then_some(())
    })
    .expect("node added");
    // Removed by another event; the duplicate add must not bring it back.
    let rm = event(
        "proxy.nodes_changed",
        "corr_rm",
        json!({"action": "removed", "nodes": [{"node_id": "node_1"}]}),
    );
    assert!(sim.send_event(&rm));
    eventually(T, || {
        app.read_config("nodes.json")["nodes"]
            .as_array()?
            .is_empty()
            .then_some(())
    })
    .expect("node removed");
    assert!(sim.send_event(&add));
    eventually(T, || {
        (app.status()["router"]["duplicates"] == 1).then_some(())
    })
    .expect("duplicate counted");
    assert!(app.read_config("nodes.json")["nodes"]
        .as_array()
        .is_some_and(|n| n.is_empty()));

    // After a restart the seen set is still there.
    assert_eq!(app.terminate(), Some(0), "{}", app.logs());
    app.spawn();
    app.wait_ready(T);
    assert!(
        eventually(T, || (sim.connections() >= 2 && sim.is_connected())
            .then_some(()))
        .is_some()
    );
    assert!(sim.send_event(&add));
    eventually(T, || {
        (app.status()["router"]["duplicates"] == 1).then_some(())
    })
    .expect("duplicate after restart");
    assert!(app.read_config("nodes.json")["nodes"]
        .as_array()
        .is_some_and(|n| n.is_empty()));
    // An event without correlation_id de-duplicates by its bytes.
    let bare = r#"{"event_type":"proxy.status_changed","payload":{"status":"maintenance","is_active":false,"reason":"x"}}"#;
    assert!(sim.send_text(bare));
    assert!(sim.send_text(bare));
    eventually(T, || {
        (app.status()["router"]["duplicates"] == 2).then_some(())
    })
    .expect("bare duplicate");
}

#[test]
fn nodes_config_and_status_events_change_the_files_and_invalid_ones_do_not() {
    let (sim, app) = connected();
    let nodes_path = app.data_path("nodes.json");
    // added
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "n1",
        json!({"action": "added", "nodes": [node("node_1", 11112), node("node_2", 11113)]})
    )));
    eventually(T, || {
        (app.read_config("nodes.json")["nodes"].as_array()?.len() == 2).then_some(())
    })
    .expect("added");
    // updated
    let mut upd = node("node_2", 4242);
    upd["ae_title"] = json!("OTHER_AE");
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "n2",
        json!({"action": "updated", "nodes": [upd]})
    )));
    eventually(T, || {
        (app.read_config("nodes.json")["nodes"][1]["port"] == 4242).then_some(())
    })
    .expect("updated");
    // invalid: one bad node rejects the whole event, the file is byte-for-byte unchanged
    let before = std::fs::read(&nodes_path).expect("nodes.json");
    let mut bad = node("node_3", 0);
    bad["ae_title"] = json!("THIS AE TITLE IS FAR TOO LONG");
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "n3",
        json!({"action": "added", "nodes": [node("node_4", 104), bad]})
    )));
    eventually(T, || {
        app.status()["config"]["last_error"]
            .as_str()
            .map(|e| e.contains("node"))
            .filter(|b| *b)
    })
    .expect("error shown");
    assert_eq!(std::fs::read(&nodes_path).expect("nodes.json"), before);
    // unknown node in updated/removed, existing in added
    for (corr, payload) in [
        (
            "n4",
            json!({"action": "removed", "nodes": [{"node_id": "ghost"}]}),
        ),
        (
            "n5",
            json!({"action": "updated", "nodes": [node("ghost", 1)]}),
        ),
        (
            "n6",
            json!({"action": "added", "nodes": [node("node_1", 1)]}),
        ),
        ("n7", json!({"action": "sideways", "nodes": []})),
    ] {
        assert!(sim.send_event(&event("proxy.nodes_changed", corr, payload)));
    }
    assert!(sim.send_event(&event("ping", "after_invalid_nodes", json!({}))));
    sim.wait_frame(T, is_pong("after_invalid_nodes"))
        .expect("pong");
    eventually(T, || {
        (app.status()["router"]["events_in"].as_u64()? >= 8).then_some(())
    })
    .expect("processed");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read(&nodes_path).expect("nodes.json"), before);
    // replaced swaps the whole list
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "n8",
        json!({"action": "replaced", "nodes": [node("node_9", 9)]})
    )));
    eventually(T, || {
        (app.read_config("nodes.json")["nodes"][0]["node_id"] == "node_9").then_some(())
    })
    .expect("replaced");
    // The file is written first; the node monitor then publishes the new list.
    eventually(T, || {
        (app.get_json("/api/nodes")[0]["node_id"] == "node_9").then_some(())
    })
    .expect("the API follows the replaced list");

    // config_changed: merge, unknown kept and reported, null resets
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        "c1",
        json!({"config": {"max_concurrent_dispatches": 4, "future_knob": "x"}})
    )));
    eventually(T, || {
        (app.read_config("proxy.json")["max_concurrent_dispatches"] == 4).then_some(())
    })
    .expect("merged");
    let proxy = app.read_config("proxy.json");
    assert_eq!(proxy["future_knob"], "x");
    assert_eq!(
        app.status()["config"]["unknown_keys"],
        json!(["future_knob"])
    );
    let before_cfg = std::fs::read(app.data_path("proxy.json")).expect("proxy.json");
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        "c2",
        json!({"config": {"max_concurrent_dispatches": 4000, "heartbeat_interval_s": 10}})
    )));
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        "c3",
        json!({"config": {"log_level": 5}})
    )));
    assert!(sim.send_event(&event("ping", "after_bad_cfg", json!({}))));
    sim.wait_frame(T, is_pong("after_bad_cfg")).expect("pong");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read(app.data_path("proxy.json")).expect("proxy.json"),
        before_cfg,
        "a wrong value rejects the whole change"
    );
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        "c4",
        json!({"config": {"max_concurrent_dispatches": null}})
    )));
    eventually(T, || {
        app.read_config("proxy.json")
            .get("max_concurrent_dispatches")
            .is_none()
            .then_some(())
    })
    .expect("null resets");

    // status_changed
    assert!(sim.send_event(&event(
        "proxy.status_changed",
        "s1",
        json!({"status": "paused", "is_active": false, "reason": "PACS maintenance"})
    )));
    eventually(T, || {
        (app.read_config("status.json")["status"] == "paused").then_some(())
    })
    .expect("status written");
    let status = app.read_config("status.json");
    assert_eq!(status["is_active"], false);
    assert_eq!(status["reason"], "PACS maintenance");
    assert!(status["updated_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    // The file is written first; the board follows.
    eventually(T, || {
        (app.status()["proxy"]["status"] == "paused").then_some(())
    })
    .expect("the status API follows status.json");
    let before_status = std::fs::read(app.data_path("status.json")).expect("status.json");
    assert!(sim.send_event(&event(
        "proxy.status_changed",
        "s2",
        json!({"status": "sleeping"})
    )));
    assert!(sim.send_event(&event("ping", "after_bad_status", json!({}))));
    sim.wait_frame(T, is_pong("after_bad_status"))
        .expect("pong");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read(app.data_path("status.json")).expect("status.json"),
        before_status
    );
    assert_eq!(sim.connections(), 1);
}

#[test]
fn status_changed_with_only_is_active_pauses_and_resumes_and_neither_field_is_rejected() {
    let (sim, app) = connected();
    // The seed's payload: `is_active` alone.
    assert!(sim.send_event(&event(
        "proxy.status_changed",
        "only_active_1",
        json!({"is_active": false})
    )));
    eventually(T, || {
        (app.read_config("status.json")["status"] == "paused").then_some(())
    })
    .expect("is_active false alone pauses");
    let status = app.read_config("status.json");
    assert_eq!(status["is_active"], false, "{status}");
    assert_eq!(status["reason"], "", "{status}");
    eventually(T, || {
        (app.status()["proxy"]["status"] == "paused").then_some(())
    })
    .expect("the status API says paused");
    // Neither field: rejected, the file is left as it was.
    let before = std::fs::read(app.data_path("status.json")).expect("status.json");
    assert!(sim.send_event(&event(
        "proxy.status_changed",
        "only_reason",
        json!({"reason": "no fields"})
    )));
    eventually(T, || {
        app.status()["config"]["last_error"]
            .as_str()
            .filter(|e| e.contains("is_active"))
            .map(drop)
    })
    .expect("the rejection is visible and names both fields");
    assert_eq!(
        std::fs::read(app.data_path("status.json")).expect("status.json"),
        before
    );
    // `is_active: true` alone resumes.
    assert!(sim.send_event(&event(
        "proxy.status_changed",
        "only_active_2",
        json!({"is_active": true})
    )));
    eventually(T, || {
        let s = app.read_config("status.json");
        (s["status"] == "active" && s["is_active"] == true).then_some(())
    })
    .expect("is_active true alone resumes");
}

#[test]
fn a_rejected_config_change_stays_visible_after_a_later_valid_one() {
    let (sim, app) = connected();
    let config = app.status()["config"].clone();
    assert_eq!(config["last_error"], Value::Null);
    assert_eq!(config["last_error_at"], Value::Null);
    assert_eq!(config["rejected"], 0);
    // One invalid node rejects the whole event.
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "r1",
        json!({"action": "added", "nodes": [node("node_1", 0)]})
    )));
    let rejected = eventually(T, || {
        let c = app.status()["config"].clone();
        (c["rejected"] == 1).then_some(c)
    })
    .expect("the rejection is shown");
    let error = rejected["last_error"]
        .as_str()
        .expect("last_error")
        .to_owned();
    assert!(
        error.contains("proxy.nodes_changed") && error.contains("port"),
        "{error}"
    );
    let at = rejected["last_error_at"].as_str().expect("last_error_at");
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    // A valid change afterwards is applied and leaves the rejection shown.
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "r2",
        json!({"action": "added", "nodes": [node("node_2", 11113)]})
    )));
    eventually(T, || {
        (app.read_config("nodes.json")["nodes"].as_array()?.len() == 1).then_some(())
    })
    .expect("the valid change is applied");
    assert!(sim.send_event(&event("ping", "after_valid", json!({}))));
    sim.wait_frame(T, is_pong("after_valid")).expect("pong");
    let config = app.status()["config"].clone();
    assert_eq!(config["last_error"], error.as_str());
    assert_eq!(config["last_error_at"], rejected["last_error_at"]);
    assert_eq!(config["rejected"], 1);
    // The page's configuration part says the same.
    let (code, page) = app.get("/").expect("page");
    assert_eq!(code, 200);
    assert!(
        page.contains(r#"<td data-config="rejected">1</td>"#),
        "{page}"
    );
    assert!(page.contains(r#"data-config="last_error" class="error">proxy.nodes_changed rejected"#));
}

#[test]
fn heartbeat_reports_status_nodes_and_follows_a_live_interval_change() {
    let scp = StoreScp::start("STORESCP");
    let (sim, app) = connected();
    // One reachable active node, one unreachable, one inactive.
    let mut inactive = node("node_off", 9);
    inactive["is_active"] = json!(false);
    let dead_port = DownPort::reserve();
    assert!(sim.send_event(&event("proxy.nodes_changed", "hb_nodes", json!({"action": "replaced", "nodes": [node("node_up", scp.port), node("node_down", dead_port.port()), inactive]}))));
    eventually(T, || {
        (app.get_json("/api/nodes")[0]["online"] == true).then_some(())
    })
    .expect("node_up echoed");
    // Interval to the minimum: beats arrive about every 5 s from now on.
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        "hb_int",
        json!({"config": {"heartbeat_interval_s": 5}})
    )));
    sim.clear_frames();
    let beats = sim.wait_frames(Duration::from_secs(40), 3, is_type("proxy.heartbeat"));
    assert_eq!(beats.len(), 3, "heartbeats with a 5 s interval");
    let p = &beats[2]["payload"];
    assert_eq!(p["status"], "active");
    assert_eq!(p["nodes_total"], 2, "{p}");
    assert_eq!(p["nodes_online"], 1, "{p}");
    assert_eq!(p["active_dispatches"], 0);
    assert!(p["disk_usage_gb"].is_number());
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(beats[2]["entity_type"], "proxy");
    assert_eq!(beats[2]["workspace_id"], "ws_test");
    let t = |v: &Value| {
        time::OffsetDateTime::parse(
            v["timestamp"].as_str().unwrap_or(""),
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
    };
    let gap = t(&beats[2]) - t(&beats[1]);
    assert!((4..=7).contains(&gap), "gap between beats: {gap} s");
    let nodes = app.get_json("/api/nodes");
    let down = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node_id"] == "node_down"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(down["online"], false);
    assert!(down["last_echo_at"].is_string());
}

#[test]
fn operator_echo_of_a_node_reports_the_round_trip() {
    let scp = StoreScp::start("STORESCP");
    let (sim, app) = connected();
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "echo_nodes",
        json!({"action": "added", "nodes": [node("node_1", scp.port)]})
    )));
    eventually(T, || {
        (app.get_json("/api/nodes").as_array()?.len() == 1).then_some(())
    })
    .expect("node");
    let (code, body) = app.post("/api/nodes/node_1/echo", None).expect("answer");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    let (code, _) = app.post("/api/nodes/nope/echo", None).expect("answer");
    assert_eq!(code, 404);
    let http_addr = format!("127.0.0.1:{}", app.http_port);
    let (code, out) = run_binary(&["nodes", "echo", "node_1", "--http-addr", &http_addr], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("C-ECHO ok"), "{out}");
    let (code, out) = run_binary(&["nodes", "list", "--http-addr", &http_addr], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("node_1") && out.contains("STORESCP"), "{out}");
}
