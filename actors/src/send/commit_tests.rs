//! The storage commitment request against an in-process commitment SCP:
//! one that reports on the requesting association (it accepts our SCP role)
//! and one that does not (the association is released after its answer).

use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_ul::association::server::{Negotiation, ServerAssociationOptions};
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, RequestorRoles};

use super::tests::{options, status_target};
use super::*;
use crate::commitment::{
    action_data_set, expect, new_transaction_uid, N_EVENT_REPORT_RQ, STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
};
use crate::dimse::{self, DATA_SET_PRESENT, EXPLICIT_VR_LE, IMPLICIT_VR_LE, NO_DATA_SET};

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Grants the requestor whatever roles it asks for storage commitment.
struct GrantRoles;

impl Negotiation for GrantRoles {
    fn negotiate_roles(&self, sop: &str, scu: bool, scp: bool) -> Option<RequestorRoles> {
        (sop == STORAGE_COMMITMENT_PUSH).then_some(RequestorRoles { scu, scp })
    }
}

fn command(elements: Vec<(dicom_core::Tag, VR, PrimitiveValue)>) -> Vec<u8> {
    dimse::encode_command(
        elements
            .into_iter()
            .map(|(t, vr, v)| DataElement::new(t, vr, v))
            .collect(),
    )
    .expect("command")
}

/// What the fake SCP saw after its N-ACTION-RSP.
#[derive(Debug, PartialEq, Eq)]
enum Then {
    /// It reported here, was answered with this status, then released.
    Reported { status: u16, released: bool },
    /// The requestor released right away.
    Released,
}

