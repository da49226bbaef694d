//! DICOM Storage Commitment towards a node that has `storage_commitment` in
//! node-settings.json, against Orthanc's commitment SCP: it answers the
//! N-ACTION and reports on a new association to our ingest SCP (the modality
//! declared in its `DicomModalities`). The node is `completed` only after that
//! report; an instance the PACS lost is `failed` by name and a replay sends
//! it again; a `kill -9` while waiting resumes the wait.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::EntityKind;
use support::pki::Pki;
use support::*;

const T: Duration = Duration::from_secs(60);
const OUR_AE: &str = "LAMINATE_PROXY";

fn study(per: usize) -> (bytes::Bytes, BTreeSet<String>) {
    let (zip, inst) = StudySpec::simple(1, per, 8 * 1024)
        .zip_bytes()
        .expect("study zip");
    (zip, inst.into_iter().map(|i| i.sop_instance_uid).collect())
}

/// Orthanc with our AE declared at `callback_port` (where it reports).
fn orthanc(callback_port: u16) -> Orthanc {
    Orthanc::start_with(
        "ORTHANC",
        json!({
            "DicomModalities": {"laminate": [OUR_AE, "127.0.0.1", callback_port]},
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowEcho": true,
        }),
    )
}

/// The appliance (not started) with node_1 = Orthanc, node-settings.json
/// `settings`, and its ingest SCP on `ingest_port`.
fn appliance(sim: &BackendSim, o: &Orthanc, ingest_port: u16, settings: Value) -> Appliance {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(
        tmp.path().to_path_buf(),
        &sim.backend_url(),
        &["--ae-title", OUR_AE],
    );
    app.keep_dir(tmp);
    set_ingest_port(&mut app, ingest_port);
    app.write_config(
        "nodes.json",
        &json!({ "nodes": [node("node_1", "ORTHANC", o.dicom_port)] }),
    );
    app.write_config("node-settings.json", &settings);
    app
}

fn set_ingest_port(app: &mut Appliance, port: u16) {
    let at = app
        .args
        .iter()
        .position(|a| a == "--dicom-addr")
        .expect("--dicom-addr");
    app.args[at + 1] = format!("127.0.0.1:{port}");
}

fn run(app: &mut Appliance, sim: &BackendSim) {
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
}

fn dispatch(sim: &BackendSim, corr: &str) {
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_1",
        corr,
        &["node_1"],
        "normal"
    )));
}

/// A port where a PACS's call back gets nowhere: bound (so nobody else
/// takes it) but never accepted; keep the listener for the whole test.
fn nowhere() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

/// A 2-instance dispatch to an Orthanc whose report goes where nobody
/// answers, with `commitment_timeout_s`, running: (that port's listener, to
/// keep; Orthanc; the appliance).
fn unanswered(
    sim: &BackendSim,
    timeout_s: u64,
    corr: &str,
) -> (std::net::TcpListener, Orthanc, Appliance) {
    let (listener, callback) = nowhere();
    let o = orthanc(callback);
    let (zip, _) = study(2);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let mut app = appliance(
        sim,
        &o,
        free_port(),
        json!({"node_1": {"storage_commitment": true, "commitment_timeout_s": timeout_s}}),
    );
    run(&mut app, sim);
    dispatch(sim, corr);
    (listener, o, app)
}

/// Orthanc's id of the instance with `sop`.
fn orthanc_id(o: &Orthanc, sop: &str) -> String {
    let url = format!("http://127.0.0.1:{}/instances?expand", o.http_port);
    let (_, body) = http("GET", &url, None).expect("Orthanc REST");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v.as_array()
        .expect("array")
        .iter()
        .find(|i| i["MainDicomTags"]["SOPInstanceUID"] == sop)
        .and_then(|i| i["ID"].as_str())
        .expect("the instance is in Orthanc")
        .to_owned()
}

