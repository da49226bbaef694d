//! The heartbeat actor. See `mod.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::json;

use super::disk::dir_size_bytes;
use super::messages::LinkEstablished;
use crate::board::SharedBoard;
use crate::config::SettingsUpdated;
use crate::envelope::{fresh_correlation_id, Outgoing};
use crate::health::{ActorHealth, ActorState, Monitored};
use crate::link::EphemeralEventReady;
use crate::peers::PeersCell;

/// How often the data dir's size is measured (walking a large cache is not free).
const DISK_SCAN_EVERY: Duration = Duration::from_secs(60);
const BYTES_PER_GB: f64 = 1024.0 * 1024.0 * 1024.0;

pub struct HeartbeatActor {
    health: ActorHealth,
    board: SharedBoard,
    peers: PeersCell,
    data_dir: PathBuf,
    interval: Duration,
    next_beat: Option<SpawnHandle>,
    last_beat: Instant,
    disk_bytes: Arc<AtomicU64>,
}

impl HeartbeatActor {
    pub fn new(
        health: ActorHealth,
        board: SharedBoard,
        peers: PeersCell,
        data_dir: PathBuf,
        interval_s: u64,
    ) -> Self {
        Self {
            health,
            board,
            peers,
            data_dir,
            interval: Duration::from_secs(interval_s),
            next_beat: None,
            last_beat: Instant::now(),
            disk_bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The `proxy.heartbeat` frame as of now.
    pub fn frame(&self) -> String {
        let status = self.board.proxy_status();
        let (online, total) = self.board.nodes_online();
        let gb = self.disk_bytes.load(Ordering::Relaxed) as f64 / BYTES_PER_GB;
        Outgoing {
            event_type: "proxy.heartbeat".into(),
            workspace_id: self.board.last_workspace_id(),
            timestamp: crate::clock::now_rfc3339(),
            correlation_id: fresh_correlation_id("hb"),
            entity_type: "proxy".into(),
            entity_id: String::new(),
            payload: json!({
                "status": status.status,
                "nodes_online": online,
                "nodes_total": total,
                "active_dispatches": self.board.active_dispatches(),
                "disk_usage_gb": (gb * 100.0).round() / 100.0,
                "version": env!("CARGO_PKG_VERSION"),
            }),
        }
        .to_frame()
    }

    fn schedule(&mut self, after: Duration, ctx: &mut Context<Self>) {
        if let Some(h) = self.next_beat.take() {
            ctx.cancel_future(h);
        }
        self.next_beat = Some(ctx.run_later(after, |act, ctx| act.beat(ctx)));
    }

    fn beat(&mut self, ctx: &mut Context<Self>) {
        self.next_beat = None;
        self.last_beat = Instant::now();
        let frame = self.frame();
        if let Some(peers) = self.peers.get() {
            peers.link.do_send(EphemeralEventReady {
                event_type: "proxy.heartbeat",
                frame,
            });
        }
        let every = self.interval;
        self.schedule(every, ctx);
    }

    fn measure_disk(&self) {
        let dir = self.data_dir.clone();
        let out = self.disk_bytes.clone();
        actix_rt::spawn(async move {
            if let Ok(n) = tokio::task::spawn_blocking(move || dir_size_bytes(&dir)).await {
                out.store(n, Ordering::Relaxed);
            }
        });
    }
}

impl Actor for HeartbeatActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
        self.disk_bytes
            .store(dir_size_bytes(&self.data_dir), Ordering::Relaxed);
        ctx.run_interval(DISK_SCAN_EVERY, |act, _| act.measure_disk());
        let every = self.interval;
        self.schedule(every, ctx);
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for HeartbeatActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
        self.next_beat = None;
    }
}

impl Monitored for HeartbeatActor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl Handler<LinkEstablished> for HeartbeatActor {
    type Result = Option<String>;
    fn handle(&mut self, _: LinkEstablished, ctx: &mut Context<Self>) -> Option<String> {
        self.last_beat = Instant::now();
        let every = self.interval;
        self.schedule(every, ctx);
        Some(self.frame())
    }
}

impl Handler<SettingsUpdated> for HeartbeatActor {
    type Result = ();
    fn handle(&mut self, msg: SettingsUpdated, ctx: &mut Context<Self>) {
        let interval = Duration::from_secs(msg.0.heartbeat_interval_s);
        if interval != self.interval {
            tracing::info!(seconds = interval.as_secs(), "heartbeat interval changed");
            self.interval = interval;
            // "Applies from the next beat": the next one is due one new interval
            // after the last, or now if that is already past.
            let wait = interval.saturating_sub(self.last_beat.elapsed());
            self.schedule(wait, ctx);
        }
    }
}

crate::delivered_handlers!(HeartbeatActor: LinkEstablished, SettingsUpdated);
