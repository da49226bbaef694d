//! Backend simulator: plays the Laminate backend of PROTOCOL.md §1–5 for integration
//! tests and for `laminate-proxy demo`.
//!
//! [`BackendSim::start`] binds `127.0.0.1:port` and serves, on its own thread with its
//! own actix `System`:
//! - `GET …/proxy/ws?proxy_key=…`: the WebSocket the appliance connects to. A wrong key
//!   is accepted and closed at once with 4003; a newer correct-key connection closes the
//!   older one with 4000; WebSocket Pings are answered (unless switched off). Every text
//!   frame the appliance sends is recorded, parsed as JSON.
//! - `GET …/api/proxy/{subjects|sessions|scans}/{id}/download`: archives put by the test,
//!   streamed in chunks, with `Range: bytes=N-` and `bytes=-N` (suffix) support and
//!   scripted failures.
//!
//! Every method of the handle is synchronous and may be called from any thread; the
//! `wait_*` methods block the calling thread, so call them from a thread that does not
//! also drive the appliance (or use the `*_async` variants inside an async test).
//! Predicates run under the simulator's lock: they must not call back into the handle.
//!
//! TLS: pass a `rustls::ServerConfig` in [`SimOptions::tls`]; the URLs then use
//! `wss://localhost` / `https://localhost`, so the certificate must name `localhost`.
//! The tests build one with rcgen (a CA plus a leaf for `localhost` and `127.0.0.1`):
//! see `tests::test_tls` in `tests.rs`. Install a rustls crypto provider first
//! (`rustls::crypto::ring::default_provider().install_default()`, ignoring the error
//! when one is already installed).
//!
//! Layout: `state.rs` recorded and shared state, `server.rs` the thread, server
//! lifecycle and router, `ws.rs` the WebSocket endpoint, `downloads.rs` the REST API,
//! `tests.rs` the tests.

mod downloads;
mod server;
mod state;
pub mod study;
pub mod tls;
mod ws;

#[cfg(test)]
mod tests;

use std::io;
use std::net::TcpListener;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use server::Ctl;
use state::{Cmd, Shared, State};

pub use state::{Attempt, DownloadRequest, DownloadStep, EntityKind};
pub use ws::{CLOSE_BAD_KEY, CLOSE_REPLACED};

/// How long `come_up` retries binding its port (another socket may hold it briefly).
const REBIND_FOR: Duration = Duration::from_secs(5);
/// Pause between two bind attempts.
const REBIND_EVERY: Duration = Duration::from_millis(50);
/// Poll period of the `*_async` waits (they cannot sleep on the condvar).
const ASYNC_POLL: Duration = Duration::from_millis(10);

/// How to start a [`BackendSim`].
pub struct SimOptions {
    /// The key the appliance must present (`proxy_key` query, `X-Proxy-Key` header).
    pub proxy_key: String,
    /// Serve wss/https with this config instead of ws/http.
    pub tls: Option<rustls::ServerConfig>,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

/// A running simulated backend. Dropping it stops the server and its thread.
pub struct BackendSim {
    shared: Arc<Shared>,
    port: u16,
    /// Serving wss/https (decides the URLs' scheme and host).
    tls: bool,
    /// Whether the server is serving; the lock also serialises `go_down`/`come_up`.
    up: Mutex<bool>,
    /// Orders for the simulator's thread; `None` only while dropping.
    ctl: Option<UnboundedSender<Ctl>>,
    thread: Option<JoinHandle<()>>,
}

impl BackendSim {
    /// Binds `127.0.0.1:opts.port` and starts serving.
    pub fn start(opts: SimOptions) -> io::Result<BackendSim> {
        let listener = TcpListener::bind(("127.0.0.1", opts.port))?;
        let port = listener.local_addr()?.port();
        let tls = opts.tls.is_some();
        let shared = Arc::new(Shared::new(opts.proxy_key));
        let (ctl, thread) = server::spawn(shared.clone(), opts.tls)?;
        let sim = BackendSim {
            shared,
            port,
            tls,
            up: Mutex::new(false),
            ctl: Some(ctl),
            thread: Some(thread),
        };
        sim.serve(listener)?;
        *sim.up.lock().unwrap_or_else(PoisonError::into_inner) = true;
        Ok(sim)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ws://127.0.0.1:PORT/`, or `wss://localhost:PORT/` with TLS.
    pub fn backend_url(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}/", self.port)
        } else {
            format!("ws://127.0.0.1:{}/", self.port)
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS (the host the
    /// certificate names, and the one `backend_url` implies).
    pub fn api_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.port)
        } else {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    pub fn proxy_key(&self) -> &str {
        &self.shared.proxy_key
    }

    // ----- WebSocket: observation -----

    /// Every WebSocket upgrade attempt so far, right key or not, right path or not.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.lock().attempts.clone()
    }

