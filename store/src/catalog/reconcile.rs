//! Start-up reconciliation of the catalog's derived data with its instances.
//!
//! Transactions keep the indexes, aggregates and counters in step with the instances; this
//! is the safety net for what transactions cannot prevent (an abrupt stop damaging sled's
//! files, a newer or older writer). It walks every instance once, recomputes what the other
//! trees should hold and rewrites what differs:
//! - undecodable instance entries, or entries that break the record rules, are removed
//!   (their files are then found again by the storage walk and re-indexed);
//! - member keys, scan / study / patient aggregates and the counters are made to match the
//!   instances (a stored Series Number or PatientID is kept while its entry decodes: it is
//!   the most recent one put, which the instances alone cannot tell);
//! - undecodable tickets and subject links are removed; a pending mark pointing at no
//!   ticket, at a ticket that does not list its path, or at a path holding a live instance
//!   is removed; the ticket counter is moved past the last ticket;
//! - every instance gets its last-used entries (`lru.rs`) if it lacks them (last used when
//!   stored), and entries of instances that are gone, or stale ordering keys, are removed.
//!
//! Runs from [`super::repair`] before anyone else uses the store: no transactions needed.

use std::collections::{BTreeMap, BTreeSet};

use sled::IVec;

use super::record::{self, member_key, parse_member_key, patient_study_key, scan_key};
use super::record::{ScanEntry, StudyEntry};
use super::{
    check_record, lru, paths, tx, CatalogTrees, COUNTERS_TREE, FIRST_TICKET, INSTANCES_TREE,
    LRU_TREE, MEMBERS_TREE, NEXT_TICKET_KEY, PATIENTS_TREE, PATIENT_STUDIES_TREE,
    PENDING_PATHS_TREE, PENDING_TREE, SCANS_TREE, STUDIES_TREE, SUBJECTS_TREE,
};
use crate::keys::{decode_u64, display_u64_key, u64_key};
use crate::{InstanceRecord, StoreError};

/// What reconciliation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reconciled {
    /// Instance entries removed (undecodable or invalid).
    pub(super) dropped: usize,
    /// Other entries inserted, rewritten or removed.
    pub(super) fixed: usize,
}

#[derive(Default)]
struct ScanAcc {
    instances: u64,
    bytes: u64,
    /// The largest Series Number seen, used only when the stored entry is unusable.
    number: Option<i32>,
}

#[derive(Default)]
struct StudyAcc {
    instances: u64,
    bytes: u64,
    /// The first PatientID seen, used only when the stored entry is unusable.
    patient: Option<String>,
}

