//! Shared by the harness-less benches (`cstore_vs_peers`, `ingest_vs_storescp`):
//! stock peers as child processes on free loopback ports (dcmtk `storescp` and
//! `storescu`, Orthanc, dicom-rs `dicom-storescu`), the appliance binary, the
//! LD_PRELOAD shim of `shared/bench/`, medians and the results file.
//!
//! Every peer is started stock: the only option ever added to a sender is the
//! shim, and only in the rows that say so.
#![allow(dead_code)]

pub mod wire_limit;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use laminate_proxy::sim::study::{fresh_uid, SeriesSpec, StudySpec, Syntax};
use serde_json::{json, Value};

/// The key the appliance and the simulator share in the benches.
pub const KEY: &str = "pk_bench_0123456789abcdef";

/// `cargo bench` passes `--bench`; `cargo test --benches` does not. These
/// benches take minutes, so they only run under `cargo bench`.
pub fn run_requested(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        true
    } else {
        println!("{name}: skipped (run it with `cargo bench --bench {name}`)");
        false
    }
}

/// What the `laminate-proxy` binary does first (`src/main.rs`), for the parts
/// of the appliance these benches run in their own process: no library
/// backtraces unless RUST_LIB_BACKTRACE asks (a shell with RUST_BACKTRACE=1
/// would otherwise make the DICOM crates capture one per error they create).
pub fn as_the_binary_runs() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// An environment variable parsed, or the default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `NAME=1` (or any non-empty value but `0`).
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The workspace root (the root package's manifest dir).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target dir: `CARGO_TARGET_DIR` when set, else `target/` of the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join("target"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something listens on `port`, read from `/proc/net/tcp{,6}` so
/// that no probe connection reaches the peer (a probe would be an aborted
/// association in its log, and a fork of `storescp --fork`).
pub fn wait_listening(port: u16, timeout: Duration) {
    let needle = format!(":{port:04X} ");
    let deadline = Instant::now() + timeout;
    loop {
        let listening = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() > 3 && cols[1].ends_with(needle.trim_end()) && cols[3] == "0A"
                })
        });
        if listening {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn eventually<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sum of the sizes of `files`, in bytes.
pub fn total_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|p| std::fs::metadata(p).expect("file size").len())
        .sum()
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    assert!(!v.is_empty(), "median of nothing");
    v.sort();
    v[v.len() / 2]
}

/// A CT study of `count` Explicit VR LE instances of `pixel_bytes` pixel data,
/// in series of 100.
pub fn ct_study(count: usize, pixel_bytes: usize) -> StudySpec {
    let mut spec = StudySpec::simple(0, 0, pixel_bytes);
    let mut left = count;
    let mut number = 1;
    while left > 0 {
        let n = left.min(100);
        spec.series.push(SeriesSpec {
            number,
            uid: fresh_uid(),
            instances: n,
            syntax: Syntax::ExplicitLe,
        });
        left -= n;
        number += 1;
    }
    spec
}

/// Writes out every dirty page and commits the file system's journal (`sync`),
/// untimed, between measurements: on this VM's disk (ext4 mounted with
/// `discard`) the blocks freed by one row's clean-up are trimmed in the next
/// journal commit, so without this the next row's first fsyncs pay for them.
pub fn settle_disk() {
    let _ = Command::new("sync").status();
}

/// The block device's request counters (`/sys/dev/block/M:m/stat`) for the
/// disk holding a path: how many writes, cache flushes and discards a row
/// cost, which explains a row better than its time alone on a VM whose disk
/// speed moves from minute to minute. `None` where the file is not there
/// (not Linux, or a file system without a block device, e.g. tmpfs).
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskCounters {
    pub writes: u64,
    pub sectors_written: u64,
    pub discards: u64,
    pub flushes: u64,
}

