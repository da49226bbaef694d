//! The command and data sets of Storage Commitment (PS3.4 J.3, PS3.7 10.3).
//! Data sets are written and read in the presentation context's syntax
//! (Implicit or Explicit VR Little Endian, the two we propose and accept).

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};

use crate::dimse::{self, DimseError, DATA_SET_PRESENT, EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// Storage Commitment Push Model SOP Class.
pub const STORAGE_COMMITMENT_PUSH: &str = "1.2.840.10008.1.20.1";
/// Its well-known SOP Instance.
pub const STORAGE_COMMITMENT_PUSH_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
pub const N_ACTION_RQ: u16 = 0x0130;
pub const N_ACTION_RSP: u16 = 0x8130;
pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
/// Action Type ID "Request Storage Commitment".
pub const ACTION_REQUEST_COMMITMENT: u16 = 1;

/// Why a data set could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("transfer syntax {0} is not Implicit or Explicit VR Little Endian")]
    Syntax(String),
    #[error("cannot encode the data set: {0}")]
    Encode(String),
    #[error("cannot decode the data set: {0}")]
    Decode(String),
    #[error("the report has no Transaction UID")]
    NoTransaction,
}

/// A fresh Transaction UID under the UUID root (2.25), as PS3.5 B.2 allows.
pub fn new_transaction_uid() -> String {
    format!("2.25.{}", rand::random::<u128>())
}

/// The N-ACTION-RQ command set (a data set follows).
pub fn n_action_rq(message_id: u16) -> Result<Vec<u8>, DimseError> {
    dimse::encode_command(vec![
        DataElement::new(
            tags::REQUESTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(STORAGE_COMMITMENT_PUSH),
        ),
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(N_ACTION_RQ),
        ),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(DATA_SET_PRESENT),
        ),
        DataElement::new(
            tags::REQUESTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(STORAGE_COMMITMENT_PUSH_INSTANCE),
        ),
        DataElement::new(
            tags::ACTION_TYPE_ID,
            VR::US,
            PrimitiveValue::from(ACTION_REQUEST_COMMITMENT),
        ),
    ])
}

fn syntax(ts: &str) -> Result<dicom_transfer_syntax_registry::TransferSyntax, ReportError> {
    match ts {
        IMPLICIT_VR_LE => Ok(IMPLICIT_VR_LITTLE_ENDIAN.erased()),
        EXPLICIT_VR_LE => Ok(EXPLICIT_VR_LITTLE_ENDIAN.erased()),
        other => Err(ReportError::Syntax(other.to_owned())),
    }
}

fn reference(sop_class_uid: &str, sop_instance_uid: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class_uid),
        ),
        DataElement::new(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance_uid),
        ),
    ])
}

/// The N-ACTION data set: the Transaction UID and every instance as
/// (SOP Class UID, SOP Instance UID), in syntax `ts`.
pub fn action_data_set(
    transaction_uid: &str,
    instances: &[(String, String)],
    ts: &str,
) -> Result<Vec<u8>, ReportError> {
    let ts = syntax(ts)?;
    let items: Vec<_> = instances.iter().map(|(c, i)| reference(c, i)).collect();
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::TRANSACTION_UID,
            VR::UI,
            PrimitiveValue::from(transaction_uid),
        ),
        DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::new(items, Length::UNDEFINED),
        ),
    ]);
    let mut out = Vec::with_capacity(64 + 120 * instances.len());
    obj.write_dataset_with_ts(&mut out, &ts)
        .map_err(|e| ReportError::Encode(e.to_string()))?;
    Ok(out)
}

/// What a node reported for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentReport {
    pub transaction_uid: String,
    /// SOP Instance UIDs the node committed to keep.
    pub committed: Vec<String>,
    /// SOP Instance UIDs it did not, with the Failure Reason (0 when absent).
    pub failed: Vec<(String, u16)>,
}

fn uid(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_owned()
        })
        .filter(|s| !s.is_empty())
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

/// Whether `tag` is a sequence (implicit VR data sets do not say).
fn is_sequence(tag: Tag) -> bool {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    matches!(
        dicom_dictionary_std::StandardDataDictionary
            .by_tag(tag)
            .map(|e| e.vr()),
        Some(VirtualVr::Exact(VR::SQ))
    )
}

