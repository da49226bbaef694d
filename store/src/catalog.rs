//! The catalog: the local DICOM cache's index (APPLIANCE.md "The local store").
//!
//! Patient ↔ session (study, by StudyInstanceUID) ↔ scan (series: Series Number and
//! SeriesInstanceUID) ↔ instance (SOP Instance UID, file, size). The files under
//! `{data_dir}/storage/{study}/{series}/{sop}.dcm` are the source of truth; the catalog is
//! rebuildable from them ([`repair`], [`rebuild_catalog`]).
//!
//! Every change is one sled transaction over all the trees below (an instance and its
//! indexes; a deletion and its cascade and its pending file deletion), flushed before the
//! call returns. Nothing is iterated inside a transaction: the keys a deletion needs are
//! read before it, and each record is checked again inside it.
//!
//! Trees (keys join UIDs with `\0`; values are a version byte + JSON, see `record.rs`):
//! - `catalog_instances`: SOP Instance UID → [`InstanceRecord`].
//! - `catalog_series_members`: `{study}\0{series}\0{sop}` → empty. Lists a study's or a
//!   series' instances by prefix, without walking every instance.
//! - `catalog_scans`: `{study}\0{series}` → Series Number, instance count, bytes.
//! - `catalog_studies`: study → PatientID, instance count, bytes.
//! - `catalog_patient_studies`: `{patient}\0{study}` → instances of that patient in that
//!   study; `catalog_patients`: patient → how many studies. "Is this empty now?" is a
//!   read, so a transaction can remove what its removals emptied.
//! - `catalog_subjects`: PatientID → Laminate subject id (the patient mapping).
//! - `catalog_counters`: `patients`, `sessions`, `scans`, `instances`, `bytes` (big-endian
//!   `u64`), maintained in every transaction, so [`Catalog::figures`] reads five values.
//! - `catalog_pending_deletions`: ticket (big-endian `u64`) → relative paths whose files
//!   are to be unlinked; `catalog_pending_paths`: path → ticket, the mark that the file at
//!   that path may still be unlinked. Putting an instance at a path removes the mark, so a
//!   path is never both live and pending.
//! - `catalog_lru`: the last-used index (`lru.rs`): instances by the time they were last
//!   stored or sent, oldest first, for [`evict`].
//! - `meta`, key `catalog.next_ticket`: the next ticket (never reused, survives
//!   [`rebuild_catalog`]).
//!
//! Deletion rules (decided here, relied on by callers):
//! - A scan (series) entry exists while it has an instance; a session (study) entry while
//!   it has one; removing the last instance of a series removes the series, the last
//!   series of a study removes the study, and the last study of a patient removes the
//!   patient entry. This holds for every removal ([`Catalog::remove_instance`],
//!   [`Catalog::delete_study`], [`Catalog::delete_series_by_number`], replacements).
//! - The patient mapping (subject link) is backend knowledge and is dropped only by the
//!   backend's deletions: [`Catalog::delete_study`] and [`Catalog::delete_series_by_number`]
//!   drop it when they remove the patient's last study. Removing instances otherwise
//!   (repair, [`Catalog::remove_instance`]) keeps it; a mapping may also exist before any
//!   instance of its patient arrives.
//! - A record's path must be exactly [`instance_rel_path`] of its UIDs.
//!
//! Files are never touched by the trait's methods: a removal records its files under a
//! ticket; the caller unlinks them ([`finish_file_deletion`]) and completes the ticket; a
//! crash in between is finished by [`repair`] at start-up. The caller serializes writes
//! and deletions of files under `storage/` (one owner), since a ticket may list a path
//! that is written again before it is unlinked.

use sled::{IVec, Transactional};

use crate::keys::{decode_u64, display_u64_key, u64_key};
use crate::{Store, StoreError};

mod audit;
mod evict;
mod for_store;
mod lookup;
mod lru;
mod paths;
mod reconcile;
mod record;
mod repair;
mod tx;

