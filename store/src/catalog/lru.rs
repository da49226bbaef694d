//! The catalog's last-used index: which cached instance was stored or sent longest ago,
//! for the eviction of a bounded cache (APPLIANCE.md "Disk", [`super::evict`]).
//!
//! One tree, `catalog_lru`, two kinds of keys:
//! - `t` + last-used time (big-endian `u64` ms) + SOP Instance UID → empty: the order
//!   eviction walks, oldest first, without reading any instance;
//! - `s` + SOP Instance UID → the last-used time: where an instance's `t` key is.
//!
//! Putting an instance sets its last-used time to its `stored_at_ms`, removing it removes
//! both keys, in the same transaction as the instance ([`Tx::lru_set`], [`Tx::lru_remove`]).
//! Sending bumps it ([`super::Catalog::touch_instances`]): a transaction per instance over
//! this tree and the instances, without a flush (a lost bump after a crash only makes an
//! instance look older than it is). The start-up reconciliation rebuilds missing or stale
//! entries from the instances (a store written before this index existed gets it there).

use sled::transaction::TransactionalTree;
use sled::{IVec, Transactional};

use super::tx::{Tx, TxResult};
use super::CatalogTrees;
use crate::keys::{decode_u64, u64_key};
use crate::StoreError;

const TIME: u8 = b't';
const SOP: u8 = b's';

/// The ordering key of `sop` last used at `ms`.
pub(super) fn time_key(ms: u64, sop: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + sop.len());
    key.push(TIME);
    key.extend_from_slice(&u64_key(ms));
    key.extend_from_slice(sop.as_bytes());
    key
}

/// The key holding `sop`'s last-used time.
pub(super) fn sop_key(sop: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + sop.len());
    key.push(SOP);
    key.extend_from_slice(sop.as_bytes());
    key
}

/// The prefix of every ordering key.
pub(super) fn time_prefix() -> [u8; 1] {
    [TIME]
}

/// `(last_used_ms, sop)` of an ordering key.
pub(super) fn parse_time_key(key: &[u8]) -> Option<(u64, &str)> {
    let rest = key.strip_prefix(&[TIME])?;
    if rest.len() < 8 {
        return None;
    }
    let (ms, sop) = rest.split_at(8);
    Some((decode_u64(ms)?, std::str::from_utf8(sop).ok()?))
}

/// The SOP Instance UID of a `s` key.
pub(super) fn parse_sop_key(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(&[SOP])?).ok()
}

fn set(lru: &TransactionalTree, sop: &str, ms: u64) -> TxResult<()> {
    if let Some(old) = lru.insert(sop_key(sop), &u64_key(ms)[..])? {
        if let Some(old) = decode_u64(&old) {
            lru.remove(time_key(old, sop))?;
        }
    }
    lru.insert(time_key(ms, sop), IVec::default())?;
    Ok(())
}

impl Tx<'_> {
    /// `sop` was last used at `ms` (its previous position, if any, is dropped).
    pub(super) fn lru_set(&self, sop: &str, ms: u64) -> TxResult<()> {
        set(self.lru, sop, ms)
    }

    /// `sop` leaves the index.
    pub(super) fn lru_remove(&self, sop: &str) -> TxResult<()> {
        if let Some(old) = self.lru.remove(sop_key(sop))? {
            if let Some(old) = decode_u64(&old) {
                self.lru.remove(time_key(old, sop))?;
            }
        }
        Ok(())
    }

    /// `sop`'s last-used time as of this transaction.
    pub(super) fn lru_get(&self, sop: &str) -> TxResult<Option<u64>> {
        Ok(self.lru.get(sop_key(sop))?.as_deref().and_then(decode_u64))
    }
}

impl CatalogTrees {
    /// Moves each of `sops` still cataloged to last-used `ms` (never backwards); one small
    /// transaction each, no flush. Returns how many moved.
    pub(super) fn touch(&self, sops: &[String], ms: u64) -> Result<usize, StoreError> {
        let mut moved = 0;
        for sop in sops {
            let did = (&self.instances, &self.lru).transaction(|(instances, lru)| {
                if instances.get(sop.as_bytes())?.is_none() {
                    return Ok(false);
                }
                let current = lru.get(sop_key(sop))?.as_deref().and_then(decode_u64);
                if current.is_some_and(|c| c >= ms) {
                    return Ok(false);
                }
                set(lru, sop, ms)?;
                Ok(true)
            });
            let did: Result<bool, sled::transaction::TransactionError<StoreError>> = did;
            if did? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// `sop`'s last-used time, outside any transaction.
    pub(super) fn last_used(&self, sop: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.lru.get(sop_key(sop))?.as_deref().and_then(decode_u64))
    }

    /// Up to `max` ordering entries after `after` (exclusive; `None`: from the oldest).
    pub(super) fn lru_page(
        &self,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<Vec<(Vec<u8>, u64, String)>, StoreError> {
        let prefix = time_prefix();
        let iter = match after {
            None => self.lru.scan_prefix(prefix),
            Some(key) => {
                let mut start = key.to_vec();
                start.push(0);
                self.lru.range(start..)
            }
        };
        let mut out = Vec::with_capacity(max.min(1024));
        for key in iter.keys() {
            let key = key?;
            if !key.starts_with(&prefix) {
                break;
            }
            match parse_time_key(&key) {
                Some((ms, sop)) => {
                    let sop = sop.to_owned();
                    out.push((key.to_vec(), ms, sop));
                }
                None => {
                    tracing::warn!(key = %super::record::display_key(&key), "undecodable last-used entry skipped")
                }
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_by_time_then_uid_and_parse_back() {
        let mut keys = [
            time_key(300, "1.2"),
            time_key(5, "1.9"),
            time_key(300, "1.10"),
        ];
        keys.sort();
        let parsed: Vec<(u64, &str)> = keys.iter().filter_map(|k| parse_time_key(k)).collect();
        assert_eq!(parsed, [(5, "1.9"), (300, "1.10"), (300, "1.2")]);
        assert_eq!(parse_sop_key(&sop_key("1.2.3")), Some("1.2.3"));
        assert_eq!(parse_time_key(b"t123"), None);
        assert_eq!(parse_sop_key(b"t1.2"), None);
    }
}
