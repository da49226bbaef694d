//! The Storage Commitment request (N-ACTION) to a node, on an association of
//! its own (plain or TLS like the node's C-STOREs): the instances as
//! (SOP Class, SOP Instance), answered by an N-ACTION-RSP. The result comes
//! later as an N-EVENT-REPORT, usually on an association the node opens to
//! our ingest SCP. We also offer to take it on this association (SCP/SCU
//! role selection): when the node accepts that role for us, the association
//! is kept open for a while after the N-ACTION-RSP, on a thread of its own,
//! and a report arriving there is handed over exactly like the ingest SCP's.

use std::time::Duration;

use dicom_ul::association::client::ClientAssociation;
use dicom_ul::association::{Association, CloseSocket};
use dicom_ul::pdu::{PDataValueType, Pdu, PresentationContextResultReason};

use super::association::{establish, establish_tls, our_max_pdu, EstablishFail};
use super::contexts::Proposal;
use super::wire::{RecvFail, Transport, Wire};
use super::{SendOptions, Target};
use crate::commitment::{
    action_data_set, deliver, event_report_from, n_action_rq, N_ACTION_RSP, N_EVENT_REPORT_RQ,
    STORAGE_COMMITMENT_PUSH,
};
use crate::dimse::{self, EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// Why a commitment request did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitRequestError {
    /// The node could not be reached, or the association broke: ask again later.
    #[error("{0}")]
    Transient(String),
    /// The node does not do storage commitment, or refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Asks `target` to commit `instances` ((SOP Class UID, SOP Instance UID))
/// under `transaction_uid`. Blocking: run it off the actix threads. Returns
/// once the node answered; when the node may report on this association it
/// stays open up to `linger` on its own thread.
pub fn request_commitment(
    target: &Target,
    opts: &SendOptions,
    transaction_uid: &str,
    instances: &[(String, String)],
    linger: Duration,
) -> Result<(), CommitRequestError> {
    let proposals = [Proposal {
        abstract_syntax: STORAGE_COMMITMENT_PUSH.to_owned(),
        transfer_syntaxes: vec![EXPLICIT_VR_LE.to_owned(), IMPLICIT_VR_LE.to_owned()],
    }];
    let fail = |e: EstablishFail| match e {
        EstablishFail::Permanent(e) => {
            CommitRequestError::Refused(format!("{e} (is the node a Storage Commitment SCP?)"))
        }
        EstablishFail::Transient(e) => CommitRequestError::Transient(e),
    };
    match &target.tls {
        None => {
            let assoc = establish(target, &proposals, opts).map_err(fail)?;
            request_on(assoc, opts, transaction_uid, instances, linger)
        }
        Some(tls) => {
            let assoc = establish_tls(target, tls, &proposals, opts).map_err(fail)?;
            request_on(assoc, opts, transaction_uid, instances, linger)
        }
    }
}

fn request_on<S: Transport + CloseSocket + Send + 'static>(
    mut assoc: ClientAssociation<S>,
    opts: &SendOptions,
    transaction_uid: &str,
    instances: &[(String, String)],
    linger: Duration,
) -> Result<(), CommitRequestError> {
    let Some((pc_id, ts)) = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches('\0').to_owned()))
    else {
        let _ = assoc.abort();
        return Err(CommitRequestError::Refused(
            "the node does not accept Storage Commitment Push Model".into(),
        ));
    };
    let outcome = (|| {
        let command = n_action_rq(1).map_err(|e| CommitRequestError::Refused(e.to_string()))?;
        let data = action_data_set(transaction_uid, instances, &ts)
            .map_err(|e| CommitRequestError::Refused(e.to_string()))?;
        let mut wire = Wire::new(assoc.acceptor_max_pdu_length(), our_max_pdu(opts));
        wire.send_message(
            assoc.inner_stream(),
            pc_id,
            &command,
            &mut &data[..],
            data.len() as u64,
            &mut || {},
        )
        .map_err(|e| CommitRequestError::Transient(format!("sending N-ACTION: {e:?}")))?;
        let rsp = wire
            .read_command(assoc.inner_stream())
            .map_err(|e| CommitRequestError::Transient(format!("waiting for N-ACTION-RSP: {e}")))?;
        let rsp = dimse::decode_response(&rsp)
            .map_err(|e| CommitRequestError::Transient(format!("N-ACTION-RSP: {e}")))?;
        if rsp.command_field != N_ACTION_RSP {
            return Err(CommitRequestError::Transient(format!(
                "expected N-ACTION-RSP, got command 0x{:04X}",
                rsp.command_field
            )));
        }
        if rsp.status != 0 {
            return Err(CommitRequestError::Refused(format!(
                "the node refused the storage commitment request (status 0x{:04X})",
                rsp.status
            )));
        }
        Ok(wire)
    })();
    match outcome {
        Ok(wire) => {
            let may_report = assoc.requestor_roles_for(STORAGE_COMMITMENT_PUSH).scp;
            if may_report && !linger.is_zero() {
                let spawned = std::thread::Builder::new()
                    .name("commitment-linger".into())
                    .spawn(move || take_report_here(assoc, wire, pc_id, ts, linger));
                if let Err(e) = spawned {
                    tracing::debug!(error = %e, "cannot keep the commitment association open");
                }
            } else {
                close(assoc, &wire);
            }
            Ok(())
        }
        Err(e) => {
            let _ = assoc.abort();
            Err(e)
        }
    }
}

