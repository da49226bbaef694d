//! The dispatcher: accepts dispatch events (journaled before they count as
//! handled), keeps the queue (highest priority first, then oldest), starts at
//! most `max_concurrent_dispatches` jobs, and passes pause/resume, node and
//! setting changes, cancels and replays on to them. At start-up it resumes
//! every unfinished dispatch from the journal. It reads only the active
//! dispatches (the journal's index), never the whole history, and prunes the
//! history past `history_days` (`history.rs`).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use laminate_config::{Node, ProxySettings, StatusFile};
use laminate_store::{
    Catalog, DispatchRecord, DispatchState, Journal, NodeProgress, NodeStatus, Stage,
};

use super::accept::{new_record, parse_request, target_nodes};
use super::history::{HistoryPruner, PRUNE_EVERY};
use super::job::{DispatchJob, JobUpdate};
use super::messages::ShutdownRequested;
use super::messages::{
    CancelNodes, CancelRequested, DispatchReceived, JobBackingOff, JobFinished, NodeCameBack,
    ReplayFailedRequested, ReplayRequested,
};
use super::parking;
use super::report::report;
use super::retry::RetryPolicy;
use super::shared::JobEnv;
use crate::board::SharedBoard;
use crate::config::{NodesUpdated, ProxyStatusUpdated, SettingsUpdated};
use crate::deletion::{ScanDeleted, StudyDeleted};
use crate::feed::FeedEvent;
use crate::health::{ActorHealth, ActorState, HandlerFailed, Monitored};

mod outages;

pub struct Dispatcher {
    health: ActorHealth,
    job_health: ActorHealth,
    board: SharedBoard,
    env: Rc<JobEnv>,
    nodes: Vec<Node>,
    policy: RetryPolicy,
    max_concurrent: usize,
    paused: bool,
    running: HashMap<String, Addr<DispatchJob>>,
    shutting_down: bool,
    history_ms: u64,
    pruner: HistoryPruner,
}

fn policy_of(s: &ProxySettings) -> RetryPolicy {
    RetryPolicy {
        max_attempts: s.node_retry_max_attempts,
        max_backoff: Duration::from_secs(s.node_retry_max_backoff_s),
        park: Duration::from_secs(s.park_hours.saturating_mul(3600)),
    }
}

impl Dispatcher {
    pub fn new(
        health: ActorHealth,
        job_health: ActorHealth,
        board: SharedBoard,
        env: JobEnv,
        nodes: Vec<Node>,
        settings: &ProxySettings,
        status: &StatusFile,
    ) -> Self {
        env.senders.set_options(send_options_of(settings));
        Self {
            health,
            job_health,
            board,
            env: Rc::new(env),
            nodes,
            policy: policy_of(settings),
            max_concurrent: settings.max_concurrent_dispatches.max(1) as usize,
            paused: !status.is_active,
            running: HashMap::new(),
            shutting_down: false,
            history_ms: settings.history_ms(),
            pruner: HistoryPruner::default(),
        }
    }