#[cfg(test)]
mod evict_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod repair_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use audit::{audit, AuditReport};
pub use evict::{evict, EvictionGoal, EvictionReport, Keep};
pub use paths::{instance_rel_path, is_valid_uid, MAX_UID_LEN, PART_SUFFIX, STORAGE_DIR};
pub use repair::{finish_file_deletion, rebuild_catalog, repair, RepairReport};

use record::{parse_member_key, parse_scan_key, ScanEntry, StudyEntry};
use tx::{Effects, Tx, TxResult};

pub(crate) const INSTANCES_TREE: &str = "catalog_instances";
pub(crate) const MEMBERS_TREE: &str = "catalog_series_members";
pub(crate) const SCANS_TREE: &str = "catalog_scans";
pub(crate) const STUDIES_TREE: &str = "catalog_studies";
pub(crate) const PATIENT_STUDIES_TREE: &str = "catalog_patient_studies";
pub(crate) const PATIENTS_TREE: &str = "catalog_patients";
pub(crate) const SUBJECTS_TREE: &str = "catalog_subjects";
pub(crate) const COUNTERS_TREE: &str = "catalog_counters";
pub(crate) const PENDING_TREE: &str = "catalog_pending_deletions";
pub(crate) const PENDING_PATHS_TREE: &str = "catalog_pending_paths";
pub(crate) const LRU_TREE: &str = "catalog_lru";
/// The key of the next ticket in the `meta` tree.
pub(crate) const NEXT_TICKET_KEY: &[u8] = b"catalog.next_ticket";
/// The first ticket handed out.
pub(crate) const FIRST_TICKET: u64 = 1;
/// The ticket of a [`Deletion`] that removed nothing (there is nothing to complete;
/// completing it is a no-op).
pub const NO_TICKET: u64 = 0;

/// Where a cached instance came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InstanceSource {
    /// Received by the ingest SCP (C-STORE from a modality or PACS).
    Ingest,
    /// Downloaded for a dispatch.
    Dispatch,
}

/// One cached instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceRecord {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub series_number: Option<i32>,
    pub patient_id: Option<String>,
    /// path relative to the data dir, e.g. "storage/{study}/{series}/{sop}.dcm"; must be
    /// exactly [`instance_rel_path`] of the record's UIDs.
    pub path: String,
    /// The file's size in bytes.
    pub size: u64,
    pub source: InstanceSource,
    /// When it was stored, milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
}

/// One scan (series) of a session, as listed by [`Catalog::sessions`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanSummary {
    /// The Series Number: the most recent one put among the series' instances.
    pub scan_number: Option<i32>,
    pub series_instance_uid: String,
    pub instances: u64,
    pub bytes: u64,
}

/// One session (study), as listed by [`Catalog::sessions`] (the `/api/sessions` shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSummary {
    pub study_instance_uid: String,
    /// The PatientID: the most recent one put among the study's instances.
    pub patient_id: Option<String>,
    /// The Laminate subject linked to that patient, if known.
    pub subject_id: Option<String>,
    pub instances: u64,
    pub bytes: u64,
    /// Sorted by Series Number (unnumbered last), then by UID.
    pub scans: Vec<ScanSummary>,
}

/// Totals of the catalog (the status page's "store" figures).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreFigures {
    /// Distinct PatientIDs with at least one session.
    pub patients: u64,
    pub sessions: u64,
    pub scans: u64,
    pub instances: u64,
    pub bytes: u64,
}

/// What a deletion removed from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The removed records; their files are pending deletion under `ticket`.
    pub removed: Vec<InstanceRecord>,
    /// The patient whose last study went with this deletion: its entry and its subject
    /// link (if any) were removed. If several did (instances disagreeing on PatientID),
    /// the first in sort order; all were dropped.
    pub patient_mapping_dropped: Option<String>,
    /// The pending file deletion to complete once the files are gone; [`NO_TICKET`] when
    /// nothing was removed.
    pub ticket: u64,
}

