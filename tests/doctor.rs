//! `laminate-proxy doctor` through the real binary: against a live Orthanc and
//! the backend simulator (good key, bad key), a node port nothing listens on, a
//! data dir that cannot be created, and beside a running appliance. Each check's
//! line and the exit code are asserted.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(30);

/// `doctor` with the settings `run` would get; (exit code, output).
fn doctor(backend_url: &str, key: &str, data_dir: &Path, dicom: &str) -> (Option<i32>, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let data = data_dir.display().to_string();
    run_binary(
        &[
            "doctor",
            "--backend-url",
            backend_url,
            "--data-dir",
            &data,
            "--http-addr",
            &http,
            "--dicom-addr",
            dicom,
        ],
        // The key through the environment, as in a container.
        &[("LAMINATE_PROXY_KEY", key)],
    )
}

/// The line of `check` (`"{outcome} {check}: …"`), asserting it has `outcome`.
fn line<'a>(out: &'a str, outcome: &str, check: &str) -> &'a str {
    let l = out
        .lines()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(&format!("{check}:")))
        })
        .unwrap_or_else(|| panic!("no `{check}` line in:\n{out}"));
    assert!(
        l.starts_with(&format!("{outcome} ")),
        "`{check}` is not {outcome}: {l}\n{out}"
    );
    l
}

fn write_nodes(data_dir: &Path, nodes: Value) {
    std::fs::create_dir_all(data_dir).expect("mkdir");
    std::fs::write(
        data_dir.join("nodes.json"),
        json!({ "nodes": nodes }).to_string(),
    )
    .expect("nodes.json");
}

#[test]
fn a_live_orthanc_and_the_simulator_with_the_right_key_pass_every_check() {
    let sim = sim();
    let orthanc = Orthanc::start("ORTHANC");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    write_nodes(
        &data,
        json!([node("node_1", "ORTHANC", orthanc.dicom_port)]),
    );
    let dicom = format!("127.0.0.1:{}", free_port());
    let (code, out) = doctor(&sim.backend_url(), KEY, &data, &dicom);
    assert_eq!(code, Some(0), "{out}");
    line(&out, "ok", "settings");
    line(&out, "ok", "data dir");
    line(&out, "ok", "free space");
    line(&out, "ok", "nodes.json");
    line(&out, "ok", "store");
    line(&out, "ok", "http port");
    line(&out, "ok", "dicom port");
    line(&out, "ok", "backend dns");
    line(&out, "ok", "backend tcp");
    let ws = line(&out, "ok", "backend websocket");
    assert!(ws.contains("key was accepted"), "{ws}");
    let n = line(&out, "ok", "node node_1");
    assert!(n.contains("C-ECHO ok"), "{n}");
    assert!(!out.contains(KEY), "the key is printed:\n{out}");
    assert!(out.contains("pk_…cdef"), "{out}");
    // It connected once and did not stay.
    assert_eq!(sim.connections(), 1);
    assert!(
        eventually(Duration::from_secs(5), || (!sim.is_connected())
            .then_some(()))
        .is_some(),
        "doctor left its WebSocket open"
    );
    // Nothing was written: no store, no default config files.
    assert!(!data.join("store").exists());
    assert!(!data.join("proxy.json").exists());
    assert_eq!(
        std::fs::read_dir(&data).expect("ls").count(),
        1,
        "only nodes.json"
    );
}

#[test]
fn a_wrong_key_fails_the_websocket_check_with_the_reason() {
    let sim = sim();
    let tmp = tempfile::tempdir().expect("tempdir");
    let wrong = "pk_wrong_key_000000009999";
    let (code, out) = doctor(&sim.backend_url(), wrong, &tmp.path().join("data"), "off");
    assert_eq!(code, Some(1), "{out}");
    line(&out, "ok", "backend tcp");
    let ws = line(&out, "fail", "backend websocket");
    assert!(ws.contains("the backend rejected the proxy key"), "{ws}");
    assert!(ws.contains("fix:") && ws.contains("--proxy-key"), "{ws}");
    assert!(!out.contains(wrong), "the key is printed:\n{out}");
    assert!(!out.contains("dicom port"), "`off` is not checked:\n{out}");
    assert_eq!(sim.connections(), 0, "no correct-key connection was made");
}

#[test]
fn a_node_whose_port_nothing_listens_on_fails_its_check_and_the_exit_code() {
    let sim = sim();
    let orthanc = Orthanc::start("ORTHANC");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let dead = DownPort::reserve();
    let mut inactive = node("node_off", "NOBODY", dead.port());
    inactive["is_active"] = json!(false);
    write_nodes(
        &data,
        json!([
            node("node_up", "ORTHANC", orthanc.dicom_port),
            node("node_down", "PACS_B", dead.port()),
            // Orthanc checks the called AE title: the association is refused.
            node("node_wrong_ae", "NOT_ORTHANC", orthanc.dicom_port),
            inactive,
        ]),
    );
    // The ingest port is Orthanc's: taken by something that is not this appliance.
    let taken = format!("127.0.0.1:{}", orthanc.dicom_port);
    let (code, out) = doctor(&sim.backend_url(), KEY, &data, &taken);
    assert_eq!(code, Some(1), "{out}");
    let port = line(&out, "fail", "dicom port");
    assert!(port.contains("is in use by another"), "{port}");
    line(&out, "ok", "node node_up");
    let down = line(&out, "fail", "node node_down");
    assert!(down.contains("TCP connect failed"), "{down}");
    assert!(down.contains("fix:"), "{down}");
    let ae = line(&out, "fail", "node node_wrong_ae");
    assert!(
        ae.contains("TCP connect ok") && ae.contains("association"),
        "{ae}"
    );
    let off = line(&out, "ok", "node node_off");
    assert!(off.contains("inactive"), "{off}");
    line(&out, "ok", "backend websocket");
}

