//! What a job's pipeline and the job actor share (on one thread): the record,
//! the node configs, pause and cancel state, and a notifier that wakes any stage
//! waiting on them.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use laminate_config::Node;
use laminate_store::{DispatchRecord, Journal, NodeStatus, Store};
use tokio::sync::Notify;
use url::Url;

use super::extract::ExtractLimits;
use super::report::report;
use super::retry::RetryPolicy;
use super::watchdog::JobWatch;
use crate::peers::PeersCell;
use crate::send::SendOptions;

/// Everything a job needs from the appliance (the same for every job).
pub struct JobEnv {
    pub store: Store,
    pub peers: PeersCell,
    pub data_dir: PathBuf,
    pub api_url: Url,
    pub proxy_key: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub appliance_ae: String,
    pub limits: ExtractLimits,
    pub send: SendOptions,
    /// Where the status page learns of journaled changes and send figures.
    pub board: crate::board::SharedBoard,
    /// The disk's floor and free space (a download waits for room).
    pub disk: Arc<crate::disk::DiskState>,
    /// How long a stage may go without progress.
    pub stage_limits: StageLimits,
    /// Each node's sender (its pool of associations, shared by every job).
    pub senders: crate::node_sender::NodeSenders,
}

/// How long each stage of a job may go without progress before its watchdog
/// cancels it and handles it as a transient failure (`watchdog.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLimits {
    /// Download: no byte for this long (the body's idle timeout; the
    /// watchdog allows the response head's deadline on top).
    pub download_idle: Duration,
    /// Extraction and indexing: no entry or chunk, no file indexed.
    pub stage_idle: Duration,
}

impl Default for StageLimits {
    fn default() -> Self {
        StageLimits {
            download_idle: super::download::IDLE_TIMEOUT,
            stage_idle: super::download::IDLE_TIMEOUT,
        }
    }
}

impl StageLimits {
    /// The defaults; test builds (`fault-injection`) let a black-box test
    /// shorten both with `LAMINATE_PROXY_TEST_STAGE_IDLE_S`, so that a stall
    /// is caught in seconds rather than a minute.
    pub fn from_env() -> StageLimits {
        #[cfg(feature = "fault-injection")]
        if let Some(s) = std::env::var("LAMINATE_PROXY_TEST_STAGE_IDLE_S")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            let d = Duration::from_secs(s.max(1));
            return StageLimits {
                download_idle: d,
                stage_idle: d,
            };
        }
        StageLimits::default()
    }
}

impl JobEnv {
    pub fn spool_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("spool").join(id)
    }
}

/// One job's live state.
pub struct JobShared {
    pub rec: RefCell<DispatchRecord>,
    pub nodes: RefCell<Vec<Node>>,
    pub policy: Cell<RetryPolicy>,
    pub paused: Cell<bool>,
    /// Per node: "stop after the instance in flight" for its current batch.
    stop_flags: RefCell<HashMap<String, Arc<AtomicBool>>>,
    /// Sender batches running on blocking threads (shutdown waits for them).
    active_batches: Cell<usize>,
    pub changed: Notify,
    /// The stages' progress clocks (watchdog and Health view).
    pub watch: Arc<JobWatch>,
    /// Nodes that answered C-ECHO again: their backoff ends at once.
    woken: RefCell<HashSet<String>>,
    /// Whether every open node waits to retry (the job then holds no slot).
    backing_off: Cell<bool>,
    /// Told when the job starts backing off (the dispatcher may start another).
    on_backoff: RefCell<Option<Box<dyn Fn()>>>,
}

impl JobShared {
    pub fn new(
        rec: DispatchRecord,
        nodes: Vec<Node>,
        policy: RetryPolicy,
        paused: bool,
        watch: Arc<JobWatch>,
    ) -> Self {
        Self {
            watch,
            rec: RefCell::new(rec),
            nodes: RefCell::new(nodes),
            policy: Cell::new(policy),
            paused: Cell::new(paused),
            stop_flags: RefCell::new(HashMap::new()),
            active_batches: Cell::new(0),
            changed: Notify::new(),
            woken: RefCell::new(HashSet::new()),
            backing_off: Cell::new(false),
            on_backoff: RefCell::new(None),
        }
    }

    /// What to call when the job starts backing off.
    pub fn set_on_backoff(&self, f: Box<dyn Fn()>) {
        *self.on_backoff.borrow_mut() = Some(f);
    }

    /// The node answered C-ECHO again: a backoff waiting for it ends now.
    pub fn wake_node(&self, node_id: &str) {
        self.woken.borrow_mut().insert(node_id.to_owned());
        self.changed.notify_waiters();
    }

