//! What the simulator records and what the test thread and the server share.
//!
//! One `Mutex<State>` plus one `Condvar`: the server side records under the lock and
//! notifies; the `wait_*` helpers of the handle sleep on the condvar. Recording is cheap
//! and test traffic is small, so one lock is simpler than anything finer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

/// One WebSocket upgrade attempt, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at: Instant,
    /// `proxy_key` query parameter equal to the simulator's key.
    pub key_ok: bool,
    /// The path ends with `/proxy/ws` (attempts on other paths get a 404).
    pub path_ok: bool,
}

/// Which download endpoint of PROTOCOL.md §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Subject,
    Session,
    Scan,
}

impl EntityKind {
    /// The path segment used by the REST API (`subjects`, `sessions`, `scans`).
    pub fn segment(self) -> &'static str {
        match self {
            EntityKind::Subject => "subjects",
            EntityKind::Session => "sessions",
            EntityKind::Scan => "scans",
        }
    }

    /// Inverse of [`EntityKind::segment`].
    pub fn from_segment(s: &str) -> Option<EntityKind> {
        match s {
            "subjects" => Some(EntityKind::Subject),
            "sessions" => Some(EntityKind::Session),
            "scans" => Some(EntityKind::Scan),
            _ => None,
        }
    }
}

/// One scripted answer to a download request (see `BackendSim::script_download`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadStep {
    /// Answer with this status and an empty body (e.g. 500, 404, 401).
    Status(u16),
    /// Send the headers and the first N bytes of the (range-adjusted) body, then drop
    /// the connection without finishing the chunked body.
    CutAfter(usize),
    /// `302 Found` with this `Location`.
    RedirectTo(String),
    /// Serve these bytes instead of the stored archive (which stays stored):
    /// the archive changed on the server between two requests.
    Body(bytes::Bytes),
    /// Send a 200 head and then nothing, ever (a stalled CDN or gateway): the
    /// client has to give up on its own idle timeout.
    Stall,
    /// Serve as if unscripted.
    Normal,
}

/// One request to the download API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRequest {
    pub kind: EntityKind,
    pub id: String,
    /// The raw `Range` header, if any.
    pub range: Option<String>,
    /// `X-Proxy-Key` equal to the simulator's key.
    pub key_ok: bool,
    pub at: Instant,
}

impl DownloadRequest {
    /// A request for the archive's last bytes (`Range: bytes=-N`), which the
    /// appliance sends before the body to read the central directory early.
    pub fn is_tail_probe(&self) -> bool {
        self.range
            .as_deref()
            .is_some_and(|r| r.trim().starts_with("bytes=-"))
    }
}

/// An order from the test thread to the task that owns a WebSocket connection.
#[derive(Debug)]
pub(crate) enum Cmd {
    Text(String),
    Binary(Bytes),
    Close(u16, String),
}

/// The correct-key connection currently open.
pub(crate) struct Conn {
    /// Sequence number, so a finishing task only clears `current` if it is still its own.
    pub id: usize,
    pub tx: UnboundedSender<Cmd>,
}

pub(crate) struct State {
    pub attempts: Vec<Attempt>,
    pub frames: Vec<Value>,
    pub closes_received: Vec<Option<u16>>,
    /// Accepted correct-key connections so far; also the id of the newest one.
    pub connections: usize,
    pub current: Option<Conn>,
    pub pings: usize,
    pub answer_pings: bool,
    pub downloads: HashMap<(EntityKind, String), Bytes>,
    pub scripts: HashMap<(EntityKind, String), VecDeque<DownloadStep>>,
    pub download_requests: Vec<DownloadRequest>,
    /// Answer every download with the whole archive, ignoring `Range`.
    pub ignore_ranges: bool,
}

/// Everything the server tasks and the handle share.
pub(crate) struct Shared {
    pub proxy_key: String,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    pub fn new(proxy_key: String) -> Shared {
        Shared {
            proxy_key,
            state: Mutex::new(State {
                attempts: Vec::new(),
                frames: Vec::new(),
                closes_received: Vec::new(),
                connections: 0,
                current: None,
                pings: 0,
                answer_pings: true,
                downloads: HashMap::new(),
                scripts: HashMap::new(),
                download_requests: Vec::new(),
                ignore_ranges: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Locks the state. A panic while holding the lock (a failing test assertion in a
    /// predicate, say) leaves only recorded data behind, which stays consistent enough to
    /// read, so poisoning is ignored rather than cascading into every later call.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_all();
        r
    }

    /// Waits until `check` returns `Some` (re-checked after every change) or `timeout`
    /// passes (then `None`).
    pub fn wait_for<R>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<R>,
    ) -> Option<R> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            if let Some(r) = check(&guard) {
                return Some(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}
