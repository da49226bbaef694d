//! The node monitor actor. See `mod.rs`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use laminate_config::Node;

use super::echo::c_echo;
use super::messages::{EchoRequested, EchoResult};
use crate::board::{EchoView, SharedBoard};
use crate::config::NodesUpdated;
use crate::dispatch::NodeCameBack;
use crate::health::{ActorHealth, ActorState, Monitored};
use crate::peers::PeersCell;

/// C-ECHO period (issue #2: every 60 s and on any node change).
pub const ECHO_EVERY: Duration = Duration::from_secs(60);

/// The C-ECHO period: [`ECHO_EVERY`]; test builds (`fault-injection`) take
/// `LAMINATE_PROXY_TEST_ECHO_EVERY_MS`, so that a node coming back is seen in
/// a second rather than a minute.
pub fn echo_every() -> Duration {
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = std::env::var("LAMINATE_PROXY_TEST_ECHO_EVERY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_millis(ms.max(100));
    }
    ECHO_EVERY
}

pub struct NodeMonitor {
    health: ActorHealth,
    board: SharedBoard,
    appliance_ae: Arc<str>,
    peers: PeersCell,
}

impl NodeMonitor {
    pub fn new(
        health: ActorHealth,
        board: SharedBoard,
        appliance_ae: &str,
        peers: PeersCell,
    ) -> Self {
        board.set_echo_period_ms(echo_every().as_millis() as u64);
        Self {
            health,
            board,
            appliance_ae: Arc::from(appliance_ae),
            peers,
        }
    }

    fn echo_all(&self) {
        for node in self.board.nodes().into_iter().filter(|n| n.is_active) {
            let board = self.board.clone();
            let ae = self.appliance_ae.clone();
            let peers = self.peers.clone();
            actix_rt::spawn(async move {
                let _ = run_echo(node, ae, board, peers).await;
            });
        }
    }
}

/// Runs one echo on a blocking thread and records it on the board; a node that
/// answers after failing to (or for the first time) is announced to the
/// dispatcher ([`NodeCameBack`]).
async fn run_echo(
    node: Node,
    appliance_ae: Arc<str>,
    board: crate::board::SharedBoard,
    peers: PeersCell,
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
    if ok && !previous.online {
        if let Some(p) = peers.get() {
            p.dispatcher.do_send(NodeCameBack {
                node_id: node.node_id.clone(),
            });
        }
    }
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
        ctx.run_interval(echo_every(), |act, _| act.echo_all());
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
        let peers = self.peers.clone();
        Box::pin(async move {
            match node {
                Some(node) => Ok(run_echo(node, ae, board, peers).await),
                None => Err(format!("unknown node {}", msg.node_id)),
            }
        })
    }
}

crate::delivered_handlers!(NodeMonitor: NodesUpdated, EchoRequested);
