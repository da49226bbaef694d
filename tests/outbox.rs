//! The durable outbox (PROTOCOL.md §4): events queued while the backend is
//! unreachable are delivered in order after it comes back — also when the
//! appliance restarted in between.

mod support;

use std::time::Duration;

use laminate_store::{Outbox, Store};
use support::*;

const T: Duration = Duration::from_secs(30);

fn status_event(n: u32, status: &str) -> Vec<u8> {
    event("dispatch.status", &format!("corr_{n}"), json!({"node_id": "node_1", "status": status, "progress": 0, "files_sent": 0, "files_total": 3, "error": null}))
        .to_string()
        .into_bytes()
}

#[test]
fn queued_events_survive_a_restart_and_are_delivered_in_order_after_the_backend_returns() {
    let sim = sim();
    sim.go_down();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    // Events a previous run left in the outbox.
    {
        std::fs::create_dir_all(app.data_path("store")).expect("mkdir");
        let store = Store::open(&app.data_path("store")).expect("store");
        for (n, s) in [(1, "queued"), (2, "downloading"), (3, "completed")] {
            store
                .outbox_push(&status_event(n, s), Some("d1/node_1"), false)
                .expect("push");
        }
        store.flush().expect("flush");
    }
    app.spawn();
    app.wait_ready(T);
    assert_eq!(app.status()["outbox"]["depth"], 3);
    // Backend still down: restart the appliance; nothing is lost.
    assert_eq!(app.terminate(), Some(0), "{}", app.logs());
    app.spawn();
    app.wait_ready(T);
    assert_eq!(app.status()["outbox"]["depth"], 3);
    sim.come_up().expect("up");
    assert!(sim.wait_connected(T), "{}", app.logs());
    let delivered = sim.wait_frames(T, 3, is_type("dispatch.status"));
    let order: Vec<&str> = delivered
        .iter()
        .filter_map(|v| v["payload"]["status"].as_str())
        .collect();
    assert_eq!(order, ["queued", "downloading", "completed"]);
    // The heartbeat went first.
    let frames = sim.frames();
    assert_eq!(frames[0]["event_type"], "proxy.heartbeat");
    // Once confirmed, the outbox is empty.
    eventually(T, || (app.status()["outbox"]["depth"] == 0).then_some(())).expect("outbox drained");
    // And after a restart nothing is sent twice.
    assert_eq!(app.terminate(), Some(0));
    sim.clear_frames();
    app.spawn();
    app.wait_ready(T);
    assert!(
        eventually(T, || (sim.connections() >= 2 && sim.is_connected())
            .then_some(()))
        .is_some()
    );
    sim.wait_frame(T, is_type("proxy.heartbeat"))
        .expect("heartbeat");
    std::thread::sleep(Duration::from_secs(1));
    assert!(sim
        .frames()
        .iter()
        .all(|f| f["event_type"] != "dispatch.status"));
}

#[test]
fn unconfirmed_events_are_sent_again_on_the_next_connection() {
    let sim = sim();
    // A backend that never answers pings never confirms delivery...
    sim.set_answer_pings(false);
    sim.go_down();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    {
        std::fs::create_dir_all(app.data_path("store")).expect("mkdir");
        let store = Store::open(&app.data_path("store")).expect("store");
        store
            .outbox_push(&status_event(1, "failed"), None, false)
            .expect("push");
    }
    app.spawn();
    app.wait_ready(T);
    sim.come_up().expect("up");
    sim.wait_frame(T, is_type("dispatch.status"))
        .expect("first delivery");
    assert_eq!(app.status()["outbox"]["depth"], 1, "not confirmed yet");
    // ...so after the connection drops, the event goes out again (at least once).
    sim.set_answer_pings(true);
    sim.clear_frames();
    sim.kick(1011, "restart");
    sim.wait_frame(T, is_type("dispatch.status"))
        .expect("second delivery");
    eventually(T, || (app.status()["outbox"]["depth"] == 0).then_some(())).expect("confirmed");
}
