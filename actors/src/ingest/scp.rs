//! One association, on its own thread: negotiation, then a loop over PDUs in
//! which every PDV is handled on its own.
//!
//! Why each PDV: a sender may pack the command PDV and the data PDVs of an
//! instance into one P-DATA-TF PDU (dcmtk's storescu does for small files),
//! and dicom-ul's `receive_pdata` merges them. So the loop reads whole PDUs
//! (`pdu_in.rs`: straight off the socket, PDVs lent as slices of one
//! buffer; dicom-ul negotiates and writes) and feeds each PDV to a small
//! state machine: a Command
//! PDV (possibly fragmented) starts a request, Data PDVs stream into the
//! instance's temporary file, the last Data PDV commits it and produces the
//! response.
//!
//! Every response goes out as one PDU in one `write` on a TCP_NODELAY
//! socket, so a stock sender (Nagle on, delayed ACK) never waits ~40 ms per
//! instance for the second half of a response; and quick-ACK is re-armed
//! before every read, so neither does its next request wait for our ACK.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use std::io::{Read, Write};

use dicom_ul::association::server::{AccessControl, DefaultNegotiation, ServerAssociation};
use dicom_ul::association::{Association, CloseSocket};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValueType, Pdu, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::ServerAssociationOptions;
use laminate_store::Store;
use socket2::SockRef;

use super::actor::IngestActor;
use super::command::{
    parse_request, response, trim_uid, Request, STATUS_CANNOT_UNDERSTAND,
    STATUS_PROCESSING_FAILURE, STATUS_SUCCESS, STATUS_UNRECOGNIZED_OPERATION,
};
use super::commitment::{take_report, MAX_REPORT};
use super::drain::Drain;
use super::indexer::Indexer;
use super::messages::InstanceIngested;
use super::pdu_in::{PduError, PduReader, Pdv, Received};
use super::writer::{available_space, Dirs, Expected, IncomingDir, IncomingFile, IngestFailure};
use super::IngestSettings;
use crate::commitment::{N_EVENT_REPORT_RQ, STORAGE_COMMITMENT_PUSH};
use crate::dimse::{C_ECHO_RQ, C_STORE_RQ, VERIFICATION_SOP_CLASS};
use crate::health::Mailbox;

/// A peer silent this long (between PDUs or inside one) is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest PDU we accept. Larger PDUs mean fewer headers and reads per
/// instance; 256 KiB is dicom-ul's own "large PDU" read buffer size.
pub const MAX_PDU_LENGTH: u32 = 256 * 1024 - 6;

/// Called-AE policy: ours, unless the settings accept any.
#[derive(Debug, Clone, Copy)]
pub struct CalledAe {
    pub accept_any: bool,
}

impl AccessControl for CalledAe {
    fn check_access(
        &self,
        this_ae_title: &str,
        _calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if self.accept_any || this_ae_title.trim() == called_ae_title.trim() {
            Ok(())
        } else {
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        }
    }
}

pub type ScpOptions = ServerAssociationOptions<'static, CalledAe, DefaultNegotiation>;

/// Negotiation: any abstract syntax (promiscuous: modalities also send
/// private storage SOP classes, which are stored as-is like any other), and
/// per context the first transfer syntax the peer proposes that the registry
/// knows (we store as received, so any known syntax will do).
pub fn options(settings: &IngestSettings) -> ScpOptions {
    ServerAssociationOptions::new()
        .ae_access_control(CalledAe {
            accept_any: settings.accept_any_called_ae,
        })
        .ae_title(settings.ae_title.clone())
        .with_abstract_syntax(VERIFICATION_SOP_CLASS)
        .promiscuous(true)
        .max_pdu_length(MAX_PDU_LENGTH)
        .read_timeout(IDLE_TIMEOUT)
        .write_timeout(IDLE_TIMEOUT)
}

/// What every association thread shares.
pub struct Shared {
    pub options: ScpOptions,
    pub dirs: Dirs,
    pub store: Store,
    pub min_free: crate::disk::Floor,
    pub events: Mailbox<IngestActor>,
    pub drain: Arc<Drain>,
    /// The TLS listener's associations (`options` carries its configuration).
    pub tls: bool,
}

