//! The disk actor. See `mod.rs`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use laminate_store::{Catalog, Journal, Store};

use super::messages::{DispatchEnded, EvictionWanted, PassFinished};
use super::pass;
use super::state::DiskState;
use crate::config::SettingsUpdated;
use crate::health::{ActorHealth, ActorState, Monitored};

/// How often the cache is looked at without being asked (retention ages, the ingest
/// SCP's bursts, the free space read for the status page).
pub const EVICT_EVERY: Duration = Duration::from_secs(60);

pub struct DiskActor {
    health: ActorHealth,
    store: Store,
    state: Arc<DiskState>,
    /// A pass is running on a blocking thread.
    running: bool,
    /// Asked again while it ran: one more pass when it ends.
    again: bool,
    /// Dispatches ended since the last pass: their instances to mark used.
    ended: Vec<String>,
}

impl DiskActor {
    pub fn new(health: ActorHealth, store: Store, state: Arc<DiskState>) -> Self {
        Self {
            health,
            store,
            state,
            running: false,
            again: false,
            ended: Vec::new(),
        }
    }

    /// Starts a pass unless one runs (then one more follows it).
    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        let (store, state, health) = (self.store.clone(), self.state.clone(), self.health.clone());
        let ended = std::mem::take(&mut self.ended);
        let me = ctx.address();
        actix::spawn(async move {
            let outcome = tokio::task::spawn_blocking(move || {
                let now = crate::clock::now_ms();
                touch_ended(&store, &ended, now);
                pass::run(&store, &state, now, state.take_wanted())
            })
            .await;
            match outcome {
                Ok(Ok(r)) if r.evicted > 0 => tracing::info!(
                    evicted = r.evicted,
                    bytes = r.bytes,
                    kept_for_dispatches = r.protected,
                    "cache eviction pass"
                ),
                Ok(Ok(r)) => tracing::debug!(
                    kept_for_dispatches = r.protected,
                    "cache eviction pass: nothing to evict"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cache eviction pass failed");
                    health.record_error(format!("eviction: {e}"));
                }
                Err(e) => tracing::warn!(error = %e, "the cache eviction task failed"),
            }
            me.do_send(PassFinished);
        });
    }
}

/// Marks the instances of the dispatches that just ended as used now.
fn touch_ended(store: &Store, ended: &[String], now: u64) {
    for id in ended {
        let touched = store
            .journal_instances(id)
            .and_then(|sops| store.touch_instances(&sops, now));
        if let Err(e) = touched {
            tracing::warn!(dispatch = %id, error = %e, "cannot mark a dispatch's instances as used");
        }
    }
}

impl Actor for DiskActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
        self.running = false;
        self.pass(ctx);
        ctx.run_interval(EVICT_EVERY, |me, ctx| me.pass(ctx));
        let (state, me) = (self.state.clone(), ctx.address());
        ctx.spawn(
            async move {
                loop {
                    state.eviction_wanted().await;
                    me.do_send(EvictionWanted);
                }
            }
            .into_actor(self),
        );
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for DiskActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
    }
}

impl Monitored for DiskActor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl Handler<DispatchEnded> for DiskActor {
    type Result = ();
    fn handle(&mut self, msg: DispatchEnded, ctx: &mut Context<Self>) {
        self.ended.push(msg.id);
        self.pass(ctx);
    }
}

impl Handler<EvictionWanted> for DiskActor {
    type Result = ();
    fn handle(&mut self, _: EvictionWanted, ctx: &mut Context<Self>) {
        self.pass(ctx);
    }
}

impl Handler<PassFinished> for DiskActor {
    type Result = ();
    fn handle(&mut self, _: PassFinished, ctx: &mut Context<Self>) {
        self.running = false;
        if std::mem::take(&mut self.again) {
            self.pass(ctx);
        }
    }
}

impl Handler<SettingsUpdated> for DiskActor {
    type Result = ();
    fn handle(&mut self, msg: SettingsUpdated, ctx: &mut Context<Self>) {
        self.state.apply(&msg.0);
        self.pass(ctx);
    }
}

crate::delivered_handlers!(DiskActor: DispatchEnded, SettingsUpdated);
