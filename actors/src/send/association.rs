//! One association's thread: establish, take instances from the shared work
//! list until it is empty (or the batch stops), release.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions};
use dicom_ul::association::Error as UlError;
use dicom_ul::pdu::{AssociationRJResult, MINIMUM_PDU_SIZE};

use super::batch::Shared;
use super::contexts::{self, Choice, Proposal};
use super::convert::convert;
use super::status::{classify, describe, StatusClass};
use super::wire::{quickack, SendFail, Wire};
use super::{EventSink, Item, ItemOutcome, SendEvent, SendOptions, Target, Ticket};
use crate::dimse::{self, C_STORE_RSP};

/// Largest PDU we announce or send.
const MAX_OUR_PDU: u32 = 16 * 1024 * 1024;
/// Smallest PDU we announce.
const MIN_OUR_PDU: u32 = 16 * 1024;

pub(crate) fn our_max_pdu(opts: &SendOptions) -> u32 {
    opts.max_pdu
        .clamp(MIN_OUR_PDU.max(MINIMUM_PDU_SIZE), MAX_OUR_PDU)
}

/// Why no association could be opened.
pub(crate) enum EstablishFail {
    /// Refused for good (rejected permanently, no context accepted): the
    /// group's items fail.
    Permanent(String),
    /// Try again later.
    Transient(String),
}

type Assoc = ClientAssociation<TcpStream>;

pub(crate) fn establish(
    target: &Target,
    proposals: &[Proposal],
    opts: &SendOptions,
) -> Result<Assoc, EstablishFail> {
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(target.calling_ae.as_str())
        .called_ae_title(target.called_ae.as_str())
        .max_pdu_length(our_max_pdu(opts))
        .connection_timeout(opts.connect_timeout)
        // The negotiation answer is due within the connect deadline; the I/O
        // deadline is set once associated.
        .read_timeout(opts.connect_timeout)
        .write_timeout(opts.connect_timeout);
    for p in proposals {
        options = options.with_presentation_context(
            p.abstract_syntax.as_str(),
            p.transfer_syntaxes.iter().map(String::as_str).collect(),
        );
    }
    let where_ = format!("{}@{}:{}", target.called_ae, target.host, target.port);
    let mut assoc = options
        .establish((target.host.as_str(), target.port))
        .map_err(|e| match e {
            UlError::Rejected { association_rj, .. } => match association_rj.result {
                AssociationRJResult::Permanent => EstablishFail::Permanent(format!(
                    "association rejected permanently by {where_}: {}",
                    association_rj.source
                )),
                AssociationRJResult::Transient => EstablishFail::Transient(format!(
                    "association rejected (transient) by {where_}: {}",
                    association_rj.source
                )),
            },
            UlError::NoAcceptedPresentationContexts { .. } => EstablishFail::Permanent(format!(
                "{where_} accepted none of the proposed presentation contexts"
            )),
            other => EstablishFail::Transient(format!("cannot associate with {where_}: {other}")),
        })?;
    let setup = (|| {
        let stream = assoc.inner_stream();
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(opts.io_timeout))?;
        stream.set_write_timeout(Some(opts.io_timeout))?;
        quickack(stream);
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = setup {
        let _ = assoc.abort();
        return Err(EstablishFail::Transient(format!(
            "cannot set socket options for {where_}: {e}"
        )));
    }
    Ok(assoc)
}

/// How one instance ended on the wire.
enum Step {
    /// Acknowledged (stored or refused) or failed before anything was sent:
    /// the association carries on.
    Done(ItemOutcome, Duration),
    /// The instance failed for good but the association is mid-message
    /// (the file broke while streaming): abort it and open another.
    DoneCut(ItemOutcome),
    /// Transient: the instance goes back; `intact` says whether the
    /// association can still be released politely.
    Transient { error: String, intact: bool },
}

fn failed(error: String) -> ItemOutcome {
    ItemOutcome::Failed {
        status: None,
        error,
    }
}

/// What must be durable before the node may complete the next instance.
struct Owed<'a> {
    sink: &'a dyn EventSink,
    ticket: Option<Ticket>,
}