pub(super) fn reconcile(c: &CatalogTrees) -> Result<Reconciled, StoreError> {
    let mut out = Reconciled::default();
    let mut scans: BTreeMap<Vec<u8>, ScanAcc> = BTreeMap::new();
    let mut studies: BTreeMap<Vec<u8>, StudyAcc> = BTreeMap::new();
    let mut patient_studies: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut patients: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let (mut instances, mut bytes) = (0u64, 0u64);

    for item in c.instances.iter() {
        let (key, value) = item?;
        let rec = match record::decode::<InstanceRecord>(&value) {
            Ok(rec)
                if rec.sop_instance_uid.as_bytes() == &key[..] && check_record(&rec).is_ok() =>
            {
                rec
            }
            _ => {
                tracing::warn!(
                    tree = INSTANCES_TREE,
                    key = %record::display_key(&key),
                    "removing an undecodable or invalid catalog entry"
                );
                c.instances.remove(&key)?;
                out.dropped += 1;
                continue;
            }
        };
        out.fixed += lru_entry(c, &rec)?;
        let (study, series) = (&rec.study_instance_uid, &rec.series_instance_uid);
        let member = member_key(study, series, &rec.sop_instance_uid);
        if !c.members.contains_key(&member)? {
            c.members.insert(member, IVec::default())?;
            out.fixed += 1;
        }
        let scan = scans.entry(scan_key(study, series)).or_default();
        scan.instances += 1;
        scan.bytes = scan.bytes.saturating_add(rec.size);
        scan.number = scan.number.max(rec.series_number);
        let entry = studies.entry(study.as_bytes().to_vec()).or_default();
        entry.instances += 1;
        entry.bytes = entry.bytes.saturating_add(rec.size);
        if entry.patient.is_none() {
            entry.patient.clone_from(&rec.patient_id);
        }
        if let Some(patient) = &rec.patient_id {
            let n = patient_studies
                .entry(patient_study_key(patient, study))
                .or_default();
            if *n == 0 {
                *patients.entry(patient.as_bytes().to_vec()).or_default() += 1;
            }
            *n += 1;
        }
        instances += 1;
        bytes = bytes.saturating_add(rec.size);
    }

    // Member keys pointing at no instance, or at one that is elsewhere now.
    for key in c.members.iter().keys() {
        let key = key?;
        let keep = match parse_member_key(&key) {
            Some((study, series, sop)) => match c.instances.get(sop.as_bytes())? {
                Some(value) => record::decode::<InstanceRecord>(&value).is_ok_and(|rec| {
                    rec.study_instance_uid == study && rec.series_instance_uid == series
                }),
                None => false,
            },
            None => false,
        };
        if !keep {
            c.members.remove(&key)?;
            out.fixed += 1;
        }
    }
    if out.fixed > 0 {
        tracing::warn!(
            tree = MEMBERS_TREE,
            fixed = out.fixed,
            "catalog member index repaired"
        );
    }

    let (scan_count, study_count) = (scans.len(), studies.len());
    let mut want = BTreeMap::new();
    for (key, acc) in scans {
        let stored = c
            .scans
            .get(&key)?
            .and_then(|v| record::decode::<ScanEntry>(&v).ok());
        let entry = ScanEntry {
            series_number: stored.map_or(acc.number, |s| s.series_number),
            instances: acc.instances,
            bytes: acc.bytes,
        };
        want.insert(key, record::encode(SCANS_TREE, &entry)?);
    }
    out.fixed += sync(&c.scans, SCANS_TREE, want)?;

    let mut want = BTreeMap::new();
    for (key, acc) in studies {
        let stored = c
            .studies
            .get(&key)?
            .and_then(|v| record::decode::<StudyEntry>(&v).ok());
        let entry = StudyEntry {
            patient_id: stored.map_or(acc.patient, |s| s.patient_id),
            instances: acc.instances,
            bytes: acc.bytes,
        };
        want.insert(key, record::encode(STUDIES_TREE, &entry)?);
    }
    out.fixed += sync(&c.studies, STUDIES_TREE, want)?;

    let counts = |map: &BTreeMap<Vec<u8>, u64>| -> BTreeMap<Vec<u8>, Vec<u8>> {
        map.iter()
            .map(|(k, n)| (k.clone(), u64_key(*n).to_vec()))
            .collect()
    };
    out.fixed += sync(
        &c.patient_studies,
        PATIENT_STUDIES_TREE,
        counts(&patient_studies),
    )?;
    out.fixed += sync(&c.patients, PATIENTS_TREE, counts(&patients))?;

    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    out.fixed += sync_counters(
        c,
        [
            (tx::PATIENTS, count(patients.len())),
            (tx::SESSIONS, count(study_count)),
            (tx::SCANS, count(scan_count)),
            (tx::INSTANCES, instances),
            (tx::BYTES, bytes),
        ],
    )?;

    out.fixed += reconcile_subjects(c)?;
    out.fixed += reconcile_pending(c)?;
    out.fixed += reconcile_lru(c)?;
    Ok(out)
}

/// Gives `rec` its last-used entries if it lacks them (a store written before the index
/// existed: last used when stored); returns how many entries were written.
fn lru_entry(c: &CatalogTrees, rec: &InstanceRecord) -> Result<usize, StoreError> {
    let sop = &rec.sop_instance_uid;
    let (ms, mut fixed) = match c
        .lru
        .get(lru::sop_key(sop))?
        .as_deref()
        .and_then(decode_u64)
    {
        Some(ms) => (ms, 0),
        None => {
            c.lru
                .insert(lru::sop_key(sop), &u64_key(rec.stored_at_ms)[..])?;
            (rec.stored_at_ms, 1)
        }
    };
    let key = lru::time_key(ms, sop);
    if !c.lru.contains_key(&key)? {
        c.lru.insert(key, IVec::default())?;
        fixed += 1;
    }
    Ok(fixed)
}

/// Drops last-used entries of instances that are gone, and ordering keys that are not
/// where their instance's time says.
fn reconcile_lru(c: &CatalogTrees) -> Result<usize, StoreError> {
    let mut fixed = 0;
    for item in c.lru.iter() {
        let (key, value) = item?;
        let keep = if let Some(sop) = lru::parse_sop_key(&key) {
            decode_u64(&value).is_some() && c.instances.contains_key(sop.as_bytes())?
        } else if let Some((ms, sop)) = lru::parse_time_key(&key) {
            c.lru
                .get(lru::sop_key(sop))?
                .as_deref()
                .and_then(decode_u64)
                == Some(ms)
        } else {
            false
        };
        if !keep {
            c.lru.remove(key)?;
            fixed += 1;
        }
    }
    if fixed > 0 {
        tracing::warn!(tree = LRU_TREE, fixed, "catalog last-used index repaired");
    }
    Ok(fixed)
}

