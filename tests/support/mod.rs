//! Test support: the real `laminate-proxy` binary as a child process, with its
//! own data dir and free loopback ports, plus small HTTP and timing helpers.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod audit;
pub mod pki;

pub use laminate_proxy::sim::{BackendSim, SimOptions};
pub use serde_json::{json, Value};

pub const KEY: &str = "pk_test_0123456789abcdef";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A loopback port held bound but not listening: connecting to it is refused at
/// once, and neither a parallel test's `free_port()` nor an outgoing connection's
/// ephemeral port can take it while it is held. A node that is "down" must use
/// one of these; a port only found free by `free_port()` can be handed to another
/// test's receiver during a long outage test.
pub struct DownPort {
    socket: Option<socket2::Socket>,
    port: u16,
}

impl DownPort {
    pub fn reserve() -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind a loopback port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .expect("the bound port");
        Self {
            socket: Some(socket),
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lets the port go so a receiver can listen on it ("the node comes back").
    pub fn release(mut self) -> u16 {
        self.socket.take();
        self.port
    }

    /// Starts listening on the held port, with no window in which another
    /// socket could take it.
    pub fn listen(mut self) -> TcpListener {
        let socket = self.socket.take().expect("a DownPort holds its socket");
        socket.listen(16).expect("listen on the held port");
        socket.into()
    }
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A synthetic study of `series` × `per` instances of `bytes` pixel bytes,
/// zipped as the backend serves it, and its SOP Instance UIDs.
pub fn study(
    series: usize,
    per: usize,
    bytes: usize,
) -> (bytes::Bytes, std::collections::BTreeSet<String>) {
    let spec = laminate_proxy::sim::study::StudySpec::simple(series, per, bytes);
    let (zip, inst) = spec.zip_bytes().expect("study zip");
    (zip, inst.into_iter().map(|i| i.sop_instance_uid).collect())
}

pub fn sim() -> BackendSim {
    BackendSim::start(SimOptions {
        proxy_key: KEY.into(),
        tls: None,
        port: 0,
    })
    .expect("simulator starts")
}

/// An event from the backend, all fields set.
pub fn event(event_type: &str, correlation_id: &str, payload: Value) -> Value {
    json!({
        "event_type": event_type,
        "workspace_id": "ws_test",
        "timestamp": "2025-10-04T10:30:00.000Z",
        "correlation_id": correlation_id,
        "entity_type": "proxy",
        "entity_id": "proxy_1",
        "payload": payload,
    })
}

pub fn is_type(t: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["event_type"] == t
}

pub fn is_pong(corr: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v: &Value| v["event_type"] == "pong" && v["correlation_id"] == corr
}

/// The appliance under test.
pub struct Appliance {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub http_port: u16,
    pub args: Vec<String>,
    /// Extra environment for the process (e.g. test-build timeouts).
    pub env: Vec<(String, String)>,
    runs: usize,
    _tmp: Option<tempfile::TempDir>,
}

impl Appliance {
    /// Starts `run` against `backend_url` with the test key and a fresh data dir.
    pub fn start(backend_url: &str, extra: &[&str]) -> Appliance {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut a = Appliance::with_dir(dir, backend_url, extra);
        a._tmp = Some(tmp);
        a.spawn();
        a
    }

    /// Starts with `nodes.json` (and optionally `proxy.json`) written beforehand.
    pub fn start_with_nodes(backend_url: &str, nodes: Value, proxy: Option<Value>) -> Appliance {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut a = Appliance::with_dir(tmp.path().to_path_buf(), backend_url, &[]);
        a._tmp = Some(tmp);
        a.write_config("nodes.json", &json!({ "nodes": nodes }));
        if let Some(p) = proxy {
            a.write_config("proxy.json", &p);
        }
        a.spawn();
        a
    }

    /// Started with one node, `node_1` (AE `PACS_A`) at `port`, and waited for
    /// until it is ready and connected to `sim`.
    pub fn with_one_node(sim: &BackendSim, port: u16, timeout: Duration) -> Appliance {
        let mut app = Appliance::start_with_nodes(
            &sim.backend_url(),
            json!([node("node_1", "PACS_A", port)]),
            None,
        );
        app.wait_ready(timeout);
        assert!(sim.wait_connected(timeout));
        app
    }

    /// Keeps a temporary directory alive as long as the appliance.
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self._tmp = Some(dir);
    }

    pub fn write_config(&self, name: &str, v: &Value) {
        std::fs::create_dir_all(&self.data_dir).expect("mkdir");
        std::fs::write(
            self.data_dir.join(name),
            serde_json::to_vec_pretty(v).expect("json"),
        )
        .expect("write config");
    }

    /// Same, with a given directory (kept), not yet started.
    pub fn with_dir(dir: PathBuf, backend_url: &str, extra: &[&str]) -> Appliance {
        let data_dir = dir.join("data");
        let http_port = free_port();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--backend-url".into(),
            backend_url.into(),
            "--proxy-key".into(),
            KEY.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--http-addr".into(),
            format!("127.0.0.1:{http_port}"),
            "--dicom-addr".into(),
            "off".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Appliance {
            child: None,
            dir,
            data_dir,
            http_port,
            args,
            env: Vec::new(),
            runs: 0,
            _tmp: None,
        }
    }

    pub fn spawn(&mut self) {
        self.runs += 1;
        let log = self.dir.join(format!("appliance-{}.log", self.runs));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_laminate-proxy"))
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("RUST_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the binary starts");
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    /// GET → (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http("GET", &self.url(path), None)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.get(path).expect("the API answers");
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    pub fn post(&self, path: &str, token: Option<&str>) -> Option<(u16, String)> {
        http("POST", &self.url(path), token)
    }

    pub fn wait_ready(&mut self, timeout: Duration) {
        let ok = eventually(timeout, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the appliance exited early ({status}):\n{}", self.logs());
            }
            matches!(self.get("/readyz"), Some((200, _))).then_some(())
        });
        assert!(ok.is_some(), "not ready in time:\n{}", self.logs());
    }

