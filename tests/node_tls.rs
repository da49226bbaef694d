//! Site-local node settings (`node-settings.json`) and DICOM TLS, towards nodes
//! and on the ingest SCP's TLS listener, through the real binary with real
//! peers: dcmtk `storescp +tls` / `storescu +tls` and Orthanc with
//! `DicomTlsEnabled`, using a CA and certificates made here with rcgen
//! (APPLIANCE.md "Site-local node settings and secure delivery").

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::EntityKind;
use support::pki::Pki;
use support::*;

const T: Duration = Duration::from_secs(30);
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

fn study(per: usize) -> (bytes::Bytes, BTreeSet<String>) {
    let (zip, inst) = StudySpec::simple(1, per, 16 * 1024)
        .zip_bytes()
        .expect("study zip");
    (zip, inst.into_iter().map(|i| i.sop_instance_uid).collect())
}

fn write_settings(app: &Appliance, v: Value) {
    app.write_config("node-settings.json", &v);
}

fn node_row(app: &Appliance) -> Value {
    app.get_json("/api/nodes")[0].clone()
}

/// The node's C-ECHO error, once there is one.
fn echo_error(app: &Appliance) -> Option<String> {
    eventually(T, || {
        node_row(app)["last_echo_error"].as_str().map(str::to_owned)
    })
}

/// Starts the appliance with `node_1` at `port` and `settings` as its
/// node-settings.json, ready and connected.
fn start(sim: &BackendSim, port: u16, settings: Value) -> Appliance {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.keep_dir(tmp);
    app.write_config(
        "nodes.json",
        &json!({ "nodes": [node("node_1", "PACS_A", port)] }),
    );
    write_settings(&app, settings);
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    app
}

fn dispatch(sim: &BackendSim, id: &str, corr: &str) {
    assert!(sim.send_event(&dispatch_event("session", id, corr, &["node_1"], "normal")));
}

