//! The Storage Commitment request (N-ACTION) to a node, on an association of
//! its own (plain or TLS like the node's C-STOREs): the instances as
//! (SOP Class, SOP Instance), answered by an N-ACTION-RSP. The result comes
//! later as an N-EVENT-REPORT, on an association the node opens to our
//! ingest SCP.

use dicom_ul::association::client::ClientAssociation;
use dicom_ul::association::CloseSocket;
use dicom_ul::pdu::PresentationContextResultReason;

use super::association::{establish, establish_tls, our_max_pdu, EstablishFail};
use super::contexts::Proposal;
use super::wire::{Transport, Wire};
use super::{SendOptions, Target};
use crate::commitment::{action_data_set, n_action_rq, N_ACTION_RSP, STORAGE_COMMITMENT_PUSH};
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
/// under `transaction_uid`. Blocking: run it off the actix threads.
pub fn request_commitment(
    target: &Target,
    opts: &SendOptions,
    transaction_uid: &str,
    instances: &[(String, String)],
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
            request_on(assoc, opts, transaction_uid, instances)
        }
        Some(tls) => {
            let assoc = establish_tls(target, tls, &proposals, opts).map_err(fail)?;
            request_on(assoc, opts, transaction_uid, instances)
        }
    }
}

fn request_on<S: Transport + CloseSocket>(
    mut assoc: ClientAssociation<S>,
    opts: &SendOptions,
    transaction_uid: &str,
    instances: &[(String, String)],
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
        Ok(wire.has_pending_input())
    })();
    match outcome {
        Ok(false) => {
            if let Err(e) = assoc.release() {
                tracing::debug!(error = %e, "release after N-ACTION failed");
            }
            Ok(())
        }
        Ok(true) => {
            let _ = assoc.abort();
            Ok(())
        }
        Err(e) => {
            let _ = assoc.abort();
            Err(e)
        }
    }
}
