//! The dispatcher's part in node outages and deletions (APPLIANCE.md "Running
//! for months unattended"): a job that starts waiting to retry frees its slot,
//! a node that answers C-ECHO again ends its dispatches' backoff and has its
//! parked ones replayed (`parking.rs` holds the rules), a deleted scan cancels
//! its dispatches.

use actix::prelude::*;
use laminate_store::DispatchRecord;

use super::Dispatcher;
use crate::deletion::ScanDeleted;
use crate::dispatch::job::JobUpdate;
use crate::dispatch::messages::{JobBackingOff, NodeCameBack};
use crate::dispatch::parking;

impl Dispatcher {
    /// An operator cancels a finished dispatch: one with parked nodes is taken out
    /// of parking (no automatic replay; it stays failed), any other is refused.
    pub(super) fn unpark_cancelled(&self, rec: DispatchRecord) -> Result<DispatchRecord, String> {
        let now = crate::clock::now_ms();
        if !rec.nodes.iter().any(|n| n.is_parked(now)) {
            return Err(format!("dispatch {} is already {:?}", rec.id, rec.state()).to_lowercase());
        }
        tracing::info!(dispatch = %rec.id, "cancelled by an operator: no longer parked");
        parking::unpark_where(&self.env.store, &self.board, |r, _| r.id == rec.id);
        self.find(&rec.id)
    }

    /// Replays the parked dispatches whose node answers again (`came_back`, or any
    /// that answered C-ECHO since it was parked), ends parking past its time.
    pub(super) fn replay_parked(&mut self, came_back: Option<&str>, ctx: &mut Context<Self>) {
        let due = match parking::due(
            &self.env.store,
            &self.board,
            came_back,
            crate::clock::now_ms(),
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the parked dispatches");
                return;
            }
        };
        for (id, nodes) in due {
            if self.running.contains_key(&id) {
                continue;
            }
            match self.replay(&id, Some(nodes.clone()), false, ctx) {
                Ok(_) => {
                    tracing::info!(dispatch = %id, nodes = ?nodes, "parked dispatch replayed: its node answers again")
                }
                Err(e) => {
                    tracing::warn!(dispatch = %id, error = %e, "parked dispatch not replayed")
                }
            }
        }
    }
}

impl Handler<ScanDeleted> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: ScanDeleted, _: &mut Context<Self>) {
        let of_scan = |r: &DispatchRecord| {
            r.entity_type == "scan" && msg.scan_id.as_deref() == Some(r.entity_id.as_str())
        };
        for rec in self.records().into_iter().filter(|r| of_scan(r)) {
            tracing::info!(dispatch = %rec.id, "scan deleted: dispatch cancelled");
            self.cancel(&rec, None, "the scan was deleted");
        }
        parking::unpark_where(&self.env.store, &self.board, |r, _| of_scan(r));
    }
}

impl Handler<JobBackingOff> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: JobBackingOff, ctx: &mut Context<Self>) {
        tracing::debug!(dispatch = %msg.id, "waiting to retry: its slot is free");
        self.schedule(ctx);
    }
}

impl Handler<NodeCameBack> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: NodeCameBack, ctx: &mut Context<Self>) {
        tracing::info!(node = %msg.node_id, "node answers C-ECHO again: its retrying dispatches retry now, its parked ones are replayed");
        for job in self.running.values() {
            job.do_send(JobUpdate::NodeBack(msg.node_id.clone()));
        }
        self.replay_parked(Some(&msg.node_id), ctx);
    }
}