/// Checks that every declared length fits in what arrived before dicom-rs
/// parses a peer's data set: its parser allocates each declared length up
/// front, so one bogus length would cost gigabytes. Sequences and items are
/// walked into (their contents are checked too); an undefined length is
/// only allowed there.
fn check_lengths(bytes: &[u8], explicit: bool) -> Result<(), ReportError> {
    const UNDEFINED: u32 = 0xFFFF_FFFF;
    let bad = |why: String| Err(ReportError::Decode(why));
    let mut at = 0usize;
    while at < bytes.len() {
        let head = |n: usize| bytes.get(at..at + n).ok_or(());
        let Ok(h) = head(8) else {
            return bad("truncated element header".into());
        };
        let tag = Tag(
            u16::from_le_bytes([h[0], h[1]]),
            u16::from_le_bytes([h[2], h[3]]),
        );
        // Items and delimiters have no VR in either syntax.
        if tag.0 == 0xFFFE {
            let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            at += 8;
            if tag.1 == 0xE000 && len != UNDEFINED && len as usize > bytes.len() - at {
                return bad(format!("an item declares {len} bytes past the end"));
            }
            continue;
        }
        let (sequence, len, header) = if explicit {
            let vr = [h[4], h[5]];
            let long = matches!(
                &vr,
                b"OB"
                    | b"OD"
                    | b"OF"
                    | b"OL"
                    | b"OV"
                    | b"OW"
                    | b"SQ"
                    | b"SV"
                    | b"UC"
                    | b"UN"
                    | b"UR"
                    | b"UT"
                    | b"UV"
            );
            if long {
                let Ok(h) = head(12) else {
                    return bad("truncated element header".into());
                };
                (
                    &vr == b"SQ",
                    u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
                    12,
                )
            } else {
                (false, u32::from(u16::from_le_bytes([h[6], h[7]])), 8)
            }
        } else {
            let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            (is_sequence(tag) || len == UNDEFINED, len, 8)
        };
        at += header;
        if len == UNDEFINED {
            if !sequence {
                return bad(format!("{tag} has an undefined length"));
            }
            continue;
        }
        if len as usize > bytes.len() - at {
            return bad(format!("{tag} declares {len} bytes past the end"));
        }
        if !sequence {
            at += len as usize;
        }
    }
    Ok(())
}

/// Reads an N-EVENT-REPORT data set (from the node: untrusted) in syntax `ts`.
pub fn event_report_from(bytes: &[u8], ts: &str) -> Result<CommitmentReport, ReportError> {
    check_lengths(bytes, ts == EXPLICIT_VR_LE)?;
    let ts = syntax(ts)?;
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &ts)
        .map_err(|e| ReportError::Decode(e.to_string()))?;
    let transaction_uid = uid(&obj, tags::TRANSACTION_UID).ok_or(ReportError::NoTransaction)?;
    let committed = items(&obj, tags::REFERENCED_SOP_SEQUENCE)
        .iter()
        .filter_map(|i| uid(i, tags::REFERENCED_SOP_INSTANCE_UID))
        .collect();
    let failed = items(&obj, tags::FAILED_SOP_SEQUENCE)
        .iter()
        .filter_map(|i| {
            let sop = uid(i, tags::REFERENCED_SOP_INSTANCE_UID)?;
            let reason = i
                .element_opt(tags::FAILURE_REASON)
                .ok()
                .flatten()
                .and_then(|e| e.to_int::<u16>().ok())
                .unwrap_or(0);
            Some((sop, reason))
        })
        .collect();
    Ok(CommitmentReport {
        transaction_uid,
        committed,
        failed,
    })
}

