//! Issue 14, "history that costs nothing": the appliance with 10 finished dispatches
//! in its journal against the same appliance with 100 000 (both with a 100 000-instance
//! catalog), in one run:
//!
//! - `/api/status` and `/api/dispatches?limit=100` through the real binary (median of
//!   many GETs on one keep-alive connection);
//! - scheduling one new dispatch, in process: what the dispatcher does for it
//!   (duplicate check by correlation id, sequence number, journal write, then the
//!   active dispatches it schedules from);
//! - start-up: the store's open plus what the dispatcher reads at start, in process; and
//!   the binary's start to `/readyz` (which also checks the catalog against `storage/`);
//! - the binary's peak RSS (`VmHWM`) after the runs.
//!
//! The 100 000 dispatches are written as a version without the journal's indexes left
//! them (records only, straight into sled), so the run also times the one-time index
//! build at the first open. For context it reports what a full read of the journal
//! (`journal_all`, what every status call and scheduling did before) costs.
//!
//! `cargo bench --bench history`; `BENCH_HISTORY_DISPATCHES` (100000) and
//! `BENCH_HISTORY_INSTANCES` (100000) change the sizes.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use laminate_store::{
    instance_rel_path, Catalog, DispatchKind, DispatchRecord, InstanceRecord, InstanceSource,
    Journal, NodeProgress, NodeStatus, Priority, Stage, Store,
};
use support::{env_or, eventually, free_port, median, target_dir, Proc, Report, KEY};

const SMALL: u64 = 10;
const DAY_MS: u64 = 86_400_000;
/// GETs per endpoint and size (after 20 untimed ones).
const GETS: usize = 300;
/// Dispatches scheduled per size.
const SCHEDULES: usize = 100;

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

/// Dispatch number `i`, finished (or active) at `at_ms`, with two nodes.
fn dispatch(i: u64, at_ms: u64, finished: bool) -> DispatchRecord {
    let node = |id: &str, status: NodeStatus| NodeProgress {
        node_id: id.into(),
        status,
        files_sent: if finished { 215 } else { 0 },
        files_total: 215,
        error: None,
        parked_until_ms: None,
    };
    let (a, b) = if finished {
        (NodeStatus::Completed, NodeStatus::Completed)
    } else {
        (NodeStatus::Queued, NodeStatus::Queued)
    };
    DispatchRecord {
        id: format!("d{:06}", i + 1),
        seq: i,
        correlation_id: format!("corr_{i:08x}-9f3c-4e6d-b7a2-5c1f0e9d8b7a"),
        workspace_id: "ws_bench".into(),
        entity_type: "session".into(),
        entity_id: format!("sess_{i:010}"),
        kind: DispatchKind::Session,
        priority: Priority::Normal,
        subject_id: Some(format!("subj_{i:08}")),
        session_id: Some(format!("sess_{i:010}")),
        label: Some(format!("MR brain {i}")),
        created_at_ms: at_ms,
        updated_at_ms: at_ms,
        stage: if finished {
            Stage::Finished
        } else {
            Stage::Queued
        },
        study_uids: vec![format!("1.2.826.0.1.3680043.8.498.{}", i + 1)],
        nodes: vec![node("node_1", a), node("node_2", b)],
        replays: 0,
    }
}

/// A catalog of `n` instances (100 instances a series, 10 series a study), with an empty
/// file for each so the binary's start-up check keeps them.
fn fill_catalog(data_dir: &Path, store: &Store, n: u64) {
    let mut batch = Vec::with_capacity(4096);
    for i in 0..n {
        let study = format!("1.2.826.0.1.3680043.8.498.9{}", i / 1000);
        let series = format!("{study}.{}", i / 100 % 10);
        let sop = format!("{series}.{}", i % 100 + 1);
        let path = instance_rel_path(&study, &series, &sop).expect("uids");
        let file = data_dir.join(&path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::File::create(&file).expect("file");
        batch.push(InstanceRecord {
            sop_instance_uid: sop,
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            study_instance_uid: study,
            series_instance_uid: series,
            series_number: Some(i32::try_from(i / 100 % 10).expect("small")),
            patient_id: Some(format!("PAT{}", i / 1000)),
            path,
            size: 0,
            source: InstanceSource::Ingest,
            stored_at_ms: now_ms(),
        });
        if batch.len() == 4096 {
            for r in store.put_instances(&batch).expect("put") {
                r.expect("instance");
            }
            batch.clear();
        }
    }
    for r in store.put_instances(&batch).expect("put") {
        r.expect("instance");
    }
}

/// Dispatches `from..to`, created over the last 80 days (inside the default 90-day
/// history), written straight into sled as a version without indexes did: records and
/// correlation ids only, no index version marker.
fn fill_raw(store_dir: &Path, from: u64, to: u64) {
    let db = sled::open(store_dir).expect("sled");
    let records = db.open_tree("dispatches").expect("tree");
    let by_corr = db.open_tree("dispatch_by_correlation").expect("tree");
    let start = now_ms() - 80 * DAY_MS;
    let step = (80 * DAY_MS) / to.max(1);
    for i in from..to {
        let rec = dispatch(i, start + i * step, true);
        records
            .insert(rec.id.as_bytes(), serde_json::to_vec(&rec).expect("json"))
            .expect("insert");
        by_corr
            .insert(rec.correlation_id.as_bytes(), rec.id.as_bytes())
            .expect("insert");
    }
    db.open_tree("meta")
        .expect("meta")
        .remove("journal.index_version")
        .expect("remove");
    db.flush().expect("flush");
}

#[derive(Debug, Default)]
struct Figures {
    open: Duration,
    dispatcher_reads: Duration,
    journal_all: Duration,
    /// In process, the store reads of `/api/status`: journal counts, active, catalog
    /// counters, size on disk (medians).
    status_parts: [Duration; 4],
    schedule: Duration,
    ready: Duration,
    status: Duration,
    page: Duration,
    page_rows: usize,
    rss_peak_kib: u64,
    rss_kib: u64,
}

/// One GET on a kept-alive connection; the body.
fn get(conn: &mut TcpStream, path: &str) -> String {
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
    )
    .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = conn.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if buf.len() >= end + 4 + len {
            assert!(head.starts_with("http/1.1 200"), "{head}");
            return String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
        }
    }
}

