//! C-STORE throughput of our sender against stock peers, into stock receivers,
//! on the same generated CT instances in one run (issue 3, "Measure").
//!
//! ```text
//! benches/cstore_vs_peers.sh            # builds the shim, installs dicom-storescu, runs this
//! cargo bench --bench cstore_vs_peers   # the same, with whatever is installed
//! ```
//!
//! Senders: `send_batch` (1 and 4 associations), dcmtk `/usr/bin/storescu`
//! (stock, and with the `shared/bench/quickack.c` LD_PRELOAD shim; ×4 = four
//! processes with a quarter of the files each), dicom-rs `dicom-storescu`
//! (`-c 1` and `-c 4`, with the shim, and `-c 4` stock). Receivers, all stock,
//! started here on free loopback ports: `storescp --fork --ignore`,
//! `storescp --fork -od DIR`, Orthanc (generated config, its defaults otherwise).
//! Each figure is the median of `BENCH_RUNS` runs; writing receivers are emptied
//! between runs so every run stores new files, get one untimed warm-up pass, and
//! the runs go round-robin over the senders (Orthanc is ~20 % faster for whoever
//! sends later otherwise). Then, through the real appliance
//! binary and the backend simulator: a ~300 MB study dispatched end to end to
//! `storescp --ignore`, against download alone plus send alone; and the peak RSS
//! (VmHWM) of the appliance while it dispatches a 2 GiB archive.
//!
//! Environment: `BENCH_INSTANCES` (600), `BENCH_RUNS` (3), `BENCH_SKIP_STOCK=1`
//! (no stock-sender rows: they stall ~40 ms per instance and take ~30 s a run),
//! `BENCH_RECEIVERS` (`ignore,writing,orthanc`), `BENCH_REVERSE=1` (senders in
//! reverse order, ours last), `BENCH_SKIP_E2E=1`,
//! `BENCH_E2E_INSTANCES` (600), `BENCH_SKIP_RSS=1`, `BENCH_RSS_INSTANCES`
//! (4096 × 512 KiB ≈ 2 GiB), `QUICKACK_SO` (a prebuilt shim).
//! `BENCH_SKIP_LIMIT=1` (no limit rows: the same files from a minimal Rust sender
//! to a minimal Rust receiver answering 12 bytes each, the wire's ceiling).
//! `BENCH_SKIP_TLS=1` (no DICOM TLS rows: ours over TLS into `storescp +tls`
//! against ours in plain TCP, and the same into Orthanc with and without
//! `DicomTlsEnabled`, `cstore_vs_peers/tls.rs`; `BENCH_SKIP_TLS_ORTHANC=1` for
//! storescp's pair only).
//! Results: stdout and `{target}/bench-results/cstore_vs_peers.md`.

#[path = "cstore_vs_peers/e2e.rs"]
mod e2e;
mod support;
#[path = "cstore_vs_peers/tls.rs"]
mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use laminate_actors::dispatch::download::{download, Download};
use laminate_actors::dispatch::extract::{extract_archive, ExtractLimits};
use laminate_actors::dispatch::index::index_dir;
use laminate_actors::send::pool::{Pool, PoolStats, Rank};
use laminate_actors::send::{EventSink, Item, ItemOutcome, SendEvent, SendOptions, Target, Ticket};
use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::{BackendSim, EntityKind, SimOptions};
use serde_json::{json, Value};
use support::wire_limit::{limit_send, LimitReceiver};
use support::*;

/// Pixel bytes per instance: 512×512×16 bit, ≈ 512 KiB per file.
const PIXEL_BYTES: usize = 512 * 1024;
const SCP_AE: &str = "STORESCP";
const ORTHANC_AE: &str = "ORTHANC";

/// Our sender: a node pool of `associations`; with `index` the time
/// includes reading each file's header (`Item::from_file`), as a stock
/// sender's does.
fn ours(files: &[PathBuf], port: u16, ae: &str, associations: u32, index: bool) -> Duration {
    ours_over(files, port, ae, associations, index, None)
}

