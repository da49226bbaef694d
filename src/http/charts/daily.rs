//! Dispatches finished per day (completed / failed) over the last
//! [`DAYS`] days, for the status page's bar chart, without reading the whole
//! journal on every page load.
//!
//! The tally keeps, for each dispatch finished inside the window, its day (UTC,
//! of its last update) and whether it completed or failed. It is built from one
//! journal scan the first time it is asked; after that the hub tells it which
//! dispatches changed ([`DailyTally::touched`], from the board's feed, no store
//! read) and only those are read again when the chart is next drawn. When the
//! hub lost feed messages ([`DailyTally::lost_track`]) or too many changes
//! piled up, the next drawing scans again. Memory: the window's dispatches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use laminate_store::{DispatchRecord, DispatchState, Journal, Store};

/// Days shown, today included.
pub const DAYS: u64 = 14;
const DAY_MS: u64 = 24 * 3600 * 1000;
/// Changed ids remembered before a full scan is cheaper.
const MAX_DIRTY: usize = 10_000;

/// One day's bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    /// `2026-12-04` (UTC).
    pub date: String,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    Completed,
    Failed,
}

#[derive(Debug)]
struct Inner {
    rescan: bool,
    dirty: BTreeSet<String>,
    /// Dispatch id → (day number since the epoch, how it finished).
    finished: HashMap<String, (u64, Finished)>,
}

#[derive(Debug)]
pub struct DailyTally(Mutex<Inner>);

impl Default for DailyTally {
    fn default() -> Self {
        DailyTally(Mutex::new(Inner {
            rescan: true,
            dirty: BTreeSet::new(),
            finished: HashMap::new(),
        }))
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding it leaves a tally that is at worst stale: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a record counts, and on which day.
fn classify(r: &DispatchRecord) -> Option<(u64, Finished)> {
    let how = match r.state() {
        DispatchState::Completed => Finished::Completed,
        DispatchState::Failed => Finished::Failed,
        DispatchState::Active | DispatchState::Cancelled => return None,
    };
    Some((r.updated_at_ms / DAY_MS, how))
}

impl DailyTally {
    /// The dispatch `id` was journaled again.
    pub fn touched(&self, id: &str) {
        let mut t = lock(&self.0);
        if t.rescan {
            return;
        }
        if t.dirty.len() >= MAX_DIRTY {
            t.rescan = true;
            t.dirty.clear();
        } else {
            t.dirty.insert(id.to_owned());
        }
    }

    /// Changes may have been missed: scan again next time.
    pub fn lost_track(&self) {
        let mut t = lock(&self.0);
        t.rescan = true;
        t.dirty.clear();
    }

    /// The last [`DAYS`] days up to the day of `now_ms`, oldest first. A store
    /// error leaves the counts as they were (and retries the reads next time).
    pub fn days(&self, store: &Store, now_ms: u64) -> Vec<DayCount> {
        let today = now_ms / DAY_MS;
        let first = today.saturating_sub(DAYS - 1);
        let mut t = lock(&self.0);
        if t.rescan {
            match store.journal_all() {
                Ok(all) => {
                    t.finished = all
                        .iter()
                        .filter_map(|r| classify(r).map(|c| (r.id.clone(), c)))
                        .filter(|(_, (day, _))| *day >= first)
                        .collect();
                    t.rescan = false;
                    t.dirty.clear();
                }
                Err(e) => tracing::warn!(error = %e, "dispatches per day: cannot read the journal"),
            }
        } else {
            let ids = std::mem::take(&mut t.dirty);
            for id in ids {
                match store.journal_get(&id) {
                    Ok(Some(r)) => match classify(&r) {
                        Some(c) => {
                            t.finished.insert(id, c);
                        }
                        None => {
                            t.finished.remove(&id);
                        }
                    },
                    Ok(None) => {
                        t.finished.remove(&id);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, dispatch = %id, "dispatches per day: cannot read a dispatch");
                        t.dirty.insert(id);
                    }
                }
            }
        }
        t.finished.retain(|_, (day, _)| *day >= first);
        let mut out: Vec<DayCount> = (first..=today)
            .map(|day| DayCount {
                date: date_of(day),
                completed: 0,
                failed: 0,
            })
            .collect();
        for (day, how) in t.finished.values() {
            if let Some(d) = day.checked_sub(first).and_then(|i| out.get_mut(i as usize)) {
                match how {
                    Finished::Completed => d.completed += 1,
                    Finished::Failed => d.failed += 1,
                }
            }
        }
        out
    }
}

/// `YYYY-MM-DD` of a day number since the epoch.
fn date_of(day: u64) -> String {
    laminate_actors::clock::ms_to_rfc3339(day * DAY_MS)
        .get(..10)
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use laminate_store::testing::dispatch_record;
    use laminate_store::{NodeStatus, Stage};

    const NOW: u64 = 1_764_806_400_000 + 12 * 3600 * 1000; // 2025-12-04T12:00Z

    #[test]
    fn finished_dispatches_count_on_their_day_and_changes_are_followed() {
        let store = Store::open_temporary().expect("store");
        store
            .journal_put(&dispatch_record(
                "a",
                NodeStatus::Completed,
                Stage::Finished,
                NOW,
            ))
            .expect("put");
        store
            .journal_put(&dispatch_record(
                "b",
                NodeStatus::Failed,
                Stage::Finished,
                NOW - DAY_MS,
            ))
            .expect("put");
        store
            .journal_put(&dispatch_record(
                "c",
                NodeStatus::Sending,
                Stage::Finished,
                NOW,
            ))
            .expect("put");
        store
            .journal_put(&dispatch_record(
                "old",
                NodeStatus::Completed,
                Stage::Finished,
                NOW - 20 * DAY_MS,
            ))
            .expect("put");
        let tally = DailyTally::default();
        let days = tally.days(&store, NOW);
        assert_eq!(days.len() as u64, DAYS);
        assert_eq!(
            days[13],
            DayCount {
                date: "2025-12-04".into(),
                completed: 1,
                failed: 0
            }
        );
        assert_eq!(
            days[12],
            DayCount {
                date: "2025-12-03".into(),
                completed: 0,
                failed: 1
            }
        );
        assert_eq!(days.iter().map(|d| d.completed + d.failed).sum::<u64>(), 2);

        // c completes, a is replayed (active again): only the touched ids are read.
        store
            .journal_put(&dispatch_record(
                "c",
                NodeStatus::Completed,
                Stage::Finished,
                NOW,
            ))
            .expect("put");
        store
            .journal_put(&dispatch_record(
                "a",
                NodeStatus::Queued,
                Stage::Finished,
                NOW,
            ))
            .expect("put");
        let unchanged = tally.days(&store, NOW);
        assert_eq!(unchanged[13].completed, 1, "not told yet: no scan");
        tally.touched("c");
        tally.touched("a");
        assert_eq!(tally.days(&store, NOW)[13].completed, 1, "c in, a out");
        // After lost feed messages a full scan catches up.
        store
            .journal_put(&dispatch_record(
                "d",
                NodeStatus::Failed,
                Stage::Finished,
                NOW,
            ))
            .expect("put");
        tally.lost_track();
        assert_eq!(tally.days(&store, NOW)[13].failed, 1);
        // Days move on: yesterday's failure leaves the window after 13 more days.
        let later = tally.days(&store, NOW + 13 * DAY_MS);
        assert_eq!(later.iter().map(|d| d.failed).sum::<u64>(), 1, "{later:?}");
    }
}