fn timed_gets(conn: &mut TcpStream, path: &str) -> (Duration, String) {
    let mut body = String::new();
    for _ in 0..20 {
        body = get(conn, path);
    }
    let mut times = Vec::with_capacity(GETS);
    for _ in 0..GETS {
        let t = Instant::now();
        body = get(conn, path);
        times.push(t.elapsed());
    }
    (median(times), body)
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn measure(data_dir: &Path, dispatches: u64, next_seq: &mut u64) -> Figures {
    let store_dir = data_dir.join("store");
    let mut f = Figures::default();
    {
        let t = Instant::now();
        let store = Store::open(&store_dir).expect("open");
        f.open = t.elapsed();
        let t = Instant::now();
        let active = store.journal_active().expect("active");
        let counts = store.journal_counts().expect("counts");
        f.dispatcher_reads = t.elapsed();
        assert!(active.is_empty());
        assert_eq!(counts.completed, dispatches);
        let mut parts: [Vec<Duration>; 4] = Default::default();
        for _ in 0..GETS {
            let t = Instant::now();
            store.journal_counts().expect("counts");
            parts[0].push(t.elapsed());
            let t = Instant::now();
            store.journal_active().expect("active");
            parts[1].push(t.elapsed());
            let t = Instant::now();
            store.figures().expect("figures");
            parts[2].push(t.elapsed());
            let t = Instant::now();
            store.size_on_disk().expect("size");
            parts[3].push(t.elapsed());
        }
        f.status_parts = parts.map(median);
        let t = Instant::now();
        let all = store.journal_all().expect("all");
        f.journal_all = t.elapsed();
        // With the (cancelled) dispatches scheduled by an earlier size's run.
        assert!(all.len() as u64 >= dispatches);
        drop(all);

        let mut times = Vec::with_capacity(SCHEDULES);
        for _ in 0..SCHEDULES {
            let mut rec = dispatch(*next_seq, now_ms(), false);
            rec.id = format!("new{next_seq:06}");
            rec.correlation_id = format!("corr_new_{next_seq}");
            *next_seq += 1;
            let t = Instant::now();
            assert!(store
                .journal_by_correlation(&rec.correlation_id)
                .expect("by correlation")
                .is_none());
            rec.seq = store.journal_next_seq().expect("seq");
            store.journal_put(&rec).expect("put");
            let active = store.journal_active().expect("active");
            times.push(t.elapsed());
            assert_eq!(active.len(), 1);
            // Finished again (untimed), so the binary has nothing to resume.
            for n in &mut rec.nodes {
                n.status = NodeStatus::Cancelled;
            }
            store.journal_put(&rec).expect("put");
        }
        f.schedule = median(times);
    }

    let http_port = free_port();
    let log = data_dir.with_file_name(format!("appliance-{dispatches}.log"));
    let out = std::fs::File::create(&log).expect("log");
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_laminate-proxy"))
        // Nothing listens there: the link backs off, which the local API does not mind.
        .args([
            "run",
            "--backend-url",
            "ws://127.0.0.1:9/ws",
            "--proxy-key",
            KEY,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .args(["--dicom-addr", "off"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("log")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("the appliance starts");
    let pid = child.id();
    let proc = Proc(child);
    let ready = eventually(Duration::from_secs(300), Duration::from_millis(5), || {
        ureq::get(&format!("http://127.0.0.1:{http_port}/readyz"))
            .timeout(Duration::from_secs(5))
            .call()
            .ok()
            .map(|_| ())
    });
    assert!(
        ready.is_some(),
        "not ready:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    f.ready = t.elapsed();
    let mut conn = TcpStream::connect(("127.0.0.1", http_port)).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    let (status, body) = timed_gets(&mut conn, "/api/status");
    f.status = status;
    let s: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(
        s["dispatches"]["completed"].as_u64(),
        Some(dispatches),
        "{s}"
    );
    let (page, body) = timed_gets(&mut conn, "/api/dispatches?limit=100");
    f.page = page;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("page JSON");
    f.page_rows = rows.len();
    f.rss_peak_kib = proc_kib(pid, "VmHWM:");
    f.rss_kib = proc_kib(pid, "VmRSS:");
    drop(proc);
    f
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    support::as_the_binary_runs();
    if !support::run_requested("history") {
        return;
    }
    let big: u64 = env_or("BENCH_HISTORY_DISPATCHES", 100_000);
    let instances: u64 = env_or("BENCH_HISTORY_INSTANCES", 100_000);
    let parent = target_dir().join("bench-tmp");
    std::fs::create_dir_all(&parent).expect("bench-tmp");
    let dir = tempfile::tempdir_in(&parent).expect("tempdir");
    let data_dir: PathBuf = dir.path().join("data");
    let store_dir = data_dir.join("store");
    let mut report = Report::new("history");
    report.line(format!(
        "# history: {SMALL} vs {big} finished dispatches, {instances}-instance catalog"
    ));
    report.line(support::machine_note());

    let t = Instant::now();
    {
        let store = Store::open(&store_dir).expect("store");
        fill_catalog(&data_dir, &store, instances);
        let start = now_ms() - 80 * DAY_MS;
        for i in 0..SMALL {
            store
                .journal_put(&dispatch(i, start + i, true))
                .expect("put");
        }
    }
    report.line(format!(
        "filled: catalog of {instances} and {SMALL} dispatches in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let mut next_seq = big + 1;
    let small = measure(&data_dir, SMALL, &mut next_seq);

    let t = Instant::now();
    fill_raw(&store_dir, SMALL, big);
    report.line(format!(
        "filled: {} more dispatches (records only, as before the indexes) in {:.1} s",
        big - SMALL,
        t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    drop(Store::open(&store_dir).expect("open"));
    let build = t.elapsed();
    report.line(format!(
        "one-time index build at the first open of that store: {}",
        ms(build)
    ));
    let large = measure(&data_dir, big, &mut next_seq);

    report.line(String::new());
    report.line(format!(
        "| figure | {SMALL} dispatches | {big} dispatches | ratio | goal |"
    ));
    report.line("|---|---|---|---|---|".to_owned());
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    let row = |report: &mut Report,
               name: &str,
               a: Duration,
               b: Duration,
               fmt: fn(Duration) -> String,
               goal: bool| {
        let r = ratio(a, b);
        let verdict = match (goal, r <= 1.5) {
            (false, _) => "",
            (true, true) => "≤ 1.5× PASS",
            (true, false) => "≤ 1.5× FAIL",
        };
        report.line(format!(
            "| {name} | {} | {} | {r:.2}× | {verdict} |",
            fmt(a),
            fmt(b)
        ));
    };
    row(
        &mut report,
        "GET /api/status (median)",
        small.status,
        large.status,
        us,
        true,
    );
    row(
        &mut report,
        "GET /api/dispatches?limit=100 (median)",
        small.page,
        large.page,
        us,
        true,
    );
    row(
        &mut report,
        "schedule one new dispatch (median, incl. its flush)",
        small.schedule,
        large.schedule,
        us,
        true,
    );
    for (i, name) in [
        "in process: journal_counts",
        "in process: journal_active",
        "in process: catalog figures",
        "in process: store size_on_disk",
    ]
    .iter()
    .enumerate()
    {
        row(
            &mut report,
            name,
            small.status_parts[i],
            large.status_parts[i],
            us,
            false,
        );
    }
    row(
        &mut report,
        "store open (in process)",
        small.open,
        large.open,
        ms,
        false,
    );
    row(
        &mut report,
        "dispatcher's start-up reads (active + counts)",
        small.dispatcher_reads,
        large.dispatcher_reads,
        us,
        false,
    );
    row(
        &mut report,
        "binary start to /readyz (incl. catalog check)",
        small.ready,
        large.ready,
        ms,
        false,
    );
    row(
        &mut report,
        "for context: journal_all (the old full read)",
        small.journal_all,
        large.journal_all,
        ms,
        false,
    );
    report.line(format!(
        "| rows in a /api/dispatches?limit=100 page | {} | {} | | |",
        small.page_rows, large.page_rows
    ));
    report.line(format!(
        "| binary peak RSS (VmHWM) / RSS at the end | {:.1} / {:.1} MiB | {:.1} / {:.1} MiB | | ≤ 64 MiB {} |",
        small.rss_peak_kib as f64 / 1024.0,
        small.rss_kib as f64 / 1024.0,
        large.rss_peak_kib as f64 / 1024.0,
        large.rss_kib as f64 / 1024.0,
        if large.rss_peak_kib <= 64 * 1024 { "PASS" } else { "FAIL" }
    ));
    report.save();
}
