//! The command line (APPLIANCE.md): bad settings refused with exit 2 and one
//! line each, the key never shown, healthcheck, corrupt config files.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn bad_settings_are_refused_with_one_line_each_and_exit_code_2() {
    let (code, out) = run_binary(
        &[
            "run",
            "--backend-url",
            "http://nope",
            "--http-addr",
            "not-an-addr",
            "--ae-title",
            "WAY_TOO_LONG_AE_TITLE_X",
            "--dicom-addr",
            "nowhere",
            "--log-format",
            "xml",
        ],
        &[("LAMINATE_PROXY_KEY", KEY)],
    );
    assert_eq!(code, Some(2), "{out}");
    for setting in [
        "--backend-url",
        "--http-addr",
        "--ae-title",
        "--dicom-addr",
        "--log-format",
    ] {
        assert!(
            out.lines().any(|l| l.contains(setting)),
            "no line names {setting}:\n{out}"
        );
    }
    assert!(!out.contains(KEY), "the key leaked:\n{out}");
}

#[test]
fn a_missing_key_and_url_are_named_with_their_env_vars() {
    let (code, out) = run_binary(&["run"], &[("HOME", "/tmp")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("LAMINATE_BACKEND_URL"), "{out}");
    assert!(out.contains("LAMINATE_PROXY_KEY"), "{out}");
}

#[test]
fn settings_come_from_the_environment_too() {
    let sim = sim();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let data = dir.path().join("d");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_laminate-proxy"))
        .arg("run")
        .env_clear()
        .env("LAMINATE_BACKEND_URL", sim.backend_url())
        .env("LAMINATE_PROXY_KEY", KEY)
        .env("LAMINATE_PROXY_DATA_DIR", &data)
        .env("LAMINATE_PROXY_HTTP_ADDR", &http)
        .env("LAMINATE_PROXY_DICOM_ADDR", "off")
        .env("LAMINATE_PROXY_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let ok = sim.wait_connected(Duration::from_secs(20));
    let (code, out) = run_binary(&["healthcheck"], &[("LAMINATE_PROXY_HTTP_ADDR", &http)]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        data.join("nodes.json").exists()
            && data.join("proxy.json").exists()
            && data.join("status.json").exists()
    );
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (code, _) = run_binary(&["healthcheck", "--http-addr", &addr], &[]);
    assert_eq!(code, Some(1));
}

#[test]
fn a_corrupt_config_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("nodes.json"), b"{\"nodes\": [oops").expect("write");
    let data_arg = data.display().to_string();
    let (code, out) = run_binary(
        &[
            "run",
            "--backend-url",
            "ws://127.0.0.1:1/",
            "--data-dir",
            &data_arg,
            "--http-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--dicom-addr",
            "off",
        ],
        &[("LAMINATE_PROXY_KEY", KEY)],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("nodes.json"), "{out}");
    assert_eq!(
        std::fs::read(data.join("nodes.json")).expect("read"),
        b"{\"nodes\": [oops"
    );
}

#[test]
fn the_key_appears_in_no_log_and_no_api_answer() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(Duration::from_secs(20));
    assert!(sim.wait_connected(Duration::from_secs(20)));
    assert!(sim.send_event(&event("ping", "p", json!({}))));
    sim.wait_frame(Duration::from_secs(10), is_pong("p"))
        .expect("pong");
    sim.kick(1011, "bye");
    assert!(
        eventually(Duration::from_secs(20), || (sim.connections() >= 2
            && sim.is_connected())
        .then_some(()))
        .is_some()
    );
    for path in [
        "/api/status",
        "/api/actors",
        "/api/nodes",
        "/readyz",
        "/healthz",
    ] {
        let (_, body) = app.get(path).expect("answer");
        assert!(!body.contains(KEY), "{path} leaks the key: {body}");
    }
    let logs = app.logs();
    assert!(
        logs.contains("pk_…"),
        "the redacted key is logged at start:\n{logs}"
    );
    assert!(!logs.contains(KEY), "logs leak the key");
    assert!(
        !logs.contains("0123456789abcdef"),
        "logs leak part of the key"
    );
}

#[test]
fn the_start_up_log_says_how_malloc_was_tuned_and_an_operators_glibc_setting_wins() {
    let sim = sim();
    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["a", "b"] {
        std::fs::create_dir(tmp.path().join(d)).expect("dir");
    }
    let mut app = Appliance::with_dir(tmp.path().join("a"), &sim.backend_url(), &[]);
    app.spawn();
    app.wait_ready(Duration::from_secs(20));
    let logs = app.logs();
    assert!(
        logs.contains("arena_max=2 mmap_threshold=131072 trim_threshold=131072"),
        "{logs}"
    );
    let mut set = Appliance::with_dir(tmp.path().join("b"), &sim.backend_url(), &[]);
    set.env.push(("MALLOC_ARENA_MAX".into(), "4".into()));
    set.env.push((
        "GLIBC_TUNABLES".into(),
        "glibc.malloc.trim_threshold=1048576".into(),
    ));
    set.spawn();
    set.wait_ready(Duration::from_secs(20));
    let logs = set.logs();
    assert!(
        logs.contains("arena_max=as set by MALLOC_ARENA_MAX/GLIBC_TUNABLES mmap_threshold=131072 trim_threshold=as set by MALLOC_TRIM_THRESHOLD_/GLIBC_TUNABLES"),
        "{logs}"
    );
}