/// A Failure Reason (PS3.3 C.14.1.1) in words.
pub fn failure_reason(code: u16) -> &'static str {
    match code {
        0x0110 => "processing failure",
        0x0112 => "no such object instance",
        0x0213 => "resource limitation",
        0x0122 => "referenced SOP class not supported",
        0x0119 => "class / instance conflict",
        0x0131 => "duplicate transaction UID",
        _ => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

    /// A report as a node writes it: some committed, one failed.
    fn report_bytes(ts: &str) -> Vec<u8> {
        let ts = syntax(ts).expect("syntax");
        let mut failed = reference(CT, "1.2.3.9");
        failed.put(DataElement::new(
            tags::FAILURE_REASON,
            VR::US,
            PrimitiveValue::from(0x0112u16),
        ));
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::TRANSACTION_UID,
                VR::UI,
                PrimitiveValue::from("2.25.7"),
            ),
            DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::new(
                    vec![reference(CT, "1.2.3.1"), reference(CT, "1.2.3.2")],
                    Length::UNDEFINED,
                ),
            ),
            DataElement::new(
                tags::FAILED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::new(vec![failed], Length::UNDEFINED),
            ),
        ]);
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, &ts).expect("writes");
        out
    }

    #[test]
    fn a_report_with_failures_reads_back_in_both_syntaxes() {
        for ts in [IMPLICIT_VR_LE, EXPLICIT_VR_LE] {
            let r = event_report_from(&report_bytes(ts), ts).expect("reads");
            assert_eq!(r.transaction_uid, "2.25.7");
            assert_eq!(r.committed, ["1.2.3.1", "1.2.3.2"]);
            assert_eq!(r.failed, [("1.2.3.9".to_owned(), 0x0112)]);
        }
    }

    #[test]
    fn the_action_data_set_carries_the_transaction_and_every_instance() {
        let refs = vec![
            (CT.to_owned(), "1.2.3.1".to_owned()),
            (CT.to_owned(), "1.2.3.22".to_owned()),
        ];
        for ts in [IMPLICIT_VR_LE, EXPLICIT_VR_LE] {
            let bytes = action_data_set("2.25.42", &refs, ts).expect("encodes");
            let obj = InMemDicomObject::read_dataset_with_ts(&bytes[..], &syntax(ts).unwrap())
                .expect("decodes");
            assert_eq!(uid(&obj, tags::TRANSACTION_UID).as_deref(), Some("2.25.42"));
            let got: Vec<_> = items(&obj, tags::REFERENCED_SOP_SEQUENCE)
                .iter()
                .map(|i| {
                    (
                        uid(i, tags::REFERENCED_SOP_CLASS_UID).unwrap(),
                        uid(i, tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
                    )
                })
                .collect();
            assert_eq!(got, refs);
        }
    }

    #[test]
    fn a_report_without_transaction_or_in_another_syntax_is_an_error() {
        let empty = action_data_set("", &[], IMPLICIT_VR_LE).expect("encodes");
        assert!(matches!(
            event_report_from(&empty, IMPLICIT_VR_LE),
            Err(ReportError::NoTransaction)
        ));
        assert!(matches!(
            event_report_from(&empty, "1.2.840.10008.1.2.2"),
            Err(ReportError::Syntax(_))
        ));
        assert!(event_report_from(&[0xff; 7], EXPLICIT_VR_LE).is_err());
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_parsing() {
        for ts in [IMPLICIT_VR_LE, EXPLICIT_VR_LE] {
            let mut bytes = report_bytes(ts);
            // The Transaction UID comes first: make it claim 2 GiB.
            if ts == IMPLICIT_VR_LE {
                bytes[4..8].copy_from_slice(&0x8000_0000u32.to_le_bytes());
            } else {
                bytes[6..8].copy_from_slice(&0xFFF0u16.to_le_bytes());
            }
            match event_report_from(&bytes, ts) {
                Err(ReportError::Decode(why)) => assert!(why.contains("declares"), "{why}"),
                other => panic!("expected the length check to refuse it, got {other:?}"),
            }
        }
        // A bogus length inside a sequence item is found too.
        let mut bytes = report_bytes(IMPLICIT_VR_LE);
        let at = bytes
            .windows(4)
            .position(|w| w == [0x08, 0x00, 0x50, 0x11])
            .expect("a Referenced SOP Class UID");
        bytes[at + 4..at + 8].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
        assert!(matches!(
            event_report_from(&bytes, IMPLICIT_VR_LE),
            Err(ReportError::Decode(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = event_report_from(&bytes, IMPLICIT_VR_LE);
            let _ = event_report_from(&bytes, EXPLICIT_VR_LE);
        }
    }

    #[test]
    fn the_action_command_names_the_well_known_instance_and_action_1() {
        let rq = n_action_rq(5).expect("encodes");
        let obj = dimse::read_command(&rq).expect("reads");
        assert_eq!(
            dimse::u16_field(&obj, tags::COMMAND_FIELD, "cf").unwrap(),
            N_ACTION_RQ
        );
        assert_eq!(
            dimse::u16_field(&obj, tags::ACTION_TYPE_ID, "action").unwrap(),
            1
        );
        assert_eq!(
            uid(&obj, tags::REQUESTED_SOP_INSTANCE_UID).as_deref(),
            Some(STORAGE_COMMITMENT_PUSH_INSTANCE)
        );
    }

    #[test]
    fn transaction_uids_are_valid_and_distinct() {
        let (a, b) = (new_transaction_uid(), new_transaction_uid());
        assert_ne!(a, b);
        assert!(a.starts_with("2.25.") && a.len() <= 64);
        assert!(laminate_store::is_valid_uid(&a), "{a}");
    }
}