/// [`ours`], over DICOM TLS with `tls`.
fn ours_over(
    files: &[PathBuf],
    port: u16,
    ae: &str,
    associations: u32,
    index: bool,
    tls: Option<laminate_config::NodeTls>,
) -> Duration {
    let target = Target {
        node_id: "bench".into(),
        host: "127.0.0.1".into(),
        port,
        called_ae: ae.into(),
        calling_ae: "BENCH".into(),
        max_associations: associations,
        tls,
        prefer_ts: None,
    };
    let read = || -> Vec<Item> {
        files
            .iter()
            .map(|p| Item::from_file(p).expect("item"))
            .collect()
    };
    let pre = if index { None } else { Some(read()) };
    let stored = Arc::new(Counted::default());
    // The appliance's path: the node's pool, the sink answering on its
    // workers' threads (as the dispatch journal does).
    let pool = Pool::new(
        target,
        SendOptions::default(),
        Arc::new(PoolStats::default()),
    );
    let started = Instant::now();
    let items = pre.unwrap_or_else(read);
    let outcome = pool
        .submit(
            items,
            Rank {
                priority: 1,
                seq: 0,
            },
            Arc::new(AtomicBool::new(false)),
            stored.clone(),
        )
        .blocking_recv()
        .expect("the pool answers");
    let took = started.elapsed();
    assert_eq!(outcome.transient_error, None, "send failed");
    assert_eq!(
        stored.0.load(Ordering::Relaxed),
        files.len(),
        "every instance stored"
    );
    took
}

/// Counts stored instances (the bench's sink).
#[derive(Default)]
struct Counted(AtomicUsize);

impl EventSink for Counted {
    fn record(&self, e: SendEvent) -> Ticket {
        if let SendEvent::Acknowledged {
            outcome: ItemOutcome::Stored { .. },
            ..
        } = e
        {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        0
    }
    fn wait_durable(&self, _: Ticket) {}
}

/// One measured row.
struct Row {
    receiver: &'static str,
    sender: String,
    assoc: usize,
    /// The median of `runs`.
    time: Duration,
    runs: Vec<Duration>,
}

impl Row {
    /// The row in the report's table: seconds (median, then each run) and MB/s
    /// for `mb` megabytes.
    fn table_line(&self, mb: f64) -> String {
        let each: Vec<String> = self
            .runs
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect();
        format!(
            "| {} | {} | {} | {:.2} | {} | {:.1} |",
            self.receiver,
            self.sender,
            self.assoc,
            self.time.as_secs_f64(),
            each.join(" / "),
            mb / self.time.as_secs_f64()
        )
    }
}

/// The receivers, each with what "empty it" and "check it got everything" mean.
enum Receiver {
    Ignore(StoreScp),
    Writing(StoreScp),
    Orthanc(Orthanc),
}

impl Receiver {
    fn name(&self) -> &'static str {
        match self {
            Receiver::Ignore(_) => "storescp --ignore",
            Receiver::Writing(_) => "storescp -od",
            Receiver::Orthanc(_) => "Orthanc",
        }
    }
    fn port(&self) -> u16 {
        match self {
            Receiver::Ignore(s) | Receiver::Writing(s) => s.port,
            Receiver::Orthanc(o) => o.dicom_port,
        }
    }
    fn ae(&self) -> &str {
        match self {
            Receiver::Ignore(s) | Receiver::Writing(s) => &s.ae,
            Receiver::Orthanc(o) => &o.ae,
        }
    }
    fn clear(&self) {
        match self {
            Receiver::Ignore(_) => {}
            Receiver::Writing(s) => s.clear(),
            Receiver::Orthanc(o) => o.clear(),
        }
    }
    /// Waits (briefly) until it holds `n` instances; panics otherwise.
    fn check(&self, n: usize) {
        let got = || match self {
            Receiver::Ignore(_) => n as u64,
            Receiver::Writing(s) => s.written() as u64,
            Receiver::Orthanc(o) => o.instances(),
        };
        let ok = eventually(Duration::from_secs(10), Duration::from_millis(50), || {
            (got() == n as u64).then_some(())
        });
        assert!(ok.is_some(), "{}: {} of {n} instances", self.name(), got());
    }
}

/// Senders, in the order they run against every receiver.
#[derive(Clone, Copy)]
enum Sender {
    Ours(u32),
    Dcmtk(usize, Shim),
    DicomRs(usize, Shim),
}

impl Sender {
    fn name(self) -> String {
        let shim = |s| match s {
            Shim::Stock => "stock",
            Shim::QuickAck => "+ shim",
        };
        match self {
            Sender::Ours(_) => "ours (node pool, incl. header read)".into(),
            Sender::Dcmtk(1, s) => format!("dcmtk storescu {}", shim(s)),
            Sender::Dcmtk(n, s) => format!("dcmtk storescu ×{n} processes {}", shim(s)),
            Sender::DicomRs(n, s) => format!("dicom-rs storescu -c {n} {}", shim(s)),
        }
    }
    fn assoc(self) -> usize {
        match self {
            Sender::Ours(n) => n as usize,
            Sender::Dcmtk(n, _) | Sender::DicomRs(n, _) => n,
        }
    }
}