impl Deletion {
    fn nothing() -> Deletion {
        Deletion {
            removed: Vec::new(),
            patient_mapping_dropped: None,
            ticket: NO_TICKET,
        }
    }
}

/// The catalog of the local DICOM cache. Every method that changes something is one
/// transaction and flushes before returning. Lookups by a string that is not a valid UID
/// find nothing (such a UID is never stored).
pub trait Catalog {
    /// One transaction: the instance and every index (study→series→instances,
    /// patient→studies, counters). Same SOP Instance UID again replaces the old record
    /// (returned) — indexes moved if study/series changed; the old file, if its path
    /// differs, becomes a pending file deletion. A pending deletion mark on `rec.path` is
    /// lifted (the file there is live again). Refused with [`StoreError::InvalidUid`] /
    /// [`StoreError::InvalidRecord`] unless the UIDs are valid and `rec.path` is
    /// [`instance_rel_path`] of them. Flushes before returning.
    fn put_instance(&self, rec: &InstanceRecord) -> Result<Option<InstanceRecord>, StoreError>;

    /// [`Catalog::put_instance`] for many records, each its own transaction, with a
    /// flush every [`PUT_FLUSH_EVERY`] records and at the end (a dispatch indexes a
    /// whole archive at once). One result per record, in order; `Err` only when a
    /// flush failed, and then nothing of the batch may be taken as durable.
    #[allow(clippy::type_complexity)]
    fn put_instances(
        &self,
        recs: &[InstanceRecord],
    ) -> Result<Vec<Result<Option<InstanceRecord>, StoreError>>, StoreError>;

    fn get_instance(&self, sop_instance_uid: &str) -> Result<Option<InstanceRecord>, StoreError>;

    /// Removes one instance and its indexes (empty series/study/patient entries too; the
    /// subject link stays); its file becomes a pending file deletion (see
    /// [`Catalog::delete_instance`] for the ticket). Flushes.
    fn remove_instance(&self, sop_instance_uid: &str)
        -> Result<Option<InstanceRecord>, StoreError>;

    /// [`Catalog::remove_instance`], returning the ticket of the file's pending deletion.
    fn delete_instance(&self, sop_instance_uid: &str) -> Result<Deletion, StoreError>;

    /// The study's instances, by series UID then SOP Instance UID.
    fn instances_of_study(&self, study_uid: &str) -> Result<Vec<InstanceRecord>, StoreError>;

    /// The series' instances, by SOP Instance UID.
    fn instances_of_series(
        &self,
        study_uid: &str,
        series_instance_uid: &str,
    ) -> Result<Vec<InstanceRecord>, StoreError>;

    /// `session.deleted`: in one transaction remove the study, its series, its instances,
    /// and the patient entry and mapping of a patient left with no study; the removed files
    /// become a pending file deletion under a new ticket (returned). Unknown study → `Ok`
    /// with empty `removed` and [`NO_TICKET`]. Flushes.
    fn delete_study(&self, study_uid: &str) -> Result<Deletion, StoreError>;

    /// `scan.deleted`: every series of the study whose Series Number is `series_number`
    /// (several may share one), same rules as [`Catalog::delete_study`]: the study entry
    /// goes with its last series, the patient entry and mapping with its last study.
    /// No such series → `Ok` with empty `removed` and [`NO_TICKET`]. Flushes.
    fn delete_series_by_number(
        &self,
        study_uid: &str,
        series_number: i32,
    ) -> Result<Deletion, StoreError>;

    /// The caller deleted the files of this ticket: forget it (unknown ticket: no-op).
    /// Flushes.
    fn complete_file_deletion(&self, ticket: u64) -> Result<(), StoreError>;