impl DiskCounters {
    pub fn read(on: &Path) -> Option<DiskCounters> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(on).ok()?.dev();
        // Linux's encoding of dev_t (glibc's gnu_dev_major/minor).
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let text = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
        let f: Vec<u64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 5, 7: writes, sectors written; 12: discards; 16: flushes
        // (Documentation/block/stat.rst; the last two since Linux 4.18 / 5.5).
        Some(DiskCounters {
            writes: *f.get(4)?,
            sectors_written: *f.get(6)?,
            discards: f.get(11).copied().unwrap_or(0),
            flushes: f.get(15).copied().unwrap_or(0),
        })
    }

    /// What happened between `self` (earlier) and `later`.
    pub fn until(&self, later: &DiskCounters) -> DiskCounters {
        DiskCounters {
            writes: later.writes.saturating_sub(self.writes),
            sectors_written: later.sectors_written.saturating_sub(self.sectors_written),
            discards: later.discards.saturating_sub(self.discards),
            flushes: later.flushes.saturating_sub(self.flushes),
        }
    }
}

/// Runs `f` `runs` times (with `between` before each run, untimed) and
/// returns the median of what `f` measured.
pub fn median_of(
    runs: usize,
    mut between: impl FnMut(),
    mut f: impl FnMut() -> Duration,
) -> Duration {
    median(
        (0..runs.max(1))
            .map(|_| {
                between();
                settle_disk();
                f()
            })
            .collect(),
    )
}

// ----- stock receivers -----

/// dcmtk `storescp --fork` (one process per association, so that several
/// associations are served at once), either `--ignore` or writing with `-od`.
pub struct StoreScp {
    pub port: u16,
    pub ae: String,
    /// Where it writes (`-od`), when it writes.
    pub out: Option<tempfile::TempDir>,
    _proc: Proc,
    _log_dir: tempfile::TempDir,
}

impl StoreScp {
    pub fn ignoring(ae: &str) -> StoreScp {
        StoreScp::start(ae, None)
    }

    /// Writing into a temporary directory under `parent` (the disk measured).
    pub fn writing(ae: &str, parent: &Path) -> StoreScp {
        let out = tempfile::tempdir_in(parent).expect("tempdir");
        StoreScp::start(ae, Some(out))
    }

    fn start(ae: &str, out: Option<tempfile::TempDir>) -> StoreScp {
        let port = free_port();
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log = File::create(log_dir.path().join("storescp.log")).expect("log");
        let mut cmd = Command::new("/usr/bin/storescp");
        cmd.args(["--fork", "-aet", ae]);
        match &out {
            Some(d) => cmd.arg("-od").arg(d.path()),
            None => cmd.arg("--ignore"),
        };
        let child = cmd
            .arg(port.to_string())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("dcmtk storescp (apt-get install dcmtk)");
        wait_listening(port, Duration::from_secs(10));
        StoreScp {
            port,
            ae: ae.to_owned(),
            out,
            _proc: Proc(child),
            _log_dir: log_dir,
        }
    }

    /// Files written so far.
    pub fn written(&self) -> usize {
        self.out.as_ref().map_or(0, |d| {
            std::fs::read_dir(d.path())
                .map(|r| r.flatten().count())
                .unwrap_or(0)
        })
    }

