//! Request command sets as an SCP reads them, and the responses it answers
//! with (PS3.7 §9.3, §E). Command sets are always Implicit VR Little Endian.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;

use crate::dimse::{self, DimseError, NO_DATA_SET};

/// Success.
pub const STATUS_SUCCESS: u16 = 0x0000;
/// Refused: out of resources (the disk is under the floor or cannot be written).
pub const STATUS_OUT_OF_RESOURCES: u16 = 0xA700;
/// Error: the data set does not match the command (SOP class or instance UID),
/// as dcmtk's storescp answers.
pub const STATUS_DATA_SET_MISMATCH: u16 = 0xA900;
/// Error: cannot understand (the data set does not parse, or lacks a UID).
pub const STATUS_CANNOT_UNDERSTAND: u16 = 0xC000;
/// Error: cannot understand, a UID that is not digits and single dots.
pub const STATUS_INVALID_UID: u16 = 0xC001;
/// Failure: processing failure (the local store failed).
pub const STATUS_PROCESSING_FAILURE: u16 = 0x0110;
/// Failure: unrecognized operation (anything but C-ECHO and C-STORE).
pub const STATUS_UNRECOGNIZED_OPERATION: u16 = 0x0211;

/// ErrorComment is LO: at most 64 characters.
const MAX_ERROR_COMMENT: usize = 64;

/// What a request command set says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command_field: u16,
    pub message_id: u16,
    /// AffectedSOPClassUID (empty when absent), padding trimmed.
    pub sop_class_uid: String,
    /// AffectedSOPInstanceUID (empty when absent), padding trimmed.
    pub sop_instance_uid: String,
    /// A data set follows (CommandDataSetType is not 0x0101).
    pub has_data_set: bool,
}

/// Reads a request command set. Untrusted input: errors, never panics.
pub fn parse_request(bytes: &[u8]) -> Result<Request, DimseError> {
    let obj = dimse::read_command(bytes)?;
    let u16_of = |tag, name| dimse::u16_field(&obj, tag, name);
    let uid_of = |tag| -> String {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| trim_uid(&s).to_owned())
            .unwrap_or_default()
    };
    Ok(Request {
        command_field: u16_of(tags::COMMAND_FIELD, "CommandField")?,
        message_id: u16_of(tags::MESSAGE_ID, "MessageID")?,
        sop_class_uid: uid_of(tags::AFFECTED_SOP_CLASS_UID),
        sop_instance_uid: uid_of(tags::AFFECTED_SOP_INSTANCE_UID),
        has_data_set: u16_of(tags::COMMAND_DATA_SET_TYPE, "CommandDataSetType")? != NO_DATA_SET,
    })
}

/// UIDs are padded to even length with NUL (and some senders use spaces).
pub fn trim_uid(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

/// The response to `req` (C-ECHO-RSP, C-STORE-RSP, or the generic failure
/// for any other command): its command field is the request's with bit 15 set.
pub fn response(req: &Request, status: u16, comment: Option<&str>) -> Result<Vec<u8>, DimseError> {
    let mut elements = Vec::with_capacity(7);
    if !req.sop_class_uid.is_empty() {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(req.sop_class_uid.as_str()),
        ));
    }
    elements.extend([
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(req.command_field | 0x8000),
        ),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            PrimitiveValue::from(req.message_id),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(NO_DATA_SET),
        ),
        DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
    ]);
    if !req.sop_instance_uid.is_empty() {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(req.sop_instance_uid.as_str()),
        ));
    }
    if let Some(comment) = comment.filter(|_| status != STATUS_SUCCESS) {
        // LO: printable, no backslash, at most 64 characters.
        let text: String = comment
            .chars()
            .map(|c| if c == '\\' || c.is_control() { ' ' } else { c })
            .take(MAX_ERROR_COMMENT)
            .collect();
        elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(text),
        ));
    }
    dimse::encode_command(elements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dimse::{C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP};

    fn store_rq() -> Vec<u8> {
        dimse::encode_command(vec![
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2"),
            ),
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(C_STORE_RQ),
            ),
            DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(7u16)),
            DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0u16)),
            DataElement::new(
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                PrimitiveValue::from(0u16),
            ),
            DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3"),
            ),
        ])
        .expect("encodes")
    }

    #[test]
    fn reads_a_store_request_and_answers_it() {
        let req = parse_request(&store_rq()).expect("parses");
        assert_eq!(req.command_field, C_STORE_RQ);
        assert_eq!(req.message_id, 7);
        assert_eq!(req.sop_instance_uid, "1.2.3");
        assert!(req.has_data_set);
        let rsp = response(&req, STATUS_OUT_OF_RESOURCES, Some("disk\\full")).expect("encodes");
        let decoded = dimse::decode_response(&rsp).expect("decodes");
        assert_eq!(decoded.command_field, C_STORE_RSP);
        assert_eq!(decoded.responding_to, 7);
        assert_eq!(decoded.status, STATUS_OUT_OF_RESOURCES);
    }

    #[test]
    fn echo_request_without_instance_uid() {
        let rq = dimse::c_echo_rq(3).expect("encodes");
        let req = parse_request(&rq).expect("parses");
        assert_eq!(req.command_field, C_ECHO_RQ);
        assert!(!req.has_data_set);
        assert!(req.sop_instance_uid.is_empty());
        let rsp =
            dimse::decode_response(&response(&req, 0, None).expect("encodes")).expect("decodes");
        assert_eq!((rsp.command_field, rsp.status), (0x8030, 0));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_request(&bytes);
        }

        #[test]
        fn truncated_requests_never_panic(cut in 0usize..200) {
            let rq = store_rq();
            let _ = parse_request(&rq[..cut.min(rq.len())]);
        }
    }
}