    /// Tickets whose files may still exist (crash between commit and unlink), oldest
    /// first, each with the relative paths still marked pending (a path put again since is
    /// left out; the list may then be empty).
    fn pending_file_deletions(&self) -> Result<Vec<(u64, Vec<String>)>, StoreError>;

    /// Patient mapping: local PatientID → Laminate subject id (from dispatches). Flushes.
    fn link_subject(&self, patient_id: &str, subject_id: &str) -> Result<(), StoreError>;

    fn subject_of(&self, patient_id: &str) -> Result<Option<String>, StoreError>;

    /// Every session, sorted by study UID; scans by number (unnumbered last), then UID.
    /// Reads the study and series aggregates only, never the instances.
    fn sessions(&self) -> Result<Vec<SessionSummary>, StoreError>;

    /// Totals, from counters maintained by every transaction (five reads).
    fn figures(&self) -> Result<StoreFigures, StoreError>;

    /// Every instance, by SOP Instance UID (for repair and checks; walks everything).
    fn all_instances(&self) -> Result<Vec<InstanceRecord>, StoreError>;

    /// `true` while the file at `rel_path` is listed by a pending file deletion.
    fn is_pending_deletion(&self, rel_path: &str) -> Result<bool, StoreError>;

    /// These instances were used (sent) at `now_ms`: each still cataloged moves to the young
    /// end of the eviction order (never backwards). One small transaction per instance and
    /// no flush: a bump lost in a crash only lets an instance look older. Returns how many
    /// moved.
    fn touch_instances(&self, sops: &[String], now_ms: u64) -> Result<usize, StoreError>;

    /// When the instance was last stored or sent (ms since the epoch); `None` if unknown.
    fn last_used(&self, sop_instance_uid: &str) -> Result<Option<u64>, StoreError>;
}

/// The trees of the catalog area.
#[derive(Clone)]
pub(crate) struct CatalogTrees {
    pub(crate) instances: sled::Tree,
    pub(crate) members: sled::Tree,
    pub(crate) scans: sled::Tree,
    pub(crate) studies: sled::Tree,
    pub(crate) patient_studies: sled::Tree,
    pub(crate) patients: sled::Tree,
    pub(crate) subjects: sled::Tree,
    pub(crate) counters: sled::Tree,
    pub(crate) pending: sled::Tree,
    pub(crate) pending_paths: sled::Tree,
    pub(crate) lru: sled::Tree,
    pub(crate) meta: sled::Tree,
}

impl CatalogTrees {
    /// Opens the trees. No repair here: that needs the data dir and a DICOM reader
    /// ([`repair`], called by the binary at start-up).
    pub(crate) fn open(db: &sled::Db) -> Result<CatalogTrees, StoreError> {
        Ok(CatalogTrees {
            instances: db.open_tree(INSTANCES_TREE)?,
            members: db.open_tree(MEMBERS_TREE)?,
            scans: db.open_tree(SCANS_TREE)?,
            studies: db.open_tree(STUDIES_TREE)?,
            patient_studies: db.open_tree(PATIENT_STUDIES_TREE)?,
            patients: db.open_tree(PATIENTS_TREE)?,
            subjects: db.open_tree(SUBJECTS_TREE)?,
            counters: db.open_tree(COUNTERS_TREE)?,
            pending: db.open_tree(PENDING_TREE)?,
            pending_paths: db.open_tree(PENDING_PATHS_TREE)?,
            lru: db.open_tree(LRU_TREE)?,
            meta: db.open_tree(crate::outbox::META_TREE)?,
        })
    }

    /// The trees derived from the files, emptied by [`rebuild_catalog`]. Subject links,
    /// pending deletions and the ticket counter are not derived from files and stay.
    pub(crate) fn derived(&self) -> [&sled::Tree; 8] {
        [
            &self.instances,
            &self.lru,
            &self.members,
            &self.scans,
            &self.studies,
            &self.patient_studies,
            &self.patients,
            &self.counters,
        ]
    }