    /// The active dispatches, oldest first.
    fn records(&self) -> Vec<DispatchRecord> {
        match self.env.store.journal_active() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the dispatch journal");
                self.health.record_error(format!("journal: {e}"));
                Vec::new()
            }
        }
    }

    fn find(&self, id: &str) -> Result<DispatchRecord, String> {
        let by_id = self.env.store.journal_get(id).map_err(|e| e.to_string())?;
        match by_id {
            Some(r) => Ok(r),
            None => self
                .env
                .store
                .journal_by_correlation(id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no dispatch {id}")),
        }
    }

    fn prune_history(&self) {
        self.pruner
            .run(self.env.store.clone(), self.history_ms, self.health.clone());
    }

    /// Every failed dispatch, newest first (a page at a time: failed ones are history).
    fn failed(&self) -> Result<Vec<DispatchRecord>, String> {
        let mut out = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .env
                .store
                .journal_page(Some(DispatchState::Failed), before.as_ref(), 500)
                .map_err(|e| format!("journal: {e}"))?;
            out.extend(page.records);
            match page.next {
                Some(c) => before = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Starts queued dispatches while there is room and we are not paused.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let records = self.records();
        let mut waiting: Vec<&DispatchRecord> = records
            .iter()
            .filter(|r| !self.running.contains_key(&r.id))
            .collect();
        self.board.set_active_dispatches(records.len() as u64);
        if self.paused || self.shutting_down {
            return;
        }
        waiting.sort_by_key(|r| (r.priority, r.seq));
        // A job whose every open node waits to retry holds no slot.
        let busy = records
            .iter()
            .filter(|r| self.running.contains_key(&r.id) && !parking::in_backoff(r))
            .count();
        for rec in waiting
            .into_iter()
            .take(self.max_concurrent.saturating_sub(busy))
        {
            self.start_job(&rec.id, ctx);
        }
    }

    fn start_job(&mut self, id: &str, ctx: &mut Context<Self>) {
        let (env, health, me) = (self.env.clone(), self.job_health.clone(), ctx.address());
        let (nodes, policy, paused, job_id) =
            (self.nodes.clone(), self.policy, self.paused, id.to_owned());
        let addr = Supervisor::start(move |_| {
            DispatchJob::new(job_id, env, health, me, nodes, policy, paused)
        });
        tracing::info!(dispatch = id, "dispatch started");
        self.running.insert(id.to_owned(), addr);
    }

    /// Cancels a dispatch's unfinished nodes (or the given ones).
    fn cancel(&mut self, rec: &DispatchRecord, nodes: Option<Vec<String>>, reason: &str) {
        if let Some(job) = self.running.get(&rec.id) {
            job.do_send(CancelNodes {
                nodes,
                reason: reason.to_owned(),
            });
            return;
        }
        let mut rec = rec.clone();
        let mut changed = Vec::new();
        for n in rec.nodes.iter_mut() {
            let wanted = nodes.as_ref().is_none_or(|l| l.contains(&n.node_id));
            if wanted && !n.status.is_final() {
                n.status = NodeStatus::Cancelled;
                n.error = Some(reason.to_owned());
                changed.push(n.node_id.clone());
            }
        }
        if changed.is_empty() {
            return;
        }
        rec.updated_at_ms = crate::clock::now_ms();
        if let Err(e) = self.env.store.journal_put(&rec) {
            tracing::error!(error = %e, "cannot journal a cancel");
            return;
        }
        self.board.publish(FeedEvent::Dispatch(rec.id.clone()));
        for n in changed {
            report(&self.env.store, &self.env.peers, &rec, &n);
        }
    }

    /// Whether every instance of a dispatch is still in the cache (so a replay needs no
    /// download). They are marked used now: an eviction pass already under way then leaves
    /// them (it only takes what nobody used since it looked).
    fn cached(&self, id: &str) -> bool {
        let Ok(sops) = self.env.store.journal_instances(id) else {
            return false;
        };
        let all = !sops.is_empty()
            && sops.iter().all(|sop| {
                matches!(self.env.store.get_instance(sop), Ok(Some(r)) if self.env.data_dir.join(&r.path).is_file())
            });
        all && self
            .env
            .store
            .touch_instances(&sops, crate::clock::now_ms())
            .is_ok()
    }

    /// Replays a finished dispatch for `nodes` (all when `None`), from `queued`. An
    /// operator's replay sends everything again (`resend_all`); a parked dispatch's
    /// automatic replay sends only what the node has not acknowledged.
    fn replay(
        &mut self,
        id: &str,
        nodes: Option<Vec<String>>,
        resend_all: bool,
        ctx: &mut Context<Self>,
    ) -> Result<DispatchRecord, String> {
        let mut rec = self.find(id)?;
        if rec.state() == DispatchState::Active || self.running.contains_key(&rec.id) {
            return Err(format!("dispatch {} is still active", rec.id));
        }
        let targets: Vec<String> = match nodes {
            Some(list) if !list.is_empty() => {
                if let Some(unknown) = list.iter().find(|n| rec.node(n).is_none()) {
                    return Err(format!("dispatch {} has no node {unknown}", rec.id));
                }
                list
            }
            _ => rec.nodes.iter().map(|n| n.node_id.clone()).collect(),
        };
        for node in &targets {
            if resend_all {
                self.env
                    .store
                    .journal_clear_acks(&rec.id, node)
                    .map_err(|e| e.to_string())?;
            }
            if let Some(n) = rec.node_mut(node) {
                *n = NodeProgress::queued(node);
            }
        }
        rec.replays += 1;
        rec.stage = if self.cached(&rec.id) {
            Stage::Sending
        } else {
            Stage::Queued
        };
        rec.updated_at_ms = crate::clock::now_ms();
        self.env
            .store
            .journal_put(&rec)
            .map_err(|e| e.to_string())?;
        self.board.publish(FeedEvent::Dispatch(rec.id.clone()));
        parking::unpark(&self.env.store, &rec.id, &targets);
        tracing::info!(dispatch = %rec.id, nodes = ?targets, from_cache = rec.stage == Stage::Sending, "dispatch replayed");
        for node in &targets {
            report(&self.env.store, &self.env.peers, &rec, node);
        }
        self.schedule(ctx);
        Ok(rec)
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
        self.job_health.set_state(ActorState::Running);
        let unfinished = self.records().len();
        if unfinished > 0 {
            tracing::info!(
                unfinished,
                "resuming unfinished dispatches from the journal"
            );
        }
        self.schedule(ctx);
        self.prune_history();
        ctx.run_interval(PRUNE_EVERY, |me, _| me.prune_history());
        // Parked dispatches whose node answered since (and parking past its time).
        ctx.run_interval(crate::nodes::echo_every(), |me, ctx| {
            me.replay_parked(None, ctx)
        });
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for Dispatcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
    }
}

impl Monitored for Dispatcher {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl Handler<DispatchReceived> for Dispatcher {
    type Result = Result<(), HandlerFailed>;
    fn handle(&mut self, msg: DispatchReceived, ctx: &mut Context<Self>) -> Self::Result {
        let ev = msg.0;
        let req = match parse_request(&ev) {
            Ok(r) => r,
            Err(why) => {
                tracing::error!(event_type = %ev.event_type, correlation_id = %ev.correlation_id, error = %why, "dispatch event rejected");
                self.health
                    .record_error(format!("{}: {why}", ev.event_type));
                return Ok(());
            }
        };
        match self.env.store.journal_by_correlation(&ev.correlation_id) {
            Ok(Some(existing)) => {
                tracing::info!(dispatch = %existing.id, "dispatch already accepted");
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return Err(HandlerFailed::Failed(format!("journal: {e}"))),
        }
        let targets = target_nodes(&req.nodes, &self.nodes);
        if targets.is_empty() {
            tracing::info!(correlation_id = %ev.correlation_id, nodes = ?req.nodes, "dispatch for no active node of this appliance; ignored");
            return Ok(());
        }
        let seq = self
            .env
            .store
            .journal_next_seq()
            .map_err(|e| HandlerFailed::Failed(format!("journal: {e}")))?;
        let rec = new_record(&ev, req, &targets, seq, crate::clock::now_ms());
        self.env
            .store
            .journal_put(&rec)
            .map_err(|e| HandlerFailed::Failed(format!("journal: {e}")))?;
        self.board.publish(FeedEvent::Dispatch(rec.id.clone()));
        tracing::info!(dispatch = %rec.id, correlation_id = %rec.correlation_id, kind = ?rec.kind, entity = %rec.entity_id, priority = ?rec.priority, nodes = ?targets, "dispatch accepted");
        for node in &targets {
            report(&self.env.store, &self.env.peers, &rec, node);
        }
        self.schedule(ctx);
        Ok(())
    }
}

impl Handler<JobFinished> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: JobFinished, ctx: &mut Context<Self>) {
        // Dropping the address lets the job actor stop for good.
        self.running.remove(&msg.id);
        if let Some(peers) = self.env.peers.get() {
            peers
                .disk
                .do_send(crate::disk::DispatchEnded { id: msg.id.clone() });
        }
        self.schedule(ctx);
    }
}

impl Handler<CancelRequested> for Dispatcher {
    type Result = Result<DispatchRecord, String>;
    fn handle(&mut self, msg: CancelRequested, _: &mut Context<Self>) -> Self::Result {
        let rec = self.find(&msg.id)?;
        if rec.state() != DispatchState::Active {
            // A parked one is only taken out of parking (it stays failed).
            return self.unpark_cancelled(rec);
        }
        self.cancel(&rec, None, "cancelled by an operator");
        Ok(rec)
    }
}

impl Handler<ReplayRequested> for Dispatcher {
    type Result = Result<DispatchRecord, String>;
    fn handle(&mut self, msg: ReplayRequested, ctx: &mut Context<Self>) -> Self::Result {
        self.replay(&msg.id, msg.nodes, true, ctx)
    }
}

impl Handler<ReplayFailedRequested> for Dispatcher {
    type Result = Result<Vec<String>, String>;
    fn handle(&mut self, msg: ReplayFailedRequested, ctx: &mut Context<Self>) -> Self::Result {
        let mut failed: Vec<DispatchRecord> = self
            .failed()?
            .into_iter()
            .filter(|r| msg.since_ms.is_none_or(|t| r.updated_at_ms >= t))
            .collect();
        // Oldest first, as they were accepted.
        failed.sort_by_key(|r| r.seq);
        let mut replayed = Vec::new();
        for rec in failed {
            let nodes: Vec<String> = rec
                .nodes
                .iter()
                .filter(|n| n.status == NodeStatus::Failed)
                .map(|n| n.node_id.clone())
                .collect();
            match self.replay(&rec.id, Some(nodes), true, ctx) {
                Ok(r) => replayed.push(r.id),
                Err(e) => tracing::warn!(dispatch = %rec.id, error = %e, "replay skipped"),
            }
        }
        Ok(replayed)
    }
}

impl Handler<StudyDeleted> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: StudyDeleted, _: &mut Context<Self>) {
        // The session's own dispatches, its scans' (their payload names it), and
        // any whose instances are of this study.
        let of_session = |r: &DispatchRecord| {
            let session = msg.session_id.as_deref();
            (r.entity_type == "session" && session == Some(r.entity_id.as_str()))
                || (r.entity_type == "scan"
                    && session.is_some()
                    && r.session_id.as_deref() == session)
                || r.study_uids.contains(&msg.study_instance_uid)
        };
        for rec in self.records().into_iter().filter(|r| of_session(r)) {
            tracing::info!(dispatch = %rec.id, "session deleted: dispatch cancelled");
            self.cancel(&rec, None, "the session was deleted");
        }
        parking::unpark_where(&self.env.store, &self.board, |r, _| of_session(r));
    }
}

