//! The retry policy of a dispatch (PROTOCOL.md §4 `retrying`): first retry after
//! 2 s, doubling, capped at `node_retry_max_backoff_s`, at most
//! `node_retry_max_attempts` tries in a row; the count resets whenever an
//! instance is acknowledged.

use std::time::Duration;

const FIRST: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_backoff: Duration,
    /// How long a node whose tries were used up stays parked (`park_hours`; zero: never).
    pub park: Duration,
}

/// Failures in a row and what comes next.
#[derive(Debug, Clone, Default)]
pub struct Retries {
    failures: u32,
}

impl Retries {
    /// A failure happened: `Some(delay)` before the next try, or `None` when the
    /// tries are used up.
    pub fn next(&mut self, policy: &RetryPolicy) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.failures > policy.max_attempts {
            return None;
        }
        let exp = FIRST.saturating_mul(1u32 << (self.failures - 1).min(20));
        Some(exp.min(policy.max_backoff))
    }

    /// Progress was made (an instance acknowledged).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_seconds_doubling_capped_and_bounded() {
        let p = RetryPolicy {
            max_attempts: 4,
            max_backoff: Duration::from_secs(5),
            park: Duration::ZERO,
        };
        let mut r = Retries::default();
        let d: Vec<Option<u64>> = (0..5).map(|_| r.next(&p).map(|d| d.as_secs())).collect();
        assert_eq!(d, [Some(2), Some(4), Some(5), Some(5), None]);
        r.reset();
        assert_eq!(r.next(&p), Some(Duration::from_secs(2)));
    }

    #[test]
    fn zero_attempts_means_no_retry() {
        let p = RetryPolicy {
            max_attempts: 0,
            max_backoff: Duration::from_secs(300),
            park: Duration::ZERO,
        };
        assert_eq!(Retries::default().next(&p), None);
    }
}
