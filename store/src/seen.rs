//! Seen events: de-duplication of incoming events by `correlation_id` (PROTOCOL.md §3).
//!
//! An event whose `correlation_id` was recorded less than [`SEEN_WINDOW_MS`] ago is a
//! duplicate: acknowledged, not acted on. Records persist across restarts; [`purge_seen`]
//! drops the expired ones.
//!
//! Tree `seen_events`: key = the correlation id (UTF-8), value = the time it was first
//! recorded, milliseconds since the Unix epoch, big-endian `u64`. A duplicate does not
//! refresh the time, so the window counts from the first delivery.
//!
//! [`purge_seen`]: SeenEvents::purge_seen

use crate::keys::{decode_u64, u64_key};
use crate::{Store, StoreError};

#[cfg(test)]
mod tests;

/// How long a `correlation_id` stays "seen": 7 days (PROTOCOL.md §3).
pub const SEEN_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;

/// The name of the sled tree holding seen ids.
pub(crate) const SEEN_TREE: &str = "seen_events";

/// De-duplication of incoming events by `correlation_id`.
pub trait SeenEvents {
    /// `true` if `id` was recorded less than [`SEEN_WINDOW_MS`] before `now_ms`.
    fn is_seen(&self, id: &str, now_ms: u64) -> Result<bool, StoreError>;

    /// Records `id` at `now_ms` and flushes, so the record is durable before the caller
    /// acknowledges the event. Returns `false` (and changes nothing) if `id` was already
    /// seen within the window.
    fn mark_seen(&self, id: &str, now_ms: u64) -> Result<bool, StoreError>;

    /// Removes the records older than the window, and records that cannot be decoded (they
    /// carry no usable time); returns how many were removed.
    fn purge_seen(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// How many ids are recorded (expired ones included until purged).
    fn seen_count(&self) -> Result<usize, StoreError>;
}

/// The trees of the seen-events area.
#[derive(Clone)]
pub(crate) struct SeenTrees {
    pub(crate) events: sled::Tree,
}

impl SeenTrees {
    pub(crate) fn open(db: &sled::Db) -> Result<SeenTrees, StoreError> {
        Ok(SeenTrees {
            events: db.open_tree(SEEN_TREE)?,
        })
    }
}

/// `true` while a record made at `recorded_ms` still counts at `now_ms`. A record from the
/// future (the clock went back) counts as just seen.
fn within_window(recorded_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(recorded_ms) < SEEN_WINDOW_MS
}

/// Decodes a stored time, or a typed error naming the id.
fn decode_time(id: &str, value: &[u8]) -> Result<u64, StoreError> {
    decode_u64(value).ok_or_else(|| {
        tracing::warn!(
            tree = SEEN_TREE,
            id,
            len = value.len(),
            "undecodable seen-event time"
        );
        StoreError::Corrupt {
            tree: SEEN_TREE,
            key: id.to_owned(),
        }
    })
}

impl SeenEvents for Store {
    fn is_seen(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        match self.seen.events.get(id.as_bytes())? {
            None => Ok(false),
            Some(value) => Ok(within_window(decode_time(id, &value)?, now_ms)),
        }
    }

    fn mark_seen(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let tree = &self.seen.events;
        // Compare-and-swap loop: two callers marking the same id at once cannot both get
        // `true`; the loser re-reads and sees the winner's record.
        loop {
            let old = tree.get(id.as_bytes())?;
            if let Some(value) = &old {
                if within_window(decode_time(id, value)?, now_ms) {
                    return Ok(false);
                }
            }
            let new = u64_key(now_ms);
            if tree
                .compare_and_swap(id.as_bytes(), old, Some(&new[..]))?
                .is_ok()
            {
                break;
            }
        }
        self.db.flush()?;
        Ok(true)
    }

    fn purge_seen(&self, now_ms: u64) -> Result<usize, StoreError> {
        let tree = &self.seen.events;
        let mut removed = 0;
        for item in tree.iter() {
            let (key, value) = item?;
            if let Some(recorded) = decode_u64(&value) {
                if within_window(recorded, now_ms) {
                    continue;
                }
            } else {
                tracing::warn!(
                    tree = SEEN_TREE,
                    id = %String::from_utf8_lossy(&key),
                    "removing undecodable seen-event record"
                );
            }
            // Only remove the value we judged: if a `mark_seen` rewrote this id meanwhile,
            // its fresh record stays.
            if tree
                .compare_and_swap(&key, Some(&value), None as Option<&[u8]>)?
                .is_ok()
            {
                removed += 1;
            }
        }
        // No flush: a purge lost in a crash is simply done again by the next one.
        if removed > 0 {
            tracing::debug!(removed, "purged seen events");
        }
        Ok(removed)
    }

    fn seen_count(&self) -> Result<usize, StoreError> {
        Ok(self.seen.events.len())
    }
}
