//! Point reads of the catalog for callers that need one fact about a study,
//! not its instances (the audit trail names the patient of a delivered study).

use super::record::{self, StudyEntry};
use super::{corrupt, is_valid_uid, STUDIES_TREE};
use crate::{Store, StoreError};

impl Store {
    /// The PatientID the cache holds for a study: one read of its study entry.
    /// `None` when the study is not cached or its instances carry no PatientID.
    pub fn patient_of_study(&self, study_uid: &str) -> Result<Option<String>, StoreError> {
        if !is_valid_uid(study_uid) {
            return Ok(None);
        }
        let key = study_uid.as_bytes();
        match self.catalog.studies.get(key)? {
            None => Ok(None),
            Some(value) => {
                let entry: StudyEntry =
                    record::decode(&value).map_err(|_| corrupt(STUDIES_TREE, key))?;
                Ok(entry.patient_id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::test_support::FakeDicom;
    use crate::{Catalog, Store};

    #[test]
    fn the_patient_of_a_cached_study_is_one_read_away() {
        let store = Store::open_temporary().unwrap();
        assert_eq!(store.patient_of_study("1.2.3").unwrap(), None);
        assert_eq!(store.patient_of_study("not a uid").unwrap(), None);
        let rec = FakeDicom::new("1.2.3", "1.2.3.4", Some(1), "1.2.3.4.5")
            .patient("PID-7")
            .record(10);
        store.put_instance(&rec).unwrap();
        assert_eq!(
            store.patient_of_study("1.2.3").unwrap().as_deref(),
            Some("PID-7")
        );
    }
}