    /// Removes what it wrote (between runs, so every run writes new files).
    pub fn clear(&self) {
        if let Some(d) = &self.out {
            for e in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Orthanc with a generated configuration: storage in a temporary directory,
/// free DICOM and HTTP ports, no remote access. Otherwise its defaults.
pub struct Orthanc {
    pub ae: String,
    pub dicom_port: u16,
    pub http_port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Orthanc {
    /// Storage under `parent` (the disk measured).
    pub fn start(ae: &str, parent: &Path) -> Orthanc {
        Orthanc::start_with(ae, parent, json!({}))
    }

    /// [`Orthanc::start`] with more configuration keys (they win).
    pub fn start_with(ae: &str, parent: &Path, extra: Value) -> Orthanc {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let (dicom_port, http_port) = (free_port(), free_port());
        let mut cfg = json!({
            "Name": "laminate-bench",
            "StorageDirectory": dir.path().join("db"),
            "IndexDirectory": dir.path().join("db"),
            "DicomAet": ae,
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": [],
        });
        if let (Some(cfg), Some(extra)) = (cfg.as_object_mut(), extra.as_object()) {
            cfg.extend(extra.clone());
        }
        let cfg_path = dir.path().join("orthanc.json");
        std::fs::write(&cfg_path, cfg.to_string()).expect("config");
        let log = File::create(dir.path().join("orthanc.log")).expect("log");
        let child = Command::new("/usr/sbin/Orthanc")
            .arg(&cfg_path)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("Orthanc (apt-get install orthanc)");
        let o = Orthanc {
            ae: ae.to_owned(),
            dicom_port,
            http_port,
            _proc: Proc(child),
            _dir: dir,
        };
        eventually(Duration::from_secs(60), Duration::from_millis(100), || {
            http_get(&o.url("/system")).map(|_| ())
        })
        .expect("Orthanc answers");
        wait_listening(dicom_port, Duration::from_secs(10));
        o
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    /// Instances it holds.
    pub fn instances(&self) -> u64 {
        http_get(&self.url("/statistics"))
            .and_then(|v| v["CountInstances"].as_u64())
            .unwrap_or(0)
    }

    /// Deletes every patient, so that the next run stores new instances
    /// (a duplicate is not stored again by default, which would flatter it).
    pub fn clear(&self) {
        let patients = http_get(&self.url("/patients")).unwrap_or_default();
        for p in patients.as_array().into_iter().flatten() {
            if let Some(id) = p.as_str() {
                let _ = ureq::delete(&self.url(&format!("/patients/{id}")))
                    .timeout(Duration::from_secs(120))
                    .call();
            }
        }
        assert_eq!(self.instances(), 0, "Orthanc still holds instances");
    }
}

/// GET → JSON, None on any failure.
pub fn http_get(url: &str) -> Option<Value> {
    let resp = ureq::get(url)
        .timeout(Duration::from_secs(10))
        .call()
        .ok()?;
    serde_json::from_str(&resp.into_string().ok()?).ok()
}

// ----- stock senders -----

/// The LD_PRELOAD shim of `shared/bench/quickack.c` (TCP_NODELAY on connect,
/// TCP_QUICKACK around reads): `QUICKACK_SO` if set, else built with gcc
/// into the target dir. None (and a note) when it cannot be had.
pub fn quickack_shim() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QUICKACK_SO") {
        return Some(PathBuf::from(p));
    }
    let src = repo_dir().join("../shared/bench/quickack.c");
    let out = target_dir().join("quickack.so");
    if out.exists() {
        return Some(out);
    }
    let built = Command::new("gcc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-ldl")
        .status()
        .is_ok_and(|s| s.success());
    if built {
        Some(out)
    } else {
        println!("note: could not build {} (no shim rows)", src.display());
        None
    }
}

/// How a stock sender is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shim {
    Stock,
    QuickAck,
}

/// dcmtk `storescu` sending `files` over `processes` associations (one
/// `storescu` process each, with a share of the files), all started at
/// once; returns the time until the last one exits.
pub fn dcmtk_storescu(
    files: &[PathBuf],
    port: u16,
    called_ae: &str,
    processes: usize,
    shim: Option<&Path>,
) -> Duration {
    let processes = processes.max(1);
    let chunk = files.len().div_ceil(processes);
    let started = Instant::now();
    let children: Vec<Child> = files
        .chunks(chunk)
        .map(|part| {
            let mut cmd = Command::new("/usr/bin/storescu");
            cmd.args(["-aet", "BENCH", "-aec", called_ae, "127.0.0.1"])
                .arg(port.to_string())
                .args(part)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Some(so) = shim {
                cmd.env("LD_PRELOAD", so);
            }
            cmd.spawn().expect("dcmtk storescu (apt-get install dcmtk)")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("storescu");
        assert!(
            out.status.success(),
            "storescu failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    started.elapsed()
}

/// dicom-rs `dicom-storescu`: in PATH or in cargo's bin dir.
pub fn dicom_rs_storescu() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin")))
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")));
    for dir in candidates {
        let p = dir.join("dicom-storescu");
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// dicom-rs `dicom-storescu` sending `files` with `-c concurrency`.
pub fn dicom_rs_send(
    exe: &Path,
    files: &[PathBuf],
    port: u16,
    called_ae: &str,
    concurrency: usize,
    shim: Option<&Path>,
) -> Duration {
    let mut cmd = Command::new(exe);
    cmd.args([
        "--calling-ae-title",
        "BENCH",
        "--called-ae-title",
        called_ae,
    ])
    .args(["-c", &concurrency.max(1).to_string()])
    .arg(format!("127.0.0.1:{port}"))
    .args(files)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(so) = shim {
        cmd.env("LD_PRELOAD", so);
    }
    let started = Instant::now();
    let out = cmd.output().expect("dicom-storescu");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "dicom-storescu failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

// ----- the appliance -----

/// The real `laminate-proxy run` binary with its own data dir.
pub struct Appliance {
    pub pid: u32,
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    proc: Option<Proc>,
    _dir: tempfile::TempDir,
}

impl Appliance {
    /// `nodes` goes into `nodes.json`; `dicom_addr` is `--dicom-addr` (`off` or an address).
    pub fn start(backend_url: &str, nodes: Value, dicom_addr: &str, parent: &Path) -> Appliance {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        std::fs::write(
            data_dir.join("nodes.json"),
            serde_json::to_vec_pretty(&json!({ "nodes": nodes })).expect("json"),
        )
        .expect("nodes.json");
        let http_port = free_port();
        let log = dir.path().join("appliance.log");
        let out = File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_laminate-proxy"))
            .args(["run", "--backend-url", backend_url, "--proxy-key", KEY])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--dicom-addr", dicom_addr])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("the appliance starts");
        let app = Appliance {
            pid: child.id(),
            http_port,
            data_dir,
            log,
            proc: Some(Proc(child)),
            _dir: dir,
        };
        let ready = eventually(Duration::from_secs(60), Duration::from_millis(50), || {
            ureq::get(&app.url("/readyz"))
                .timeout(Duration::from_secs(5))
                .call()
                .ok()
                .map(|_| ())
        });
        assert!(ready.is_some(), "appliance not ready:\n{}", app.logs());
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    pub fn status(&self) -> Value {
        http_get(&self.url("/api/status")).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A `VmHWM`/`VmRSS`-style line of `/proc/PID/status`, in KiB.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        s.lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.proc.take();
    }
}

/// A node of `nodes.json`.
pub fn node(id: &str, ae: &str, port: u16) -> Value {
    json!({"node_id": id, "name": format!("PACS {id}"), "ae_title": ae, "host": "127.0.0.1",
           "port": port, "storage_path": "/data/dicom", "is_active": true})
}

/// An event from the backend, all fields set.
pub fn event(
    event_type: &str,
    correlation_id: &str,
    entity: (&str, &str),
    payload: Value,
) -> Value {
    json!({
        "event_type": event_type,
        "workspace_id": "ws_bench",
        "timestamp": "2025-10-04T10:30:00.000Z",
        "correlation_id": correlation_id,
        "entity_type": entity.0,
        "entity_id": entity.1,
        "payload": payload,
    })
}

// ----- the report -----

/// Lines printed as they come and written, at the end, to
/// `{target}/bench-results/{name}.md`.
pub struct Report {
    name: String,
    lines: Vec<String>,
}

impl Report {
    pub fn new(name: &str) -> Report {
        Report {
            name: name.to_owned(),
            lines: Vec::new(),
        }
    }

    pub fn line(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.lines.push(s);
    }

    /// Writes the file; returns its path.
    pub fn save(&self) -> PathBuf {
        let dir = target_dir().join("bench-results");
        std::fs::create_dir_all(&dir).expect("results dir");
        let path = dir.join(format!("{}.md", self.name));
        let mut text = self.lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("results file");
        println!("results written to {}", path.display());
        path
    }
}

/// `PASS`/`FAIL` for a ratio against its target.
pub fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target {
        "PASS"
    } else {
        "FAIL"
    }
}

/// Local time-ish stamp and machine load, for the report's header.
pub fn machine_note() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cpus} CPUs, load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
