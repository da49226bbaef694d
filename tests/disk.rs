//! The bounded disk through the real binary (APPLIANCE.md "Disk"): a `min_free_gb` set
//! just above what the data dir's file system has free holds a download back as `queued`
//! with `waiting for disk space` and makes the ingest SCP answer 0xA700 (what `storescu`
//! reports), nothing half-written; lowering it with `proxy.config_changed` lets the work
//! through. Eviction by `spool_retention_hours` never takes what a retrying dispatch
//! still needs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::EntityKind;
use support::*;

const T: Duration = Duration::from_secs(30);
const AE: &str = "LAMINATE_PROXY";

/// A `min_free_gb` no file system here can satisfy: 5 GB more than `dir`'s has free.
fn floor_above_free(dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).expect("mkdir");
    let free = fs2::available_space(dir).expect("free space");
    (free as f64 / 1e9 + 5.0).ceil()
}

fn config_changed(sim: &BackendSim, corr: &str, config: Value) {
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        corr,
        json!({ "config": config })
    )));
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_download_under_the_floor_waits_queued_for_disk_space_and_runs_once_the_floor_is_lowered() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = study(1, 4, 4096);
    sim.put_download(EntityKind::Session, "sess_disk", zip);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.keep_dir(tmp);
    let floor = floor_above_free(&app.data_dir);
    app.write_config(
        "nodes.json",
        &json!({ "nodes": [node("node_1", "PACS_A", scp.port)] }),
    );
    app.write_config("proxy.json", &json!({ "min_free_gb": floor }));
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));

    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_disk",
        "corr_disk",
        &["node_1"],
        "normal"
    )));
    let waiting = sim
        .wait_frame(T, |f| {
            f["event_type"] == "dispatch.status"
                && f["correlation_id"] == "corr_disk"
                && f["payload"]["status"] == "queued"
                && f["payload"]["error"] == "waiting for disk space"
        })
        .unwrap_or_else(|| panic!("no wait reported:\n{}", app.logs()));
    assert_eq!(waiting["payload"]["node_id"], "node_1");
    // The status API shows the disk it is waiting for.
    let store = &app.status()["store"];
    assert!(store["free_bytes"].as_u64().is_some(), "{store}");
    assert_eq!(store["evicted"], 0, "{store}");
    assert!(
        store["min_free_bytes"].as_u64() > store["free_bytes"].as_u64(),
        "{store}"
    );
    let metrics = app.get("/metrics").expect("metrics").1;
    assert!(metrics.contains("laminate_disk_free_bytes"), "{metrics}");
    assert!(
        metrics.contains("laminate_cache_evicted_instances_total"),
        "{metrics}"
    );
    // Still waiting a while later: nothing was fetched or written, no retry used up.
    std::thread::sleep(Duration::from_secs(2));
    let seen: Vec<Value> = statuses(&sim, "corr_disk", "node_1");
    assert!(
        seen.iter().all(|s| s["status"] == "queued"),
        "{seen:?}\n{}",
        app.logs()
    );
    assert!(
        sim.download_requests()
            .iter()
            .all(|r| r.range.as_deref().is_some_and(|r| r.starts_with("bytes=-"))),
        "only the archive's end may have been probed: {:?}",
        sim.download_requests()
    );
    assert!(files_under(&app.data_path("spool")).is_empty());
    assert!(files_under(&app.data_path("storage"))
        .iter()
        .all(|p| p.extension().is_none_or(|x| x != "dcm")));

    // Space "returns": the floor goes down, live.
    config_changed(&sim, "cfg_floor", json!({ "min_free_gb": 0 }));
    let last = wait_final(&sim, "corr_disk", "node_1", T)
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(scp.sop_uids(), sops);
    let order: Vec<String> = statuses(&sim, "corr_disk", "node_1")
        .iter()
        .filter_map(|s| s["status"].as_str().map(str::to_owned))
        .filter(|s| s != "sending")
        .collect();
    let mut dedup = order.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        ["queued", "downloading", "extracting", "completed"],
        "{order:?}"
    );
}