    pub fn status(&self) -> Value {
        self.get_json("/api/status")
    }

    /// Everything the appliance printed in all its runs.
    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("appliance-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn read_config(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.data_dir.join(name)).expect("config file");
        serde_json::from_str(&text).expect("config JSON")
    }

    pub fn data_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP client call; None when the server cannot be reached.
pub fn http(method: &str, url: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = if method == "POST" {
        req.send_string("")
    } else {
        req.call()
    };
    match resp {
        Ok(r) => {
            let code = r.status();
            Some((code, r.into_string().unwrap_or_default()))
        }
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

/// Runs the binary to completion with the given args and env; (exit code, stdout+stderr).
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_laminate-proxy"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// A dcmtk storescp on a loopback port, as a PACS node. Killed on drop.
pub struct StoreScp {
    pub port: u16,
    pub ae: String,
    child: Child,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl StoreScp {
    pub fn start(ae: &str) -> StoreScp {
        StoreScp::start_on(free_port(), ae, &[])
    }

    /// With extra options, e.g. `+xi` (Implicit VR LE only) or `+xa` (all syntaxes).
    pub fn start_on(port: u16, ae: &str, extra: &[&str]) -> StoreScp {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("storescp.log");
        let out = File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        let recv = dir.path().join("received");
        std::fs::create_dir_all(&recv).expect("mkdir");
        let child = Command::new("/usr/bin/storescp")
            .args(["-v", "-aet", ae])
            .args(extra)
            .arg("-od")
            .arg(&recv)
            .arg(port.to_string())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("dcmtk storescp (apt-get install dcmtk)");
        eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .expect("storescp listens");
        StoreScp {
            port,
            ae: ae.to_owned(),
            child,
            dir,
            log,
        }
    }

    /// C-STORE requests received so far (re-sends included).
    pub fn store_requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Received Store Request"))
            .count()
    }

    /// The SOP Instance UIDs of the files it wrote (each once).
    pub fn sop_uids(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for e in std::fs::read_dir(self.dir.path().join("received"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(Some(h)) = laminate_actors::dispatch::index::index_file(&e.path()) {
                out.insert(h.sop_instance_uid);
            }
        }
        out
    }

    /// The transfer syntax each received instance was written in, by SOP Instance UID.
    pub fn syntaxes(&self) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        for e in std::fs::read_dir(self.dir.path().join("received"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(Some(h)) = laminate_actors::dispatch::index::index_file(&e.path()) {
                out.insert(h.sop_instance_uid, h.transfer_syntax);
            }
        }
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process (a PACS going down), keeping what it received.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node definition for `proxy.nodes_changed`.
pub fn node(id: &str, ae: &str, port: u16) -> Value {
    json!({"node_id": id, "name": format!("PACS {id}"), "ae_title": ae, "host": "127.0.0.1",
           "port": port, "storage_path": "/data/dicom", "is_active": true})
}

/// A dispatch event from the backend.
pub fn dispatch_event(
    kind: &str,
    entity_id: &str,
    corr: &str,
    nodes: &[&str],
    priority: &str,
) -> Value {
    let mut payload = json!({"nodes": nodes, "priority": priority, "subject_id": "subj_1"});
    match kind {
        "session" => payload["session_label"] = json!("MRI-1"),
        "scan" => {
            payload["session_id"] = json!("sess_1");
            payload["scan_label"] = json!("T1")
        }
        _ => payload["subject_label"] = json!("S-01"),
    }
    json!({
        "event_type": format!("{kind}.dispatch"),
        "workspace_id": "ws_test",
        "timestamp": "2025-10-04T10:30:00.000Z",
        "correlation_id": corr,
        "entity_type": kind,
        "entity_id": entity_id,
        "payload": payload,
    })
}

/// The `dispatch.status` events for one correlation id and node, in order.
pub fn statuses(sim: &BackendSim, corr: &str, node: &str) -> Vec<Value> {
    sim.frames()
        .into_iter()
        .filter(|f| {
            f["event_type"] == "dispatch.status"
                && f["correlation_id"] == corr
                && f["payload"]["node_id"] == node
        })
        .map(|f| f["payload"].clone())
        .collect()
}

/// Waits for a final status of (corr, node) and returns it.
pub fn wait_final(sim: &BackendSim, corr: &str, node: &str, timeout: Duration) -> Option<Value> {
    let (c, n) = (corr.to_owned(), node.to_owned());
    sim.wait_frame(timeout, move |f| {
        f["event_type"] == "dispatch.status"
            && f["correlation_id"] == c.as_str()
            && f["payload"]["node_id"] == n.as_str()
            && matches!(
                f["payload"]["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
    })
    .map(|f| f["payload"].clone())
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// An Orthanc on free loopback ports (DICOM and REST), as a PACS node. Killed on drop.
pub struct Orthanc {
    pub dicom_port: u16,
    pub http_port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Orthanc {
    pub fn start(ae: &str) -> Orthanc {
        Orthanc::start_with(ae, json!({}))
    }

    /// [`Orthanc::start`] with more configuration keys (they win).
    pub fn start_with(ae: &str, extra: Value) -> Orthanc {
        let dir = tempfile::tempdir().expect("tempdir");
        let (dicom_port, http_port) = (free_port(), free_port());
        let mut cfg = json!({
            "Name": "laminate-test",
            "StorageDirectory": dir.path().join("db"),
            "IndexDirectory": dir.path().join("db"),
            "DicomAet": ae,
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": true,
            "StorageCompression": false,
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
            dicom_port,
            http_port,
            child,
            _dir: dir,
        };
        eventually(Duration::from_secs(30), || {
            http("GET", &format!("http://127.0.0.1:{http_port}/system"), None)
                .filter(|r| r.0 == 200)
        })
        .expect("Orthanc answers");
        o
    }

    /// The SOP Instance UIDs Orthanc holds, read through its REST API.
    pub fn sop_uids(&self) -> std::collections::BTreeSet<String> {
        let url = format!("http://127.0.0.1:{}/instances?expand", self.http_port);
        let (_, body) = http("GET", &url, None).expect("Orthanc REST");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| {
                        i["MainDicomTags"]["SOPInstanceUID"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A zip whose entries are given raw: `(name, data, unix mode or 0)`; a mode of
/// 0o120777 makes a symlink. For hostile-archive tests.
pub fn raw_zip(entries: &[(&str, &[u8], u32)]) -> bytes::Bytes {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in entries {
        if *mode & 0o170000 == 0o120000 {
            let target = String::from_utf8_lossy(data).into_owned();
            w.add_symlink(*name, target, zip::write::SimpleFileOptions::default())
                .expect("symlink");
        } else {
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file(*name, opts).expect("entry");
            w.write_all(data).expect("data");
        }
    }
    bytes::Bytes::from(w.finish().expect("zip").into_inner())
}
