//! One C-ECHO over a fresh association, plain or DICOM TLS as the node is set up
//! (blocking; call it on a blocking thread).

use std::time::{Duration, Instant};

use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions};
use dicom_ul::association::{CloseSocket, Error as UlError};
use dicom_ul::pdu::Pdu;
use laminate_config::NodeTls;

use crate::dimse::{self, C_ECHO_RSP, VERIFICATION_SOP_CLASS};
use crate::send::chain;

/// Connect, read and write deadline of an echo.
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("association failed: {0}")]
    Association(String),
    #[error("the node accepted no Verification context")]
    NoContext,
    #[error("C-ECHO failed: {0}")]
    Exchange(String),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("C-ECHO status 0x{0:04X}")]
    Status(u16),
}

/// Runs a C-ECHO against `host:port` (over DICOM TLS with `tls`) and returns the
/// round trip of the whole exchange (association, echo, release).
pub fn c_echo(
    host: &str,
    port: u16,
    called_ae: &str,
    calling_ae: &str,
    tls: Option<&NodeTls>,
) -> Result<Duration, EchoError> {
    let started = Instant::now();
    let options = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae)
        .called_ae_title(called_ae)
        .with_abstract_syntax(VERIFICATION_SOP_CLASS)
        .connection_timeout(ECHO_TIMEOUT)
        .read_timeout(ECHO_TIMEOUT)
        .write_timeout(ECHO_TIMEOUT);
    match tls {
        None => {
            let assoc = options
                .establish((host, port))
                .map_err(|e| EchoError::Association(chain(&e)))?;
            exchange(assoc)?;
        }
        Some(tls) => {
            let assoc = options
                .tls_config(tls.config.clone())
                .server_name(host)
                .establish_tls((host, port))
                .map_err(|e| match e {
                    UlError::TlsConnection { .. }
                    | UlError::TlsHandshake { .. }
                    | UlError::InvalidServerName { .. } => {
                        let where_ = format!("{called_ae}@{host}:{port}");
                        EchoError::Association(crate::send::tls_failure(&where_, &chain(&e)))
                    }
                    other => {
                        let detail = chain(&other);
                        if crate::send::looks_like_tls(&detail) {
                            let where_ = format!("{called_ae}@{host}:{port}");
                            EchoError::Association(crate::send::tls_failure(&where_, &detail))
                        } else {
                            EchoError::Association(detail)
                        }
                    }
                })?;
            exchange(assoc)?;
        }
    }
    Ok(started.elapsed())
}

fn exchange<S>(mut assoc: ClientAssociation<S>) -> Result<(), EchoError>
where
    S: CloseSocket + std::io::Read + std::io::Write,
{
    let pc_id = assoc
        .presentation_contexts()
        .first()
        .map(|pc| pc.id)
        .ok_or(EchoError::NoContext)?;
    let command = dimse::c_echo_rq(1).map_err(|e| EchoError::Exchange(e.to_string()))?;
    let exchange = (|| {
        assoc
            .send(&dimse::command_pdu(pc_id, command))
            .map_err(|e| EchoError::Exchange(e.to_string()))?;
        match assoc
            .receive()
            .map_err(|e| EchoError::Exchange(e.to_string()))?
        {
            Pdu::PData { data } => {
                let bytes: Vec<u8> = data.into_iter().flat_map(|pdv| pdv.data).collect();
                let rsp = dimse::decode_response(&bytes)
                    .map_err(|e| EchoError::Unexpected(e.to_string()))?;
                if rsp.command_field != C_ECHO_RSP {
                    return Err(EchoError::Unexpected(format!(
                        "command field 0x{:04X}",
                        rsp.command_field
                    )));
                }
                if rsp.status != 0 {
                    return Err(EchoError::Status(rsp.status));
                }
                Ok(())
            }
            other => Err(EchoError::Unexpected(
                format!("{other:?}").chars().take(120).collect(),
            )),
        }
    })();
    match exchange {
        Ok(()) => {
            let _ = assoc.release();
            Ok(())
        }
        Err(e) => {
            let _ = assoc.abort();
            Err(e)
        }
    }
}
