//! Supervision through the real binary (built with the test-only
//! `fault-injection` feature): a handler panic restarts that actor, shows in
//! `/api/actors`, and the link stays up.
#![cfg(feature = "fault-injection")]

mod support;

use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(20);

fn actor(app: &Appliance, name: &str) -> Value {
    app.get_json("/api/actors")
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or_default()
}

#[test]
fn a_panicking_handler_restarts_its_actor_and_the_link_stays_up() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    let names: Vec<String> = app
        .get_json("/api/actors")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for n in ["config", "heartbeat", "link", "nodes", "router"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    for target in ["config", "router"] {
        assert!(sim.send_event(&event(
            "test.panic",
            &format!("panic_{target}"),
            json!({"actor": target})
        )));
        let row = eventually(T, || {
            let r = actor(&app, target);
            (r["restarts"] == 1 && r["state"] == "running").then_some(r)
        })
        .unwrap_or_else(|| panic!("{target} did not restart: {}", app.get_json("/api/actors")));
        assert!(
            row["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("fault injection")),
            "{row}"
        );
    }
    // Still one connection, pings answered, config events still applied.
    assert!(sim.send_event(&event("ping", "after_panic", json!({}))));
    sim.wait_frame(T, is_pong("after_panic"))
        .expect("pong after panics");
    assert!(sim.send_event(&event(
        "proxy.status_changed",
        "st_after",
        json!({"status": "maintenance", "is_active": false, "reason": "r"})
    )));
    eventually(T, || {
        (app.read_config("status.json")["status"] == "maintenance").then_some(())
    })
    .expect("config actor works");
    assert_eq!(sim.connections(), 1);
    assert_eq!(app.get("/readyz").map(|r| r.0), Some(200));
}
