//! The stored forms of catalog values, and the catalog's keys.
//!
//! Values: a version byte (`1`) followed by JSON. Decoding ignores unknown fields, so a
//! newer writer may add some; another version byte or anything unparsable is a
//! [`RecordError`] (callers turn it into [`crate::StoreError::Corrupt`]). Counters and
//! ticket numbers are big-endian `u64` (`crate::keys`).
//!
//! Keys join UIDs with `\0`, which a valid UID never contains (`paths.rs`), so a key splits
//! back unambiguously and `{study}\0` is a prefix of exactly that study's keys.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StoreError;

const VERSION: u8 = 1;

/// Why a stored value is not what it should be (logged by callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordError(pub(crate) &'static str);

/// The value in tree `catalog_scans`: one series of one study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScanEntry {
    /// The Series Number: the most recent `Some` among the instances put (instances of a
    /// series normally agree).
    pub(crate) series_number: Option<i32>,
    pub(crate) instances: u64,
    pub(crate) bytes: u64,
}

/// The value in tree `catalog_studies`: one study (a session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StudyEntry {
    /// The PatientID: the most recent `Some` among the instances put.
    pub(crate) patient_id: Option<String>,
    pub(crate) instances: u64,
    pub(crate) bytes: u64,
}

/// Encodes a value for `tree`.
pub(crate) fn encode<T: Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![VERSION];
    serde_json::to_writer(&mut out, value).map_err(|source| StoreError::Encode { tree, source })?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    let [version, json @ ..] = bytes else {
        return Err(RecordError("empty value"));
    };
    if *version != VERSION {
        return Err(RecordError("unknown version"));
    }
    serde_json::from_slice(json).map_err(|_| RecordError("unparsable JSON"))
}

const SEP: u8 = 0;

fn join(parts: &[&str], trailing_sep: bool) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len() + 1).sum();
    let mut key = Vec::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(SEP);
        }
        key.extend_from_slice(part.as_bytes());
    }
    if trailing_sep {
        key.push(SEP);
    }
    key
}

/// Key in `catalog_series_members`: `{study}\0{series}\0{sop}`.
pub(crate) fn member_key(study: &str, series: &str, sop: &str) -> Vec<u8> {
    join(&[study, series, sop], false)
}

/// Prefix of the members (and of the scans) of one study: `{study}\0`.
pub(crate) fn study_prefix(study: &str) -> Vec<u8> {
    join(&[study], true)
}

/// Prefix of the members of one series: `{study}\0{series}\0`.
pub(crate) fn series_prefix(study: &str, series: &str) -> Vec<u8> {
    join(&[study, series], true)
}

/// Key in `catalog_scans`: `{study}\0{series}`.
pub(crate) fn scan_key(study: &str, series: &str) -> Vec<u8> {
    join(&[study, series], false)
}

/// Key in `catalog_patient_studies`: `{patient}\0{study}`. A PatientID is free text and may
/// itself contain a NUL; the study UID after the last NUL never does.
pub(crate) fn patient_study_key(patient: &str, study: &str) -> Vec<u8> {
    join(&[patient, study], false)
}

/// Splits a [`member_key`] into (study, series, sop).
pub(crate) fn parse_member_key(key: &[u8]) -> Option<(&str, &str, &str)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.split('\0');
    let parsed = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some(parsed)
}

/// Splits a [`scan_key`] into (study, series).
pub(crate) fn parse_scan_key(key: &[u8]) -> Option<(&str, &str)> {
    let key = std::str::from_utf8(key).ok()?;
    let (study, series) = key.split_once('\0')?;
    (!series.contains('\0')).then_some((study, series))
}

/// Renders a key for [`StoreError::Corrupt`]: UTF-8 with `\0` shown as `/`, else hex.
pub(crate) fn display_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => text.replace('\0', "/"),
        Err(_) => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_split_back() {
        let key = member_key("1.2", "1.2.3", "9");
        assert_eq!(parse_member_key(&key), Some(("1.2", "1.2.3", "9")));
        assert!(key.starts_with(&study_prefix("1.2")));
        assert!(key.starts_with(&series_prefix("1.2", "1.2.3")));
        assert!(!key.starts_with(&study_prefix("1")));
        assert_eq!(parse_scan_key(&scan_key("1.2", "3")), Some(("1.2", "3")));
        assert_eq!(parse_scan_key(b"1.2"), None);
        assert_eq!(parse_member_key(b"1\x002"), None);
        assert_eq!(display_key(&scan_key("1", "2")), "1/2");
        assert_eq!(display_key(&[0xff, 0x01]), "ff01");
    }

    /// The order sessions() relies on: a study's scan keys sort right where the study's
    /// own key sorts among other studies.
    #[test]
    fn scan_keys_sort_with_their_study() {
        let mut studies = vec!["1.2.3", "1.2", "1.22", "1.2.10"];
        let mut keys: Vec<Vec<u8>> = studies.iter().map(|s| scan_key(s, "7")).collect();
        studies.sort();
        keys.sort();
        let back: Vec<&str> = keys
            .iter()
            .filter_map(|k| parse_scan_key(k).map(|(s, _)| s))
            .collect();
        assert_eq!(back, studies);
    }

    #[test]
    fn values_round_trip_and_tolerate_new_fields() {
        let scan = ScanEntry {
            series_number: Some(-3),
            instances: 2,
            bytes: 10,
        };
        assert_eq!(decode::<ScanEntry>(&encode("t", &scan).unwrap()), Ok(scan));
        let newer = b"\x01{\"patient_id\":null,\"instances\":1,\"bytes\":2,\"extra\":[1]}";
        assert_eq!(
            decode::<StudyEntry>(newer),
            Ok(StudyEntry {
                patient_id: None,
                instances: 1,
                bytes: 2
            })
        );
        assert!(decode::<StudyEntry>(b"").is_err());
        assert!(decode::<StudyEntry>(b"\x02{}").is_err());
        assert!(decode::<StudyEntry>(b"\x01{\"instances\":1}").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<ScanEntry>(&bytes);
            let _ = decode::<crate::InstanceRecord>(&bytes);
            let _ = parse_member_key(&bytes);
            let _ = parse_scan_key(&bytes);
            let _ = display_key(&bytes);
        }
    }
}