fn with_ingest(sim: &BackendSim, proxy: Value) -> (Appliance, u16) {
    let port = free_port();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    if let Some(i) = app.args.iter().position(|a| a == "off") {
        app.args[i] = format!("127.0.0.1:{port}");
    }
    app.keep_dir(tmp);
    app.write_config("proxy.json", &proxy);
    app.spawn();
    app.wait_ready(T);
    (app, port)
}

fn storescu(port: u16, dir: &Path) -> (Option<i32>, String) {
    let out = Command::new("/usr/bin/storescu")
        .args([
            "-v",
            "-aec",
            AE,
            "+sd",
            "+r",
            "127.0.0.1",
            &port.to_string(),
        ])
        .arg(dir)
        .output()
        .expect("dcmtk storescu");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[test]
fn under_min_free_gb_the_ingest_scp_answers_out_of_resources_and_takes_instances_once_it_is_lowered(
) {
    let sim = sim();
    let probe = tempfile::tempdir().expect("tempdir");
    let floor = floor_above_free(probe.path());
    let (app, port) = with_ingest(&sim, json!({ "min_free_gb": floor }));
    assert!(sim.wait_connected(T));
    let src = tempfile::tempdir().expect("tempdir");
    let spec = StudySpec::simple(1, 2, 1024);
    spec.write_files(src.path()).expect("files");

    let (_code, out) = storescu(port, src.path());
    assert!(
        out.contains("Refused: OutOfResources") || out.contains("0xa700"),
        "{out}"
    );
    assert_eq!(app.status()["store"]["instances"], 0);
    assert!(files_under(&app.data_path("storage"))
        .iter()
        .all(|p| p.extension().is_none_or(|x| x != "dcm")));

    config_changed(&sim, "cfg_floor", json!({ "min_free_gb": 0 }));
    eventually(T, || {
        (app.read_config("proxy.json")["min_free_gb"] == 0).then_some(())
    })
    .expect("applied");
    let stored = eventually(T, || {
        let (code, out) = storescu(port, src.path());
        (code == Some(0) && !out.contains("OutOfResources")).then_some(out)
    });
    assert!(stored.is_some(), "{}", app.logs());
    assert_eq!(app.status()["store"]["instances"], 2);
}

#[test]
fn eviction_by_retention_keeps_what_a_retrying_dispatch_needs_and_takes_the_rest() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let down = DownPort::reserve();
    let (zip_a, _) = study(1, 3, 2048);
    let (zip_b, sops_b) = study(1, 4, 2048);
    sim.put_download(EntityKind::Session, "sess_done", zip_a);
    sim.put_download(EntityKind::Session, "sess_retry", zip_b);
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([
            node("node_1", "PACS_A", scp.port),
            node("node_2", "PACS_B", down.port())
        ]),
        Some(json!({ "node_retry_max_backoff_s": 1, "node_retry_max_attempts": 1000 })),
    );
    app.wait_ready(T);
    assert!(sim.wait_connected(T));

    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_done",
        "corr_done",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_done", "node_1", T).expect("final");
    assert_eq!(last["status"], "completed", "{}", app.logs());
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_retry",
        "corr_retry",
        &["node_2"],
        "normal"
    )));
    sim.wait_frame(T, |f| {
        f["correlation_id"] == "corr_retry" && f["payload"]["status"] == "retrying"
    })
    .unwrap_or_else(|| panic!("no retry:\n{}", app.logs()));
    assert_eq!(app.status()["store"]["instances"], 7);

    // Keep nothing that is not needed.
    config_changed(&sim, "cfg_ret", json!({ "spool_retention_hours": 0 }));
    eventually(T, || (app.status()["store"]["evicted"] == 3).then_some(()))
        .unwrap_or_else(|| panic!("{}\n{}", app.status(), app.logs()));
    let store = app.status()["store"].clone();
    assert_eq!(store["instances"], 4, "{store}");
    assert_eq!(store["sessions"], 1, "{store}");
    let dcm = || {
        files_under(&app.data_path("storage"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
            .count()
    };
    eventually(T, || (dcm() == 4).then_some(())).expect("the kept files, only");

    // The node comes up: the retrying dispatch sends from the cache, no new download.
    let downloads_before = sim.download_requests().len();
    let scp_b = StoreScp::start_on(down.release(), "PACS_B", &[]);
    let last = wait_final(&sim, "corr_retry", "node_2", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(scp_b.sop_uids(), sops_b);
    assert_eq!(sim.download_requests().len(), downloads_before);
    // Finished now: the next pass may take them too.
    app.kill9();
    app.spawn();
    app.wait_ready(T);
    eventually(T, || {
        (app.status()["store"]["instances"] == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("{}\n{}", app.status(), app.logs()));
    // The files go once their evictions are durable.
    eventually(T, || {
        files_under(&app.data_path("storage"))
            .iter()
            .all(|p| p.extension().is_none_or(|x| x != "dcm"))
            .then_some(())
    })
    .expect("the evicted files are gone");
}

/// A tmpfs of `mib` MiB mounted on `dir` (the test runs as root), unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs for the data dir and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn on_a_small_disk_a_streaming_download_stops_at_the_floor_and_finishes_when_space_returns() {
    let sim = sim();
    // No Range: the archive's size is unknown until it has arrived, so only the checks
    // while it streams can hold it.
    sim.ignore_ranges(true);
    let scp = StoreScp::start("PACS_A");
    // 40 MiB, stored (not compressible).
    let (zip, sops) = study(1, 20, 2 * 1024 * 1024);
    let archive_len = zip.len() as u64;
    sim.put_download(EntityKind::Session, "sess_small", zip);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    let disk = SmallDisk::mount(&app.data_dir, 160);
    app.keep_dir(tmp);
    app.write_config(
        "nodes.json",
        &json!({ "nodes": [node("node_1", "PACS_A", scp.port)] }),
    );
    app.write_config("proxy.json", &json!({ "min_free_gb": 0 }));
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));

    // A floor 16 MB under what is free now: the archive cannot fit above it.
    let free = fs2::available_space(&app.data_dir).expect("free");
    let floor = free - 16_000_000;
    assert!(floor > 0 && archive_len > 16_000_000);
    config_changed(
        &sim,
        "cfg_floor",
        json!({ "min_free_gb": floor as f64 / 1e9 }),
    );
    eventually(T, || {
        (app.status()["store"]["min_free_bytes"].as_u64() == Some(floor)).then_some(())
    })
    .expect("the floor applied");

    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_small",
        "corr_small",
        &["node_1"],
        "normal"
    )));
    sim.wait_frame(T, |f| {
        f["correlation_id"] == "corr_small"
            && f["payload"]["status"] == "queued"
            && f["payload"]["error"] == "waiting for disk space"
    })
    .unwrap_or_else(|| panic!("no wait reported:\n{}", app.logs()));
    let seen: Vec<String> = statuses(&sim, "corr_small", "node_1")
        .iter()
        .filter_map(|s| s["status"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(seen, ["queued", "downloading", "queued"], "{}", app.logs());
    // Stopped at the floor: part of the archive in the spool, nothing in the cache.
    let spooled: u64 = files_under(&app.data_path("spool"))
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    // About the 16 MB of room (the database's own files grow and shrink meanwhile), far
    // from the archive's 40.
    assert!(
        spooled > 0 && spooled <= 17_000_000,
        "{spooled} bytes spooled of {archive_len}"
    );
    assert!(
        fs2::available_space(&app.data_dir).expect("free") + 1_000_000 >= floor,
        "the floor was crossed"
    );
    assert!(files_under(&app.data_path("storage"))
        .iter()
        .all(|p| p.extension().is_none_or(|x| x != "dcm")));

    // Space returns.
    config_changed(&sim, "cfg_floor_0", json!({ "min_free_gb": 0 }));
    let last = wait_final(&sim, "corr_small", "node_1", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(scp.sop_uids(), sops);
    drop(app);
    drop(disk);
}

#[test]
fn over_cache_max_gb_the_instances_sent_least_recently_go_until_the_cache_fits() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    // About 63 MB each: the two do not fit in 0.1 GB.
    let spec_a = StudySpec::simple(1, 30, 2 * 1024 * 1024);
    let spec_b = StudySpec::simple(1, 30, 2 * 1024 * 1024);
    let (zip_a, _) = spec_a.zip_bytes().expect("zip");
    let (zip_b, _) = spec_b.zip_bytes().expect("zip");
    sim.put_download(EntityKind::Session, "sess_a", zip_a);
    sim.put_download(EntityKind::Session, "sess_b", zip_b);
    let app = Appliance::with_one_node(&sim, scp.port, T);
    let completed = |corr: &str| {
        statuses(&sim, corr, "node_1")
            .iter()
            .filter(|s| s["status"] == "completed")
            .count()
    };
    for (entity, corr) in [("sess_a", "corr_a"), ("sess_b", "corr_b")] {
        assert!(sim.send_event(&dispatch_event(
            "session",
            entity,
            corr,
            &["node_1"],
            "normal"
        )));
        let last = wait_final(&sim, corr, "node_1", T).expect("final");
        assert_eq!(last["status"], "completed", "{}", app.logs());
    }
    // A is sent again (from the cache): now B is the least recently used.
    let id = app.get_json("/api/dispatches/corr_a")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (code, body) = app
        .post(&format!("/api/dispatches/{id}/replay"), None)
        .expect("replay");
    assert_eq!(code, 200, "{body}");
    eventually(T, || (completed("corr_a") == 2).then_some(()))
        .unwrap_or_else(|| panic!("no second completion:\n{}", app.logs()));
    assert_eq!(sim.download_requests().len(), 2, "replayed from the cache");
    assert_eq!(app.status()["store"]["evicted"], 0);

    config_changed(&sim, "cfg_max", json!({ "cache_max_gb": 0.1 }));
    // Instances go one by one, only until the cache fits: all of them B's.
    eventually(T, || {
        app.status()["store"]["bytes"]
            .as_u64()
            .is_some_and(|b| b <= 100_000_000)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}\n{}", app.status(), app.logs()));
    let instances_of = |study: &str| {
        app.get_json("/api/sessions")
            .as_array()
            .expect("sessions")
            .iter()
            .find(|s| s["study_instance_uid"] == study)
            .map_or(0, |s| s["instances"].as_u64().unwrap_or(0))
    };
    assert_eq!(instances_of(&spec_a.study_uid), 30);
    let left_of_b = instances_of(&spec_b.study_uid);
    assert!(left_of_b < 30, "{left_of_b}");
    let store = app.status()["store"].clone();
    assert_eq!(store["evicted"].as_u64(), Some(30 - left_of_b), "{store}");
    assert_eq!(store["instances"].as_u64(), Some(30 + left_of_b), "{store}");
    let metrics = app.get("/metrics").expect("metrics").1;
    assert!(
        metrics.contains(&format!(
            "laminate_cache_evicted_instances_total {}",
            30 - left_of_b
        )),
        "{metrics}"
    );
}

#[test]
fn a_kill_9_during_an_eviction_pass_leaves_index_and_files_agreeing_after_restart() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, _) = study(4, 400, 256);
    sim.put_download(EntityKind::Session, "sess_many", zip);
    let mut app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_many",
        "corr_many",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_many", "node_1", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{}", app.logs());
    assert_eq!(app.status()["store"]["instances"], 1600);

    // Everything may go now; killed as soon as the pass has begun.
    config_changed(&sim, "cfg_ret", json!({ "spool_retention_hours": 0 }));
    eventually(T, || {
        app.status()["store"]["instances"]
            .as_u64()
            .is_some_and(|n| n < 1600)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no eviction:\n{}", app.logs()));
    app.kill9();

    // Back with a retention that keeps what is left.
    let mut proxy = app.read_config("proxy.json");
    proxy["spool_retention_hours"] = json!(24);
    app.write_config("proxy.json", &proxy);
    app.spawn();
    app.wait_ready(T);
    let dcm = files_under(&app.data_path("storage"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .count() as u64;
    let indexed: u64 = app
        .get_json("/api/sessions")
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["instances"].as_u64())
        .sum();
    assert_eq!(indexed, dcm, "index and files disagree\n{}", app.logs());
    assert_eq!(app.status()["store"]["instances"], dcm);
    // Evictions not yet flushed at the kill are simply undone: their files are still there.
    assert!(dcm <= 1600);
}