impl Handler<NodesUpdated> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: NodesUpdated, ctx: &mut Context<Self>) {
        let nodes: Vec<Node> = msg.nodes.as_ref().clone();
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|old| {
                !nodes
                    .iter()
                    .any(|n| n.node_id == old.node_id && n.is_active)
            })
            .map(|n| n.node_id.clone())
            .collect();
        self.nodes = nodes.clone();
        // Changed nodes' pools reconnect; removed ones end.
        self.env.senders.sync(&nodes);
        for job in self.running.values() {
            job.do_send(JobUpdate::Nodes(nodes.clone()));
        }
        if !gone.is_empty() {
            for rec in self.records().iter() {
                let hit: Vec<String> = rec
                    .nodes
                    .iter()
                    .filter(|n| gone.contains(&n.node_id) && !n.status.is_final())
                    .map(|n| n.node_id.clone())
                    .collect();
                if !hit.is_empty() {
                    self.cancel(rec, Some(hit), "the node was removed or deactivated");
                }
            }
            parking::unpark_where(&self.env.store, &self.board, |_, node| {
                gone.iter().any(|g| g == node)
            });
        }
        self.schedule(ctx);
    }
}

impl Handler<SettingsUpdated> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: SettingsUpdated, ctx: &mut Context<Self>) {
        self.max_concurrent = msg.0.max_concurrent_dispatches.max(1) as usize;
        self.policy = policy_of(&msg.0);
        let history_ms = msg.0.history_ms();
        if history_ms < self.history_ms {
            self.history_ms = history_ms;
            self.prune_history();
        }
        self.history_ms = history_ms;
        self.env.senders.set_options(send_options_of(&msg.0));
        for job in self.running.values() {
            job.do_send(JobUpdate::Policy(self.policy));
        }
        self.schedule(ctx);
    }
}

