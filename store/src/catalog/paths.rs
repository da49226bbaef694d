//! UIDs and the storage paths built from them.
//!
//! Every UID that reaches the catalog came from the network (a modality's C-STORE, a
//! dispatch archive) and ends up in a file name, so it is checked here, once: a stored UID
//! is digits separated by single dots (DICOM PS3.5 §9.1), which can never spell `..`, `/`,
//! a NUL or anything else with a meaning in a path or in the catalog's `\0`-separated keys.

use crate::StoreError;

/// The directory of the DICOM cache, relative to the data dir (APPLIANCE.md "Data dir").
pub const STORAGE_DIR: &str = "storage";
/// The extension of a cached instance.
pub(crate) const DCM_SUFFIX: &str = ".dcm";
/// The extension of a file still being written (`{sop}.dcm.part`, renamed when complete);
/// one left behind is a crash's leftover and is removed by [`crate::repair`].
pub const PART_SUFFIX: &str = ".part";

/// The longest UID accepted. DICOM allows 64 characters; some non-conformant devices emit
/// longer ones, and refusing their studies at ingest helps nobody, so twice that is allowed
/// (still far below any file-name limit).
pub const MAX_UID_LEN: usize = 128;

/// `true` if `uid` can be stored and used in a path: 1 to [`MAX_UID_LEN`] characters,
/// digits separated by single dots, no leading or trailing dot.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID_LEN
        && uid
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks one UID of a record, naming the field in the error.
pub(crate) fn check_uid(field: &'static str, uid: &str) -> Result<(), StoreError> {
    if is_valid_uid(uid) {
        Ok(())
    } else {
        Err(StoreError::invalid_uid(field, uid))
    }
}

/// The path of an instance relative to the data dir:
/// `storage/{study}/{series}/{sop}.dcm`. Fails with [`StoreError::InvalidUid`] unless all
/// three are valid UIDs ([`is_valid_uid`]), so the result never contains `..`, a
/// backslash or an extra `/`.
pub fn instance_rel_path(study: &str, series: &str, sop: &str) -> Result<String, StoreError> {
    check_uid("StudyInstanceUID", study)?;
    check_uid("SeriesInstanceUID", series)?;
    check_uid("SOPInstanceUID", sop)?;
    Ok(format!("{STORAGE_DIR}/{study}/{series}/{sop}{DCM_SUFFIX}"))
}

/// The (study, series, sop) UIDs of a path made by [`instance_rel_path`], or `None` if
/// `rel` is not exactly such a path. Used before anything named in the store is unlinked.
pub(crate) fn parse_instance_rel_path(rel: &str) -> Option<(&str, &str, &str)> {
    let rest = rel.strip_prefix(STORAGE_DIR)?.strip_prefix('/')?;
    let rest = rest.strip_suffix(DCM_SUFFIX)?;
    let mut parts = rest.split('/');
    let (study, series, sop) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ![study, series, sop].into_iter().all(is_valid_uid) {
        return None;
    }
    Some((study, series, sop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_uids() {
        for uid in ["1", "1.2.840.10008.5.1.4.1.1.2", "0.0", "1.02.3"] {
            assert!(is_valid_uid(uid), "{uid}");
        }
        assert!(is_valid_uid(&"1".repeat(MAX_UID_LEN)));
    }

    #[test]
    fn invalid_uids() {
        for uid in [
            "", ".", "..", "1..2", ".1", "1.", "1/2", "../1", "1.2\0", "1.2 ", "1.2\\3", "a.b",
            "１.２", "-1",
        ] {
            assert!(!is_valid_uid(uid), "{uid:?}");
        }
        assert!(!is_valid_uid(&"1".repeat(MAX_UID_LEN + 1)));
    }

    #[test]
    fn rel_path_layout_and_round_trip() {
        let path = instance_rel_path("1.2", "1.2.3", "1.2.3.4").unwrap();
        assert_eq!(path, "storage/1.2/1.2.3/1.2.3.4.dcm");
        assert_eq!(
            parse_instance_rel_path(&path),
            Some(("1.2", "1.2.3", "1.2.3.4"))
        );
    }

    #[test]
    fn rel_path_refuses_bad_uids_with_the_field() {
        match instance_rel_path("1.2", "..", "3") {
            Err(StoreError::InvalidUid { field, uid }) => {
                assert_eq!((field, uid.as_str()), ("SeriesInstanceUID", ".."));
            }
            other => panic!("expected InvalidUid, got {other:?}"),
        }
        let long = "9".repeat(10_000);
        match instance_rel_path(&long, "1", "1") {
            Err(StoreError::InvalidUid { uid, .. }) => assert_eq!(uid.len(), 80),
            other => panic!("expected InvalidUid, got {other:?}"),
        }
    }

    #[test]
    fn parse_refuses_anything_else() {
        for rel in [
            "storage/1/2/3.dcm.part",
            "storage/1/2/3",
            "storage/1/2/3/4.dcm",
            "storage/1/3.dcm",
            "/storage/1/2/3.dcm",
            "storage/../2/3.dcm",
            "storage/1/2/../3.dcm",
            "other/1/2/3.dcm",
            "storage//2/3.dcm",
        ] {
            assert_eq!(parse_instance_rel_path(rel), None, "{rel}");
        }
    }

    proptest! {
        /// Whatever the network sends, a path is either refused or exactly four plain
        /// components under `storage/`.
        #[test]
        fn untrusted_uids_never_escape(study in ".{0,12}", series in "[0-9./\\\\a]{0,8}", sop in any::<String>()) {
            if let Ok(path) = instance_rel_path(&study, &series, &sop) {
                prop_assert!(!path.contains(".."));
                prop_assert!(!path.contains('\\'));
                prop_assert_eq!(path.split('/').count(), 4);
                prop_assert!(path.starts_with("storage/"));
                prop_assert_eq!(parse_instance_rel_path(&path), Some((&*study, &*series, &*sop)));
            }
        }

        #[test]
        fn parse_never_panics(rel in ".{0,40}") {
            let _ = parse_instance_rel_path(&rel);
        }
    }
}