/// Why an association ended.
#[derive(Debug)]
enum End {
    Released,
    PeerAborted,
    /// The appliance is stopping; closed between requests with A-ABORT.
    ShuttingDown,
    Lost(String),
    Violation(String),
}

/// The TCP socket under an association's stream (plain or TLS), for quick ACKs.
pub(crate) trait Socket: Read + Write + CloseSocket {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// Serves one connection until release, abort, error or idle timeout; over
/// DICOM TLS when this is the TLS listener's (`shared.tls`).
pub fn serve(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    // Lent to the drain while waiting between requests (see drain.rs).
    let lent = stream.try_clone().ok();
    if shared.tls {
        match shared.options.establish_tls(stream) {
            Ok(assoc) => serve_on(assoc, lent, peer, shared),
            Err(e) => {
                tracing::info!(%peer, error = %crate::send::chain(&e), "TLS association not established");
            }
        }
    } else {
        match shared.options.establish(stream) {
            Ok(assoc) => serve_on(assoc, lent, peer, shared),
            Err(e) => tracing::info!(%peer, error = %e, "association not established"),
        }
    }
}

fn serve_on<S: Socket>(
    mut assoc: ServerAssociation<S>,
    lent: Option<TcpStream>,
    peer: SocketAddr,
    shared: &Shared,
) {
    let calling_ae = assoc.peer_ae_title().trim().to_owned();
    // The negotiated list includes the contexts we rejected: keep the accepted ones.
    let contexts: HashMap<u8, String> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| (pc.id, trim_uid(&pc.transfer_syntax).to_owned()))
        .collect();
    tracing::debug!(%peer, calling_ae, contexts = contexts.len(), "association established");
    let mut session = Session {
        contexts,
        calling_ae,
        command: Vec::new(),
        command_pc: None,
        receiving: None,
        stored: 0,
        indexer: None,
        incoming: None,
    };
    let member = shared.drain.join(lent);
    let mut pdus = PduReader::new(MAX_PDU_LENGTH);
    let end = 'pdus: loop {
        // At shutdown an association closes between requests, never within one.
        let waiting = session.between_requests();
        if waiting && !member.idle() {
            break End::ShuttingDown;
        }
        // Linux drops quick-ACK mode on its own; re-arm it before each read so
        // a sender with Nagle on never waits for our delayed ACK (best effort).
        let _ = SockRef::from(assoc.inner_stream().tcp()).set_tcp_quickack(true);
        let received = pdus.read(assoc.inner_stream());
        if waiting && !member.busy() {
            // Woken by the drain, or a request that came as it started: that
            // request is left unanswered, for the sender to send again later.
            break End::ShuttingDown;
        }
        let pdu = match received {
            Ok(Received::PData(pdvs)) => {
                for pdv in pdvs {
                    match session.on_pdv(pdv, shared) {
                        Ok(None) => {}
                        Ok(Some(reply)) => {
                            // One PDU, encoded whole and written with one write_all.
                            if let Err(e) = assoc.send(&reply) {
                                break 'pdus End::Lost(e.to_string());
                            }
                        }
                        Err(violation) => break 'pdus End::Violation(violation),
                    }
                }
                continue;
            }
            Ok(Received::Other(pdu)) => pdu,
            Err(PduError::Io(e)) => break End::Lost(e.to_string()),
            Err(PduError::Malformed(e)) => break End::Violation(e),
        };
        match pdu {
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP);
                break End::Released;
            }
            Pdu::AbortRQ { .. } => break End::PeerAborted,
            other => break End::Violation(format!("unexpected {}", pdu_name(&other))),
        }
    };
    // Whatever was being received is dropped with the session: its temporary
    // file is removed.
    let stored = session.stored;
    drop(session);
    drop(member);
    match end {
        End::Released => {
            tracing::info!(%peer, stored, "association released");
        }
        End::PeerAborted => {
            tracing::info!(%peer, stored, "association aborted by the peer");
        }
        End::Lost(error) => {
            tracing::info!(%peer, stored, %error, "association lost");
        }
        End::ShuttingDown => {
            tracing::info!(%peer, stored, "association closed: the appliance is shutting down");
            let _ = assoc.abort();
        }
        End::Violation(error) => {
            tracing::warn!(%peer, stored, %error, "protocol violation; aborting the association");
            let _ = assoc.abort();
        }
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
        Pdu::Unknown { .. } => "unknown PDU",
    }
}

