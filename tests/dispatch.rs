//! Dispatch end to end through the real binary: the simulator serves the study,
//! real dcmtk `storescp` processes are the PACS nodes (PROTOCOL.md §3–5,
//! APPLIANCE.md "Dispatch jobs").

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use laminate_proxy::sim::study::{SeriesSpec, StudySpec, Syntax};
use laminate_proxy::sim::{DownloadStep, EntityKind};
use support::*;

const T: Duration = Duration::from_secs(30);

fn study(series: usize, per: usize, bytes: usize) -> (bytes::Bytes, BTreeSet<String>) {
    let spec = StudySpec::simple(series, per, bytes);
    let (zip, inst) = spec.zip_bytes().expect("study zip");
    (zip, inst.into_iter().map(|i| i.sop_instance_uid).collect())
}

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
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("node_1", "PACS_A", scp.port)]),
        None,
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
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
    let port = free_port();
    let (zip, sops) = study(1, 4, 4096);
    sim.put_download(EntityKind::Scan, "scan_1", zip);
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("node_1", "PACS_A", port)]),
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
    let scp = StoreScp::start_on(port, "PACS_A", &[]);
    let last = wait_final(&sim, "corr_down", "node_1", Duration::from_secs(60)).expect("final");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(scp.sop_uids(), sops);
    assert_eq!(scp.store_requests(), sops.len(), "nothing sent twice");
}

#[test]
fn download_errors_500_then_a_cut_body_are_retried_and_resumed() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = study(1, 20, 32 * 1024);
    let cut = zip.len() / 2;
    sim.put_download(EntityKind::Session, "sess_r", zip);
    sim.script_download(
        EntityKind::Session,
        "sess_r",
        vec![DownloadStep::Status(500), DownloadStep::CutAfter(cut)],
    );
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("node_1", "PACS_A", scp.port)]),
        None,
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_r",
        "corr_r",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_r", "node_1", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    let retries: Vec<Value> = statuses(&sim, "corr_r", "node_1")
        .into_iter()
        .filter(|s| s["status"] == "retrying")
        .collect();
    assert!(retries.len() >= 2, "{retries:?}");
    assert!(
        retries.iter().all(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("download:"))),
        "{retries:?}"
    );
    let req = sim.download_requests();
    assert_eq!(req.len(), 3, "{req:?}");
    assert_eq!(
        req[2].range.as_deref(),
        Some(format!("bytes={cut}-").as_str()),
        "resumed, not restarted"
    );
    assert_eq!(scp.sop_uids(), sops);
}

#[test]
fn not_found_and_rejected_downloads_fail_at_once() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    sim.script_download(
        EntityKind::Session,
        "sess_403",
        vec![DownloadStep::Status(403)],
    );
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("node_1", "PACS_A", scp.port)]),
        None,
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_missing",
        "corr_404",
        &["node_1"],
        "normal"
    )));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_403",
        "corr_403",
        &["node_1"],
        "normal"
    )));
    let a = wait_final(&sim, "corr_404", "node_1", T).expect("final");
    assert_eq!(a["status"], "failed");
    assert!(
        a["error"].as_str().is_some_and(|e| e.contains("not found")),
        "{a}"
    );
    let b = wait_final(&sim, "corr_403", "node_1", T).expect("final");
    assert_eq!(b["status"], "failed");
    assert!(
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("download rejected")),
        "{b}"
    );
    assert!(statuses(&sim, "corr_404", "node_1")
        .iter()
        .all(|s| s["status"] != "retrying"));
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
