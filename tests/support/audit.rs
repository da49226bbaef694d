//! Helpers of the audit trail's tests (`tests/audit.rs`, `tests/audit_syslog.rs`).

use std::time::Duration;

use super::*;

const T: Duration = Duration::from_secs(30);
/// The status token the audit tests' appliances run with.
pub const TOKEN: &str = "audit-test-token";

/// Started with one node `node_1` at `port`, a status token and `extra` flags.
pub fn appliance(sim: &BackendSim, port: u16, extra: &[&str]) -> Appliance {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["--status-token", TOKEN];
    args.extend_from_slice(extra);
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &args);
    app.keep_dir(tmp);
    app.write_config(
        "nodes.json",
        &json!({ "nodes": [node("node_1", "PACS_A", port)] }),
    );
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    app
}

pub fn records(app: &Appliance) -> Vec<Value> {
    app.get_json("/api/audit?since=2000-01-01T00:00:00Z")["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until exactly `n` records match and returns them.
pub fn wait_records(app: &Appliance, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let found = eventually(T, || {
        let r: Vec<Value> = records(app).into_iter().filter(|r| pred(r)).collect();
        (r.len() >= n).then_some(r)
    })
    .unwrap_or_else(|| panic!("fewer than {n} matching records: {:#?}", records(app)));
    // A duplicate would follow its original closely.
    std::thread::sleep(Duration::from_millis(300));
    let again: Vec<Value> = records(app).into_iter().filter(|r| pred(r)).collect();
    assert_eq!(again.len(), n, "{again:#?}");
    found
}

pub fn code(r: &Value) -> &str {
    r["event_id"]["code"].as_str().unwrap_or("")
}
