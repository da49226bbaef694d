//! Forwarding the audit trail as RFC 5424 syslog over TCP (octet counting,
//! RFC 6587) through the real binary: the frames match the records on file, records
//! made while the collector is away reach it when it comes up, `doctor` checks the
//! collector, and a malformed target is refused at start.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::audit::*;
use support::*;

const T: Duration = Duration::from_secs(30);

/// Reads octet-counted frames (`LEN SP MSG`) from the first connection.
fn collector(listener: TcpListener, frames: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut r = BufReader::new(stream);
        loop {
            let mut len = Vec::new();
            if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                return;
            }
            let Ok(n) = String::from_utf8_lossy(&len).trim().parse::<usize>() else {
                frames
                    .lock()
                    .unwrap()
                    .push(format!("bad frame length {len:?}"));
                return;
            };
            let mut msg = vec![0; n];
            if r.read_exact(&mut msg).is_err() {
                return;
            }
            frames
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&msg).into_owned());
        }
    });
}

#[test]
fn audit_records_are_forwarded_as_octet_counted_rfc5424_syslog() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let target = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let frames = Arc::new(Mutex::new(Vec::new()));
    collector(listener, frames.clone());
    let sim = sim();
    let app = appliance(&sim, free_port(), &["--audit-syslog", &target]);
    let (status, _) = app.post("/api/nodes/node_1/echo", None).expect("answer");
    assert_eq!(status, 401);

    let got = eventually(T, || {
        let f = frames.lock().unwrap().clone();
        (f.len() >= 2).then_some(f)
    })
    .unwrap_or_else(|| {
        panic!(
            "no syslog frames: {:?}\n{}",
            frames.lock().unwrap(),
            app.logs()
        )
    });
    let on_file = records(&app);
    for (msg, rec) in got.iter().zip(&on_file) {
        // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
        let parts: Vec<&str> = msg.splitn(8, ' ').collect();
        assert_eq!(parts.len(), 8, "{msg}");
        let pri: u32 = parts[0]
            .strip_prefix('<')
            .and_then(|p| p.strip_suffix(">1"))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("PRI/VERSION of {msg}"));
        assert_eq!(pri / 8, 13, "facility: log audit");
        assert_eq!(parts[1], rec["at"]);
        assert_eq!(parts[3], "laminate-proxy");
        assert_eq!(parts[5], rec["event_id"]["code"]);
        assert_eq!(parts[6], "-");
        let body = parts[7]
            .strip_prefix('\u{feff}')
            .expect("BOM before UTF-8 MSG");
        let forwarded: Value = serde_json::from_str(body).expect("JSON record");
        assert_eq!(&forwarded, rec);
        assert!(!msg.contains(KEY));
    }
    assert_eq!(code(&on_file[0]), "110114");
    assert_eq!(on_file[1]["detail"]["status"], 401);
    assert_eq!(
        got[1].split(' ').next(),
        Some("<108>1"),
        "a refused action is a warning"
    );
}

#[test]
fn records_made_while_the_syslog_collector_is_away_reach_it_when_it_comes_up() {
    let down = DownPort::reserve();
    let target = format!("127.0.0.1:{}", down.port());
    let sim = sim();
    let app = appliance(&sim, free_port(), &["--audit-syslog", &target]);
    let (status, _) = app.post("/api/nodes/node_1/echo", None).expect("answer");
    assert_eq!(status, 401);
    assert_eq!(wait_records(&app, 2, |_| true).len(), 2);
    // The appliance has tried and failed at least once by now.
    assert!(
        eventually(T, || app
            .logs()
            .contains("audit syslog collector unreachable")
            .then_some(()))
        .is_some(),
        "{}",
        app.logs()
    );
    let listener = down.listen();
    let frames = Arc::new(Mutex::new(Vec::new()));
    collector(listener, frames.clone());
    let got = eventually(T, || {
        let f = frames.lock().unwrap().clone();
        (f.len() >= 2).then_some(f)
    })
    .unwrap_or_else(|| panic!("frames: {:?}\n{}", frames.lock().unwrap(), app.logs()));
    let codes: Vec<&str> = got.iter().filter_map(|m| m.split(' ').nth(5)).collect();
    assert_eq!(codes, ["110114", "110113"], "{got:?}\n{}", app.logs());
}

#[test]
fn doctor_says_whether_the_audit_syslog_collector_accepts_connections() {
    let sim = sim();
    let tmp = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let up = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let refusing = DownPort::reserve();
    let down = format!("127.0.0.1:{}", refusing.port());
    let doctor = |target: &str| {
        let http = format!("127.0.0.1:{}", free_port());
        let data = tmp.path().join("data").display().to_string();
        let backend = sim.backend_url();
        let args = [
            "doctor",
            "--backend-url",
            backend.as_str(),
            "--data-dir",
            &data,
            "--http-addr",
            &http,
            "--dicom-addr",
            "off",
            "--audit-syslog",
            target,
        ];
        run_binary(&args, &[("LAMINATE_PROXY_KEY", KEY)]).1
    };
    let line = |out: &str| {
        out.lines()
            .find(|l| l.contains(" audit syslog: "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no audit syslog line in:\n{out}"))
    };
    let out = doctor(&up);
    assert!(line(&out).starts_with("ok "), "{out}");
    let out = doctor(&down);
    assert!(line(&out).starts_with("warn "), "{out}");
    assert!(line(&out).contains("records wait in audit/"), "{out}");
    let out = doctor("no-port");
    assert!(line(&out).starts_with("fail "), "{out}");
}
#[test]
fn a_bad_audit_syslog_target_is_refused_at_start() {
    let (code, out) = run_binary(
        &[
            "run",
            "--backend-url",
            "ws://127.0.0.1:9/",
            "--proxy-key",
            KEY,
            "--audit-syslog",
            "collector-without-port",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("--audit-syslog (LAMINATE_PROXY_AUDIT_SYSLOG)"),
        "{out}"
    );
}