    /// A connection with the right key is open.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().current.is_some()
    }

    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for(timeout, |s| s.current.as_ref().map(|_| ()))
            .is_some()
    }

    pub async fn wait_connected_async(&self, timeout: Duration) -> bool {
        self.poll_async(timeout, |s| s.current.as_ref().map(|_| ()))
            .await
            .is_some()
    }

    /// Correct-key connections accepted so far (total, not only open ones).
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Every text frame received from the appliance on correct-key connections, in order;
    /// JSON parsed, other text as `Value::String`.
    pub fn frames(&self) -> Vec<Value> {
        self.shared.lock().frames.clone()
    }

    /// The first recorded frame matching `pred` (already received or arriving before `timeout`).
    pub fn wait_frame(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.shared
            .wait_for(timeout, |s| s.frames.iter().find(|f| pred(f)).cloned())
    }

    pub async fn wait_frame_async(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.poll_async(timeout, |s| s.frames.iter().find(|f| pred(f)).cloned())
            .await
    }

    /// Waits until `n` recorded frames match `pred` or `timeout` passes; returns the first
    /// `n` matches, or all there are (fewer than `n`) on timeout.
    pub fn wait_frames(
        &self,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let matching = |s: &State| {
            s.frames
                .iter()
                .filter(|f| pred(f))
                .take(n)
                .cloned()
                .collect::<Vec<_>>()
        };
        self.shared
            .wait_for(timeout, |s| Some(matching(s)).filter(|m| m.len() >= n))
            .unwrap_or_else(|| matching(&self.shared.lock()))
    }

    pub fn clear_frames(&self) {
        self.shared.update(|s| s.frames.clear());
    }

    /// WebSocket Ping frames received from the appliance.
    pub fn pings_received(&self) -> usize {
        self.shared.lock().pings
    }

    /// Close codes the appliance sent (`None`: a Close frame without a code), on any connection.
    pub fn closes_received(&self) -> Vec<Option<u16>> {
        self.shared.lock().closes_received.clone()
    }

    // ----- WebSocket: actions -----

    /// Answer Pings with Pongs (default) or stay silent, like a half-dead backend.
    pub fn set_answer_pings(&self, yes: bool) {
        self.shared.update(|s| s.answer_pings = yes);
    }

    /// Sends `event` as a text frame on the current connection; false if there is none.
    pub fn send_event(&self, event: &Value) -> bool {
        self.send(Cmd::Text(event.to_string()))
    }

    /// Sends raw text (bad JSON, huge frames); false if there is no connection.
    pub fn send_text(&self, text: &str) -> bool {
        self.send(Cmd::Text(text.to_owned()))
    }

    pub fn send_binary(&self, data: &[u8]) -> bool {
        self.send(Cmd::Binary(Bytes::copy_from_slice(data)))
    }

    /// Closes the current connection with `code` and `reason` (no-op without one).
    /// `is_connected` is false from the moment this returns.
    pub fn kick(&self, code: u16, reason: &str) {
        if let Some(conn) = self.shared.update(|s| s.current.take()) {
            let _ = conn.tx.send(Cmd::Close(code, reason.to_owned()));
        }
    }

    /// Stops listening and drops every connection without a Close frame, like an outage.
    /// The port number is kept for `come_up` (the socket itself is closed, so connection
    /// attempts are refused meanwhile).
    pub fn go_down(&self) {
        let mut up = self.up.lock().unwrap_or_else(PoisonError::into_inner);
        let (tx, rx) = mpsc::channel();
        if self.ctl(Ctl::Down(tx)) {
            // An error means the thread is gone, and with it the server.
            let _ = rx.recv();
        }
        *up = false;
    }

    /// Listens again on the same port, retrying the bind for a few seconds. No-op when up.
    pub fn come_up(&self) -> io::Result<()> {
        let mut up = self.up.lock().unwrap_or_else(PoisonError::into_inner);
        if *up {
            return Ok(());
        }
        let deadline = Instant::now() + REBIND_FOR;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(REBIND_EVERY),
            }
        };
        self.serve(listener)?;
        *up = true;
        Ok(())
    }

    // ----- Downloads -----

    /// Makes `zip` the archive of that entity (replacing any earlier one). Served as slices
    /// of this `Bytes`: no copy per request.
    pub fn put_download(&self, kind: EntityKind, id: &str, zip: Bytes) {
        self.shared
            .update(|s| s.downloads.insert((kind, id.to_owned()), zip));
    }

    /// Scripts the next answers for that entity, one step per body request with the
    /// right key (tail probes are always served normally); once used up, requests are
    /// served normally. Replaces any remaining script.
    pub fn script_download(&self, kind: EntityKind, id: &str, script: Vec<DownloadStep>) {
        self.shared
            .update(|s| s.scripts.insert((kind, id.to_owned()), script.into()));
    }

    /// Every request for an archive's body so far, in order (tail probes,
    /// `Range: bytes=-N`, are left out: see [`BackendSim::tail_requests`]).
    pub fn download_requests(&self) -> Vec<DownloadRequest> {
        let s = self.shared.lock();
        s.download_requests
            .iter()
            .filter(|r| !r.is_tail_probe())
            .cloned()
            .collect()
    }

    /// Every tail probe (`Range: bytes=-N`) so far, in order.
    pub fn tail_requests(&self) -> Vec<DownloadRequest> {
        let s = self.shared.lock();
        s.download_requests
            .iter()
            .filter(|r| r.is_tail_probe())
            .cloned()
            .collect()
    }

    /// Serves every download whole with `200`, ignoring `Range` (a server
    /// without range support: no resume, no tail probe).
    pub fn ignore_ranges(&self, ignore: bool) {
        self.shared.update(|s| s.ignore_ranges = ignore);
    }

    // ----- internals -----

    fn send(&self, cmd: Cmd) -> bool {
        self.shared
            .lock()
            .current
            .as_ref()
            .is_some_and(|c| c.tx.send(cmd).is_ok())
    }

    fn ctl(&self, ctl: Ctl) -> bool {
        self.ctl.as_ref().is_some_and(|c| c.send(ctl).is_ok())
    }

    fn serve(&self, listener: TcpListener) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        let gone = || io::Error::other("backend simulator thread has stopped");
        if !self.ctl(Ctl::Up(listener, tx)) {
            return Err(gone());
        }
        rx.recv().map_err(|_| gone())?
    }

    async fn poll_async<R>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<R>,
    ) -> Option<R> {
        let deadline = Instant::now() + timeout;
        loop {
            // Bind the result first, so the lock is released before any await.
            let found = check(&self.shared.lock());
            if found.is_some() {
                return found;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(ASYNC_POLL).await;
        }
    }
}

impl Drop for BackendSim {
    fn drop(&mut self) {
        // Closing the order channel ends the thread's loop, which stops the server.
        self.ctl = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
