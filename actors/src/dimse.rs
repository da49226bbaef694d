//! DIMSE command sets: building requests and reading responses (PS3.7), shared
//! by the C-ECHO and C-STORE code. Command sets are always Implicit VR Little
//! Endian.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};

pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
/// CommandDataSetType: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;

#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error("cannot encode the command set: {0}")]
    Encode(String),
    #[error("cannot decode the command set: {0}")]
    Decode(String),
    #[error("the command set lacks {0}")]
    Missing(&'static str),
}

/// A whole command set as one P-DATA-TF PDU with one (last) command PDV.
pub fn command_pdu(presentation_context_id: u8, command: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: command,
        }],
    }
}

/// Encodes a command set.
pub fn encode_command(elements: Vec<DataElement<InMemDicomObject>>) -> Result<Vec<u8>, DimseError> {
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut buf = Vec::with_capacity(256);
    obj.write_dataset_with_ts(&mut buf, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| DimseError::Encode(e.to_string()))?;
    Ok(buf)
}

/// The C-ECHO-RQ command set.
pub fn c_echo_rq(message_id: u16) -> Result<Vec<u8>, DimseError> {
    encode_command(vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(VERIFICATION_SOP_CLASS),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(C_ECHO_RQ)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(NO_DATA_SET),
        ),
    ])
}

/// CommandDataSetType of a request carrying a data set (any value but 0x0101).
pub const DATA_SET_PRESENT: u16 = 0x0000;
/// Priority MEDIUM.
pub const PRIORITY_MEDIUM: u16 = 0x0000;

/// The C-STORE-RQ command set for one instance; `sop_instance_uid` must be
/// the one in the data set that follows.
pub fn c_store_rq(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Result<Vec<u8>, DimseError> {
    encode_command(vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class_uid),
        ),
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(C_STORE_RQ),
        ),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        DataElement::new(
            tags::PRIORITY,
            VR::US,
            PrimitiveValue::from(PRIORITY_MEDIUM),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(DATA_SET_PRESENT),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance_uid),
        ),
    ])
}

/// What a response command set says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub command_field: u16,
    pub responding_to: u16,
    pub status: u16,
}

/// A command set is a flat run of Implicit VR LE elements (tag, 4-byte
/// length, value). Checks that every declared length fits in what arrived
/// before dicom-rs parses it: its parser allocates each declared length up
/// front, so one bogus length from a peer would cost gigabytes.
pub fn check_command_lengths(mut rest: &[u8]) -> Result<(), DimseError> {
    while !rest.is_empty() {
        let (head, tail) = rest
            .split_at_checked(8)
            .ok_or_else(|| DimseError::Decode("truncated element header".into()))?;
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        rest = tail.get(len..).ok_or_else(|| {
            DimseError::Decode(format!("an element declares {len} bytes past the end"))
        })?;
    }
    Ok(())
}

/// Reads a command set from a peer (untrusted: every declared length is
/// checked first; errors, never panics).
pub fn read_command(bytes: &[u8]) -> Result<InMemDicomObject, DimseError> {
    check_command_lengths(bytes)?;
    InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| DimseError::Decode(e.to_string()))
}

/// A required US field of a command set; `name` says which in the error.
pub fn u16_field(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<u16, DimseError> {
    obj.element(tag)
        .map_err(|_| DimseError::Missing(name))?
        .to_int::<u16>()
        .map_err(|_| DimseError::Missing(name))
}

/// Reads a response command set (untrusted: it comes from the peer).
pub fn decode_response(bytes: &[u8]) -> Result<Response, DimseError> {
    let obj = read_command(bytes)?;
    let u16_of = |tag, name| u16_field(&obj, tag, name);
    Ok(Response {
        command_field: u16_of(tags::COMMAND_FIELD, "CommandField")?,
        responding_to: u16_of(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            "MessageIDBeingRespondedTo",
        )?,
        status: u16_of(tags::STATUS, "Status")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_round_trips_through_the_decoder_shape() {
        let rq = c_echo_rq(7).expect("encodes");
        let obj =
            InMemDicomObject::read_dataset_with_ts(&rq[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .expect("decodes");
        assert_eq!(
            obj.element(tags::COMMAND_FIELD)
                .expect("cf")
                .to_int::<u16>()
                .ok(),
            Some(C_ECHO_RQ)
        );
        assert_eq!(
            obj.element(tags::MESSAGE_ID)
                .expect("id")
                .to_int::<u16>()
                .ok(),
            Some(7)
        );
    }

    #[test]
    fn store_request_pads_odd_uids_with_nul_and_keeps_them() {
        let rq = c_store_rq(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3").expect("encodes");
        assert_eq!(rq.len() % 2, 0);
        let obj =
            InMemDicomObject::read_dataset_with_ts(&rq[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .expect("decodes");
        let uid = obj
            .element(tags::AFFECTED_SOP_INSTANCE_UID)
            .expect("uid")
            .to_str()
            .expect("str")
            .to_string();
        assert_eq!(uid.trim_end_matches('\0'), "1.2.3");
        let raw = obj
            .element(tags::AFFECTED_SOP_INSTANCE_UID)
            .expect("uid")
            .to_bytes()
            .expect("bytes")
            .to_vec();
        assert_eq!(raw, b"1.2.3\0");
        assert_eq!(
            obj.element(tags::COMMAND_FIELD)
                .expect("cf")
                .to_int::<u16>()
                .ok(),
            Some(C_STORE_RQ)
        );
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_parsing() {
        // CommandField, declared 2 GiB long, 2 bytes present.
        let bytes = [0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x80, 0x01, 0x80];
        match decode_response(&bytes) {
            Err(DimseError::Decode(why)) => assert!(why.contains("declares"), "{why}"),
            other => panic!("expected the length check to refuse it, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(decode_response(&[1, 2, 3]).is_err());
    }
}