/// Makes `tree` hold exactly `want`; returns how many entries changed.
fn sync(
    tree: &sled::Tree,
    name: &'static str,
    mut want: BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<usize, StoreError> {
    let mut fixed = 0;
    for item in tree.iter() {
        let (key, value) = item?;
        match want.remove(&key[..]) {
            Some(wanted) if wanted == value[..] => {}
            Some(wanted) => {
                tree.insert(key, wanted)?;
                fixed += 1;
            }
            None => {
                tree.remove(key)?;
                fixed += 1;
            }
        }
    }
    for (key, wanted) in want {
        tree.insert(key, wanted)?;
        fixed += 1;
    }
    if fixed > 0 {
        tracing::warn!(tree = name, fixed, "catalog aggregates repaired");
    }
    Ok(fixed)
}

/// Makes each counter hold its recounted value (an absent counter reads as zero).
fn sync_counters(c: &CatalogTrees, want: [(&[u8], u64); 5]) -> Result<usize, StoreError> {
    let mut fixed = 0;
    for (key, n) in want {
        let stored = c.counters.get(key)?;
        let current = match &stored {
            None => Some(0),
            Some(value) => decode_u64(value),
        };
        if current != Some(n) {
            c.counters.insert(key, &u64_key(n)[..])?;
            fixed += 1;
        }
    }
    if fixed > 0 {
        tracing::warn!(tree = COUNTERS_TREE, fixed, "catalog counters repaired");
    }
    Ok(fixed)
}

fn reconcile_subjects(c: &CatalogTrees) -> Result<usize, StoreError> {
    let mut fixed = 0;
    for item in c.subjects.iter() {
        let (key, value) = item?;
        if std::str::from_utf8(&value).is_err() {
            tracing::warn!(tree = SUBJECTS_TREE, key = %record::display_key(&key), "removing an undecodable subject link");
            c.subjects.remove(key)?;
            fixed += 1;
        }
    }
    Ok(fixed)
}

fn reconcile_pending(c: &CatalogTrees) -> Result<usize, StoreError> {
    let mut fixed = 0;
    let mut tickets: BTreeMap<IVec, BTreeSet<String>> = BTreeMap::new();
    for item in c.pending.iter() {
        let (key, value) = item?;
        match (decode_u64(&key), record::decode::<Vec<String>>(&value)) {
            (Some(_), Ok(paths)) => {
                tickets.insert(key, paths.into_iter().collect());
            }
            _ => {
                // Its files cannot be named any more; if any remain, the storage walk
                // re-indexes them (they are valid DICOM, just no longer wanted).
                tracing::warn!(tree = PENDING_TREE, key = %display_u64_key(&key), "removing an undecodable pending deletion");
                c.pending.remove(key)?;
                fixed += 1;
            }
        }
    }
    for item in c.pending_paths.iter() {
        let (path, ticket) = item?;
        let listed = tickets
            .get(&ticket)
            .is_some_and(|paths| std::str::from_utf8(&path).is_ok_and(|p| paths.contains(p)));
        let live = match std::str::from_utf8(&path)
            .ok()
            .and_then(paths::parse_instance_rel_path)
        {
            Some((_, _, sop)) => c.instances.get(sop.as_bytes())?.is_some_and(|value| {
                record::decode::<InstanceRecord>(&value)
                    .is_ok_and(|rec| rec.path.as_bytes() == &path[..])
            }),
            None => false,
        };
        if !listed || live {
            c.pending_paths.remove(path)?;
            fixed += 1;
        }
    }
    let floor = tickets
        .keys()
        .filter_map(|k| decode_u64(k))
        .max()
        .map_or(FIRST_TICKET, |t| t.saturating_add(1));
    let current = c.meta.get(NEXT_TICKET_KEY)?.as_deref().and_then(decode_u64);
    if current.is_none_or(|next| next < floor || next == u64::MAX) {
        if current.is_some() || !tickets.is_empty() {
            tracing::warn!(?current, floor, "catalog ticket counter repaired");
            fixed += 1;
        }
        c.meta.insert(NEXT_TICKET_KEY, &u64_key(floor)[..])?;
    }
    if fixed > 0 {
        tracing::warn!(
            tree = PENDING_PATHS_TREE,
            fixed,
            "catalog pending deletions repaired"
        );
    }
    Ok(fixed)
}
