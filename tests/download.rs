//! Downloads and archives end to end through the real binary: the simulator
//! serves the study (failing, cutting, redirecting and changing it as a test
//! asks), a real dcmtk `storescp` is the PACS node (PROTOCOL.md §5, APPLIANCE.md
//! "Dispatch jobs": download, extract).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use laminate_proxy::sim::{DownloadStep, EntityKind};
use support::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn download_errors_500_then_a_cut_body_are_retried_and_resumed() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, sops) = study(1, 20, 32 * 1024);
    let cut = zip.len() / 2;
    sim.put_download(EntityKind::Session, "sess_r", zip);
    sim.script_download(
        EntityKind::Session,
        "sess_r",
        vec![DownloadStep::Status(500), DownloadStep::CutAfter(cut)],
    );
    let app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_r",
        "corr_r",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_r", "node_1", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    let retries: Vec<Value> = statuses(&sim, "corr_r", "node_1")
        .into_iter()
        .filter(|s| s["status"] == "retrying")
        .collect();
    assert!(retries.len() >= 2, "{retries:?}");
    assert!(
        retries.iter().all(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("download:"))),
        "{retries:?}"
    );
    let req = sim.download_requests();
    assert_eq!(req.len(), 3, "{req:?}");
    assert_eq!(
        req[2].range.as_deref(),
        Some(format!("bytes={cut}-").as_str()),
        "resumed, not restarted"
    );
    assert_eq!(scp.sop_uids(), sops);
}

#[test]
fn not_found_and_rejected_downloads_fail_at_once() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    sim.script_download(
        EntityKind::Session,
        "sess_403",
        vec![DownloadStep::Status(403)],
    );
    let _app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_missing",
        "corr_404",
        &["node_1"],
        "normal"
    )));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_403",
        "corr_403",
        &["node_1"],
        "normal"
    )));
    let a = wait_final(&sim, "corr_404", "node_1", T).expect("final");
    assert_eq!(a["status"], "failed");
    assert!(
        a["error"].as_str().is_some_and(|e| e.contains("not found")),
        "{a}"
    );
    let b = wait_final(&sim, "corr_403", "node_1", T).expect("final");
    assert_eq!(b["status"], "failed");
    assert!(
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("download rejected")),
        "{b}"
    );
    assert!(statuses(&sim, "corr_404", "node_1")
        .iter()
        .all(|s| s["status"] != "retrying"));
}

/// `zip` with one byte of its central directory changed (the first entry's
/// "version made by": the entries, and what they extract to, stay the same).
fn with_changed_central_directory(zip: &bytes::Bytes) -> bytes::Bytes {
    let mut changed = zip.to_vec();
    let eocd = changed.len() - 22;
    assert_eq!(
        &changed[eocd..eocd + 4],
        b"PK\x05\x06",
        "no archive comment"
    );
    let cd =
        u32::from_le_bytes(changed[eocd + 16..eocd + 20].try_into().expect("4 bytes")) as usize;
    assert_eq!(&changed[cd..cd + 4], b"PK\x01\x02");
    changed[cd + 4] ^= 0x01;
    bytes::Bytes::from(changed)
}

#[test]
fn an_archive_that_changes_between_its_tail_and_its_body_is_extracted_as_downloaded() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    // Larger than the 1 MiB tail: the extraction that follows the download
    // reads the entries from the spool file, the directory from the tail.
    let (zip, sops) = study(2, 20, 64 * 1024);
    assert!(zip.len() > 2 << 20);
    let changed = with_changed_central_directory(&zip);
    sim.put_download(EntityKind::Session, "sess_changed", zip);
    sim.script_download(
        EntityKind::Session,
        "sess_changed",
        vec![DownloadStep::Body(changed)],
    );
    let app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_changed",
        "corr_changed",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_changed", "node_1", T)
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(sim.tail_requests().len(), 1);
    assert_eq!(sim.download_requests().len(), 1, "no second download");
    let logs = app.logs();
    assert!(
        logs.contains("the archive's end changed between its two requests"),
        "the change is noticed:\n{logs}"
    );
    // What the following extraction produced was dropped: the downloaded
    // archive was extracted again, once, and its instances sent.
    let extracted_whole = logs
        .lines()
        .filter(|l| l.contains("dispatch::extract") && l.contains("archive extracted"))
        .filter(|l| !l.contains("while downloading"))
        .count();
    assert_eq!(extracted_whole, 1, "{logs}");
    assert_eq!(scp.sop_uids(), sops);
}

