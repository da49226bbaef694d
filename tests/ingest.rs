//! The local store through the real binary: dcmtk `storescu` into the ingest
//! SCP, deletions from the backend, and crashes at the worst moments
//! (APPLIANCE.md "The local store", PROTOCOL.md §3).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use laminate_proxy::sim::study::StudySpec;
use support::*;

const T: Duration = Duration::from_secs(30);
const AE: &str = "LAMINATE_PROXY";

fn with_ingest(sim: &BackendSim, extra: &[&str]) -> (Appliance, u16) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    // Replace --dicom-addr off.
    if let Some(i) = app.args.iter().position(|a| a == "off") {
        app.args[i] = addr;
    }
    app.args.extend(extra.iter().map(|s| s.to_string()));
    app.keep_dir(tmp);
    app.spawn();
    app.wait_ready(T);
    (app, port)
}

fn write_study(
    dir: &Path,
    series: usize,
    per: usize,
    bytes: usize,
) -> (StudySpec, BTreeSet<String>) {
    let spec = StudySpec::simple(series, per, bytes);
    let inst = spec.write_files(dir).expect("files");
    (spec, inst.into_iter().map(|i| i.sop_instance_uid).collect())
}

/// storescu all files of `dir` to the appliance; (exit code, output).
fn storescu(port: u16, called: &str, dir: &Path) -> (Option<i32>, String) {
    let out = Command::new("/usr/bin/storescu")
        .args([
            "-v",
            "-aec",
            called,
            "+sd",
            "+r",
            "127.0.0.1",
            &port.to_string(),
        ])
        .arg(dir)
        .output()
        .expect("dcmtk storescu (apt-get install dcmtk)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

fn stored_files(data_dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![data_dir.join("storage")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "dcm") {
                out.insert(p);
            }
        }
    }
    out
}

fn session<'a>(sessions: &'a Value, study: &str) -> Option<&'a Value> {
    sessions
        .as_array()?
        .iter()
        .find(|s| s["study_instance_uid"] == study)
}

/// The catalog and the files on disk agree exactly.
fn assert_index_matches_disk(app: &Appliance) {
    let sessions = app.get_json("/api/sessions");
    let indexed: u64 = sessions
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["instances"].as_u64()).sum())
        .unwrap_or(0);
    let files = stored_files(&app.data_dir);
    assert_eq!(indexed as usize, files.len(), "index and disk disagree");
    let figures = &app.status()["store"];
    assert_eq!(figures["instances"], indexed);
    for f in &files {
        let h = laminate_actors::dispatch::index::index_file(f)
            .expect("readable")
            .expect("DICOM");
        let s = session(&sessions, &h.study_instance_uid)
            .unwrap_or_else(|| panic!("{} not indexed", f.display()));
        assert!(s["instances"].as_u64().unwrap_or(0) > 0);
    }
}

#[test]
fn storescu_stores_a_study_that_is_indexed_and_listed_and_echoscu_works() {
    let sim = sim();
    let (app, port) = with_ingest(&sim, &[]);
    let src = tempfile::tempdir().expect("tempdir");
    let (spec, sops) = write_study(src.path(), 3, 4, 16 * 1024);
    let (code, out) = storescu(port, AE, src.path());
    assert_eq!(code, Some(0), "{out}\n{}", app.logs());
    let sessions = app.get_json("/api/sessions");
    let s = session(&sessions, &spec.study_uid).expect("the study is listed");
    assert_eq!(s["instances"], 12);
    assert_eq!(s["patient_id"], spec.patient_id.as_str());
    assert_eq!(s["scans"].as_array().map(|a| a.len()), Some(3));
    assert_eq!(s["scans"][0]["scan_number"], 1);
    for sop in &sops {
        let series = spec
            .instances()
            .into_iter()
            .find(|i| &i.sop_instance_uid == sop)
            .expect("known")
            .series_instance_uid;
        let p = app
            .data_dir
            .join("storage")
            .join(&spec.study_uid)
            .join(series)
            .join(format!("{sop}.dcm"));
        assert!(p.is_file(), "{} missing", p.display());
    }
    assert_index_matches_disk(&app);
    // The same files again replace, never duplicate.
    let (code, _) = storescu(port, AE, src.path());
    assert_eq!(code, Some(0));
    assert_eq!(
        session(&app.get_json("/api/sessions"), &spec.study_uid).expect("listed")["instances"],
        12
    );
    let echo = Command::new("/usr/bin/echoscu")
        .args(["-aec", AE, "127.0.0.1", &port.to_string()])
        .output()
        .expect("echoscu");
    assert!(
        echo.status.success(),
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );
}

