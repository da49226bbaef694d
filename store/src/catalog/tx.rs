//! Index maintenance inside one catalog transaction.
//!
//! Every write to the catalog goes through [`Tx`]: the instance, its member key, the
//! aggregates of its series, study and patient, the counters, the pending file deletions.
//! sled may run a transaction's closure more than once, so nothing here has a side effect
//! outside the transaction: what happened is collected in [`Effects`] and returned.
//!
//! Aggregates are counts, so "is this series / study / patient now empty?" is a read, not
//! an iteration (sled transactions cannot iterate). A missing aggregate while removing is
//! tolerated (saturating arithmetic); the start-up reconciliation (`reconcile.rs`) puts
//! derived data right again.

use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::IVec;

use super::record::{self, member_key, patient_study_key, scan_key, ScanEntry, StudyEntry};
use super::{
    COUNTERS_TREE, FIRST_TICKET, INSTANCES_TREE, NEXT_TICKET_KEY, PATIENTS_TREE,
    PATIENT_STUDIES_TREE, PENDING_TREE, SCANS_TREE, STUDIES_TREE,
};
use crate::keys::{decode_u64, u64_key};
use crate::outbox::META_TREE;
use crate::{InstanceRecord, StoreError};

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Keys of the counters in tree `catalog_counters`.
pub(super) const PATIENTS: &[u8] = b"patients";
pub(super) const SESSIONS: &[u8] = b"sessions";
pub(super) const SCANS: &[u8] = b"scans";
pub(super) const INSTANCES: &[u8] = b"instances";
pub(super) const BYTES: &[u8] = b"bytes";

pub(super) fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

fn corrupt(tree: &'static str, key: &[u8]) -> ConflictableTransactionError<StoreError> {
    abort(StoreError::Corrupt {
        tree,
        key: record::display_key(key),
    })
}

/// The catalog's trees inside one transaction.
pub(super) struct Tx<'a> {
    pub(super) instances: &'a TransactionalTree,
    pub(super) members: &'a TransactionalTree,
    pub(super) scans: &'a TransactionalTree,
    pub(super) studies: &'a TransactionalTree,
    pub(super) patient_studies: &'a TransactionalTree,
    pub(super) patients: &'a TransactionalTree,
    pub(super) subjects: &'a TransactionalTree,
    pub(super) counters: &'a TransactionalTree,
    pub(super) pending: &'a TransactionalTree,
    pub(super) pending_paths: &'a TransactionalTree,
    pub(super) lru: &'a TransactionalTree,
    pub(super) meta: &'a TransactionalTree,
}

/// What a transaction did so far: counter changes, and the patients whose last study went.
#[derive(Debug, Default)]
pub(super) struct Effects {
    patients: i128,
    sessions: i128,
    scans: i128,
    instances: i128,
    bytes: i128,
    emptied_patients: Vec<String>,
}

fn get_value<T: DeserializeOwned>(
    tree: &TransactionalTree,
    name: &'static str,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(value) => record::decode(&value)
            .map(Some)
            .map_err(|_| corrupt(name, key)),
    }
}

fn get_count(tree: &TransactionalTree, name: &'static str, key: &[u8]) -> TxResult<Option<u64>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(value) => decode_u64(&value)
            .map(Some)
            .ok_or_else(|| corrupt(name, key)),
    }
}

fn put_value<T: serde::Serialize>(
    tree: &TransactionalTree,
    name: &'static str,
    key: Vec<u8>,
    value: &T,
) -> TxResult<()> {
    tree.insert(key, record::encode(name, value).map_err(abort)?)?;
    Ok(())
}

