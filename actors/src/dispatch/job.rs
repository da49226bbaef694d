//! One supervised actor per running dispatch. Its pipeline runs inside the
//! actor's context; a panic in it is caught, recorded, and the actor restarted,
//! which reloads the record from the journal and resumes at the journaled stage.
//! The job ends when every node is final: it tells the dispatcher, which drops
//! its address, and the actor stops for good.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use actix::prelude::*;
use futures_util::FutureExt;
use laminate_config::Node;
use laminate_store::{Journal, NodeStatus};

use super::dispatcher::Dispatcher;
use super::messages::{CancelNodes, JobBackingOff, JobFinished, ShutdownRequested};
use super::pipeline;
use super::retry::RetryPolicy;
use super::shared::{JobEnv, JobShared};
use crate::health::{panic_message, ActorHealth};

/// Live changes the dispatcher passes on to a running job.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum JobUpdate {
    Paused(bool),
    Nodes(Vec<Node>),
    Policy(RetryPolicy),
    /// The node answered C-ECHO again: a backoff waiting for it ends now.
    NodeBack(String),
}

pub struct DispatchJob {
    id: String,
    env: Rc<JobEnv>,
    shared: Option<Rc<JobShared>>,
    /// The pool entry in the health registry (every job's restarts and errors).
    health: ActorHealth,
    dispatcher: Addr<Dispatcher>,
    nodes: Vec<Node>,
    policy: RetryPolicy,
    paused: bool,
}

impl DispatchJob {
    pub fn new(
        id: String,
        env: Rc<JobEnv>,
        health: ActorHealth,
        dispatcher: Addr<Dispatcher>,
        nodes: Vec<Node>,
        policy: RetryPolicy,
        paused: bool,
    ) -> Self {
        Self {
            id,
            env,
            shared: None,
            health,
            dispatcher,
            nodes,
            policy,
            paused,
        }
    }
}

impl Actor for DispatchJob {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let rec = match self.env.store.journal_get(&self.id) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::error!(dispatch = %self.id, "job started for an unknown dispatch");
                self.dispatcher.do_send(JobFinished {
                    id: self.id.clone(),
                });
                return;
            }
            Err(e) => {
                tracing::error!(dispatch = %self.id, error = %e, "cannot load the dispatch");
                self.health.record_error(format!("{}: {e}", self.id));
                self.dispatcher.do_send(JobFinished {
                    id: self.id.clone(),
                });
                return;
            }
        };
        let watch = self.env.board.stages.watch(&self.id);
        let shared = Rc::new(JobShared::new(
            rec,
            self.nodes.clone(),
            self.policy,
            self.paused,
            watch,
        ));
        let (dispatcher, id) = (self.dispatcher.clone(), self.id.clone());
        shared.set_on_backoff(Box::new(move || {
            dispatcher.do_send(JobBackingOff { id: id.clone() })
        }));
        self.shared = Some(shared.clone());
        let env = self.env.clone();
        let run = AssertUnwindSafe(pipeline::run(env, shared)).catch_unwind();
        ctx.spawn(run.into_actor(self).map(|outcome, act, ctx| match outcome {
            Ok(()) => {
                act.env.board.stages.unwatch(&act.id);
                act.dispatcher.do_send(JobFinished { id: act.id.clone() })
            }
            Err(panic) => {
                let msg = format!(
                    "dispatch {} panicked: {}",
                    act.id,
                    panic_message(panic.as_ref())
                );
                tracing::error!(error = %msg, "dispatch job restarting");
                act.health.record_error(msg);
                ctx.stop();
            }
        }));
    }
}

impl Supervised for DispatchJob {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
        self.health.set_state(crate::health::ActorState::Running);
        // The old pipeline's sender threads finish their instance in flight and stop.
        if let Some(old) = self.shared.take() {
            old.stop_batches(None);
        }
    }
}

impl Handler<JobUpdate> for DispatchJob {
    type Result = ();
    fn handle(&mut self, msg: JobUpdate, _: &mut Context<Self>) {
        match msg {
            JobUpdate::Paused(p) => {
                self.paused = p;
                if let Some(sh) = &self.shared {
                    sh.set_paused(p);
                }
            }
            JobUpdate::Nodes(nodes) => {
                if let Some(sh) = &self.shared {
                    // A changed node's pool reconnects by itself; the work for
                    // a removed or deactivated one stops here.
                    let old = sh.nodes.borrow().clone();
                    for o in &old {
                        if !nodes.iter().any(|n| n.node_id == o.node_id && n.is_active) {
                            sh.stop_batches(Some(&o.node_id));
                        }
                    }
                    *sh.nodes.borrow_mut() = nodes.clone();
                    sh.changed.notify_waiters();
                }
                self.nodes = nodes;
            }
            JobUpdate::NodeBack(node_id) => {
                if let Some(sh) = &self.shared {
                    sh.wake_node(&node_id);
                }
            }
            JobUpdate::Policy(p) => {
                self.policy = p;
                if let Some(sh) = &self.shared {
                    sh.policy.set(p);
                }
            }
        }
    }
}

impl Handler<CancelNodes> for DispatchJob {
    type Result = ();
    fn handle(&mut self, msg: CancelNodes, _: &mut Context<Self>) {
        let Some(sh) = &self.shared else { return };
        let targets = msg.nodes.unwrap_or_else(|| sh.open_nodes());
        for node in targets {
            sh.update_node(&self.env, &node, |n| {
                n.status = NodeStatus::Cancelled;
                n.error = Some(msg.reason.clone());
            });
            sh.stop_batches(Some(&node));
        }
    }
}

impl Handler<ShutdownRequested> for DispatchJob {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: ShutdownRequested, _: &mut Context<Self>) -> Self::Result {
        let Some(sh) = self.shared.clone() else {
            return Box::pin(async {});
        };
        // Paused in memory only: status.json is untouched, the next start resumes.
        sh.set_paused(true);
        Box::pin(async move { sh.wait_batches_done().await })
    }
}