    /// Runs `f` as one transaction over every catalog tree (sled may run it more than
    /// once).
    fn transaction<R>(&self, f: impl Fn(&Tx<'_>) -> TxResult<R>) -> Result<R, StoreError> {
        let trees = (
            &self.instances,
            &self.members,
            &self.scans,
            &self.studies,
            &self.patient_studies,
            &self.patients,
            &self.subjects,
            &self.counters,
            &self.pending,
            &self.pending_paths,
            &self.lru,
            &self.meta,
        );
        let result = trees.transaction(
            |(
                instances,
                members,
                scans,
                studies,
                patient_studies,
                patients,
                subjects,
                counters,
                pending,
                pending_paths,
                lru,
                meta,
            )| {
                f(&Tx {
                    instances,
                    members,
                    scans,
                    studies,
                    patient_studies,
                    patients,
                    subjects,
                    counters,
                    pending,
                    pending_paths,
                    lru,
                    meta,
                })
            },
        )?;
        Ok(result)
    }

    /// [`Catalog::put_instance`] without the flush.
    pub(crate) fn put(&self, rec: &InstanceRecord) -> Result<Option<InstanceRecord>, StoreError> {
        check_record(rec)?;
        // Encoded once, outside the closure.
        let value = IVec::from(record::encode(INSTANCES_TREE, rec)?);
        self.transaction(|tx| {
            let mut fx = Effects::default();
            let old = tx.get_instance(&rec.sop_instance_uid)?;
            if let Some(old) = &old {
                tx.remove(old, &mut fx)?;
            }
            tx.insert(rec, &value, &mut fx)?;
            tx.revive(&rec.path)?;
            if let Some(old) = old.as_ref().filter(|old| old.path != rec.path) {
                tx.queue_deletion(std::slice::from_ref(&old.path))?;
            }
            tx.apply_counters(&fx)?;
            Ok(old)
        })
    }

    /// Removes an instance's entry and indexes without queuing its file (repair: the file
    /// is gone, or is about to be indexed again).
    pub(crate) fn forget(&self, sop: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.transaction(|tx| {
            let Some(rec) = tx.get_instance(sop)? else {
                return Ok(None);
            };
            let mut fx = Effects::default();
            tx.remove(&rec, &mut fx)?;
            tx.apply_counters(&fx)?;
            Ok(Some(rec))
        })
    }

    /// Removes, in one transaction, those of `candidates` (SOP Instance UIDs read before
    /// the transaction) that still satisfy `belongs`, queues their files under a ticket,
    /// and with `drop_subjects` drops the subject links of patients left with no study.
    fn delete(
        &self,
        candidates: &[String],
        drop_subjects: bool,
        belongs: impl Fn(&Tx<'_>, &InstanceRecord) -> TxResult<bool>,
    ) -> Result<Deletion, StoreError> {
        if candidates.is_empty() {
            return Ok(Deletion::nothing());
        }
        self.transaction(|tx| {
            let mut fx = Effects::default();
            let mut removed = Vec::new();
            for sop in candidates {
                let Some(rec) = tx.get_instance(sop)? else {
                    continue;
                };
                // Moved or replaced since the index was read: not ours to remove.
                if !belongs(tx, &rec)? {
                    continue;
                }
                tx.remove(&rec, &mut fx)?;
                removed.push(rec);
            }
            if removed.is_empty() {
                return Ok(Deletion::nothing());
            }
            let paths: Vec<String> = removed.iter().map(|r| r.path.clone()).collect();
            let ticket = tx.queue_deletion(&paths)?;
            let dropped = if drop_subjects {
                tx.drop_emptied_subjects(&fx)?
            } else {
                Vec::new()
            };
            tx.apply_counters(&fx)?;
            Ok(Deletion {
                removed,
                patient_mapping_dropped: dropped.into_iter().next(),
                ticket,
            })
        })
    }

    /// [`Catalog::complete_file_deletion`] without the flush.
    pub(crate) fn complete(&self, ticket: u64) -> Result<(), StoreError> {
        self.transaction(|tx| tx.complete(ticket))?;
        Ok(())
    }

    /// The paths of `ticket` still marked pending (`None` if the ticket is unknown).
    pub(crate) fn pending_paths_of(&self, ticket: u64) -> Result<Option<Vec<String>>, StoreError> {
        let key = u64_key(ticket);
        let Some(value) = self.pending.get(key)? else {
            return Ok(None);
        };
        let paths = self.decode_ticket(&key, &value)?;
        self.still_pending(&key, paths).map(Some)
    }

    fn decode_ticket(&self, key: &[u8], value: &[u8]) -> Result<Vec<String>, StoreError> {
        record::decode(value).map_err(|e| {
            tracing::warn!(tree = PENDING_TREE, key = %display_u64_key(key), reason = e.0, "undecodable pending deletion");
            StoreError::Corrupt {
                tree: PENDING_TREE,
                key: display_u64_key(key),
            }
        })
    }

    fn still_pending(&self, key: &[u8], paths: Vec<String>) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            if self.pending_paths.get(path.as_bytes())?.as_deref() == Some(key) {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// SOP Instance UIDs under a members prefix.
    fn sops_under(&self, prefix: &[u8]) -> Result<Vec<String>, StoreError> {
        let mut sops = Vec::new();
        for key in self.members.scan_prefix(prefix).keys() {
            let key = key?;
            let (_, _, sop) = parse_member_key(&key).ok_or_else(|| corrupt(MEMBERS_TREE, &key))?;
            sops.push(sop.to_owned());
        }
        Ok(sops)
    }

    /// The records under a members prefix that agree with their key (a key whose
    /// instance was removed or moved meanwhile is skipped).
    fn records_under(&self, prefix: &[u8]) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut records = Vec::new();
        for key in self.members.scan_prefix(prefix).keys() {
            let key = key?;
            let (study, series, sop) =
                parse_member_key(&key).ok_or_else(|| corrupt(MEMBERS_TREE, &key))?;
            if let Some(rec) = self.get(sop)? {
                if rec.study_instance_uid == study && rec.series_instance_uid == series {
                    records.push(rec);
                }
            }
        }
        Ok(records)
    }

    fn get(&self, sop: &str) -> Result<Option<InstanceRecord>, StoreError> {
        match self.instances.get(sop.as_bytes())? {
            None => Ok(None),
            Some(value) => decode_instance(sop.as_bytes(), &value).map(Some),
        }
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.counters.get(key)? {
            None => Ok(0),
            Some(value) => decode_u64(&value).ok_or_else(|| corrupt(COUNTERS_TREE, key)),
        }
    }
}

/// A typed error for an undecodable entry, logged once here.
fn corrupt(tree: &'static str, key: &[u8]) -> StoreError {
    let key = record::display_key(key);
    tracing::warn!(tree, key = %key, "undecodable catalog entry");
    StoreError::Corrupt { tree, key }
}

pub(crate) fn decode_instance(key: &[u8], value: &[u8]) -> Result<InstanceRecord, StoreError> {
    record::decode(value).map_err(|_| corrupt(INSTANCES_TREE, key))
}

/// The rules a record must follow to be stored.
pub(crate) fn check_record(rec: &InstanceRecord) -> Result<(), StoreError> {
    let want = instance_rel_path(
        &rec.study_instance_uid,
        &rec.series_instance_uid,
        &rec.sop_instance_uid,
    )?;
    if rec.path != want {
        return Err(StoreError::InvalidRecord {
            sop_instance_uid: rec.sop_instance_uid.clone(),
            reason: format!(
                "path {:?} is not {want:?}",
                rec.path.chars().take(300).collect::<String>()
            ),
        });
    }
    Ok(())
}