struct Peers {
    shim: Option<PathBuf>,
    dicom_rs: Option<PathBuf>,
}

/// Every sender against one receiver. One untimed warm-up pass first (a
/// receiver that stores gets faster once its directories and index pages
/// exist), then the runs round-robin over the senders, so that no sender is
/// favoured by going later.
fn measure_all(
    rx: &Receiver,
    senders: &[Sender],
    files: &[PathBuf],
    peers: &Peers,
    runs: usize,
) -> Vec<Row> {
    let shim_path = |s: Shim| match s {
        Shim::Stock => Some(None),
        Shim::QuickAck => peers.shim.as_deref().map(Some),
    };
    let (port, ae) = (rx.port(), rx.ae().to_owned());
    type Run<'a> = Box<dyn FnMut() -> Duration + 'a>;
    let runner = |sender: Sender| -> Option<Run<'_>> {
        let ae = ae.clone();
        Some(match sender {
            Sender::Ours(n) => Box::new(move || ours(files, port, &ae, n, true)),
            Sender::Dcmtk(n, s) => {
                let so = shim_path(s)?;
                Box::new(move || dcmtk_storescu(files, port, &ae, n, so))
            }
            Sender::DicomRs(n, s) => {
                let so = shim_path(s)?;
                let exe = peers.dicom_rs.as_deref()?;
                Box::new(move || dicom_rs_send(exe, files, port, &ae, n, so))
            }
        })
    };
    let mut planned: Vec<(Sender, Run<'_>, Vec<Duration>)> = senders
        .iter()
        .filter_map(|&s| runner(s).map(|r| (s, r, Vec::new())))
        .collect();
    rx.clear();
    ours(files, port, &ae, 4, true);
    rx.check(files.len());
    for _ in 0..runs.max(1) {
        for (_, run, times) in planned.iter_mut() {
            rx.clear();
            settle_disk();
            times.push(run());
            rx.check(files.len());
        }
    }
    rx.clear();
    planned
        .into_iter()
        .map(|(sender, _, times)| Row {
            receiver: rx.name(),
            sender: sender.name(),
            assoc: sender.assoc(),
            time: median(times.clone()),
            runs: times,
        })
        .collect()
}

const LIMIT_RECEIVER: &str = "minimal Rust receiver (12-byte answers)";

/// The limit rows (`support/wire_limit.rs`): 1 and 4 connections, a warm-up
/// pass, then `runs` runs alternating between the two.
fn measure_limit(files: &[PathBuf], runs: usize) -> Vec<Row> {
    let rx = LimitReceiver::start();
    limit_send(files, rx.port, 4);
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..runs.max(1) {
        for (i, n) in [1, 4].into_iter().enumerate() {
            times[i].push(limit_send(files, rx.port, n));
        }
    }
    [1, 4]
        .into_iter()
        .zip(times)
        .map(|(n, t)| Row {
            receiver: LIMIT_RECEIVER,
            sender: "minimal Rust sender (length + file bytes)".into(),
            assoc: n,
            time: median(t.clone()),
            runs: t,
        })
        .collect()
}