    /// Whether the node was woken since the last call (and forgets it).
    pub fn take_wake(&self, node_id: &str) -> bool {
        self.woken.borrow_mut().remove(node_id)
    }

    /// Tells the dispatcher when every open node has started waiting to retry.
    fn note_backoff(&self) {
        let now = super::parking::in_backoff(&self.rec.borrow());
        if now && !self.backing_off.get() {
            if let Some(f) = self.on_backoff.borrow().as_ref() {
                f();
            }
        }
        self.backing_off.set(now);
    }

    pub fn id(&self) -> String {
        self.rec.borrow().id.clone()
    }

    /// A fresh stop flag for a node's next batch.
    pub fn batch_flag(&self, node_id: &str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.stop_flags
            .borrow_mut()
            .insert(node_id.to_owned(), flag.clone());
        flag
    }

    /// Asks the node's running batch (or every batch) to stop after its instance in flight.
    pub fn stop_batches(&self, node_id: Option<&str>) {
        for (id, flag) in self.stop_flags.borrow().iter() {
            if node_id.is_none_or(|n| n == id) {
                flag.store(true, Ordering::SeqCst);
            }
        }
        self.changed.notify_waiters();
    }

    pub fn batch_started(&self) {
        self.active_batches.set(self.active_batches.get() + 1);
    }

    pub fn batch_ended(&self) {
        self.active_batches
            .set(self.active_batches.get().saturating_sub(1));
        self.changed.notify_waiters();
    }

    /// Waits until no sender batch runs (each finishes its instance in flight first).
    pub async fn wait_batches_done(&self) {
        while self.active_batches.get() > 0 {
            let woken = self.changed.notified();
            if self.active_batches.get() == 0 {
                break;
            }
            woken.await;
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.set(paused);
        if paused {
            self.stop_batches(None);
        }
        self.changed.notify_waiters();
    }

    /// Waits until the job is not paused.
    pub async fn wait_unpaused(&self) {
        while self.paused.get() {
            let woken = self.changed.notified();
            if !self.paused.get() {
                break;
            }
            woken.await;
        }
    }

    /// Sleeps `d`, or less when something changed (cancel, pause); true if the full time passed.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.changed.notified() => false,
        }
    }

    pub fn all_final(&self) -> bool {
        self.rec.borrow().nodes.iter().all(|n| n.status.is_final())
    }

    pub fn is_final(&self, node_id: &str) -> bool {
        self.rec
            .borrow()
            .node(node_id)
            .is_none_or(|n| n.status.is_final())
    }

    /// Node ids not yet final.
    pub fn open_nodes(&self) -> Vec<String> {
        self.rec
            .borrow()
            .nodes
            .iter()
            .filter(|n| !n.status.is_final())
            .map(|n| n.node_id.clone())
            .collect()
    }

    pub fn node_config(&self, node_id: &str) -> Option<Node> {
        self.nodes
            .borrow()
            .iter()
            .find(|n| n.node_id == node_id && n.is_active)
            .cloned()
    }

    /// Changes one node's progress, journals the record, then reports it.
    pub fn update_node(
        &self,
        env: &JobEnv,
        node_id: &str,
        f: impl FnOnce(&mut laminate_store::NodeProgress),
    ) {
        {
            let mut rec = self.rec.borrow_mut();
            let Some(n) = rec.node_mut(node_id) else {
                return;
            };
            if n.status.is_final() {
                return;
            }
            f(n);
            rec.updated_at_ms = crate::clock::now_ms();
        }
        self.journal(env);
        report(&env.store, &env.peers, &self.rec.borrow(), node_id);
        self.note_backoff();
        self.changed.notify_waiters();
    }

    /// Sets every unfinished node to `status` with `error`.
    pub fn update_open(&self, env: &JobEnv, status: NodeStatus, error: Option<String>) {
        for id in self.open_nodes() {
            let e = error.clone();
            self.update_node(env, &id, |n| {
                n.status = status;
                n.error = e;
            });
        }
    }

    /// Writes the record to the journal (logged on failure: the next write retries it)
    /// and tells the status page.
    pub fn journal(&self, env: &JobEnv) {
        if let Err(e) = env.store.journal_put(&self.rec.borrow()) {
            tracing::error!(error = %e, dispatch = %self.id(), "cannot journal a dispatch");
        }
        env.board
            .publish(crate::feed::FeedEvent::Dispatch(self.id()));
    }
}