#[test]
fn a_tls_only_storescp_gets_a_study_checked_against_the_sites_ca() {
    let sim = sim();
    let pki = Pki::new();
    let scp = pki.storescp("PACS_A", "-ic");
    let (zip, sops) = study(8);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let app = start(
        &sim,
        scp.port,
        json!({"node_1": {"tls": {"ca_file": pki.s("ca.pem")}}}),
    );
    // The node monitor's C-ECHO goes over TLS too.
    eventually(T, || (node_row(&app)["online"] == true).then_some(()))
        .unwrap_or_else(|| panic!("echo over TLS: {}", node_row(&app)));
    let row = node_row(&app);
    assert_eq!(row["tls"], true);
    assert_eq!(row["site_settings"]["tls"]["verify_hostname"], true);
    dispatch(&sim, "sess_1", "corr_tls");
    let last = wait_final(&sim, "corr_tls", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(scp.sop_uids(), sops);
    assert!(
        scp.log().contains("TLS"),
        "storescp used TLS: {}",
        scp.log()
    );
}

#[test]
fn a_node_whose_certificate_is_not_signed_by_ca_file_is_a_clear_node_error() {
    let sim = sim();
    let pki = Pki::new();
    let scp = pki.storescp("PACS_A", "-ic");
    let (zip, _) = study(2);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let app = start(
        &sim,
        scp.port,
        json!({"node_1": {"tls": {"ca_file": pki.s("other-ca.pem")}}}),
    );
    let echo_error = echo_error(&app).expect("echo error");
    assert!(
        echo_error.contains("not signed by a CA in ca_file")
            && echo_error.contains("UnknownIssuer"),
        "{echo_error}"
    );
    dispatch(&sim, "sess_1", "corr_bad_ca");
    let sender_error = eventually(T, || {
        node_row(&app)["sender"]["last_error"]
            .as_str()
            .map(str::to_owned)
    })
    .expect("sender error");
    assert!(
        sender_error.contains("TLS with PACS_A@127.0.0.1")
            && sender_error.contains("not signed by a CA in ca_file"),
        "{sender_error}"
    );
    // The dispatch reports the node's error (it retries); nothing reached the node.
    let reported = eventually(T, || {
        statuses(&sim, "corr_bad_ca", "node_1")
            .into_iter()
            .find_map(|s| s["error"].as_str().map(str::to_owned))
    })
    .expect("an error in dispatch.status");
    assert!(reported.contains("ca_file"), "{reported}");
    assert!(scp.sop_uids().is_empty());
    assert_eq!(app.get("/readyz").map(|r| r.0), Some(200));
}

#[test]
fn a_ca_file_renewed_in_place_is_used_without_touching_node_settings_json() {
    let sim = sim();
    let pki = Pki::new();
    let scp = pki.storescp("PACS_A", "-ic");
    let (zip, sops) = study(3);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    // The site's CA file is out of date: it holds another CA.
    let site_ca = pki.path("site-ca.pem");
    std::fs::copy(pki.path("other-ca.pem"), &site_ca).expect("copy");
    let app = start(
        &sim,
        scp.port,
        json!({"node_1": {"tls": {"ca_file": site_ca.display().to_string()}}}),
    );
    let settings_file = app.data_dir.join("node-settings.json");
    let written = std::fs::metadata(&settings_file)
        .and_then(|m| m.modified())
        .expect("mtime");
    eventually(T, || {
        node_row(&app)["last_echo_error"]
            .as_str()
            .filter(|e| e.contains("not signed by a CA in ca_file"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("the wrong CA is refused: {}", node_row(&app)));
    // The renewed CA is written over the old file; the JSON is not touched.
    std::fs::copy(pki.path("ca.pem"), &site_ca).expect("renew");
    eventually(T, || {
        let (code, body) = app.post("/api/nodes/node_1/echo", None)?;
        (code == 200 && body.contains("\"ok\":true")).then_some(())
    })
    .unwrap_or_else(|| panic!("renewed CA not picked up: {}", node_row(&app)));
    dispatch(&sim, "sess_1", "corr_renewed");
    let last = wait_final(&sim, "corr_renewed", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(scp.sop_uids(), sops);
    let still = std::fs::metadata(&settings_file)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(still, written, "node-settings.json was left alone");
}

#[test]
fn mutual_tls_presents_the_client_certificate_once_the_site_adds_it() {
    let sim = sim();
    let pki = Pki::new();
    // -rc: the node requires and verifies a client certificate.
    let scp = pki.storescp("PACS_A", "-rc");
    let (zip, sops) = study(4);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let app = start(
        &sim,
        scp.port,
        json!({"node_1": {"tls": {"ca_file": pki.s("ca.pem")}}}),
    );
    let refused = echo_error(&app).expect("echo refused without a client certificate");
    assert!(
        refused.contains("TLS with PACS_A") && refused.contains("requires a client certificate"),
        "{refused}"
    );
    // The site adds its client certificate: read live, no restart.
    write_settings(
        &app,
        json!({"node_1": {"tls": {"ca_file": pki.s("ca.pem"),
            "cert_file": pki.s("client.pem"), "key_file": pki.s("client.key")}}}),
    );
    eventually(T, || {
        (node_row(&app)["site_settings"]["tls"]["mutual"] == true).then_some(())
    })
    .expect("settings re-read");
    let (code, body) = app.post("/api/nodes/node_1/echo", None).expect("echo");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ok\":true"), "{body}");
    dispatch(&sim, "sess_1", "corr_mutual");
    let last = wait_final(&sim, "corr_mutual", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(scp.sop_uids(), sops);
}

#[test]
fn orthanc_with_dicom_tls_enabled_gets_a_study_with_mutual_authentication() {
    let sim = sim();
    let pki = Pki::new();
    let orthanc = Orthanc::start_with(
        "ORTHANC",
        pki.orthanc_tls(json!({
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowEcho": true,
        })),
    );
    let (zip, sops) = study(5);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.keep_dir(tmp);
    app.write_config(
        "nodes.json",
        &json!({ "nodes": [node("node_1", "ORTHANC", orthanc.dicom_port)] }),
    );
    write_settings(
        &app,
        json!({"node_1": {"tls": {"ca_file": pki.s("ca.pem"),
            "cert_file": pki.s("client.pem"), "key_file": pki.s("client.key")}}}),
    );
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    dispatch(&sim, "sess_1", "corr_orthanc");
    let last = wait_final(&sim, "corr_orthanc", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(orthanc.sop_uids(), sops);
}

#[test]
fn node_settings_override_the_backends_cap_live_and_a_bad_file_keeps_the_previous_settings() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let app = start(&sim, scp.port, json!({"node_1": {"max_associations": 1}}));
    let max = |app: &Appliance| node_row(app)["sender"]["associations_max"].clone();
    assert_eq!(max(&app), 1, "{}", node_row(&app));
    assert_eq!(node_row(&app)["site_settings"]["max_associations"], 1);
    assert_eq!(node_row(&app)["tls"], false);

    // A wrong file is rejected whole: the previous settings stay, and why is shown.
    write_settings(
        &app,
        json!({"node_1": {"max_associations": 2, "prefer_transfer_syntax": "1.2.840.10008.1.2.4.50"}}),
    );
    let why = eventually(T, || {
        app.status()["config"]["last_error"]
            .as_str()
            .filter(|e| e.contains("node-settings.json"))
            .map(str::to_owned)
    })
    .expect("rejection shown");
    assert!(why.contains("node_1.prefer_transfer_syntax"), "{why}");
    assert_eq!(max(&app), 1);
    let row = node_row(&app);
    assert_eq!(row["site_settings"]["max_associations"], 1, "{row}");
    assert!(
        row["node_settings_error"]
            .as_str()
            .is_some_and(|e| e.contains("node_1.prefer_transfer_syntax")),
        "{row}"
    );
    let page = app.get("/").expect("page").1;
    assert!(
        page.contains("node_1.prefer_transfer_syntax"),
        "page shows why"
    );
    let api = format!("127.0.0.1:{}", app.http_port);
    let (code, out) = run_binary(
        &["nodes", "reload"],
        &[("LAMINATE_PROXY_HTTP_ADDR", api.as_str())],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("node_1.prefer_transfer_syntax"), "{out}");

    // Fixed: applied within seconds, and `nodes reload` says so at once.
    write_settings(&app, json!({"node_1": {"max_associations": 3}}));
    let (code, out) = run_binary(
        &["nodes", "reload"],
        &[("LAMINATE_PROXY_HTTP_ADDR", api.as_str())],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("settings for 1 nodes"), "{out}");
    eventually(T, || (max(&app) == 3).then_some(())).expect("cap 3 applied");
    assert_eq!(node_row(&app)["node_settings_error"], Value::Null);
    // The file is the site's: never rewritten.
    assert_eq!(
        app.read_config("node-settings.json"),
        json!({"node_1": {"max_associations": 3}})
    );
}

#[test]
fn prefer_transfer_syntax_sends_every_instance_in_that_syntax() {
    let sim = sim();
    // +xa: the node accepts every syntax, so only the setting makes us convert.
    let scp = StoreScp::start_on(free_port(), "PACS_A", &["+xa"]);
    let (zip, sops) = study(4);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let app = start(
        &sim,
        scp.port,
        json!({"node_1": {"prefer_transfer_syntax": IMPLICIT_VR_LE}}),
    );
    dispatch(&sim, "sess_1", "corr_prefer");
    let last = wait_final(&sim, "corr_prefer", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}");
    let got = scp.syntaxes();
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), sops);
    assert!(got.values().all(|ts| ts == IMPLICIT_VR_LE), "{got:?}");
    assert_eq!(
        node_row(&app)["site_settings"]["prefer_transfer_syntax"],
        IMPLICIT_VR_LE
    );
}

#[test]
fn an_invalid_node_settings_file_refuses_the_start_with_its_problem() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(
        data.join("node-settings.json"),
        r#"{"node_1": {"tls": {"cert_file": "c.pem"}}}"#,
    )
    .expect("write");
    let dir = data.display().to_string();
    let (code, out) = run_binary(
        &["run"],
        &[
            ("LAMINATE_BACKEND_URL", "ws://127.0.0.1:9/"),
            ("LAMINATE_PROXY_KEY", "pk_test_0123456789abcdef"),
            ("LAMINATE_PROXY_DATA_DIR", dir.as_str()),
            ("LAMINATE_PROXY_HTTP_ADDR", "127.0.0.1:0"),
            ("LAMINATE_PROXY_DICOM_ADDR", "off"),
        ],
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("node-settings.json") && out.contains("node_1.tls.ca_file: is required"),
        "{out}"
    );
}

/// The appliance with its plain ingest SCP and a TLS listener (`tls_args`).
fn with_tls_ingest(sim: &BackendSim, tls_args: &[String]) -> (Appliance, u16) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    if let Some(i) = app.args.iter().position(|a| a == "off") {
        app.args[i] = format!("127.0.0.1:{}", free_port());
    }
    let tls_port = free_port();
    app.args.extend([
        "--dicom-tls-addr".to_string(),
        format!("127.0.0.1:{tls_port}"),
    ]);
    app.args.extend(tls_args.iter().cloned());
    app.keep_dir(tmp);
    app.spawn();
    app.wait_ready(T);
    (app, tls_port)
}