impl Tx<'_> {
    pub(super) fn get_instance(&self, sop: &str) -> TxResult<Option<InstanceRecord>> {
        get_value(self.instances, INSTANCES_TREE, sop.as_bytes())
    }

    /// Stores `rec` (already encoded as `value`) and adds it to every index. The caller has
    /// removed any previous record with the same SOP Instance UID.
    pub(super) fn insert(
        &self,
        rec: &InstanceRecord,
        value: &IVec,
        fx: &mut Effects,
    ) -> TxResult<()> {
        let (study, series) = (&rec.study_instance_uid, &rec.series_instance_uid);
        self.instances
            .insert(rec.sop_instance_uid.as_bytes(), value.clone())?;
        self.members.insert(
            member_key(study, series, &rec.sop_instance_uid),
            IVec::default(),
        )?;
        self.lru_set(&rec.sop_instance_uid, rec.stored_at_ms)?;

        let key = scan_key(study, series);
        let scan = match get_value::<ScanEntry>(self.scans, SCANS_TREE, &key)? {
            Some(mut scan) => {
                scan.instances = scan.instances.saturating_add(1);
                scan.bytes = scan.bytes.saturating_add(rec.size);
                scan.series_number = rec.series_number.or(scan.series_number);
                scan
            }
            None => {
                fx.scans += 1;
                ScanEntry {
                    series_number: rec.series_number,
                    instances: 1,
                    bytes: rec.size,
                }
            }
        };
        put_value(self.scans, SCANS_TREE, key, &scan)?;

        let key = study.as_bytes();
        let entry = match get_value::<StudyEntry>(self.studies, STUDIES_TREE, key)? {
            Some(mut entry) => {
                entry.instances = entry.instances.saturating_add(1);
                entry.bytes = entry.bytes.saturating_add(rec.size);
                entry.patient_id = rec.patient_id.clone().or(entry.patient_id);
                entry
            }
            None => {
                fx.sessions += 1;
                StudyEntry {
                    patient_id: rec.patient_id.clone(),
                    instances: 1,
                    bytes: rec.size,
                }
            }
        };
        put_value(self.studies, STUDIES_TREE, key.to_vec(), &entry)?;

        if let Some(patient) = &rec.patient_id {
            let key = patient_study_key(patient, study);
            let n = get_count(self.patient_studies, PATIENT_STUDIES_TREE, &key)?.unwrap_or(0);
            if n == 0 {
                // A new study for this patient.
                let studies =
                    get_count(self.patients, PATIENTS_TREE, patient.as_bytes())?.unwrap_or(0);
                if studies == 0 {
                    fx.patients += 1;
                }
                self.patients
                    .insert(patient.as_bytes(), &u64_key(studies.saturating_add(1))[..])?;
            }
            self.patient_studies
                .insert(key, &u64_key(n.saturating_add(1))[..])?;
        }
        fx.instances += 1;
        fx.bytes += i128::from(rec.size);
        Ok(())
    }

    /// Removes `rec`'s instance entry and its index entries; a series, study or patient
    /// entry left with no instance is removed too.
    pub(super) fn remove(&self, rec: &InstanceRecord, fx: &mut Effects) -> TxResult<()> {
        let (study, series) = (&rec.study_instance_uid, &rec.series_instance_uid);
        self.instances.remove(rec.sop_instance_uid.as_bytes())?;
        self.members
            .remove(member_key(study, series, &rec.sop_instance_uid))?;
        self.lru_remove(&rec.sop_instance_uid)?;

        let key = scan_key(study, series);
        if let Some(mut scan) = get_value::<ScanEntry>(self.scans, SCANS_TREE, &key)? {
            scan.instances = scan.instances.saturating_sub(1);
            scan.bytes = scan.bytes.saturating_sub(rec.size);
            if scan.instances == 0 {
                self.scans.remove(key)?;
                fx.scans -= 1;
            } else {
                put_value(self.scans, SCANS_TREE, key, &scan)?;
            }
        }

        let key = study.as_bytes();
        if let Some(mut entry) = get_value::<StudyEntry>(self.studies, STUDIES_TREE, key)? {
            entry.instances = entry.instances.saturating_sub(1);
            entry.bytes = entry.bytes.saturating_sub(rec.size);
            if entry.instances == 0 {
                self.studies.remove(key)?;
                fx.sessions -= 1;
            } else {
                put_value(self.studies, STUDIES_TREE, key.to_vec(), &entry)?;
            }
        }

        if let Some(patient) = &rec.patient_id {
            let key = patient_study_key(patient, study);
            match get_count(self.patient_studies, PATIENT_STUDIES_TREE, &key)? {
                Some(n) if n > 1 => {
                    self.patient_studies.insert(key, &u64_key(n - 1)[..])?;
                }
                Some(_) => {
                    // The patient's last instance in this study.
                    self.patient_studies.remove(key)?;
                    match get_count(self.patients, PATIENTS_TREE, patient.as_bytes())? {
                        Some(studies) if studies > 1 => {
                            self.patients
                                .insert(patient.as_bytes(), &u64_key(studies - 1)[..])?;
                        }
                        Some(_) => {
                            self.patients.remove(patient.as_bytes())?;
                            fx.patients -= 1;
                            fx.emptied_patients.push(patient.clone());
                        }
                        None => {}
                    }
                }
                None => {}
            }
        }
        fx.instances -= 1;
        fx.bytes -= i128::from(rec.size);
        Ok(())
    }

    /// Applies the counter changes collected in `fx` (never below zero).
    pub(super) fn apply_counters(&self, fx: &Effects) -> TxResult<()> {
        let changes = [
            (PATIENTS, fx.patients),
            (SESSIONS, fx.sessions),
            (SCANS, fx.scans),
            (INSTANCES, fx.instances),
            (BYTES, fx.bytes),
        ];
        for (key, delta) in changes {
            if delta == 0 {
                continue;
            }
            let current = get_count(self.counters, COUNTERS_TREE, key)?.unwrap_or(0);
            let new = u64::try_from((i128::from(current) + delta).max(0)).unwrap_or(u64::MAX);
            self.counters.insert(key, &u64_key(new)[..])?;
        }
        Ok(())
    }

    /// Records `paths` as a pending file deletion under a new ticket.
    pub(super) fn queue_deletion(&self, paths: &[String]) -> TxResult<u64> {
        let ticket = match self.meta.get(NEXT_TICKET_KEY)? {
            None => FIRST_TICKET,
            Some(value) => decode_u64(&value)
                .filter(|t| (FIRST_TICKET..u64::MAX).contains(t))
                .ok_or_else(|| corrupt(META_TREE, NEXT_TICKET_KEY))?,
        };
        put_value(self.pending, PENDING_TREE, u64_key(ticket).to_vec(), &paths)?;
        for path in paths {
            self.pending_paths
                .insert(path.as_bytes(), &u64_key(ticket)[..])?;
        }
        self.meta
            .insert(NEXT_TICKET_KEY, &u64_key(ticket + 1)[..])?;
        Ok(ticket)
    }

    /// `path` holds a live instance again: whatever ticket listed it must not unlink it.
    pub(super) fn revive(&self, path: &str) -> TxResult<()> {
        self.pending_paths.remove(path.as_bytes())?;
        Ok(())
    }

    /// Forgets `ticket` and the pending marks that point at it; `false` if unknown. An
    /// undecodable ticket is removed all the same (its marks are left to the start-up
    /// reconciliation, which drops marks pointing at no ticket).
    pub(super) fn complete(&self, ticket: u64) -> TxResult<bool> {
        let key = u64_key(ticket);
        let Some(value) = self.pending.remove(&key[..])? else {
            return Ok(false);
        };
        if let Ok(paths) = record::decode::<Vec<String>>(&value) {
            for path in paths {
                if self.pending_paths.get(path.as_bytes())?.as_deref() == Some(&key[..]) {
                    self.pending_paths.remove(path.as_bytes())?;
                }
            }
        }
        Ok(true)
    }

    /// Drops the subject link of every patient whose last study went in this transaction;
    /// returns those patients, sorted.
    pub(super) fn drop_emptied_subjects(&self, fx: &Effects) -> TxResult<Vec<String>> {
        let mut emptied = fx.emptied_patients.clone();
        emptied.sort();
        emptied.dedup();
        let mut dropped = Vec::new();
        for patient in emptied {
            // Still empty at the end (a replacement may have re-added it).
            if self.patients.get(patient.as_bytes())?.is_none() {
                self.subjects.remove(patient.as_bytes())?;
                dropped.push(patient);
            }
        }
        Ok(dropped)
    }
}
