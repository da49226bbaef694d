//! `laminate-proxy demo`: the whole system with nothing installed dispatches its
//! synthetic study to its embedded PACS and serves the status page.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn demo_dispatches_its_study_to_the_embedded_pacs_and_stops_on_sigterm() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(dir.path().join("demo.log")).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_laminate-proxy"))
        .args([
            "demo",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("d"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("demo starts");
    let url = format!("http://127.0.0.1:{port}/api/dispatches");
    let done = eventually(Duration::from_secs(90), || {
        let (code, body) = http("GET", &url, None)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v[0]["state"] == "completed").then_some(v)
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = eventually(Duration::from_secs(15), || child.try_wait().ok().flatten());
    let out = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    let done = done.unwrap_or_else(|| panic!("the demo's dispatch did not complete:\n{out}"));
    assert_eq!(done[0]["nodes"][0]["files_sent"], 100, "{done}");
    assert!(
        out.contains(&format!("status page at http://127.0.0.1:{port}/")),
        "{out}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{out}");
}
