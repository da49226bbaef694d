//! Reading the journal a page at a time, newest first ([`Journal::journal_page`]), and
//! the active dispatches alone, from the indexes of `index.rs`.
//!
//! [`Journal::journal_page`]: super::Journal::journal_page

use std::fmt;
use std::ops::Bound;
use std::str::FromStr;

use super::index::{split_time_key, state_byte, state_key, time_key};
use super::{DispatchRecord, DispatchState, Journal};
use crate::{Store, StoreError};

/// Where a page ended: the next page holds the dispatches created before it. Shown to
/// clients as an opaque string (hex of the index key), parsed back by [`FromStr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalCursor {
    pub created_at_ms: u64,
    pub id: String,
}

impl JournalCursor {
    pub fn of(rec: &DispatchRecord) -> JournalCursor {
        JournalCursor {
            created_at_ms: rec.created_at_ms,
            id: rec.id.clone(),
        }
    }
}

impl fmt::Display for JournalCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in time_key(self.created_at_ms, &self.id) {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A string that is not a cursor this store handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a dispatch list cursor")]
pub struct BadCursor;

impl FromStr for JournalCursor {
    type Err = BadCursor;
    fn from_str(s: &str) -> Result<Self, BadCursor> {
        if !s.len().is_multiple_of(2) || !s.is_ascii() {
            return Err(BadCursor);
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| BadCursor))
            .collect::<Result<Vec<u8>, BadCursor>>()?;
        let (created_at_ms, id) = split_time_key(&bytes).ok_or(BadCursor)?;
        Ok(JournalCursor { created_at_ms, id })
    }
}

/// One page of dispatches, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalPage {
    pub records: Vec<DispatchRecord>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<JournalCursor>,
}

/// Counts of dispatches by overall state, kept with every journal write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchCounts {
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

pub(crate) fn page(
    store: &Store,
    state: Option<DispatchState>,
    before: Option<&JournalCursor>,
    limit: usize,
) -> Result<JournalPage, StoreError> {
    let t = &store.journal;
    let (tree, prefix) = match state {
        None => (&t.by_created, Vec::new()),
        Some(s) => (&t.by_state, vec![state_byte(s)]),
    };
    let upper = match (before, state) {
        (Some(c), None) => Bound::Excluded(time_key(c.created_at_ms, &c.id)),
        (Some(c), Some(s)) => Bound::Excluded(state_key(s, c.created_at_ms, &c.id)),
        (None, None) => Bound::Unbounded,
        (None, Some(s)) => Bound::Excluded(vec![state_byte(s) + 1]),
    };
    let mut keys = tree
        .range::<Vec<u8>, _>((Bound::Included(prefix.clone()), upper))
        .keys()
        .rev();
    let mut records = Vec::new();
    let mut next = None;
    for k in keys.by_ref() {
        let k = k?;
        if records.len() == limit {
            next = records.last().map(JournalCursor::of);
            break;
        }
        let Some((created, id)) = split_time_key(&k[prefix.len()..]) else {
            continue;
        };
        match store.journal_get(&id)? {
            Some(rec) if rec.created_at_ms == created && state.is_none_or(|s| rec.state() == s) => {
                records.push(rec)
            }
            // A stale key (see `index.rs`): not shown.
            _ => {}
        }
    }
    Ok(JournalPage { records, next })
}

pub(crate) fn active(store: &Store) -> Result<Vec<DispatchRecord>, StoreError> {
    let mut out = Vec::new();
    for k in store
        .journal
        .by_state
        .scan_prefix([state_byte(DispatchState::Active)])
        .keys()
    {
        let k = k?;
        let Some((_, id)) = split_time_key(&k[1..]) else {
            continue;
        };
        if let Some(rec) = store.journal_get(&id)? {
            if rec.state() == DispatchState::Active {
                out.push(rec);
            }
        }
    }
    out.sort_by_key(|r| r.seq);
    Ok(out)
}
