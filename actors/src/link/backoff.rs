//! Reconnect schedules (PROTOCOL.md §1), pure and testable with a given random
//! source.
//!
//! - general: start 1 s, factor 2, cap 60 s, jittered, reset after 60 s of healthy connection;
//! - held back (bad key 4003, or replaced three times in 10 minutes): at least 60 s,
//!   growing to 15 min, so a misconfigured appliance never hammers the backend.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const GENERAL_START: Duration = Duration::from_secs(1);
pub const GENERAL_CAP: Duration = Duration::from_secs(60);
pub const HELD_START: Duration = Duration::from_secs(60);
pub const HELD_CAP: Duration = Duration::from_secs(15 * 60);
/// A connection that stayed up this long resets both schedules.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// "Replaced" closes within this window...
pub const REPLACED_WINDOW: Duration = Duration::from_secs(10 * 60);
/// ...this many times mean another appliance uses our key.
pub const REPLACED_LIMIT: usize = 3;

/// An exponential schedule. `jitter` in [0, 1) spreads delays so that many
/// appliances do not reconnect in lockstep after a backend restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    attempt: u32,
    /// Jitter only lengthens held-back delays (they must stay ≥ start).
    jitter_down: bool,
}

impl Backoff {
    pub fn general() -> Self {
        Self {
            start: GENERAL_START,
            cap: GENERAL_CAP,
            attempt: 0,
            jitter_down: true,
        }
    }
    pub fn held() -> Self {
        Self {
            start: HELD_START,
            cap: HELD_CAP,
            attempt: 0,
            jitter_down: false,
        }
    }

    /// The next delay; `jitter` is a random number in [0, 1).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self.start.saturating_mul(1u32 << self.attempt.min(20));
        let base = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let j = jitter.clamp(0.0, 0.999);
        if self.jitter_down {
            // Equal jitter: between half and all of the base delay.
            base.mul_f64(0.5 + 0.5 * j)
        } else {
            // At least the base, at most 10 % more, never past the cap.
            base.mul_f64(1.0 + 0.1 * j).min(self.cap).max(self.start)
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Remembers recent "replaced" (4000) closes.
#[derive(Debug, Default, Clone)]
pub struct ReplacedTracker {
    closes: VecDeque<Instant>,
}

impl ReplacedTracker {
    /// Records a close at `now`; true when the limit is reached within the window.
    pub fn record(&mut self, now: Instant) -> bool {
        self.closes.push_back(now);
        while let Some(first) = self.closes.front() {
            if now.duration_since(*first) > REPLACED_WINDOW {
                self.closes.pop_front();
            } else {
                break;
            }
        }
        self.closes.len() >= REPLACED_LIMIT
    }

    pub fn clear(&mut self) {
        self.closes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn general_backoff_doubles_from_one_second_to_a_sixty_second_cap() {
        let mut b = Backoff::general();
        let full: Vec<u64> = (0..9)
            .map(|_| b.next_delay(0.999).as_millis() as u64)
            .collect();
        assert_eq!(full[0], 999);
        assert!(full.windows(2).all(|w| w[1] >= w[0]));
        assert!(full.iter().all(|d| *d <= 60_000));
        assert!(full[8] >= 59_000);
        let mut b = Backoff::general();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay(0.5) <= Duration::from_secs(1));
    }

    #[test]
    fn held_backoff_never_goes_below_a_minute_and_caps_at_fifteen() {
        let mut b = Backoff::held();
        let d: Vec<Duration> = (0..10).map(|i| b.next_delay(f64::from(i) / 10.0)).collect();
        assert!(d.iter().all(|x| *x >= Duration::from_secs(60)));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(900)));
        assert_eq!(
            *d.last().unwrap_or(&Duration::ZERO),
            Duration::from_secs(900)
        );
        assert!(d[1] > d[0]);
    }

    #[test]
    fn three_replaced_closes_within_ten_minutes_trip_the_tracker() {
        let t0 = Instant::now();
        let mut t = ReplacedTracker::default();
        assert!(!t.record(t0));
        assert!(!t.record(t0 + Duration::from_secs(11 * 60)));
        assert!(!t.record(t0 + Duration::from_secs(12 * 60)));
        assert!(t.record(t0 + Duration::from_secs(13 * 60)));
    }
}