/// The per-association state machine over PDVs.
struct Session {
    /// Accepted presentation contexts: id → transfer syntax.
    contexts: HashMap<u8, String>,
    calling_ae: String,
    /// A command set being gathered (it may come in several PDVs).
    command: Vec<u8>,
    command_pc: Option<u8>,
    /// The request whose data set is arriving.
    receiving: Option<Receiving>,
    stored: u64,
    /// The catalog thread and the temporary directory, made at the first
    /// C-STORE (an association that only echoes needs neither).
    indexer: Option<Indexer>,
    incoming: Option<IncomingDir>,
}

struct Receiving {
    pc_id: u8,
    request: Request,
    sink: Sink,
}

/// Where a data set's bytes go.
enum Sink {
    File(IncomingFile),
    /// Refused before or while receiving: the rest is read and dropped, and
    /// this status answered.
    Refused {
        status: u16,
        comment: String,
    },
    /// A storage commitment report's data set, gathered in memory (small:
    /// a few UIDs per instance) up to [`MAX_REPORT`].
    Report(Vec<u8>),
}

impl Sink {
    fn refused(failure: &IngestFailure) -> Sink {
        Sink::Refused {
            status: failure.status(),
            comment: failure.to_string(),
        }
    }
}

type Violation = String;

impl Session {
    /// No request is being received (nor its command gathered).
    fn between_requests(&self) -> bool {
        self.receiving.is_none() && self.command_pc.is_none() && self.command.is_empty()
    }

    fn on_pdv(&mut self, pdv: Pdv<'_>, shared: &Shared) -> Result<Option<Pdu>, Violation> {
        let pc = pdv.presentation_context_id;
        if !self.contexts.contains_key(&pc) {
            return Err(format!(
                "PDV on presentation context {pc}, which was not accepted"
            ));
        }
        match pdv.value_type {
            PDataValueType::Command => {
                if self.receiving.is_some() {
                    return Err("a command while a data set was still expected".into());
                }
                if self.command_pc.is_some_and(|p| p != pc) {
                    return Err("a command's fragments on different presentation contexts".into());
                }
                self.command_pc = Some(pc);
                self.command.extend_from_slice(pdv.data);
                if !pdv.is_last {
                    return Ok(None);
                }
                self.command_pc = None;
                let bytes = std::mem::take(&mut self.command);
                let request =
                    parse_request(&bytes).map_err(|e| format!("unreadable command: {e}"))?;
                self.on_command(pc, request, shared)
            }
            PDataValueType::Data => {
                let Some(rx) = self.receiving.as_mut() else {
                    return Err("a data set without a command".into());
                };
                if rx.pc_id != pc {
                    return Err(
                        "a data set on another presentation context than its command".into(),
                    );
                }
                match &mut rx.sink {
                    Sink::File(file) => {
                        if let Err(e) = file.append(pdv.data) {
                            // Dropping the file removes it; the rest is read and discarded.
                            rx.sink = Sink::refused(&IngestFailure::Io(e));
                        }
                    }
                    Sink::Report(buf) if buf.len() + pdv.data.len() > MAX_REPORT => {
                        rx.sink = Sink::Refused {
                            status: STATUS_PROCESSING_FAILURE,
                            comment: format!("report larger than {MAX_REPORT} bytes"),
                        };
                    }
                    Sink::Report(buf) => buf.extend_from_slice(pdv.data),
                    Sink::Refused { .. } => {}
                }
                if !pdv.is_last {
                    return Ok(None);
                }
                let Some(rx) = self.receiving.take() else {
                    return Err("lost the request being received".into());
                };
                self.finish(rx, shared).map(Some)
            }
        }
    }

