//! Start-up repair of the outbox's derived data: the newest-entry-per-key index is rebuilt
//! from the entries, and the sequence counter is moved past the last entry if it is
//! missing, unreadable or behind. Runs in [`super::OutboxTrees::open`], before anyone else
//! can use the store, so it needs no transaction.
//!
//! Undecodable entries are left in place (counted and logged): `outbox_pending` reports
//! them as [`crate::StoreError::Corrupt`] and the caller decides.

use std::collections::HashMap;

use sled::IVec;

use super::{record, OutboxTrees, FIRST_SEQ, NEXT_SEQ_KEY, OUTBOX_TREE};
use crate::keys::{decode_u64, u64_key};
use crate::StoreError;

pub(crate) fn repair(trees: &OutboxTrees) -> Result<(), StoreError> {
    // The index as the entries say it should be, and the last sequence number in use.
    let mut expected: HashMap<IVec, IVec> = HashMap::new();
    let mut last_seq = None;
    let mut undecodable = 0usize;
    for item in trees.entries.iter() {
        let (key, value) = item?;
        let Some(seq) = decode_u64(&key) else {
            undecodable += 1;
            continue;
        };
        last_seq = Some(seq);
        match record::decode(seq, &value) {
            Ok(entry) => {
                if let Some(ck) = entry.coalesce_key {
                    expected.insert(IVec::from(ck.as_bytes()), key);
                }
            }
            Err(_) => undecodable += 1,
        }
    }
    if undecodable > 0 {
        tracing::warn!(
            tree = OUTBOX_TREE,
            undecodable,
            "outbox has undecodable entries"
        );
    }

    let mut fixed = 0usize;
    for item in trees.newest.iter() {
        let (key, value) = item?;
        match expected.remove(&key) {
            Some(want) if want == value => {}
            Some(want) => {
                trees.newest.insert(key, want)?;
                fixed += 1;
            }
            // Points at nothing pending (delivered, or stray): not needed.
            None => {
                trees.newest.remove(key)?;
                fixed += 1;
            }
        }
    }
    for (key, want) in expected {
        trees.newest.insert(key, want)?;
        fixed += 1;
    }

    let floor = last_seq.map_or(FIRST_SEQ, |seq| seq.saturating_add(1));
    let stored = trees.meta.get(NEXT_SEQ_KEY)?;
    let current = stored.as_deref().and_then(decode_u64);
    let mut counter_written = false;
    if current.is_none_or(|next| next < floor) {
        // Absent on a fresh store; anything else here means damage.
        if stored.is_some() || last_seq.is_some() {
            tracing::warn!(?current, floor, "outbox sequence counter repaired");
        }
        trees.meta.insert(NEXT_SEQ_KEY, &u64_key(floor)[..])?;
        counter_written = true;
    }

    if fixed > 0 {
        tracing::warn!(fixed, "outbox coalescing index repaired at start-up");
    }
    if fixed > 0 || counter_written {
        trees.entries.flush()?;
    }
    Ok(())
}