impl Owed<'_> {
    fn settle(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.sink.wait_durable(t);
        }
    }
}

fn send_one(
    assoc: &mut Assoc,
    wire: &mut Wire,
    message_id: u16,
    item: &Item,
    owed: &mut Owed<'_>,
) -> Step {
    let converted;
    let pc_id = match contexts::choose(assoc.presentation_contexts(), item) {
        Choice::Exact { pc_id } => {
            converted = None;
            pc_id
        }
        Choice::Convert { pc_id, ts } => match convert(item, &ts) {
            Ok(bytes) => {
                converted = Some(bytes);
                pc_id
            }
            Err(e) => return Step::Done(failed(e), Duration::ZERO),
        },
        Choice::Refused => {
            return Step::Done(
                failed(format!(
                    "the node accepted no presentation context for SOP class {} ({})",
                    item.sop_class_uid, item.transfer_syntax
                )),
                Duration::ZERO,
            )
        }
    };
    let command = match dimse::c_store_rq(message_id, &item.sop_class_uid, &item.sop_instance_uid) {
        Ok(c) => c,
        Err(e) => return Step::Done(failed(e.to_string()), Duration::ZERO),
    };
    let started = Instant::now();
    let sent = match &converted {
        Some(bytes) => wire.send_message(
            assoc.inner_stream(),
            pc_id,
            &command,
            &mut &bytes[..],
            bytes.len() as u64,
            &mut || owed.settle(),
        ),
        None => {
            let opened = File::open(&item.path).and_then(|mut f| {
                let size = f.metadata()?.len();
                if size < item.dataset_offset {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "file shorter than its dataset offset",
                    ));
                }
                f.seek(SeekFrom::Start(item.dataset_offset))?;
                Ok((f, size - item.dataset_offset))
            });
            match opened {
                Ok((mut file, len)) => wire.send_message(
                    assoc.inner_stream(),
                    pc_id,
                    &command,
                    &mut file,
                    len,
                    &mut || owed.settle(),
                ),
                Err(e) => {
                    return Step::Done(
                        failed(format!("cannot read {}: {e}", item.path.display())),
                        Duration::ZERO,
                    )
                }
            }
        }
    };
    match sent {
        Ok(()) => {}
        Err(SendFail::Source { error, cut }) => {
            let outcome = failed(format!("cannot read {}: {error}", item.path.display()));
            return if cut {
                Step::DoneCut(outcome)
            } else {
                Step::Done(outcome, Duration::ZERO)
            };
        }
        Err(SendFail::Net(e)) => {
            return Step::Transient {
                error: format!("sending failed: {e}"),
                intact: false,
            }
        }
    }
    let bytes = match wire.read_command(assoc.inner_stream()) {
        Ok(b) => b,
        Err(e) => {
            return Step::Transient {
                error: format!("no C-STORE response: {e}"),
                intact: false,
            }
        }
    };
    let rtt = started.elapsed();
    let rsp = match dimse::decode_response(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return Step::Transient {
                error: format!("unreadable C-STORE response: {e}"),
                intact: false,
            }
        }
    };
    if rsp.command_field != C_STORE_RSP || rsp.responding_to != message_id {
        return Step::Transient {
            error: format!(
                "unexpected response: command 0x{:04X} to message {} (expected 0x{C_STORE_RSP:04X} to {message_id})",
                rsp.command_field, rsp.responding_to
            ),
            intact: false,
        };
    }
    match classify(rsp.status) {
        StatusClass::Success | StatusClass::Warning => {
            Step::Done(ItemOutcome::Stored { status: rsp.status }, rtt)
        }
        StatusClass::Transient => Step::Transient {
            error: format!(
                "C-STORE status 0x{:04X} ({})",
                rsp.status,
                describe(rsp.status)
            ),
            intact: true,
        },
        StatusClass::Failure => Step::Done(
            ItemOutcome::Failed {
                status: Some(rsp.status),
                error: format!(
                    "C-STORE status 0x{:04X} ({})",
                    rsp.status,
                    describe(rsp.status)
                ),
            },
            rtt,
        ),
    }
}

