//! No dispatch stage hangs silently: a download whose body request fails after
//! a good tail probe is retried; a stage that stops making progress is
//! cancelled by its watchdog and retried (issue: "a dispatch hangs in
//! `downloading` forever"). Through the real binary, built with the test-only
//! `fault-injection` feature (shorter stage limits, the `test.stall` fault).
#![cfg(feature = "fault-injection")]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::{DownloadStep, EntityKind};
use support::*;

const T: Duration = Duration::from_secs(30);
/// The stage limit the tests give the appliance (seconds).
const STAGE_IDLE_S: &str = "3";

/// An archive larger than the tail probe (1 MiB), so that the extraction
/// that follows the download has to read the spool file.
fn large_study() -> (bytes::Bytes, BTreeSet<String>) {
    let (zip, inst) = StudySpec::simple(1, 40, 64 * 1024)
        .zip_bytes()
        .expect("study zip");
    assert!(zip.len() > 2 * 1024 * 1024, "{} bytes", zip.len());
    (zip, inst.into_iter().map(|i| i.sop_instance_uid).collect())
}

fn appliance(sim: &BackendSim, port: u16) -> Appliance {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.keep_dir(tmp);
    app.env.push((
        "LAMINATE_PROXY_TEST_STAGE_IDLE_S".into(),
        STAGE_IDLE_S.into(),
    ));
    app.write_config(
        "nodes.json",
        &json!({ "nodes": [node("node_1", "PACS_A", port)] }),
    );
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    app
}

/// Dispatches `id` and waits for its final status on node_1; returns the
/// statuses seen, in order.
fn dispatch_and_wait(sim: &BackendSim, app: &Appliance, id: &str, corr: &str) -> Vec<Value> {
    assert!(sim.send_event(&dispatch_event("session", id, corr, &["node_1"], "normal")));
    let last = wait_final(sim, corr, "node_1", Duration::from_secs(90))
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    statuses(sim, corr, "node_1")
}

fn retry_errors(seen: &[Value]) -> Vec<String> {
    seen.iter()
        .filter(|s| s["status"] == "retrying")
        .filter_map(|s| s["error"].as_str().map(str::to_owned))
        .collect()
}

/// One failing body request after a good tail probe, then a good one.
fn first_body_request_fails(step: DownloadStep, id: &str, expect: &str) {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = large_study();
    sim.put_download(EntityKind::Session, id, zip);
    sim.script_download(EntityKind::Session, id, vec![step]);
    let app = appliance(&sim, scp.port);
    let corr = format!("corr_{id}");
    let seen = dispatch_and_wait(&sim, &app, id, &corr);
    let errors = retry_errors(&seen);
    assert_eq!(errors.len(), 1, "{seen:?}");
    assert!(
        errors[0].starts_with("download: ") && errors[0].contains(expect),
        "{errors:?}"
    );
    assert!(errors[0].contains("next try in 2 s"), "{errors:?}");
    let probes = sim
        .download_requests()
        .iter()
        .filter(|r| r.range.as_deref().is_some_and(|r| r.starts_with("bytes=-")))
        .count();
    assert_eq!(probes, 0, "tail probes are kept out of download_requests");
    assert_eq!(
        sim.download_requests().len(),
        2,
        "{:?}",
        sim.download_requests()
    );
    assert_eq!(scp.sop_uids(), sops);
    assert_eq!(scp.store_requests(), sops.len(), "nothing sent twice");
    // The spool is gone once the dispatch is final.
    let spool = app.data_path("spool");
    let left = eventually(T, || {
        let n = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
        (n == 0).then_some(())
    });
    assert!(left.is_some(), "spool left behind: {spool:?}");
}

#[test]
fn a_server_error_on_the_body_after_a_good_tail_probe_is_retried() {
    first_body_request_fails(DownloadStep::Status(500), "sess_500", "server error 500");
}

#[test]
fn a_connection_dropped_before_any_body_byte_after_a_good_tail_probe_is_retried() {
    first_body_request_fails(DownloadStep::CutAfter(0), "sess_cut0", "body");
}

#[test]
fn a_body_that_never_sends_a_byte_times_out_and_is_retried() {
    first_body_request_fails(
        DownloadStep::Stall,
        "sess_stall",
        &format!("no data for {STAGE_IDLE_S} s"),
    );
}

#[test]
fn a_stalled_extraction_is_cancelled_by_the_watchdog_and_retried() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = large_study();
    sim.put_download(EntityKind::Session, "sess_wd", zip);
    let app = appliance(&sim, scp.port);
    assert!(sim.send_event(&event(
        "test.stall",
        "stall_extract",
        json!({"stage": "extract"})
    )));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_wd",
        "corr_wd",
        &["node_1"],
        "normal"
    )));
    // While it is stuck, the Health view shows the stage and its idle time.
    let stuck = eventually(T, || {
        let actors = app.get_json("/api/actors");
        let jobs = actors
            .as_array()?
            .iter()
            .find(|a| a["name"] == "dispatch-jobs")?;
        jobs["stages"]
            .as_array()?
            .iter()
            .find(|s| {
                s["stage"] == "extract" && s["since_progress_s"].as_f64().is_some_and(|t| t >= 1.0)
            })
            .cloned()
    })
    .unwrap_or_else(|| panic!("no stuck stage shown:\n{}", app.logs()));
    assert!(stuck["dispatch_id"].is_string(), "{stuck}");
    let page = app.get("/").map(|(_, b)| b).unwrap_or_default();
    assert!(page.contains("since progress"), "the page shows the stage");

    let last = wait_final(&sim, "corr_wd", "node_1", Duration::from_secs(90))
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    let errors = retry_errors(&statuses(&sim, "corr_wd", "node_1"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("extract: no progress for {STAGE_IDLE_S} s")),
        "{errors:?}"
    );
    assert_eq!(scp.sop_uids(), sops);
    // Finished jobs are no longer watched.
    let unwatched = eventually(T, || {
        let r = app.get_json("/api/actors");
        let j = r
            .as_array()?
            .iter()
            .find(|a| a["name"] == "dispatch-jobs")?
            .clone();
        j["stages"].as_array()?.is_empty().then_some(())
    });
    assert!(unwatched.is_some(), "{}", app.get_json("/api/actors"));
}
