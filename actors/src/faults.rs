//! Test builds only (`fault-injection`): faults a black-box test asks for with
//! a `test.*` event, consumed by the code they break. Never compiled into a
//! release.
//!
//! - `test.stall` `{"stage": "download"|"extract"|"index"}`: the next run of
//!   that dispatch stage stops making progress (it waits forever, holding no
//!   thread), so the stage watchdog has something to catch.
//! - `LAMINATE_PROXY_TEST_COMMITMENT_PAUSE_S` (environment): a node with
//!   storage commitment waits this long between its last acknowledgement and
//!   the commitment request, so a test can change the node in between.

use std::sync::Mutex;

use crate::health::lock;

static STALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The next run of `stage` stalls.
pub fn stall_next(stage: &str) {
    lock(&STALLS).push(stage.to_owned());
}

/// Whether this run of `stage` must stall (consumes the fault).
pub fn take_stall(stage: &str) -> bool {
    let mut stalls = lock(&STALLS);
    match stalls.iter().position(|s| s == stage) {
        Some(i) => {
            stalls.remove(i);
            true
        }
        None => false,
    }
}

/// Stalls forever when a test asked this stage to.
pub async fn maybe_stall(stage: &str) {
    if take_stall(stage) {
        tracing::warn!(stage, "fault injection: stage stalls");
        std::future::pending::<()>().await;
    }
}

/// The pause before each storage commitment request, when a test set one.
pub fn commitment_pause() -> Option<std::time::Duration> {
    std::env::var("LAMINATE_PROXY_TEST_COMMITMENT_PAUSE_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_taken_once_and_only_by_its_stage() {
        stall_next("unit-test-stage");
        assert!(!take_stall("another-stage"));
        assert!(take_stall("unit-test-stage"));
        assert!(!take_stall("unit-test-stage"));
    }
}
