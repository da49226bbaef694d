//! The NodeSender of every node a dispatch sends to, started on first use and
//! kept in step with `nodes.json`; their figures on the board.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use laminate_config::Node;

use super::actor::NodeSender;
use super::messages::NodeChanged;
use crate::board::SharedBoard;
use crate::health::ActorHealth;
use crate::send::pool::{Pool, PoolStats};
use crate::send::{SendOptions, Target};

/// Where a node's associations go.
pub(crate) fn target_of(node: &Node, appliance_ae: &str) -> Target {
    Target {
        node_id: node.node_id.clone(),
        host: node.host.clone(),
        port: node.port,
        called_ae: node.ae_title.clone(),
        calling_ae: node.calling_ae(appliance_ae).to_owned(),
        max_associations: node.max_associations(),
        tls: node.site.as_ref().and_then(|s| s.tls.clone()),
        prefer_ts: node
            .site
            .as_ref()
            .and_then(|s| s.prefer_transfer_syntax.uid().map(str::to_owned)),
    }
}

struct Entry {
    addr: Addr<NodeSender>,
    node: Node,
}

/// The per-node senders (on the dispatcher's arbiter, shared with its jobs).
#[derive(Clone)]
pub struct NodeSenders {
    senders: Rc<RefCell<BTreeMap<String, Entry>>>,
    opts: Rc<RefCell<SendOptions>>,
    appliance_ae: String,
    health: ActorHealth,
    board: SharedBoard,
}

impl NodeSenders {
    pub fn new(
        appliance_ae: String,
        opts: SendOptions,
        health: ActorHealth,
        board: SharedBoard,
    ) -> Self {
        health.set_state(crate::health::ActorState::Running);
        Self {
            senders: Rc::default(),
            opts: Rc::new(RefCell::new(opts)),
            appliance_ae,
            health,
            board,
        }
    }

    pub fn options(&self) -> SendOptions {
        self.opts.borrow().clone()
    }

    /// Where `node`'s associations go (for requests outside its pool).
    pub fn target(&self, node: &Node) -> Target {
        target_of(node, &self.appliance_ae)
    }

    /// The node's sender, started if it has none; told if `node` changed.
    pub fn sender_for(&self, node: &Node) -> Addr<NodeSender> {
        let mut senders = self.senders.borrow_mut();
        if let Some(e) = senders.get_mut(&node.node_id) {
            if e.node != *node {
                e.node = node.clone();
                e.addr.do_send(NodeChanged {
                    node: node.clone(),
                    opts: self.options(),
                });
            }
            return e.addr.clone();
        }
        let stats = Arc::new(PoolStats::default());
        self.board.sent.register_pool(&node.node_id, stats.clone());
        let pool = Pool::new(target_of(node, &self.appliance_ae), self.options(), stats);
        let (id, ae, health) = (
            node.node_id.clone(),
            self.appliance_ae.clone(),
            self.health.clone(),
        );
        let addr = Supervisor::start(move |_| NodeSender::new(id, ae, pool, health));
        senders.insert(
            node.node_id.clone(),
            Entry {
                addr: addr.clone(),
                node: node.clone(),
            },
        );
        addr
    }

    /// The configured nodes changed: changed ones are told, removed or
    /// deactivated ones let go (their actor ends with its last address).
    pub fn sync(&self, nodes: &[Node]) {
        let mut senders = self.senders.borrow_mut();
        senders.retain(|id, e| {
            let Some(n) = nodes.iter().find(|n| n.node_id == *id && n.is_active) else {
                self.board.sent.unregister_pool(id);
                return false;
            };
            if *n != e.node {
                e.node = n.clone();
                e.addr.do_send(NodeChanged {
                    node: n.clone(),
                    opts: self.opts.borrow().clone(),
                });
            }
            true
        });
    }

    /// New send deadlines (e.g. `dimse_timeout_s`) for every node.
    pub fn set_options(&self, opts: SendOptions) {
        if *self.opts.borrow() == opts {
            return;
        }
        *self.opts.borrow_mut() = opts.clone();
        for e in self.senders.borrow().values() {
            e.addr.do_send(NodeChanged {
                node: e.node.clone(),
                opts: opts.clone(),
            });
        }
    }

    /// Test builds: kills a node's pool (its actor restarts).
    #[cfg(feature = "fault-injection")]
    pub fn kill(&self, node_id: &str) {
        if let Some(e) = self.senders.borrow().get(node_id) {
            e.addr.do_send(super::messages::PoolKilled);
        }
    }
}
