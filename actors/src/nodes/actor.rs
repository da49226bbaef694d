//! The node monitor actor. See `mod.rs`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use laminate_config::Node;

use super::echo::c_echo;
use super::messages::{EchoRequested, EchoResult};
use crate::board::{EchoView, SharedBoard};
use crate::config::NodesUpdated;
use crate::health::{ActorHealth, ActorState, Monitored};

/// C-ECHO period (issue #2: every 60 s and on any node change).
pub const ECHO_EVERY: Duration = Duration::from_secs(60);

pub struct NodeMonitor {
    health: ActorHealth,
    board: SharedBoard,
    appliance_ae: Arc<str>,
}

impl NodeMonitor {
    pub fn new(health: ActorHealth, board: SharedBoard, appliance_ae: &str) -> Self {
        board.set_echo_period_ms(ECHO_EVERY.as_millis() as u64);
        Self {
            health,
            board,
            appliance_ae: Arc::from(appliance_ae),
        }
    }

    fn echo_all(&self) {
        for node in self.board.nodes().into_iter().filter(|n| n.is_active) {
            let board = self.board.clone();
            let ae = self.appliance_ae.clone();
            actix_rt::spawn(async move {
                let _ = run_echo(node, ae, board).await;
            });
        }
    }
}

/// Runs one echo on a blocking thread and records it on the board.
async fn run_echo(
    node: Node,
    appliance_ae: Arc<str>,
    board: crate::board::SharedBoard,
) -> EchoResult {
    let n = node.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let tls = n.site.as_ref().and_then(|s| s.tls.as_ref());
        c_echo(
            &n.host,
            n.port,
            &n.ae_title,
            n.calling_ae(&appliance_ae),
            tls,
        )
    })
    .await;
    let now_ms = crate::clock::now_ms();
    let at = crate::clock::ms_to_rfc3339(now_ms);
    let (ok, rtt_ms, error) = match outcome {
        Ok(Ok(rtt)) => (true, Some(rtt.as_secs_f64() * 1000.0), None),
        Ok(Err(e)) => (false, None, Some(e.to_string())),
        Err(e) => (false, None, Some(format!("echo task failed: {e}"))),
    };
    if let Some(err) = &error {
        tracing::info!(node_id = %node.node_id, error = %err, "C-ECHO failed");
    }
    // Keep the last good round trip visible while the node is down.
    let previous = board.echo(&node.node_id);
    board.set_echo(
        &node.node_id,
        EchoView {
            online: ok,
            last_echo_at: Some(at.clone()),
            last_echo_ms: Some(now_ms),
            echo_rtt_ms: rtt_ms.or(previous.echo_rtt_ms),
            last_error: error.clone(),
        },
    );
    EchoResult {
        node_id: node.node_id,
        ok,
        rtt_ms,
        error,
        at,
    }
}

impl Actor for NodeMonitor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
        self.echo_all();
        ctx.run_interval(ECHO_EVERY, |act, _| act.echo_all());
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for NodeMonitor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
    }
}

impl Monitored for NodeMonitor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl Handler<NodesUpdated> for NodeMonitor {
    type Result = ();
    fn handle(&mut self, _: NodesUpdated, _: &mut Context<Self>) {
        // The board already holds the new list (the config actor set it).
        self.echo_all();
    }
}

impl Handler<EchoRequested> for NodeMonitor {
    type Result = ResponseFuture<Result<EchoResult, String>>;
    fn handle(&mut self, msg: EchoRequested, _: &mut Context<Self>) -> Self::Result {
        let node = self
            .board
            .nodes()
            .into_iter()
            .find(|n| n.node_id == msg.node_id);
        let board = self.board.clone();
        let ae = self.appliance_ae.clone();
        Box::pin(async move {
            match node {
                Some(node) => Ok(run_echo(node, ae, board).await),
                None => Err(format!("unknown node {}", msg.node_id)),
            }
        })
    }
}

crate::delivered_handlers!(NodeMonitor: NodesUpdated, EchoRequested);
