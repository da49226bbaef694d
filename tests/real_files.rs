//! Every real test file of pydicom and pydicom-data (every transfer syntax, big
//! endian, deflate, damaged and odd files, READMEs), zipped as one subject and
//! dispatched through the binary to a stock Orthanc: the dispatch reaches a
//! final status, and every archive entry is accounted for: delivered (Orthanc
//! holds it), failed with a reason, or skipped with a reason. The deflated
//! instance, which Orthanc aborts the association on, arrives inflated.
//!
//! Needs python3 with pydicom and pydicom-data (installed by `scripts/test`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use laminate_proxy::sim::EntityKind;
use support::*;

/// (pydicom's test files, pydicom-data's files).
fn pydicom_dirs() -> (PathBuf, PathBuf) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, pydicom, data_store\n\
             print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))\n\
             print(os.path.join(os.path.dirname(data_store.__file__), 'data'))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pydicom and pydicom-data are needed (scripts/test installs them): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(PathBuf::from);
    match (lines.next(), lines.next()) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("unexpected output: {text}"),
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable").flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// One zip of every file (entries `pydicom/…` and `pydicom-data/…`), and the
/// entry names.
fn zip_everything(dirs: &[(&str, &Path)]) -> (bytes::Bytes, BTreeSet<String>) {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut names = BTreeSet::new();
    for (prefix, dir) in dirs {
        let mut files = Vec::new();
        files_under(dir, &mut files);
        files.sort();
        for f in files {
            let rel = f.strip_prefix(dir).expect("under dir").to_string_lossy();
            let name = format!("{prefix}/{rel}");
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file(name.as_str(), opts).expect("entry");
            w.write_all(&std::fs::read(&f).expect("read"))
                .expect("data");
            names.insert(name);
        }
    }
    (
        bytes::Bytes::from(w.finish().expect("zip").into_inner()),
        names,
    )
}

/// The dataset's SOP Instance UID, as pydicom reads it (deflate included).
fn sop_uid_of(path: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)",
        ])
        .arg(path)
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn every_real_file_of_pydicom_reaches_orthanc_or_is_listed_with_its_reason() {
    let (test_files, data_store) = pydicom_dirs();
    let (zip, entries) = zip_everything(&[("pydicom", &test_files), ("pydicom-data", &data_store)]);
    assert!(entries.len() > 200, "only {} files", entries.len());
    let deflated = sop_uid_of(&test_files.join("image_dfl.dcm"));
    assert!(!deflated.is_empty());

    // Orthanc aborts the association on the deflated instance when its DICOM
    // timeout ends (30 s by default): 5 s keeps the test short.
    let orthanc = Orthanc::start_with("ORTHANC", json!({"DicomScpTimeout": 5}));
    let sim = sim();
    sim.put_download(EntityKind::Subject, "subj_real", zip);
    let mut app = Appliance::start_with_nodes(
        &sim.backend_url(),
        json!([node("node_1", "ORTHANC", orthanc.dicom_port)]),
        // Short backoff: an instance Orthanc aborts on is retried quickly.
        Some(json!({"node_retry_max_backoff_s": 2})),
    );
    app.wait_ready(Duration::from_secs(30));
    assert!(sim.wait_connected(Duration::from_secs(30)));
    assert!(sim.send_event(&dispatch_event(
        "subject",
        "subj_real",
        "corr_real",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_real", "node_1", Duration::from_secs(300))
        .unwrap_or_else(|| panic!("no final status in 5 minutes:\n{}", app.logs()));

    if std::env::var_os("REAL_FILES_LOGS").is_some() {
        eprintln!("{}", app.logs());
    }
    let detail = app.get_json("/api/dispatches/corr_real");
    let node = &detail["nodes"][0];
    let total = node["files_total"].as_u64().expect("files_total");
    let outcomes = node["outcomes"].as_array().expect("outcomes").clone();
    let skipped = detail["skipped"].as_array().expect("skipped").clone();
    assert_eq!(
        detail["skipped_total"].as_u64(),
        Some(skipped.len() as u64),
        "every skipped entry is listed"
    );

    // Every archive entry is an instance or a skipped entry with a reason.
    assert_eq!(
        total + skipped.len() as u64,
        entries.len() as u64,
        "{detail:#}"
    );
    for s in &skipped {
        let file = s["file"].as_str().expect("file");
        assert!(entries.contains(file), "{s}");
        assert!(!s["reason"].as_str().unwrap_or("").is_empty(), "{s}");
    }
    let reasons: BTreeSet<&str> = skipped
        .iter()
        .filter_map(|s| s["reason"].as_str())
        .map(|r| r.split(':').next().unwrap_or(r))
        .collect();
    assert!(reasons.contains("not DICOM"), "{reasons:?}");

    // Every instance arrived, or failed alone with its reason.
    let failed: BTreeMap<&str, &str> = outcomes
        .iter()
        .filter(|o| o["outcome"] == "failed")
        .map(|o| {
            (
                o["sop_instance_uid"].as_str().unwrap_or(""),
                o["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for (sop, why) in &failed {
        assert!(!why.is_empty(), "{sop} failed without a reason");
    }
    let arrived = orthanc.sop_uids();
    assert_eq!(
        arrived.len() as u64 + failed.len() as u64,
        total,
        "arrived {} + failed {} != {total}\n{:?}",
        arrived.len(),
        failed.len(),
        outcomes
    );
    assert_eq!(node["files_sent"].as_u64(), Some(arrived.len() as u64));
    assert!(
        arrived.contains(&deflated),
        "the deflated instance arrives: {failed:?}"
    );
    let deflated_outcome = outcomes
        .iter()
        .find(|o| o["sop_instance_uid"] == deflated.as_str())
        .unwrap_or_else(|| panic!("the deflated one is listed as transcoded: {outcomes:?}"));
    assert_eq!(deflated_outcome["outcome"], "transcoded");

    // The final status says so.
    if failed.is_empty() {
        assert_eq!(last["status"], "completed", "{last}");
    } else {
        assert_eq!(last["status"], "failed", "{last}");
        let error = last["error"].as_str().unwrap_or("");
        assert!(
            error.starts_with(&format!("{} of {total} failed: ", failed.len())),
            "{error}"
        );
    }
    // And the status page lists what did not arrive as it was.
    let (_, page) = app.get("/").expect("page");
    assert!(
        page.contains(r#"<details class="outcomes">"#),
        "no outcomes on the page"
    );
    assert!(page.contains(&format!("{} skipped", skipped.len())), "page");
}