fn close<S: Transport + CloseSocket>(assoc: ClientAssociation<S>, wire: &Wire) {
    if wire.has_pending_input() {
        let _ = assoc.abort();
    } else if let Err(e) = assoc.release() {
        tracing::debug!(error = %e, "release after N-ACTION failed");
    }
}

/// Waits up to `linger` for the node's N-EVENT-REPORT on the requesting
/// association, hands it over and answers it; then releases (or answers the
/// node's own release). Anything else ends the wait: the report then comes
/// on a new association, to the ingest SCP.
fn take_report_here<S: Transport + CloseSocket>(
    mut assoc: ClientAssociation<S>,
    mut wire: Wire,
    pc_id: u8,
    ts: String,
    linger: Duration,
) {
    let _ = assoc.inner_stream().tcp().set_read_timeout(Some(linger));
    let message = read_message(&mut wire, assoc.inner_stream());
    let (pc, command, data) = match message {
        Ok(Message::Dimse(pc, c, d)) => (pc, c, d),
        Ok(Message::Release) => {
            let _ = assoc.send(&Pdu::ReleaseRP);
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "no storage commitment report on the requesting association");
            let _ = assoc.abort();
            return;
        }
    };
    let status = match crate::ingest::command::parse_request(&command) {
        Ok(rq) if rq.command_field == N_EVENT_REPORT_RQ && pc == pc_id => {
            let status = match event_report_from(&data, &ts) {
                Ok(report) => {
                    tracing::info!(transaction_uid = %report.transaction_uid, committed = report.committed.len(), failed = report.failed.len(), "storage commitment report received on the requesting association");
                    deliver(report);
                    crate::ingest::command::STATUS_SUCCESS
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable storage commitment report");
                    crate::ingest::command::STATUS_PROCESSING_FAILURE
                }
            };
            crate::ingest::command::response(&rq, status, None).ok()
        }
        Ok(rq) => {
            tracing::debug!(
                command = format_args!("0x{:04X}", rq.command_field),
                "unexpected request on the commitment association"
            );
            crate::ingest::command::response(
                &rq,
                crate::ingest::command::STATUS_UNRECOGNIZED_OPERATION,
                Some("only N-EVENT-REPORT is expected here"),
            )
            .ok()
        }
        Err(_) => None,
    };
    let answered = status.is_some_and(|rsp| assoc.send(&dimse::command_pdu(pc, rsp)).is_ok());
    if answered {
        close(assoc, &wire);
    } else {
        let _ = assoc.abort();
    }
}

/// One whole DIMSE message (command and, when announced, its data set), or
/// the node's release request.
enum Message {
    Dimse(u8, Vec<u8>, Vec<u8>),
    Release,
}

/// The largest report taken on the requesting association (as on the SCP).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

fn read_message<S: Transport>(wire: &mut Wire, stream: &mut S) -> Result<Message, RecvFail> {
    let (mut command, mut data) = (Vec::new(), Vec::new());
    let mut pc = None;
    let mut command_done = false;
    loop {
        match wire.read_pdu(stream)? {
            Pdu::PData { data: pdvs } => {
                for pdv in pdvs {
                    pc.get_or_insert(pdv.presentation_context_id);
                    match pdv.value_type {
                        PDataValueType::Command => {
                            command.extend_from_slice(&pdv.data);
                            command_done |= pdv.is_last;
                        }
                        PDataValueType::Data => {
                            data.extend_from_slice(&pdv.data);
                            if pdv.is_last {
                                return Ok(Message::Dimse(pc.unwrap_or(0), command, data));
                            }
                        }
                    }
                }
                if command.len() + data.len() > MAX_MESSAGE {
                    return Err(RecvFail::Protocol("message too large".into()));
                }
                if command_done && data.is_empty() {
                    let has_data = crate::ingest::command::parse_request(&command)
                        .map(|r| r.has_data_set)
                        .unwrap_or(false);
                    if !has_data {
                        return Ok(Message::Dimse(pc.unwrap_or(0), command, data));
                    }
                }
            }
            Pdu::ReleaseRQ => return Ok(Message::Release),
            Pdu::AbortRQ { source } => return Err(RecvFail::Aborted(format!("{source:?}"))),
            other => {
                return Err(RecvFail::Protocol(format!(
                    "unexpected {}",
                    other.short_description()
                )))
            }
        }
    }
}