/// A one-association commitment SCP; with `report_here` it grants our SCP
/// role and reports every requested instance committed on the association.
fn commitment_scp(report_here: bool) -> (u16, JoinHandle<(String, Then)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let opts = ServerAssociationOptions::new()
            .accept_any()
            .with_abstract_syntax(STORAGE_COMMITMENT_PUSH)
            .with_transfer_syntax(EXPLICIT_VR_LE)
            .with_transfer_syntax(IMPLICIT_VR_LE)
            .read_timeout(Duration::from_secs(10));
        let mut assoc = if report_here {
            opts.with_negotiation(GrantRoles).establish(stream)
        } else {
            opts.establish(stream)
        }
        .expect("association");
        let pc = assoc.presentation_contexts()[0].clone();
        let ts = pc.transfer_syntax.trim_end_matches('\0').to_owned();
        // The N-ACTION: command, then its data set.
        let mut data = Vec::new();
        loop {
            match assoc.receive().expect("N-ACTION") {
                Pdu::PData { data: pdvs } => {
                    let last = pdvs
                        .iter()
                        .any(|p| p.value_type == PDataValueType::Data && p.is_last);
                    for p in pdvs
                        .into_iter()
                        .filter(|p| p.value_type == PDataValueType::Data)
                    {
                        data.extend_from_slice(&p.data);
                    }
                    if last {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(
            &data[..],
            &if ts == IMPLICIT_VR_LE {
                dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased()
            } else {
                dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased()
            },
        );
        let tx = obj
            .ok()
            .and_then(|o| {
                o.element(tags::TRANSACTION_UID).ok().map(|e| {
                    e.to_str()
                        .unwrap_or_default()
                        .trim_end_matches('\0')
                        .to_owned()
                })
            })
            .unwrap_or_default();
        let rsp = command(vec![
            (
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                STORAGE_COMMITMENT_PUSH.into(),
            ),
            (tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(0x8130u16)),
            (
                tags::MESSAGE_ID_BEING_RESPONDED_TO,
                VR::US,
                PrimitiveValue::from(1u16),
            ),
            (
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                PrimitiveValue::from(NO_DATA_SET),
            ),
            (tags::STATUS, VR::US, PrimitiveValue::from(0u16)),
            (
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                STORAGE_COMMITMENT_PUSH_INSTANCE.into(),
            ),
        ]);
        assoc
            .send(&dimse::command_pdu(pc.id, rsp))
            .expect("N-ACTION-RSP");
        if !report_here {
            let then = match assoc.receive() {
                Ok(Pdu::ReleaseRQ) => {
                    let _ = assoc.send(&Pdu::ReleaseRP);
                    Then::Released
                }
                other => panic!("expected a release, got {other:?}"),
            };
            return (tx, then);
        }
        let rq = command(vec![
            (
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                STORAGE_COMMITMENT_PUSH.into(),
            ),
            (
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(N_EVENT_REPORT_RQ),
            ),
            (tags::MESSAGE_ID, VR::US, PrimitiveValue::from(9u16)),
            (
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                PrimitiveValue::from(DATA_SET_PRESENT),
            ),
            (
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                STORAGE_COMMITMENT_PUSH_INSTANCE.into(),
            ),
            (tags::EVENT_TYPE_ID, VR::US, PrimitiveValue::from(1u16)),
        ]);
        let refs = vec![
            (CT.to_owned(), "1.2.3.1".to_owned()),
            (CT.to_owned(), "1.2.3.2".to_owned()),
        ];
        let report = action_data_set(&tx, &refs, &ts).expect("report");
        assoc
            .send(&Pdu::PData {
                data: vec![
                    PDataValue {
                        presentation_context_id: pc.id,
                        value_type: PDataValueType::Command,
                        is_last: true,
                        data: rq,
                    },
                    PDataValue {
                        presentation_context_id: pc.id,
                        value_type: PDataValueType::Data,
                        is_last: true,
                        data: report,
                    },
                ],
            })
            .expect("N-EVENT-REPORT-RQ");
        let status = match assoc.receive().expect("N-EVENT-REPORT-RSP") {
            Pdu::PData { data } => {
                let r = dimse::decode_response(&data[0].data).expect("response");
                assert_eq!(r.command_field, 0x8100);
                assert_eq!(r.responding_to, 9);
                r.status
            }
            other => panic!("unexpected {other:?}"),
        };
        let released = matches!(assoc.receive(), Ok(Pdu::ReleaseRQ));
        if released {
            let _ = assoc.send(&Pdu::ReleaseRP);
        }
        (tx, Then::Reported { status, released })
    });
    (port, handle)
}

fn refs() -> Vec<(String, String)> {
    vec![
        (CT.to_owned(), "1.2.3.1".to_owned()),
        (CT.to_owned(), "1.2.3.2".to_owned()),
    ]
}

#[test]
fn a_node_granting_our_scp_role_reports_on_the_requesting_association() {
    let (port, scp) = commitment_scp(true);
    let tx = new_transaction_uid();
    let mut expected = expect(&tx);
    request_commitment(
        &status_target(port),
        &options(),
        &tx,
        &refs(),
        Duration::from_secs(10),
    )
    .expect("requested");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), expected.report()).await })
        .expect("a report in time")
        .expect("a report");
    assert_eq!(report.transaction_uid, tx);
    assert_eq!(report.committed, ["1.2.3.1", "1.2.3.2"]);
    let (seen_tx, then) = scp.join().expect("scp");
    assert_eq!(seen_tx, tx);
    assert_eq!(
        then,
        Then::Reported {
            status: 0,
            released: true
        }
    );
}

#[test]
fn without_the_role_the_association_is_released_after_the_answer() {
    let (port, scp) = commitment_scp(false);
    let tx = new_transaction_uid();
    request_commitment(
        &status_target(port),
        &options(),
        &tx,
        &refs(),
        Duration::from_secs(10),
    )
    .expect("requested");
    let (seen_tx, then) = scp.join().expect("scp");
    assert_eq!(seen_tx, tx);
    assert_eq!(then, Then::Released);
}

#[test]
fn a_node_without_storage_commitment_is_a_refusal_not_a_retry() {
    // A storescp-like SCP that knows only CT storage.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let scp = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let _ = ServerAssociationOptions::new()
            .accept_any()
            .with_abstract_syntax(CT)
            .establish(stream);
    });
    let err = request_commitment(
        &status_target(port),
        &options(),
        "2.25.1",
        &refs(),
        Duration::ZERO,
    )
    .expect_err("refused");
    assert!(matches!(err, CommitRequestError::Refused(_)), "{err:?}");
    let _ = scp.join();
}
