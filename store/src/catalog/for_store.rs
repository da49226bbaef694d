//! The [`Catalog`] trait as the [`Store`] implements it: each call is one of the
//! catalog's transactions (`catalog.rs`) followed by its flush, or a read of its
//! trees. Touches only the catalog's trees.

use super::*;

/// Sort key of a scan: numbered first by number, then unnumbered; then by UID.
fn scan_order(scan: &ScanSummary) -> (bool, Option<i32>, &str) {
    (
        scan.scan_number.is_none(),
        scan.scan_number,
        &scan.series_instance_uid,
    )
}

/// [`Catalog::put_instances`] flushes after this many records: sled keeps an
/// unflushed burst in memory, and indexing 4096 instances with one flush raised
/// the appliance's peak RSS from 58 to 67–72 MiB (`benches/cstore_vs_peers.rs`).
pub const PUT_FLUSH_EVERY: usize = 256;

impl Catalog for Store {
    fn put_instance(&self, rec: &InstanceRecord) -> Result<Option<InstanceRecord>, StoreError> {
        let old = self.catalog.put(rec)?;
        self.db.flush()?;
        Ok(old)
    }

    fn put_instances(
        &self,
        recs: &[InstanceRecord],
    ) -> Result<Vec<Result<Option<InstanceRecord>, StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(recs.len());
        for chunk in recs.chunks(PUT_FLUSH_EVERY) {
            results.extend(chunk.iter().map(|rec| self.catalog.put(rec)));
            self.db.flush()?;
        }
        Ok(results)
    }

    fn get_instance(&self, sop_instance_uid: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.catalog.get(sop_instance_uid)
    }

    fn remove_instance(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        Ok(self.delete_instance(sop_instance_uid)?.removed.pop())
    }

    fn delete_instance(&self, sop_instance_uid: &str) -> Result<Deletion, StoreError> {
        let deletion = self.catalog.delete(
            std::slice::from_ref(&sop_instance_uid.to_owned()),
            false,
            |_, _| Ok(true),
        )?;
        self.db.flush()?;
        Ok(deletion)
    }

    fn instances_of_study(&self, study_uid: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        if !is_valid_uid(study_uid) {
            return Ok(Vec::new());
        }
        self.catalog.records_under(&record::study_prefix(study_uid))
    }

    fn instances_of_series(
        &self,
        study_uid: &str,
        series_instance_uid: &str,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        if !is_valid_uid(study_uid) || !is_valid_uid(series_instance_uid) {
            return Ok(Vec::new());
        }
        self.catalog
            .records_under(&record::series_prefix(study_uid, series_instance_uid))
    }

    fn delete_study(&self, study_uid: &str) -> Result<Deletion, StoreError> {
        if !is_valid_uid(study_uid) {
            return Ok(Deletion::nothing());
        }
        let candidates = self.catalog.sops_under(&record::study_prefix(study_uid))?;
        let deletion = self.catalog.delete(&candidates, true, |_, rec| {
            Ok(rec.study_instance_uid == study_uid)
        })?;
        self.db.flush()?;
        Ok(deletion)
    }

    fn delete_series_by_number(
        &self,
        study_uid: &str,
        series_number: i32,
    ) -> Result<Deletion, StoreError> {
        if !is_valid_uid(study_uid) {
            return Ok(Deletion::nothing());
        }
        let mut candidates = Vec::new();
        for item in self
            .catalog
            .scans
            .scan_prefix(record::study_prefix(study_uid))
        {
            let (key, value) = item?;
            let (_, series) = parse_scan_key(&key).ok_or_else(|| corrupt(SCANS_TREE, &key))?;
            let scan: ScanEntry = record::decode(&value).map_err(|_| corrupt(SCANS_TREE, &key))?;
            if scan.series_number == Some(series_number) {
                candidates.extend(
                    self.catalog
                        .sops_under(&record::series_prefix(study_uid, series))?,
                );
            }
        }
        let deletion = self.catalog.delete(&candidates, true, |tx, rec| {
            if rec.study_instance_uid != study_uid {
                return Ok(false);
            }
            // The series' number as of this transaction (checked per instance: the scan
            // entry stays while any instance of the series is left to remove).
            let key = record::scan_key(&rec.study_instance_uid, &rec.series_instance_uid);
            Ok(match tx.scans.get(&key)? {
                Some(value) => record::decode::<ScanEntry>(&value)
                    .map(|scan| scan.series_number == Some(series_number))
                    .map_err(|_| tx::abort(corrupt(SCANS_TREE, &key)))?,
                None => false,
            })
        })?;
        self.db.flush()?;
        Ok(deletion)
    }

    fn complete_file_deletion(&self, ticket: u64) -> Result<(), StoreError> {
        if ticket == NO_TICKET {
            return Ok(());
        }
        self.catalog.complete(ticket)?;
        self.db.flush()?;
        Ok(())
    }

    fn pending_file_deletions(&self) -> Result<Vec<(u64, Vec<String>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.catalog.pending.iter() {
            let (key, value) = item?;
            let ticket = decode_u64(&key).ok_or_else(|| corrupt(PENDING_TREE, &key))?;
            let paths = self.catalog.decode_ticket(&key, &value)?;
            out.push((ticket, self.catalog.still_pending(&key, paths)?));
        }
        Ok(out)
    }

    fn link_subject(&self, patient_id: &str, subject_id: &str) -> Result<(), StoreError> {
        let old = self
            .catalog
            .subjects
            .insert(patient_id.as_bytes(), subject_id.as_bytes())?;
        // Every change is flushed here, so an unchanged link is durable already
        // (a dispatch links the same patient once per instance).
        if old.as_deref() != Some(subject_id.as_bytes()) {
            self.db.flush()?;
        }
        Ok(())
    }

    fn subject_of(&self, patient_id: &str) -> Result<Option<String>, StoreError> {
        match self.catalog.subjects.get(patient_id.as_bytes())? {
            None => Ok(None),
            Some(value) => String::from_utf8(value.to_vec())
                .map(Some)
                .map_err(|_| corrupt(SUBJECTS_TREE, patient_id.as_bytes())),
        }
    }

    fn sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        let c = &self.catalog;
        let mut sessions = Vec::new();
        for item in c.studies.iter() {
            let (key, value) = item?;
            let study = std::str::from_utf8(&key).map_err(|_| corrupt(STUDIES_TREE, &key))?;
            let entry: StudyEntry =
                record::decode(&value).map_err(|_| corrupt(STUDIES_TREE, &key))?;
            let mut scans = Vec::new();
            for item in c.scans.scan_prefix(record::study_prefix(study)) {
                let (key, value) = item?;
                let (_, series) = parse_scan_key(&key).ok_or_else(|| corrupt(SCANS_TREE, &key))?;
                let scan: ScanEntry =
                    record::decode(&value).map_err(|_| corrupt(SCANS_TREE, &key))?;
                scans.push(ScanSummary {
                    scan_number: scan.series_number,
                    series_instance_uid: series.to_owned(),
                    instances: scan.instances,
                    bytes: scan.bytes,
                });
            }
            scans.sort_by(|a, b| scan_order(a).cmp(&scan_order(b)));
            let subject_id = match &entry.patient_id {
                Some(patient) => self.subject_of(patient)?,
                None => None,
            };
            sessions.push(SessionSummary {
                study_instance_uid: study.to_owned(),
                patient_id: entry.patient_id,
                subject_id,
                instances: entry.instances,
                bytes: entry.bytes,
                scans,
            });
        }
        Ok(sessions)
    }

    fn figures(&self) -> Result<StoreFigures, StoreError> {
        let c = &self.catalog;
        Ok(StoreFigures {
            patients: c.counter(tx::PATIENTS)?,
            sessions: c.counter(tx::SESSIONS)?,
            scans: c.counter(tx::SCANS)?,
            instances: c.counter(tx::INSTANCES)?,
            bytes: c.counter(tx::BYTES)?,
        })
    }

    fn all_instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.catalog
            .instances
            .iter()
            .map(|item| {
                let (key, value) = item?;
                decode_instance(&key, &value)
            })
            .collect()
    }

    fn is_pending_deletion(&self, rel_path: &str) -> Result<bool, StoreError> {
        Ok(self
            .catalog
            .pending_paths
            .contains_key(rel_path.as_bytes())?)
    }

    fn touch_instances(&self, sops: &[String], now_ms: u64) -> Result<usize, StoreError> {
        self.catalog.touch(sops, now_ms)
    }

    fn last_used(&self, sop_instance_uid: &str) -> Result<Option<u64>, StoreError> {
        self.catalog.last_used(sop_instance_uid)
    }
}
