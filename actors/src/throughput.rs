//! What each node was sent, minute by minute, for the last hour: one ring of
//! [`MINUTES`] per-minute buckets per node, fed by [`crate::feed::SendStats`]
//! on every acknowledged instance. The status page draws its sparklines from it.
//!
//! Memory is bounded by nodes × [`MINUTES`]; recording is one short lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::health::lock;

/// Buckets kept per node: one hour.
pub const MINUTES: usize = 60;

/// One minute of one node's sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    pub instances: u64,
    pub bytes: u64,
}

/// The rings, by node id.
#[derive(Debug, Default)]
pub struct ThroughputHistory(Mutex<BTreeMap<String, VecDeque<Minute>>>);

impl ThroughputHistory {
    /// One instance of `bytes` acknowledged by `node_id` in `minute`.
    pub fn record(&self, node_id: &str, bytes: u64, minute: u64) {
        let mut m = lock(&self.0);
        let ring = m.entry(node_id.to_owned()).or_default();
        match ring.back_mut() {
            Some(last) if last.minute == minute => {
                last.instances += 1;
                last.bytes += bytes;
            }
            // A clock step backwards lands in the newest bucket rather than reordering.
            Some(last) if last.minute > minute => {
                last.instances += 1;
                last.bytes += bytes;
            }
            _ => ring.push_back(Minute {
                minute,
                instances: 1,
                bytes,
            }),
        }
        while ring
            .front()
            .is_some_and(|f| f.minute + (MINUTES as u64) <= minute)
        {
            ring.pop_front();
        }
    }

    /// The last hour up to and including `now_minute` for `node_id`: exactly
    /// [`MINUTES`] buckets, oldest first, zeros where nothing was sent.
    pub fn last_hour(&self, node_id: &str, now_minute: u64) -> Vec<Minute> {
        let first = (now_minute + 1).saturating_sub(MINUTES as u64);
        let mut out: Vec<Minute> = (first..=now_minute)
            .map(|minute| Minute {
                minute,
                ..Minute::default()
            })
            .collect();
        if let Some(ring) = lock(&self.0).get(node_id) {
            for b in ring {
                if let Some(i) = b.minute.checked_sub(first).map(|i| i as usize) {
                    if let Some(slot) = out.get_mut(i) {
                        slot.instances = b.instances;
                        slot.bytes = b.bytes;
                    }
                }
            }
        }
        out
    }
}

/// The minute of an epoch-milliseconds instant.
pub fn minute_of(ms: u64) -> u64 {
    ms / 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_land_in_their_minute_and_an_hour_is_kept() {
        let h = ThroughputHistory::default();
        h.record("n1", 100, 1000);
        h.record("n1", 50, 1000);
        h.record("n1", 10, 1002);
        h.record("n2", 7, 1002);
        let hour = h.last_hour("n1", 1002);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(
            hour[MINUTES - 1],
            Minute {
                minute: 1002,
                instances: 1,
                bytes: 10
            }
        );
        assert_eq!(hour[MINUTES - 2].instances, 0);
        assert_eq!(
            hour[MINUTES - 3],
            Minute {
                minute: 1000,
                instances: 2,
                bytes: 150
            }
        );
        // An hour later the old minutes are gone from the view and from memory.
        h.record("n1", 1, 1000 + MINUTES as u64);
        let later = h.last_hour("n1", 1000 + MINUTES as u64);
        assert_eq!(later.iter().map(|m| m.instances).sum::<u64>(), 2);
        assert_eq!(lock(&h.0)["n1"].len(), 2);
        assert!(h.last_hour("unknown", 5).iter().all(|m| m.instances == 0));
    }

    #[test]
    fn an_early_clock_never_panics_or_reorders() {
        let h = ThroughputHistory::default();
        h.record("n1", 1, 1003);
        h.record("n1", 1, 1002);
        assert_eq!(h.last_hour("n1", 1003)[MINUTES - 1].instances, 2);
        assert_eq!(h.last_hour("n1", 1003)[MINUTES - 2].instances, 0);
        assert_eq!(
            h.last_hour("n1", 0).len(),
            1,
            "near the epoch the hour is short"
        );
    }
}