#[test]
fn a_data_dir_that_cannot_be_created_fails_even_as_root() {
    let sim = sim();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Nobody, root included, can create a directory under a regular file.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("file");
    let (code, out) = doctor(&sim.backend_url(), KEY, &file.join("data"), "off");
    assert_eq!(code, Some(1), "{out}");
    let l = line(&out, "fail", "data dir");
    assert!(l.contains("is a file, not a directory"), "{l}");
    assert!(l.contains("fix:") && l.contains("--data-dir"), "{l}");
    // The other checks still run.
    line(&out, "ok", "http port");
    line(&out, "ok", "backend websocket");
}

#[test]
fn bad_settings_are_fail_lines_and_the_checks_that_can_run_still_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data").display().to_string();
    let (code, out) = run_binary(
        &[
            "doctor",
            "--backend-url",
            "http://not-a-websocket/",
            "--data-dir",
            &data,
            "--http-addr",
            "nonsense",
            "--dicom-addr",
            "off",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    let fails: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("fail settings:"))
        .collect();
    assert!(
        fails.iter().any(|l| l.contains("--backend-url"))
            && fails.iter().any(|l| l.contains("--proxy-key"))
            && fails.iter().any(|l| l.contains("--http-addr")),
        "{out}"
    );
    line(&out, "ok", "data dir");
    assert!(!out.contains("backend dns"), "{out}");
}

#[test]
fn beside_a_running_appliance_doctor_warns_instead_of_failing_and_sees_the_index() {
    let sim = sim();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T), "{}", app.logs());
    let http = format!("127.0.0.1:{}", app.http_port);
    let data = app.data_dir.display().to_string();
    let args = [
        "doctor",
        "--backend-url",
        &sim.backend_url(),
        "--data-dir",
        &data,
        "--http-addr",
        &http,
        "--dicom-addr",
        "off",
    ];
    let env = [("LAMINATE_PROXY_KEY", KEY)];
    let (code, out) = run_binary(&args, &env);
    assert_eq!(code, Some(0), "warnings only:\n{out}");
    let store = line(&out, "warn", "store");
    assert!(store.contains("in use by a running appliance"), "{store}");
    let port = line(&out, "warn", "http port");
    assert!(port.contains("running laminate-proxy"), "{port}");
    let ws = line(&out, "ok", "backend websocket");
    assert!(ws.contains("running appliance is connected"), "{ws}");
    assert_eq!(
        sim.connections(),
        1,
        "the running appliance was not replaced"
    );

    // Stopped, with a file in storage/ that the index does not know.
    assert_eq!(app.terminate(), Some(0));
    let series = app.data_dir.join("storage/1.2.3/1.2.3.4");
    std::fs::create_dir_all(&series).expect("mkdir");
    std::fs::write(series.join("1.2.3.4.5.dcm"), b"not indexed").expect("write");
    let (code, out) = run_binary(&args, &env);
    assert_eq!(code, Some(0), "{out}");
    line(&out, "ok", "store");
    line(&out, "ok", "http port");
    let index = line(&out, "warn", "index");
    assert!(index.contains("1 files without an entry"), "{index}");
    assert!(index.contains("rebuild-index"), "{index}");
    assert!(
        series.join("1.2.3.4.5.dcm").exists(),
        "doctor repairs nothing"
    );
}

#[test]
fn a_wss_backend_with_an_unknown_ca_fails_the_tls_check_until_its_ca_file_is_given() {
    let (tls, _der, pem) = laminate_proxy::sim::tls::self_signed_tls().expect("certs");
    let sim = BackendSim::start(SimOptions {
        proxy_key: KEY.into(),
        tls: Some(tls),
        port: 0,
    })
    .expect("sim");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data").display().to_string();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, pem).expect("write ca");
    let http = format!("127.0.0.1:{}", free_port());
    let url = sim.backend_url();
    let mut args = vec![
        "doctor",
        "--backend-url",
        &url,
        "--data-dir",
        &data,
        "--http-addr",
        &http,
        "--dicom-addr",
        "off",
    ];
    let env = [("LAMINATE_PROXY_KEY", KEY)];
    let (code, out) = run_binary(&args, &env);
    assert_eq!(code, Some(1), "{out}");
    line(&out, "ok", "backend tcp");
    let tls = line(&out, "fail", "backend tls");
    assert!(tls.contains("--ca-file"), "{tls}");
    assert!(!out.contains("backend websocket"), "{out}");

    let ca_arg = ca.display().to_string();
    args.extend(["--ca-file", &ca_arg]);
    let (code, out) = run_binary(&args, &env);
    assert_eq!(code, Some(0), "{out}");
    line(&out, "ok", "backend tls");
    line(&out, "ok", "backend websocket");
}
