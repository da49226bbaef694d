//! The frozen-stage detector of a dispatch job (after quickwit-actors'
//! "no progress" check): every stage of a job beats a [`Beat`] whenever it
//! makes progress (a chunk downloaded, an entry extracted, a file indexed, an
//! instance acknowledged), from whatever thread it runs on, and waits for its
//! work under [`Beat::stalled`]; a stage with no beat for longer than its limit
//! is dropped (cancelled) and handled as a transient failure of that stage.
//!
//! The beats of every running job are also what the Health view shows: per job
//! and lane (one lane per stage, one per node while sending), the stage and the
//! time since its last progress. Touches nothing but its own counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::health::lock;

/// How often a waiting stage looks at its beat (the resolution of a limit).
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// One lane's progress clock, shared with the threads doing its work.
#[derive(Debug, Clone)]
pub struct Beat(Arc<Lane>);

#[derive(Debug)]
struct Lane {
    stage: &'static str,
    node_id: Option<String>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last progress.
    last_ms: AtomicU64,
}

impl Beat {
    fn new(stage: &'static str, node_id: Option<String>) -> Beat {
        Beat(Arc::new(Lane {
            stage,
            node_id,
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }))
    }

    /// The stage made progress.
    pub fn tick(&self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last progress (or since the lane was opened).
    pub fn idle(&self) -> Duration {
        let since = self.0.epoch.elapsed();
        since.saturating_sub(Duration::from_millis(
            self.0.last_ms.load(Ordering::Relaxed),
        ))
    }

    pub fn stage(&self) -> &'static str {
        self.0.stage
    }

    /// Resolves once the lane has had no progress for `limit`, with the idle
    /// time then. Race it against the stage's work: whichever ends first wins.
    pub async fn stalled(&self, limit: Duration) -> Stalled {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return Stalled {
                    stage: self.0.stage,
                    idle,
                };
            }
            tokio::time::sleep((limit - idle).min(CHECK_EVERY)).await;
        }
    }
}

/// A stage that made no progress for longer than its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    pub stage: &'static str,
    pub idle: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: no progress for {} s (stage cancelled)",
            self.stage,
            self.idle.as_secs()
        )
    }
}

/// One job's lanes, registered in the [`Watchdogs`] while the job runs.
#[derive(Debug, Default)]
pub struct JobWatch {
    lanes: Mutex<BTreeMap<String, Beat>>,
}

impl JobWatch {
    /// Opens (or restarts) the lane of a stage; `node_id` for per-node stages.
    pub fn lane(&self, stage: &'static str, node_id: Option<&str>) -> Beat {
        let beat = Beat::new(stage, node_id.map(str::to_owned));
        lock(&self.lanes).insert(lane_key(stage, node_id), beat.clone());
        beat
    }

    /// The stage ended (done or failed): it is no longer watched.
    pub fn close(&self, beat: &Beat) {
        let key = lane_key(beat.0.stage, beat.0.node_id.as_deref());
        let mut lanes = lock(&self.lanes);
        if lanes.get(&key).is_some_and(|b| Arc::ptr_eq(&b.0, &beat.0)) {
            lanes.remove(&key);
        }
    }
}

fn lane_key(stage: &str, node_id: Option<&str>) -> String {
    match node_id {
        Some(n) => format!("{stage}:{n}"),
        None => stage.to_owned(),
    }
}

/// What the Health view shows of one lane of a running job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageReport {
    pub dispatch_id: String,
    pub stage: &'static str,
    pub node_id: Option<String>,
    pub since_progress_s: f64,
}

/// Every running job's lanes (shared by the dispatcher, its jobs and the API).
#[derive(Debug, Clone, Default)]
pub struct Watchdogs {
    jobs: Arc<Mutex<BTreeMap<String, Arc<JobWatch>>>>,
}

impl Watchdogs {
    /// The watch of a job that starts (a restarted job gets a fresh one).
    pub fn watch(&self, dispatch_id: &str) -> Arc<JobWatch> {
        let w = Arc::new(JobWatch::default());
        lock(&self.jobs).insert(dispatch_id.to_owned(), w.clone());
        w
    }

    pub fn unwatch(&self, dispatch_id: &str) {
        lock(&self.jobs).remove(dispatch_id);
    }

    pub fn reports(&self) -> Vec<StageReport> {
        let jobs = lock(&self.jobs);
        let mut out = Vec::new();
        for (id, w) in jobs.iter() {
            for beat in lock(&w.lanes).values() {
                out.push(StageReport {
                    dispatch_id: id.clone(),
                    stage: beat.0.stage,
                    node_id: beat.0.node_id.clone(),
                    since_progress_s: (beat.idle().as_secs_f64() * 10.0).round() / 10.0,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_lane_without_progress_stalls_after_its_limit() {
        let beat = JobWatch::default().lane("download", None);
        let stalled = rt().block_on(beat.stalled(Duration::from_millis(300)));
        assert_eq!(stalled.stage, "download");
        assert!(stalled.idle >= Duration::from_millis(300));
        assert!(stalled
            .to_string()
            .starts_with("download: no progress for 0 s"));
    }

    #[test]
    fn progress_keeps_a_lane_alive() {
        let beat = JobWatch::default().lane("extract", None);
        let ticker = {
            let beat = beat.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    beat.tick();
                }
            }
        };
        rt().block_on(async {
            tokio::select! {
                _ = ticker => {}
                s = beat.stalled(Duration::from_millis(200)) => panic!("stalled while ticking: {s}"),
            }
        });
    }

    #[test]
    fn reports_list_each_open_lane_and_forget_closed_ones() {
        let dogs = Watchdogs::default();
        let w = dogs.watch("d1");
        let send_a = w.lane("send", Some("node_a"));
        let _send_b = w.lane("send", Some("node_b"));
        assert_eq!(dogs.reports().len(), 2);
        w.close(&send_a);
        let r = dogs.reports();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].node_id.as_deref(), Some("node_b"));
        assert_eq!(r[0].dispatch_id, "d1");
        dogs.unwatch("d1");
        assert!(dogs.reports().is_empty());
    }
}