    fn on_command(
        &mut self,
        pc: u8,
        request: Request,
        shared: &Shared,
    ) -> Result<Option<Pdu>, Violation> {
        match request.command_field {
            C_ECHO_RQ if !request.has_data_set => {
                reply(pc, &request, STATUS_SUCCESS, None).map(Some)
            }
            C_STORE_RQ if request.has_data_set => {
                let sink = self.open(pc, &request, shared);
                self.receiving = Some(Receiving {
                    pc_id: pc,
                    request,
                    sink,
                });
                Ok(None)
            }
            N_EVENT_REPORT_RQ
                if request.has_data_set && request.sop_class_uid == STORAGE_COMMITMENT_PUSH =>
            {
                self.receiving = Some(Receiving {
                    pc_id: pc,
                    request,
                    sink: Sink::Report(Vec::new()),
                });
                Ok(None)
            }
            field => {
                let (status, comment) = if field == C_STORE_RQ {
                    (STATUS_CANNOT_UNDERSTAND, "C-STORE-RQ without a data set")
                } else {
                    (
                        STATUS_UNRECOGNIZED_OPERATION,
                        "only C-ECHO, C-STORE and commitment reports are served",
                    )
                };
                if request.has_data_set {
                    self.receiving = Some(Receiving {
                        pc_id: pc,
                        request,
                        sink: Sink::Refused {
                            status,
                            comment: comment.into(),
                        },
                    });
                    Ok(None)
                } else {
                    reply(pc, &request, status, Some(comment)).map(Some)
                }
            }
        }
    }

    /// Where a C-STORE's data set goes: a temporary file, or nowhere with a
    /// failure status when the instance cannot be taken.
    fn open(&mut self, pc: u8, request: &Request, shared: &Shared) -> Sink {
        if request.sop_instance_uid.is_empty() || request.sop_class_uid.is_empty() {
            return Sink::refused(&IngestFailure::MissingUid(
                "AffectedSOPClassUID or AffectedSOPInstanceUID (command)",
            ));
        }
        let floor = shared.min_free.bytes();
        match available_space(&shared.dirs.storage) {
            Ok(available) if available < floor => {
                // The evictor may free enough for the sender's next try.
                shared.min_free.hit();
                return Sink::refused(&IngestFailure::DiskFloor { available, floor });
            }
            Ok(_) => {}
            // Not knowing is no reason to refuse: writing will tell.
            Err(e) => tracing::warn!(error = %e, "cannot read the free disk space"),
        }
        let expected = Expected {
            sop_class_uid: request.sop_class_uid.clone(),
            sop_instance_uid: request.sop_instance_uid.clone(),
            transfer_syntax: self.contexts.get(&pc).cloned().unwrap_or_default(),
            calling_ae: self.calling_ae.clone(),
        };
        let incoming = self
            .incoming
            .get_or_insert_with(|| shared.dirs.association_incoming());
        match IncomingFile::create(incoming.path(), expected) {
            Ok(file) => Sink::File(file),
            Err(e) => Sink::refused(&e),
        }
    }

    /// The last data PDV arrived: commit (or not) and build the response.
    fn finish(&mut self, rx: Receiving, shared: &Shared) -> Result<Pdu, Violation> {
        let (status, comment) = match rx.sink {
            Sink::File(file) => {
                let indexer = self
                    .indexer
                    .get_or_insert_with(|| Indexer::start(shared.store.clone()));
                match file.commit(&shared.dirs, &shared.store, indexer) {
                    Ok(done) => {
                        self.stored += 1;
                        shared.events.do_send(InstanceIngested {
                            sop_instance_uid: done.sop_instance_uid,
                            study_instance_uid: done.study_instance_uid,
                            bytes: done.bytes,
                        });
                        (STATUS_SUCCESS, None)
                    }
                    Err(e) => (e.status(), Some(e.to_string())),
                }
            }
            Sink::Refused { status, comment } => (status, Some(comment)),
            Sink::Report(bytes) => {
                let ts = self.contexts.get(&rx.pc_id).cloned().unwrap_or_default();
                let status = take_report(&self.calling_ae, &bytes, &ts);
                return reply(rx.pc_id, &rx.request, status, None);
            }
        };
        if let Some(comment) = &comment {
            tracing::warn!(
                sop_instance_uid = %rx.request.sop_instance_uid,
                status = format_args!("0x{status:04X}"),
                error = %comment,
                "instance refused"
            );
        }
        reply(rx.pc_id, &rx.request, status, comment.as_deref())
    }
}

/// A response command set as one P-DATA-TF PDU with one PDV.
fn reply(pc: u8, request: &Request, status: u16, comment: Option<&str>) -> Result<Pdu, Violation> {
    let data = response(request, status, comment).map_err(|e| e.to_string())?;
    Ok(crate::dimse::command_pdu(pc, data))
}