fn main() {
    if !run_requested("cstore_vs_peers") {
        return;
    }
    as_the_binary_runs();
    let count: usize = env_or("BENCH_INSTANCES", 600);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let skip_stock = env_flag("BENCH_SKIP_STOCK");
    let mut report = Report::new("cstore_vs_peers");
    report.line("# C-STORE: ours vs stock peers (issue 3)");
    report.line("");
    report.line(machine_note());

    let work = tempfile::tempdir().expect("work dir");
    let files_dir = work.path().join("files");
    let spec = ct_study(count, PIXEL_BYTES);
    let generated = Instant::now();
    let files: Vec<PathBuf> = spec
        .write_files(&files_dir)
        .expect("study files")
        .iter()
        .map(|i| files_dir.join(format!("{}.dcm", i.sop_instance_uid)))
        .collect();
    let bytes = total_bytes(&files);
    let mb = bytes as f64 / 1e6;
    println!(
        "generated {count} instances in {:.1} s",
        generated.elapsed().as_secs_f64()
    );
    report.line(format!(
        "{count} CT instances, Explicit VR LE, {mb:.1} MB; medians of {runs} runs; loopback"
    ));
    report.line("");

    let peers = Peers {
        shim: quickack_shim(),
        dicom_rs: dicom_rs_storescu(),
    };
    if peers.dicom_rs.is_none() {
        report.line(
            "note: dicom-storescu not found (cargo install dicom-storescu): its rows are missing",
        );
    }
    if peers.shim.is_none() {
        report.line("note: no quickack shim: its rows are missing");
    }

    let wanted =
        std::env::var("BENCH_RECEIVERS").unwrap_or_else(|_| "ignore,writing,orthanc".into());
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let mut receivers = Vec::new();
    if wanted.contains(&"ignore") {
        receivers.push(Receiver::Ignore(StoreScp::ignoring(SCP_AE)));
    }
    if wanted.contains(&"writing") {
        receivers.push(Receiver::Writing(StoreScp::writing(SCP_AE, work.path())));
    }
    if wanted.contains(&"orthanc") {
        receivers.push(Receiver::Orthanc(Orthanc::start(ORTHANC_AE, work.path())));
    }
    let mut senders = vec![Sender::Ours(1), Sender::Ours(4)];
    if !skip_stock {
        senders.push(Sender::Dcmtk(1, Shim::Stock));
    }
    senders.extend([
        Sender::Dcmtk(1, Shim::QuickAck),
        Sender::Dcmtk(4, Shim::QuickAck),
        Sender::DicomRs(1, Shim::QuickAck),
        Sender::DicomRs(4, Shim::QuickAck),
    ]);
    if !skip_stock {
        senders.push(Sender::DicomRs(4, Shim::Stock));
    }
    if env_flag("BENCH_REVERSE") {
        // Ours last: to see whether a receiver warms up (or degrades) over a run.
        senders.reverse();
    }

    let mut rows: Vec<Row> = Vec::new();
    report.line("| receiver | sender | assoc | s (median) | s (each run, in order) | MB/s |");
    report.line("|---|---|---|---|---|---|");
    for rx in &receivers {
        for row in measure_all(rx, &senders, &files, &peers, runs) {
            report.line(row.table_line(mb));
            rows.push(row);
        }
    }
    drop(receivers);
    // The wire's ceiling: the same files, a minimal sender and receiver.
    if !env_flag("BENCH_SKIP_LIMIT") {
        for row in measure_limit(&files, runs) {
            report.line(row.table_line(mb));
            rows.push(row);
        }
    }

    // DICOM TLS: ours over TLS against ours in plain TCP (issue 16); Orthanc's
    // pair unless BENCH_SKIP_TLS_ORTHANC.
    let wanted_orthanc_tls = !env_flag("BENCH_SKIP_TLS_ORTHANC");
    if !env_flag("BENCH_SKIP_TLS") {
        let mut tls_rows = tls::measure(&files, runs, SCP_AE, |f, port, ae, n, t| {
            ours_over(f, port, ae, n, true, t)
        });
        if wanted_orthanc_tls {
            tls_rows.extend(tls::measure_orthanc(
                &files,
                runs,
                ORTHANC_AE,
                work.path(),
                |f, port, ae, n, t| ours_over(f, port, ae, n, true, t),
            ));
        }
        for row in tls_rows {
            report.line(row.table_line(mb));
            rows.push(row);
        }
    }

    let rate = |rx: &str, sender: Sender| -> Option<f64> {
        let name = sender.name();
        rows.iter()
            .find(|r| r.receiver == rx && r.sender == name && r.assoc == sender.assoc())
            .map(|r| mb / r.time.as_secs_f64())
    };
    let mut targets: Vec<String> = Vec::new();
    let mut ratio_line = |what: &str, ours: Option<f64>, theirs: Option<f64>, target: f64| {
        let line = match (ours, theirs) {
            (Some(o), Some(t)) => {
                let r = o / t;
                format!(
                    "- {what}: {r:.2}× ({o:.1} vs {t:.1} MB/s), target ≥ {target}× → {}",
                    verdict(r, target)
                )
            }
            _ => format!("- {what}: n/a (a row is missing)"),
        };
        targets.push(line);
    };
    let ign = "storescp --ignore";
    ratio_line(
        "1 assoc → storescp --ignore vs stock dcmtk storescu",
        rate(ign, Sender::Ours(1)),
        rate(ign, Sender::Dcmtk(1, Shim::Stock)),
        10.0,
    );
    ratio_line(
        "1 assoc → storescp --ignore vs dcmtk storescu + shim",
        rate(ign, Sender::Ours(1)),
        rate(ign, Sender::Dcmtk(1, Shim::QuickAck)),
        1.0,
    );
    ratio_line(
        "4 assoc → storescp --ignore vs dicom-rs storescu -c 4 + shim",
        rate(ign, Sender::Ours(4)),
        rate(ign, Sender::DicomRs(4, Shim::QuickAck)),
        1.5,
    );
    let best_orthanc_peer = rows
        .iter()
        .filter(|r| r.receiver == "Orthanc" && !r.sender.starts_with("ours"))
        .min_by_key(|r| r.time)
        .map(|r| (r.sender.clone(), r.assoc, mb / r.time.as_secs_f64()));
    ratio_line(
        &format!(
            "4 assoc → Orthanc vs the best peer ({})",
            best_orthanc_peer
                .as_ref()
                .map_or("none".to_owned(), |(s, a, _)| format!("{s}, {a} assoc"))
        ),
        rate("Orthanc", Sender::Ours(4)),
        best_orthanc_peer.map(|b| b.2),
        0.95,
    );

    for n in [1usize, 4] {
        let of = |rx: &str| {
            rows.iter()
                .find(|r| r.receiver == rx && r.assoc == n)
                .map(|r| mb / r.time.as_secs_f64())
        };
        ratio_line(
            &format!("{n} assoc: ours over DICOM TLS vs ours in plain TCP (storescp --ignore)"),
            of(tls::TLS_RECEIVER),
            of(tls::PLAIN_RECEIVER),
            0.7,
        );
    }
    let orthanc = |rx: &str| {
        rows.iter()
            .find(|r| r.receiver == rx)
            .map(|r| mb / r.time.as_secs_f64())
    };
    ratio_line(
        "4 assoc: ours over DICOM TLS vs ours in plain TCP (Orthanc, storing)",
        orthanc(tls::ORTHANC_TLS),
        orthanc(tls::ORTHANC_PLAIN),
        0.7,
    );
    for n in [1usize, 4] {
        let of = |rx: &str| {
            rows.iter()
                .find(|r| r.receiver == rx && r.assoc == n)
                .map(|r| mb / r.time.as_secs_f64())
        };
        let (ours_tls, ours_plain) = (of(tls::TLS_RECEIVER), of(tls::PLAIN_RECEIVER));
        let (limit_tls, limit_plain) = (of(tls::LIMIT_TLS), of(tls::LIMIT_PLAIN));
        targets.push(match (ours_tls, ours_plain, limit_tls, limit_plain) {
            (Some(ot), Some(op), Some(lt), Some(lp)) => format!(
                "- {n} assoc: the TLS ceiling here (the wire-limit exchange, rustls both ends, vs plain) = {:.2}× ({lt:.1} vs {lp:.1} MB/s); ours over TLS reaches {:.0} % of the TLS limit, ours in plain TCP {:.0} % of the plain one",
                lt / lp,
                100.0 * ot / lt,
                100.0 * op / lp
            ),
            _ => format!("- {n} assoc: the TLS ceiling: n/a (a row is missing)"),
        });
    }
    for n in [1u32, 4] {
        let limit = rows
            .iter()
            .find(|r| r.receiver == LIMIT_RECEIVER && r.assoc == n as usize)
            .map(|r| mb / r.time.as_secs_f64());
        targets.push(match (rate(ign, Sender::Ours(n)), limit) {
            (Some(o), Some(l)) => format!(
                "- {n} assoc: ours → storescp --ignore / the wire's limit ({n} connection{}) = {:.0} % ({o:.1} vs {l:.1} MB/s; the rest is what DICOM and storescp cost)",
                if n == 1 { "" } else { "s" },
                100.0 * o / l
            ),
            _ => format!("- {n} assoc: ours / the wire's limit: n/a (a row is missing)"),
        });
    }
    if !env_flag("BENCH_SKIP_E2E") {
        targets.push(e2e::end_to_end(work.path(), runs, &mut report));
    }
    if !env_flag("BENCH_SKIP_RSS") {
        targets.push(e2e::peak_rss(work.path(), &mut report));
    }
    report.line("");
    report.line("## Targets");
    for t in targets {
        report.line(t);
    }
    report.save();
}