fn storescu(port: u16, tls: &[&str], dir: &Path) -> (Option<i32>, String) {
    let out = Command::new("/usr/bin/storescu")
        .args(tls)
        .args(["-v", "-aec", "LAMINATE_PROXY", "+sd", "+r", "127.0.0.1"])
        .arg(port.to_string())
        .arg(dir)
        .output()
        .expect("dcmtk storescu");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

fn stored(data_dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![data_dir.join("storage")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.ends_with(".incoming") {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "dcm") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn the_ingest_tls_listener_takes_a_study_from_a_sender_with_a_client_certificate_only() {
    let sim = sim();
    let pki = Pki::new();
    let (app, tls_port) = with_tls_ingest(
        &sim,
        &[
            "--dicom-tls-cert".into(),
            pki.s("server.pem"),
            "--dicom-tls-key".into(),
            pki.s("server.key"),
            "--dicom-tls-ca".into(),
            pki.s("ca.pem"),
        ],
    );
    let files = tempfile::tempdir().expect("tempdir");
    let inst = StudySpec::simple(1, 3, 8 * 1024)
        .write_files(files.path())
        .expect("files");
    // No client certificate: refused by the TLS handshake, nothing stored.
    let (code, out) = storescu(tls_port, &["+tla", "+cf", &pki.s("ca.pem")], files.path());
    assert_ne!(code, Some(0), "{out}");
    // Plain DICOM on the TLS port: refused too.
    let (code, out) = storescu(tls_port, &[], files.path());
    assert_ne!(code, Some(0), "{out}");
    assert_eq!(stored(&app.data_dir), 0);
    // With the client certificate, the study is stored.
    let (code, out) = storescu(
        tls_port,
        &[
            "+tls",
            &pki.s("client.key"),
            &pki.s("client.pem"),
            "+cf",
            &pki.s("ca.pem"),
        ],
        files.path(),
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(stored(&app.data_dir), inst.len());
}

#[test]
fn ingest_tls_flags_that_cannot_work_refuse_the_start_naming_the_setting() {
    let (code, out) = run_binary(
        &["run"],
        &[
            ("LAMINATE_BACKEND_URL", "ws://127.0.0.1:9/"),
            ("LAMINATE_PROXY_KEY", KEY),
            ("LAMINATE_PROXY_HTTP_ADDR", "127.0.0.1:0"),
            ("LAMINATE_PROXY_DICOM_TLS_ADDR", "127.0.0.1:0"),
            ("LAMINATE_PROXY_DICOM_TLS_CERT", "/nonexistent/server.pem"),
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("--dicom-tls-key (LAMINATE_PROXY_DICOM_TLS_KEY) is required"),
        "{out}"
    );
}

#[test]
fn doctor_checks_a_tls_node_over_tls_and_names_a_wrong_ca() {
    let sim = sim();
    let pki = Pki::new();
    let scp = pki.storescp("PACS_A", "-ic");
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        data.path().join("nodes.json"),
        json!({ "nodes": [node("node_1", "PACS_A", scp.port)] }).to_string(),
    )
    .expect("write");
    let doctor = |ca: &str| {
        std::fs::write(
            data.path().join("node-settings.json"),
            json!({"node_1": {"tls": {"ca_file": pki.s(ca)}}}).to_string(),
        )
        .expect("write");
        let (http, dir) = (
            format!("127.0.0.1:{}", free_port()),
            data.path().display().to_string(),
        );
        let backend = sim.backend_url();
        let (_, out) = run_binary(
            &[
                "doctor",
                "--backend-url",
                &backend,
                "--data-dir",
                &dir,
                "--http-addr",
                &http,
                "--dicom-addr",
                "off",
            ],
            &[("LAMINATE_PROXY_KEY", KEY)],
        );
        out.lines()
            .find(|l| l.contains("node node_1:"))
            .unwrap_or_else(|| panic!("no node line: {out}"))
            .to_owned()
    };
    let good = doctor("ca.pem");
    assert!(good.starts_with("ok") && good.contains("TLS"), "{good}");
    let bad = doctor("other-ca.pem");
    assert!(
        bad.starts_with("fail") && bad.contains("not signed by a CA in ca_file"),
        "{bad}"
    );
}

#[test]
fn a_certificate_for_another_name_is_refused_unless_verify_hostname_is_off() {
    let sim = sim();
    let pki = Pki::new();
    // Signed by the right CA, but for pacs.hospital.example, not 127.0.0.1.
    let scp = pki.storescp_as("elsewhere", "PACS_A", "-ic");
    let (zip, sops) = study(2);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let app = start(
        &sim,
        scp.port,
        json!({"node_1": {"tls": {"ca_file": pki.s("ca.pem")}}}),
    );
    let refused = echo_error(&app).expect("echo refused");
    assert!(refused.contains("does not name its host"), "{refused}");
    write_settings(
        &app,
        json!({"node_1": {"tls": {"ca_file": pki.s("ca.pem"), "verify_hostname": false}}}),
    );
    eventually(T, || {
        (node_row(&app)["site_settings"]["tls"]["verify_hostname"] == false).then_some(())
    })
    .expect("settings re-read");
    dispatch(&sim, "sess_1", "corr_name");
    let last = wait_final(&sim, "corr_name", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(scp.sop_uids(), sops);
}