#[test]
fn a_wrong_called_ae_title_is_rejected_unless_any_is_accepted() {
    let sim = sim();
    let (_app, port) = with_ingest(&sim, &[]);
    let src = tempfile::tempdir().expect("tempdir");
    write_study(src.path(), 1, 1, 1024);
    let (code, out) = storescu(port, "SOMEONE_ELSE", src.path());
    assert_ne!(code, Some(0), "{out}");
    let (_app2, port2) = with_ingest(&sim, &["--ingest-accept-any-ae"]);
    let (code, out) = storescu(port2, "SOMEONE_ELSE", src.path());
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn several_senders_at_once_and_many_small_files() {
    let sim = sim();
    let (app, port) = with_ingest(&sim, &[]);
    let dirs: Vec<tempfile::TempDir> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut expected = 0;
    for (i, d) in dirs.iter().enumerate() {
        // One sender with 300 tiny files: storescu packs command and data in one PDU.
        let (series, per, bytes) = if i == 0 {
            (1, 300, 64)
        } else {
            (2, 20, 32 * 1024)
        };
        write_study(d.path(), series, per, bytes);
        expected += series * per;
    }
    let handles: Vec<_> = dirs
        .iter()
        .map(|d| {
            let p = d.path().to_path_buf();
            std::thread::spawn(move || storescu(port, AE, &p))
        })
        .collect();
    for h in handles {
        let (code, out) = h.join().expect("thread");
        assert_eq!(code, Some(0), "{out}");
    }
    assert_eq!(app.status()["store"]["instances"], expected);
    assert_eq!(app.status()["store"]["sessions"], 4);
    assert_index_matches_disk(&app);
}

#[test]
fn under_the_disk_floor_storescu_gets_out_of_resources() {
    let sim = sim();
    let (app, port) = with_ingest(&sim, &["--ingest-min-free-bytes", "18446744073709551615"]);
    let src = tempfile::tempdir().expect("tempdir");
    write_study(src.path(), 1, 1, 1024);
    let (_code, out) = storescu(port, AE, src.path());
    assert!(
        out.contains("Refused: OutOfResources") || out.contains("0xa700"),
        "{out}"
    );
    assert_eq!(app.status()["store"]["instances"], 0);
    assert!(stored_files(&app.data_dir).is_empty());
}

fn deletion(kind: &str, corr: &str, entity: &str, payload: Value) -> Value {
    let mut e = event(&format!("{kind}.deleted"), corr, payload);
    e["entity_type"] = json!(kind);
    e["entity_id"] = json!(entity);
    e
}

#[test]
fn deletions_remove_exactly_their_session_or_scan_and_are_harmless_when_repeated() {
    let sim = sim();
    let (app, port) = with_ingest(&sim, &[]);
    assert!(sim.wait_connected(T));
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (study_a, _) = write_study(a.path(), 3, 3, 2048);
    let (study_b, _) = write_study(b.path(), 2, 2, 2048);
    assert_eq!(storescu(port, AE, a.path()).0, Some(0));
    assert_eq!(storescu(port, AE, b.path()).0, Some(0));
    assert_eq!(app.status()["store"]["instances"], 13);
    // scan.deleted with the number as a string removes one series of study A.
    assert!(sim.send_event(&deletion(
        "scan",
        "del_scan",
        "scan_2",
        json!({"study_instance_uid": study_a.study_uid, "scan_number": "2"})
    )));
    eventually(T, || {
        (app.status()["store"]["instances"] == 10).then_some(())
    })
    .expect("series removed");
    let s = app.get_json("/api/sessions");
    let scans: Vec<i64> = session(&s, &study_a.study_uid).expect("A")["scans"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["scan_number"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(scans, [1, 3]);
    let series_dir = app
        .data_dir
        .join("storage")
        .join(&study_a.study_uid)
        .join(&study_a.series[1].uid);
    eventually(T, || (!series_dir.exists()).then_some(()))
        .expect("the emptied series folder is removed");
    // session.deleted removes study B entirely; A stays.
    assert!(sim.send_event(&deletion(
        "session",
        "del_b",
        "sess_b",
        json!({"study_instance_uid": study_b.study_uid})
    )));
    eventually(T, || {
        (app.status()["store"]["instances"] == 6).then_some(())
    })
    .expect("session removed");
    eventually(T, || {
        (!app
            .data_dir
            .join("storage")
            .join(&study_b.study_uid)
            .exists())
        .then_some(())
    })
    .expect("files gone");
    assert!(session(&app.get_json("/api/sessions"), &study_b.study_uid).is_none());
    assert_eq!(app.status()["store"]["patients"], 1);
    // Unknown, repeated (new correlation id), malformed: harmless, link up.
    assert!(sim.send_event(&deletion(
        "session",
        "del_unknown",
        "x",
        json!({"study_instance_uid": "1.2.3.4.5"})
    )));
    assert!(sim.send_event(&deletion(
        "session",
        "del_b_again",
        "sess_b",
        json!({"study_instance_uid": study_b.study_uid})
    )));
    assert!(sim.send_event(&deletion(
        "scan",
        "del_bad",
        "x",
        json!({"study_instance_uid": study_a.study_uid, "scan_number": "two"})
    )));
    assert!(sim.send_event(&event("ping", "after_del", json!({}))));
    sim.wait_frame(T, is_pong("after_del")).expect("pong");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.status()["store"]["instances"], 6);
    assert_eq!(sim.connections(), 1);
    assert_index_matches_disk(&app);
}

#[test]
fn kill_9_during_ingest_and_during_a_deletion_leaves_index_and_disk_in_agreement_after_restart() {
    let sim = sim();
    let (mut app, port) = with_ingest(&sim, &[]);
    assert!(sim.wait_connected(T));
    let src = tempfile::tempdir().expect("tempdir");
    let (spec, _) = write_study(src.path(), 2, 400, 8 * 1024);
    let dir = src.path().to_path_buf();
    let sender = std::thread::spawn(move || storescu(port, AE, &dir));
    eventually(T, || {
        (app.status()["store"]["instances"].as_u64()? >= 50).then_some(())
    })
    .expect("ingest under way");
    app.kill9();
    let _ = sender.join();
    app.spawn();
    app.wait_ready(T);
    assert_index_matches_disk(&app);
    // Send everything (again), then delete it and kill right away.
    assert_eq!(storescu(port, AE, src.path()).0, Some(0));
    assert_eq!(app.status()["store"]["instances"], 800);
    assert!(eventually(T, || sim.is_connected().then_some(())).is_some());
    assert!(sim.send_event(&deletion(
        "session",
        "del_kill",
        "sess",
        json!({"study_instance_uid": spec.study_uid})
    )));
    std::thread::sleep(Duration::from_millis(30));
    app.kill9();
    app.spawn();
    app.wait_ready(T);
    assert_index_matches_disk(&app);
}

#[test]
fn sigterm_answers_the_instance_being_received_closes_every_association_and_exits_in_time() {
    use dicom_ul::pdu::Pdu;
    let sim = sim();
    let (mut app, port) = with_ingest(&sim, &[]);
    let src = tempfile::tempdir().expect("tempdir");
    write_study(src.path(), 2, 400, 8 * 1024);
    // A sender in the middle of a study, and an association waiting idle.
    let dir = src.path().to_path_buf();
    let sender = std::thread::spawn(move || storescu(port, AE, &dir));
    let idle = std::thread::spawn(move || {
        let mut assoc = dicom_ul::ClientAssociationOptions::new()
            .calling_ae_title("IDLE-SCU")
            .called_ae_title(AE)
            .with_abstract_syntax("1.2.840.10008.1.1")
            .read_timeout(Duration::from_secs(20))
            .establish(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("association");
        assoc.receive().ok()
    });
    eventually(T, || {
        (app.status()["store"]["instances"].as_u64()? >= 50).then_some(())
    })
    .expect("ingest under way");
    let asked = std::time::Instant::now();
    assert_eq!(app.terminate(), Some(0), "clean exit: {}", app.logs());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the container's stop grace is 10 s; took {:?}",
        asked.elapsed()
    );
    let closed = idle.join().expect("idle client");
    assert!(
        matches!(closed, Some(Pdu::AbortRQ { .. })),
        "the idle association is closed with A-ABORT, not dropped: {closed:?}"
    );
    let (code, out) = sender.join().expect("storescu");
    assert_ne!(code, Some(0), "storescu was cut short: {out}");
    let answered = out.matches("Received Store Response (Success").count();
    assert!(app.logs().contains("the appliance is shutting down"));
    app.spawn();
    app.wait_ready(T);
    assert_index_matches_disk(&app);
    // Every instance answered is kept, and nothing is kept unanswered.
    assert_eq!(
        app.status()["store"]["instances"].as_u64(),
        Some(answered as u64),
        "{out}"
    );
}

#[test]
fn rebuild_index_restores_the_catalog_from_the_files_alone() {
    let sim = sim();
    let (mut app, port) = with_ingest(&sim, &[]);
    let src = tempfile::tempdir().expect("tempdir");
    let (spec, _) = write_study(src.path(), 2, 5, 2048);
    assert_eq!(storescu(port, AE, src.path()).0, Some(0));
    assert_eq!(app.terminate(), Some(0));
    // The index is lost; the files stay.
    std::fs::remove_dir_all(app.data_path("store")).expect("rm store");
    let data = app.data_dir.display().to_string();
    let (code, out) = run_binary(&["rebuild-index", "--data-dir", &data], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("10 instances indexed"), "{out}");
    app.spawn();
    app.wait_ready(T);
    let s = app.get_json("/api/sessions");
    assert_eq!(
        session(&s, &spec.study_uid).expect("listed again")["instances"],
        10
    );
    assert_index_matches_disk(&app);
    // While the appliance runs, the store is locked and the rebuild refuses.
    let (code, out) = run_binary(&["rebuild-index", "--data-dir", &data], &[]);
    assert_ne!(code, Some(0), "{out}");
}
