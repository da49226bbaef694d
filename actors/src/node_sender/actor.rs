//! The NodeSender actor: a node's pool and the messages that change it.

use actix::prelude::*;

use super::messages::{BatchStopped, InstancesHanded, NodeChanged};
use crate::health::ActorHealth;
use crate::send::pool::Pool;

pub struct NodeSender {
    node_id: String,
    appliance_ae: String,
    pool: Pool,
    health: ActorHealth,
}

impl NodeSender {
    pub fn new(node_id: String, appliance_ae: String, pool: Pool, health: ActorHealth) -> Self {
        Self {
            node_id,
            appliance_ae,
            pool,
            health,
        }
    }
}

impl Actor for NodeSender {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.health.set_state(crate::health::ActorState::Running);
    }
}

impl Supervised for NodeSender {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(node = %self.node_id, "node sender restarting; its associations start over");
        self.health.restarted();
        // Workers finish (or give back) their instance in flight and reconnect.
        self.pool.restart();
    }
}

impl Handler<InstancesHanded> for NodeSender {
    type Result = MessageResult<InstancesHanded>;
    fn handle(&mut self, msg: InstancesHanded, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.pool.submit(msg.items, msg.rank, msg.cancel, msg.sink))
    }
}

impl Handler<BatchStopped> for NodeSender {
    type Result = ();
    fn handle(&mut self, _: BatchStopped, _: &mut Context<Self>) {
        self.pool.reap();
    }
}

impl Handler<NodeChanged> for NodeSender {
    type Result = ();
    fn handle(&mut self, msg: NodeChanged, _: &mut Context<Self>) {
        let target = super::registry::target_of(&msg.node, &self.appliance_ae);
        self.pool.reconfigure(target, msg.opts);
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<super::messages::PoolKilled> for NodeSender {
    type Result = ();
    fn handle(&mut self, _: super::messages::PoolKilled, ctx: &mut Context<Self>) {
        let msg = format!("fault injection: node sender {}", self.node_id);
        self.health.record_error(msg.clone());
        self.pool.poison();
        // Stopped like a panicking handler: the supervisor restarts it.
        ctx.stop();
    }
}
