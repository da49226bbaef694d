//! The backend link through the real binary against the simulator
//! (PROTOCOL.md §1): connect, heartbeat first, backoff, close codes, liveness, TLS.

mod support;

use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn connects_with_the_key_and_sends_the_heartbeat_first() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T), "{}", app.logs());
    let hb = sim.wait_frame(T, |_| true).expect("a first frame");
    assert_eq!(hb["event_type"], "proxy.heartbeat", "first frame: {hb}");
    let a = sim.attempts();
    assert!(a.iter().all(|a| a.key_ok && a.path_ok), "{a:?}");
    let st = app.status();
    assert_eq!(st["link"]["state"], "connected");
}

#[test]
fn wrong_key_is_rejected_without_a_reconnect_storm() {
    let sim = BackendSim::start(SimOptions {
        proxy_key: "pk_the_right_one_9999".into(),
        tls: None,
        port: 0,
    })
    .expect("sim");
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    let rejected = eventually(T, || {
        let st = app.status();
        (st["link"]["state"] == "rejected").then_some(st)
    })
    .expect("link state becomes rejected");
    assert_eq!(rejected["link"]["notice"], "authentication rejected");
    // PROTOCOL.md §1: back off ≥ 60 s — so over 30 s there is exactly one attempt.
    std::thread::sleep(Duration::from_secs(30));
    let attempts = sim.attempts();
    assert_eq!(attempts.len(), 1, "attempts within 30 s: {attempts:?}");
    assert!(!attempts[0].key_ok);
    // A rejected link does not make the appliance unready.
    assert_eq!(app.get("/readyz").map(|r| r.0), Some(200));
}

#[test]
fn a_kick_is_followed_by_a_reconnect_and_a_new_heartbeat() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    sim.wait_frame(T, is_type("proxy.heartbeat"))
        .expect("heartbeat");
    sim.clear_frames();
    sim.kick(1011, "server restarting");
    assert!(
        eventually(T, || (sim.connections() >= 2 && sim.is_connected())
            .then_some(()))
        .is_some(),
        "no reconnect:\n{}",
        app.logs()
    );
    let first = sim
        .wait_frame(T, |_| true)
        .expect("a frame on the new connection");
    assert_eq!(first["event_type"], "proxy.heartbeat");
    let st = app.status();
    assert_eq!(st["link"]["reconnects"], 1);
}

#[test]
fn backend_down_for_ten_seconds_then_back_gets_a_reconnect_and_heartbeat() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    sim.go_down();
    let backoff = eventually(T, || {
        let st = app.status();
        (st["link"]["state"] == "backoff").then_some(st)
    })
    .expect("link goes to backoff");
    assert!(backoff["link"]["last_error"].is_string());
    std::thread::sleep(Duration::from_secs(10));
    sim.clear_frames();
    sim.come_up().expect("sim comes back");
    // Backoff after ~10 s of failures is at most ~16 s.
    assert!(
        sim.wait_connected(Duration::from_secs(40)),
        "{}",
        app.logs()
    );
    sim.wait_frame(T, is_type("proxy.heartbeat"))
        .expect("heartbeat after reconnect");
    // Readiness never depended on the backend.
    assert_eq!(app.get("/readyz").map(|r| r.0), Some(200));
}

#[test]
fn a_frame_over_one_mebibyte_is_closed_with_1009_and_the_link_comes_back() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    let big = format!(
        r#"{{"event_type":"ping","correlation_id":"big","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(1024 * 1024 + 10)
    );
    assert!(sim.send_text(&big));
    assert!(
        eventually(T, || sim
            .closes_received()
            .contains(&Some(1009))
            .then_some(()))
        .is_some(),
        "closes: {:?}\n{}",
        sim.closes_received(),
        app.logs()
    );
    assert!(
        eventually(T, || (sim.connections() >= 2 && sim.is_connected())
            .then_some(()))
        .is_some()
    );
    // The big frame was never acted on.
    assert!(sim.frames().iter().all(|f| f["correlation_id"] != "big"));
    // And the new link works.
    assert!(sim.send_event(&event("ping", "after-big", json!({}))));
    sim.wait_frame(T, is_pong("after-big")).expect("pong");
}

#[test]
fn pings_go_out_every_fifteen_seconds_and_silence_for_45_seconds_reconnects() {
    let sim = sim();
    sim.set_answer_pings(false);
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    // Nothing at all arrives from the backend: after 45 s the link is dead.
    let reconnected = eventually(Duration::from_secs(70), || {
        (sim.connections() >= 2).then_some(())
    });
    assert!(
        reconnected.is_some(),
        "no reconnect after silence:\n{}",
        app.logs()
    );
    assert!(sim.pings_received() >= 2, "pings: {}", sim.pings_received());
    assert!(app.logs().contains("nothing received for 45 s"));
}

#[test]
fn three_replaced_closes_within_ten_minutes_hold_the_link_back() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    for n in 1..=3 {
        assert!(
            eventually(T, || (sim.connections() >= n && sim.is_connected())
                .then_some(()))
            .is_some(),
            "connection {n}:\n{}",
            app.logs()
        );
        sim.kick(4000, "replaced");
    }
    let held = eventually(T, || {
        let st = app.status();
        (st["link"]["notice"] == "replaced by another appliance using the same key").then_some(st)
    })
    .expect("held back with the replaced notice");
    assert_eq!(held["link"]["state"], "backoff");
    // Held back ≥ 60 s: no fourth connection soon.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(sim.connections(), 3);
}

#[test]
fn wss_works_with_a_self_signed_ca_given_by_ca_file() {
    let (tls, _der, pem) = laminate_proxy::sim::tls::self_signed_tls().expect("certs");
    let sim = BackendSim::start(SimOptions {
        proxy_key: KEY.into(),
        tls: Some(tls),
        port: 0,
    })
    .expect("sim");
    assert!(sim.backend_url().starts_with("wss://"));
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca = ca_dir.path().join("ca.pem");
    std::fs::write(&ca, pem).expect("write ca");
    let ca_arg = ca.display().to_string();
    let mut app = Appliance::start(&sim.backend_url(), &["--ca-file", &ca_arg]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T), "{}", app.logs());
    assert!(sim.send_event(&event("ping", "over-tls", json!({}))));
    sim.wait_frame(T, is_pong("over-tls"))
        .expect("pong over wss");
}

#[test]
fn wss_without_the_ca_is_refused_and_says_why() {
    let (tls, _der, _pem) = laminate_proxy::sim::tls::self_signed_tls().expect("certs");
    let sim = BackendSim::start(SimOptions {
        proxy_key: KEY.into(),
        tls: Some(tls),
        port: 0,
    })
    .expect("sim");
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    let st = eventually(T, || {
        let st = app.status();
        st["link"]["last_error"].is_string().then_some(st)
    })
    .expect("an error is shown");
    assert_eq!(st["link"]["state"], "backoff");
    assert!(!sim.is_connected());
}