#[test]
fn the_archive_is_extracted_while_it_downloads_and_after_it_without_range_support() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip_a, sops_a) = study(2, 20, 64 * 1024);
    let (zip_b, sops_b) = study(1, 5, 4096);
    sim.put_download(EntityKind::Session, "sess_follow", zip_a);
    sim.put_download(EntityKind::Session, "sess_whole", zip_b);
    let app = Appliance::with_one_node(&sim, scp.port, T);
    // The archive's end first (its central directory), then the body once.
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_follow",
        "corr_follow",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_follow", "node_1", T)
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(scp.sop_uids(), sops_a);
    let tails = sim.tail_requests();
    assert_eq!(tails.len(), 1, "{tails:?}");
    assert!(tails[0].key_ok);
    assert!(tails[0].at <= sim.download_requests()[0].at);
    assert_eq!(sim.download_requests().len(), 1);
    assert!(
        app.logs().contains("(while downloading)"),
        "extracted while downloading:\n{}",
        app.logs()
    );
    // A server that ignores Range: the probe gets the whole body, which is
    // not read; the archive is extracted once downloaded.
    sim.ignore_ranges(true);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_whole",
        "corr_whole",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_whole", "node_1", T)
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    let all: BTreeSet<String> = sops_a.union(&sops_b).cloned().collect();
    assert_eq!(scp.sop_uids(), all);
    assert_eq!(sim.download_requests().len(), 2);
    let extracted_whole = app
        .logs()
        .lines()
        .filter(|l| l.contains("dispatch::extract") && l.contains("archive extracted"))
        .filter(|l| !l.contains("while downloading"))
        .count();
    assert_eq!(extracted_whole, 1, "{}", app.logs());
}

#[test]
fn hostile_archives_fail_and_write_nothing_outside_the_spool() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let outside = tempfile::tempdir().expect("tempdir");
    let abs_target = outside.path().join("abs.dcm");
    let abs_name = abs_target.display().to_string();
    let bomb = vec![0u8; 64 * 1024 * 1024];
    let cases: Vec<(&str, bytes::Bytes, &str)> = vec![
        (
            "slip",
            raw_zip(&[("ok.txt", b"fine", 0), ("../../evil.dcm", b"DICM", 0)]),
            "../../evil.dcm",
        ),
        (
            "abs",
            raw_zip(&[(abs_name.as_str(), b"DICM", 0)]),
            abs_name.as_str(),
        ),
        (
            "link",
            raw_zip(&[("link.dcm", b"/etc/passwd", 0o120777)]),
            "link.dcm",
        ),
        ("bomb", raw_zip(&[("bomb.dcm", &bomb, 0)]), "bomb.dcm"),
    ];
    for (id, zip, _) in &cases {
        sim.put_download(EntityKind::Scan, id, zip.clone());
    }
    let app = Appliance::with_one_node(&sim, scp.port, T);
    for (id, _, _) in &cases {
        assert!(sim.send_event(&dispatch_event(
            "scan",
            id,
            &format!("c_{id}"),
            &["node_1"],
            "normal"
        )));
    }
    for (id, _, entry) in &cases {
        let last = wait_final(&sim, &format!("c_{id}"), "node_1", T)
            .unwrap_or_else(|| panic!("{id}:\n{}", app.logs()));
        assert_eq!(last["status"], "failed", "{id}: {last}");
        let err = last["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(entry.trim_start_matches('/')) || err.contains(entry),
            "{id}: {err}"
        );
        assert_eq!(last["files_total"], 0);
    }
    assert!(!abs_target.exists());
    let mut found = Vec::new();
    let mut stack = vec![app.dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "evil.dcm" || name == "link.dcm" || name == "bomb.dcm" || name == "abs.dcm" {
                found.push(p.clone());
            }
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    assert!(found.is_empty(), "written: {found:?}");
    assert!(scp.sop_uids().is_empty());
    let spool: Vec<_> = std::fs::read_dir(app.data_path("spool"))
        .expect("spool")
        .flatten()
        .collect();
    assert!(
        spool.is_empty(),
        "spool left behind: {:?}",
        spool.iter().map(|e| e.path()).collect::<Vec<_>>()
    );
}

#[test]
fn a_redirect_to_another_origin_is_refused() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let elsewhere = format!(
        "http://localhost:{}/api/proxy/sessions/sess_x/download",
        sim.port()
    );
    sim.script_download(
        EntityKind::Session,
        "sess_redir",
        vec![DownloadStep::RedirectTo(elsewhere)],
    );
    let _app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_redir",
        "c_redir",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "c_redir", "node_1", T).expect("final");
    assert_eq!(last["status"], "failed");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("another origin")),
        "{last}"
    );
    assert_eq!(
        sim.download_requests().len(),
        1,
        "the redirect was not followed"
    );
}