fn waiting_frames(sim: &BackendSim, corr: &str) -> Vec<Value> {
    statuses(sim, corr, "node_1")
        .into_iter()
        .filter(|s| {
            s["status"] == "sending"
                && s["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("waiting for storage commitment"))
        })
        .collect()
}

#[test]
fn a_node_with_storage_commitment_is_completed_only_after_orthancs_report() {
    let sim = sim();
    let ingest = free_port();
    let o = orthanc(ingest);
    let (zip, sops) = study(4);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let mut app = appliance(
        &sim,
        &o,
        ingest,
        json!({"node_1": {"storage_commitment": true}}),
    );
    run(&mut app, &sim);
    dispatch(&sim, "corr_sc");
    let last = wait_final(&sim, "corr_sc", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(o.sop_uids(), sops);
    // While waiting the node was `sending` with everything acknowledged.
    let waiting = waiting_frames(&sim, "corr_sc");
    assert!(
        !waiting.is_empty(),
        "{:?}",
        statuses(&sim, "corr_sc", "node_1")
    );
    assert!(waiting
        .iter()
        .all(|w| w["files_sent"] == w["files_total"] && w["files_total"] == 4));
    // The report came in on our ingest SCP before the node was settled.
    let logs = app.logs();
    let requested = logs
        .find("storage commitment requested")
        .expect("requested");
    let received = logs
        .find("storage commitment report received")
        .expect("Orthanc's report reached the ingest SCP");
    let settled = logs.find("storage commitment settled").expect("settled");
    assert!(requested < settled && received < settled, "{logs}");
}

#[test]
fn over_dicom_tls_the_request_and_orthancs_report_both_travel_encrypted() {
    let sim = sim();
    let pki = Pki::new();
    let tls_ingest = free_port();
    // Orthanc speaks only TLS and requires our client certificate; it reports
    // to the appliance's TLS listener, which requires Orthanc's.
    let o = Orthanc::start_with(
        "ORTHANC",
        pki.orthanc_tls(json!({
            "DicomModalities": {"laminate": {"AET": OUR_AE, "Host": "127.0.0.1",
                                             "Port": tls_ingest, "UseDicomTls": true}},
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowEcho": true,
        })),
    );
    let (zip, sops) = study(3);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let mut app = appliance(
        &sim,
        &o,
        free_port(),
        json!({"node_1": {"storage_commitment": true, "tls": {"ca_file": pki.s("ca.pem"),
            "cert_file": pki.s("client.pem"), "key_file": pki.s("client.key")}}}),
    );
    app.args.extend([
        "--dicom-tls-addr".to_owned(),
        format!("127.0.0.1:{tls_ingest}"),
        "--dicom-tls-cert".to_owned(),
        pki.s("server.pem"),
        "--dicom-tls-key".to_owned(),
        pki.s("server.key"),
        "--dicom-tls-ca".to_owned(),
        pki.s("ca.pem"),
    ]);
    run(&mut app, &sim);
    dispatch(&sim, "corr_tls_sc");
    let last = wait_final(&sim, "corr_tls_sc", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(o.sop_uids(), sops);
    assert!(!waiting_frames(&sim, "corr_tls_sc").is_empty());
    // The report came on the association Orthanc opened to the TLS listener
    // (the one in its DicomModalities), not on the requesting one.
    let logs = app.logs();
    let report = logs
        .lines()
        .find(|l| l.contains("storage commitment report received"))
        .unwrap_or_else(|| panic!("no report:\n{logs}"));
    assert!(
        report.contains("ingest::commitment") && report.contains("ORTHANC"),
        "{report}"
    );
    assert!(logs.contains("storage commitment settled"), "{logs}");
}

#[test]
fn an_instance_deleted_from_orthanc_before_the_request_fails_by_name_and_a_replay_delivers_it() {
    let sim = sim();
    let ingest = free_port();
    let o = orthanc(ingest);
    let (zip, sops) = study(3);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let mut app = appliance(
        &sim,
        &o,
        ingest,
        json!({"node_1": {"storage_commitment": true}}),
    );
    // Time between the last acknowledgement and the commitment request.
    app.env
        .push(("LAMINATE_PROXY_TEST_COMMITMENT_PAUSE_S".into(), "6".into()));
    run(&mut app, &sim);
    dispatch(&sim, "corr_lost");
    eventually(T, || (o.sop_uids() == sops).then_some(())).expect("all stored in Orthanc");
    let lost = sops.iter().next().expect("an instance").clone();
    let url = format!(
        "http://127.0.0.1:{}/instances/{}",
        o.http_port,
        orthanc_id(&o, &lost)
    );
    assert_eq!(http("DELETE", &url, None).map(|r| r.0), Some(200));
    let last = wait_final(&sim, "corr_lost", "node_1", T).expect("final status");
    assert_eq!(last["status"], "failed", "{last}");
    let error = last["error"].as_str().expect("error");
    assert!(
        error.starts_with("1 of 3 failed: ") && error.contains(&lost),
        "{error}"
    );
    assert!(error.contains("no such object instance"), "{error}");
    assert_eq!(last["files_sent"], 2);
    // The local API lists it among the node's outcomes.
    let detail = app.get_json("/api/dispatches/corr_lost");
    let outcomes = detail["nodes"][0]["outcomes"]
        .as_array()
        .expect("outcomes")
        .clone();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["sop_instance_uid"], lost.as_str());
    assert_eq!(outcomes[0]["outcome"], "failed");

    // A replay sends it again, and Orthanc then commits everything.
    let id = app.get_json("/api/dispatches")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    sim.clear_frames();
    let (code, body) = eventually(T, || {
        let (code, body) = app
            .post(&format!("/api/dispatches/{id}/replay"), None)
            .expect("answer");
        (code != 409).then_some((code, body))
    })
    .expect("the replay is taken");
    assert_eq!(code, 200, "{body}");
    let last = wait_final(&sim, "corr_lost", "node_1", T).expect("final after replay");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(o.sop_uids(), sops);
}

#[test]
fn a_kill_9_while_waiting_for_the_report_resumes_the_wait_after_restart() {
    let sim = sim();
    // Orthanc reports to `callback`, where the first run does not listen.
    let (first, callback) = (free_port(), free_port());
    let o = orthanc(callback);
    let (zip, sops) = study(3);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let mut app = appliance(
        &sim,
        &o,
        first,
        json!({"node_1": {"storage_commitment": true, "commitment_timeout_s": 600}}),
    );
    run(&mut app, &sim);
    dispatch(&sim, "corr_kill");
    eventually(T, || {
        (!waiting_frames(&sim, "corr_kill").is_empty()
            && app.logs().contains("storage commitment requested"))
        .then_some(())
    })
    .expect("waiting for the report");
    let tx = {
        let logs = app.logs();
        let from = logs
            .find("storage commitment requested")
            .expect("requested");
        let at = from + logs[from..].find("2.25.").expect("its transaction UID");
        logs[at..]
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .expect("uid")
            .to_owned()
    };
    assert!(
        wait_final(&sim, "corr_kill", "node_1", Duration::from_secs(3)).is_none(),
        "no report, no final status"
    );
    app.kill9();

    set_ingest_port(&mut app, callback);
    run(&mut app, &sim);
    let last = wait_final(&sim, "corr_kill", "node_1", T).expect("final after restart");
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(o.sop_uids(), sops);
    let second = std::fs::read_to_string(app.dir.join("appliance-2.log")).expect("log");
    assert!(
        second.contains("resuming the wait for storage commitment") && second.contains(&tx),
        "{second}"
    );
}

#[test]
fn no_report_within_commitment_timeout_fails_every_instance_and_says_why() {
    let sim = sim();
    // Orthanc reports where nobody answers.
    let (_nowhere, _o, _app) = unanswered(&sim, 3, "corr_to");
    let last = wait_final(&sim, "corr_to", "node_1", T).expect("final status");
    assert_eq!(last["status"], "failed", "{last}");
    let error = last["error"].as_str().expect("error");
    assert!(
        error.starts_with("2 of 2 failed: ")
            && error.contains("not committed within commitment_timeout_s (3 s)"),
        "{error}"
    );
}

#[test]
fn doctor_warns_when_a_node_with_storage_commitment_cannot_call_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(
        data.join("nodes.json"),
        json!({"nodes": [node("node_1", "ORTHANC", free_port())]}).to_string(),
    )
    .expect("nodes.json");
    std::fs::write(
        data.join("node-settings.json"),
        json!({"node_1": {"storage_commitment": true}}).to_string(),
    )
    .expect("node-settings.json");
    let doctor = |dicom: &str| {
        let (http, d) = (
            format!("127.0.0.1:{}", free_port()),
            data.display().to_string(),
        );
        run_binary(
            &[
                "doctor",
                "--backend-url",
                "ws://127.0.0.1:9/proxy/ws",
                "--data-dir",
                &d,
                "--http-addr",
                &http,
                "--dicom-addr",
                dicom,
                "--ae-title",
                OUR_AE,
            ],
            &[("LAMINATE_PROXY_KEY", KEY)],
        )
        .1
    };
    let off = doctor("off");
    let line = off
        .lines()
        .find(|l| l.contains("node node_1 storage commitment"))
        .unwrap_or_else(|| panic!("{off}"));
    assert!(
        line.starts_with("warn") && line.contains("--dicom-addr off"),
        "{line}"
    );
    let port = free_port();
    let on = doctor(&format!("127.0.0.1:{port}"));
    let line = on
        .lines()
        .find(|l| l.contains("node node_1 storage commitment"))
        .unwrap_or_else(|| panic!("{on}"));
    assert!(
        line.starts_with("ok") && line.contains(OUR_AE) && line.contains(&port.to_string()),
        "{line}"
    );
}

#[test]
fn an_operator_cancel_ends_the_wait_for_the_report_at_once() {
    let sim = sim();
    // Orthanc reports where nobody answers; the timeout is far away.
    let (_nowhere, _o, app) = unanswered(&sim, 600, "corr_cancel");
    eventually(T, || {
        (!waiting_frames(&sim, "corr_cancel").is_empty()
            && app.logs().contains("storage commitment requested"))
        .then_some(())
    })
    .expect("waiting for the report");
    let (code, body) = app
        .post("/api/dispatches/corr_cancel/cancel", None)
        .expect("answer");
    assert_eq!(code, 200, "{body}");
    let last =
        wait_final(&sim, "corr_cancel", "node_1", Duration::from_secs(10)).expect("final at once");
    assert_eq!(last["status"], "cancelled", "{last}");
}