/// Ends an association politely when its stream is at a PDU boundary.
fn close(assoc: Assoc, wire: &Wire, intact: bool) {
    if intact && !wire.has_pending_input() {
        if let Err(e) = assoc.release() {
            tracing::debug!(error = %e, "release failed");
        }
    } else {
        let _ = assoc.abort();
    }
}

/// The thread body: association after association until the work list is
/// empty or the batch stops.
pub(crate) fn run(
    shared: &Shared<'_>,
    target: &Target,
    proposals: &[Proposal],
    opts: &SendOptions,
) {
    let mut owed = Owed {
        sink: shared.sink,
        ticket: None,
    };
    'associations: loop {
        if shared.halted() || shared.is_empty() {
            return;
        }
        let mut assoc = match establish(target, proposals, opts) {
            Ok(a) => a,
            Err(EstablishFail::Permanent(e)) => {
                tracing::warn!(node = %target.node_id, error = %e, "association refused for good");
                shared.permanent(e);
                return;
            }
            Err(EstablishFail::Transient(e)) => {
                tracing::info!(node = %target.node_id, error = %e, "association failed");
                shared.connect_failed(e);
                return;
            }
        };
        shared.associations.fetch_add(1, Ordering::Relaxed);
        let mut wire = Wire::new(assoc.acceptor_max_pdu_length(), our_max_pdu(opts));
        let mut message_id: u16 = 0;
        loop {
            if shared.halted() {
                break;
            }
            let Some(item) = shared.take() else { break };
            message_id = message_id.wrapping_add(1).max(1);
            let guard = shared.in_flight(&item);
            match send_one(&mut assoc, &mut wire, message_id, &item, &mut owed) {
                Step::Done(outcome, rtt) => {
                    log_outcome(target, &item, &outcome);
                    owed.ticket = Some(shared.sink.record(SendEvent::Acknowledged {
                        sop_instance_uid: item.sop_instance_uid.clone(),
                        outcome,
                        rtt,
                    }));
                    guard.done();
                }
                Step::DoneCut(outcome) => {
                    log_outcome(target, &item, &outcome);
                    owed.ticket = Some(shared.sink.record(SendEvent::Acknowledged {
                        sop_instance_uid: item.sop_instance_uid.clone(),
                        outcome,
                        rtt: Duration::ZERO,
                    }));
                    guard.done();
                    let _ = assoc.abort();
                    continue 'associations;
                }
                Step::Transient { error, intact } => {
                    tracing::info!(node = %target.node_id, sop_instance_uid = %item.sop_instance_uid, error = %error, "transient failure");
                    guard.done();
                    shared.give_back(item, error.clone());
                    shared.sink.record(SendEvent::Transient { error });
                    close(assoc, &wire, intact);
                    return;
                }
            }
        }
        close(assoc, &wire, true);
        return;
    }
}

fn log_outcome(target: &Target, item: &Item, outcome: &ItemOutcome) {
    match outcome {
        ItemOutcome::Stored { status: 0 } => {}
        ItemOutcome::Stored { status } => tracing::info!(
            node = %target.node_id, sop_instance_uid = %item.sop_instance_uid,
            status = format_args!("0x{status:04X}"), "stored with a warning"
        ),
        ItemOutcome::Failed { status, error } => tracing::warn!(
            node = %target.node_id, sop_instance_uid = %item.sop_instance_uid,
            status = ?status, error = %error, "instance failed"
        ),
    }
}
