//! What the index stage found in a dispatch's archive besides the instances it
//! delivers (APPLIANCE.md "Per-instance outcome"): the archive entry each
//! instance came from (the value of its `dispatch_instances` key, empty for
//! dispatches indexed before this existed), and the entries it left out with
//! why (`dispatch_skipped`: key = dispatch id, value = [`SkippedEntries`] as
//! JSON). Both go with the dispatch when it is pruned (`prune.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{decode, encode, key, last_part, prefix};
use crate::{Store, StoreError};

pub(crate) const SKIPPED: &str = "dispatch_skipped";

/// At most this many skipped entries are listed per dispatch (a hostile or
/// odd archive may hold hundreds of thousands of non-DICOM files); the rest
/// are only counted in [`SkippedEntries::total`].
pub const MAX_SKIPPED_LISTED: usize = 1000;

/// An archive entry that is not delivered, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The entry's path inside the archive.
    pub file: String,
    pub reason: String,
}

/// The skipped entries of one dispatch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntries {
    /// The first [`MAX_SKIPPED_LISTED`], by path.
    pub entries: Vec<Skipped>,
    /// How many were skipped in all.
    pub total: u64,
}

/// The index stage's findings, kept with the dispatch journal.
pub trait Findings {
    /// Replaces the dispatch's instance set with these (SOP Instance UID,
    /// archive entry) pairs; flushes.
    fn journal_set_instance_files(
        &self,
        id: &str,
        files: &[(String, String)],
    ) -> Result<(), StoreError>;
    /// The archive entry of each instance of the dispatch, by SOP Instance
    /// UID (instances indexed without one are left out).
    fn journal_instance_files(&self, id: &str) -> Result<BTreeMap<String, String>, StoreError>;
    /// Records what the archive held that is not delivered (sorted by path,
    /// cut to [`MAX_SKIPPED_LISTED`]); flushes.
    fn journal_set_skipped(&self, id: &str, skipped: Vec<Skipped>) -> Result<(), StoreError>;
    /// What [`Findings::journal_set_skipped`] recorded (empty when nothing).
    fn journal_skipped(&self, id: &str) -> Result<SkippedEntries, StoreError>;
}

impl Findings for Store {
    fn journal_set_instance_files(
        &self,
        id: &str,
        files: &[(String, String)],
    ) -> Result<(), StoreError> {
        let t = &self.journal.instances;
        let mut batch = sled::Batch::default();
        for k in t.scan_prefix(prefix(&[id])).keys() {
            batch.remove(k?);
        }
        for (sop, file) in files {
            batch.insert(key(&[id, sop]), file.as_bytes());
        }
        t.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn journal_instance_files(&self, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.journal.instances.scan_prefix(prefix(&[id])) {
            let (k, v) = kv?;
            if v.is_empty() {
                continue;
            }
            if let (Some(sop), Ok(file)) = (last_part(&k), std::str::from_utf8(&v)) {
                out.insert(sop, file.to_owned());
            }
        }
        Ok(out)
    }

    fn journal_set_skipped(&self, id: &str, mut skipped: Vec<Skipped>) -> Result<(), StoreError> {
        let total = skipped.len() as u64;
        skipped.sort_by(|a, b| a.file.cmp(&b.file));
        skipped.truncate(MAX_SKIPPED_LISTED);
        let t = &self.journal.skipped;
        if total == 0 {
            t.remove(id.as_bytes())?;
        } else {
            let v = encode(
                SKIPPED,
                id,
                &SkippedEntries {
                    entries: skipped,
                    total,
                },
            )?;
            t.insert(id.as_bytes(), v)?;
        }
        self.db.flush()?;
        Ok(())
    }

    fn journal_skipped(&self, id: &str) -> Result<SkippedEntries, StoreError> {
        match self.journal.skipped.get(id.as_bytes())? {
            Some(v) => decode(SKIPPED, id.as_bytes(), &v),
            None => Ok(SkippedEntries::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Journal;

    fn store() -> ((), Store) {
        ((), Store::open_temporary().expect("store opens"))
    }

    #[test]
    fn instance_files_are_the_instance_set_with_their_archive_entries() {
        let (_d, s) = store();
        let files = vec![
            ("1.2.1".to_owned(), "a/IM1".to_owned()),
            ("1.2.2".to_owned(), "b/IM2.dcm".to_owned()),
        ];
        s.journal_set_instance_files("d1", &files).expect("set");
        assert_eq!(
            s.journal_instances("d1").expect("instances"),
            vec!["1.2.1", "1.2.2"]
        );
        let got = s.journal_instance_files("d1").expect("files");
        assert_eq!(got.get("1.2.2").map(String::as_str), Some("b/IM2.dcm"));
        // A plain instance set (no entry names) replaces it and lists no files.
        s.journal_set_instances("d1", &["1.2.3".to_owned()])
            .expect("set");
        assert!(s.journal_instance_files("d1").expect("files").is_empty());
        assert_eq!(s.journal_instances("d1").expect("instances"), vec!["1.2.3"]);
    }

    #[test]
    fn skipped_entries_are_listed_by_path_up_to_the_limit_and_counted_in_all() {
        let (_d, s) = store();
        assert_eq!(
            s.journal_skipped("d1").expect("read"),
            SkippedEntries::default()
        );
        let many: Vec<Skipped> = (0..MAX_SKIPPED_LISTED + 5)
            .rev()
            .map(|i| Skipped {
                file: format!("f{i:05}"),
                reason: "not DICOM".into(),
            })
            .collect();
        s.journal_set_skipped("d1", many).expect("set");
        let got = s.journal_skipped("d1").expect("read");
        assert_eq!(got.total, (MAX_SKIPPED_LISTED + 5) as u64);
        assert_eq!(got.entries.len(), MAX_SKIPPED_LISTED);
        assert_eq!(got.entries[0].file, "f00000");
        s.journal_set_skipped("d1", Vec::new()).expect("clear");
        assert_eq!(s.journal_skipped("d1").expect("read").total, 0);
    }
}