impl Handler<ProxyStatusUpdated> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: ProxyStatusUpdated, ctx: &mut Context<Self>) {
        let paused = !msg.0.is_active;
        if paused != self.paused {
            tracing::info!(
                paused,
                "dispatch work {}",
                if paused { "paused" } else { "resumed" }
            );
            self.paused = paused;
            for job in self.running.values() {
                job.do_send(JobUpdate::Paused(paused));
            }
            self.schedule(ctx);
        }
    }
}

impl Handler<ShutdownRequested> for Dispatcher {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: ShutdownRequested, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let waits: Vec<_> = self
            .running
            .values()
            .map(|job| job.send(ShutdownRequested))
            .collect();
        Box::pin(async move {
            let _ = futures_util::future::join_all(waits).await;
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::messages::NodePoolKillRequested> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: super::messages::NodePoolKillRequested, _: &mut Context<Self>) {
        self.env.senders.kill(&msg.node_id);
    }
}

#[cfg(feature = "fault-injection")]
crate::delivered_handlers!(Dispatcher: super::messages::NodePoolKillRequested);

crate::delivered_handlers!(
    Dispatcher: DispatchReceived,
    ShutdownRequested,
    JobFinished,
    CancelRequested,
    ReplayRequested,
    ReplayFailedRequested,
    StudyDeleted,
    ScanDeleted,
    JobBackingOff,
    NodeCameBack,
    NodesUpdated,
    SettingsUpdated,
    ProxyStatusUpdated,
);

/// The send deadlines from the runtime settings: each DIMSE response within
/// `dimse_timeout_s` (PROTOCOL.md §6).
fn send_options_of(s: &ProxySettings) -> crate::send::SendOptions {
    crate::send::SendOptions {
        io_timeout: std::time::Duration::from_secs(s.dimse_timeout_s),
        ..crate::send::SendOptions::default()
    }
}
