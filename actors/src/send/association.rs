//! One pool worker's associations to its node: establish with a lot's
//! contexts, take that lot's instances until it is empty, stops, or the pool
//! wants the worker elsewhere; release. An instance the node keeps aborting
//! on is handled by its lot (`pool.rs`): queued again, converted, or failed
//! alone.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions};
use dicom_ul::association::CloseSocket;
use dicom_ul::association::Error as UlError;
use dicom_ul::pdu::{AssociationRJResult, MINIMUM_PDU_SIZE};
use laminate_config::NodeTls;

use super::contexts::{self, Choice, Proposal};
use super::convert::convert;
use super::pool::{AbortVerdict, InFlight, Lot, Pool, PoolStats};
use super::status::{classify, describe, StatusClass};
use super::wire::{quickack, SendFail, Transport, Wire};
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

/// An association over TLS (dicom-ul's rustls stream).
pub(crate) type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The association options common to plain and TLS associations.
fn options<'a>(
    target: &'a Target,
    proposals: &'a [Proposal],
    opts: &SendOptions,
) -> ClientAssociationOptions<'a> {
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
        // Storage commitment: we may also be the SCP of its N-EVENT-REPORT, so
        // a node can report on this association (PS3.4 J.3.3).
        if p.abstract_syntax == crate::commitment::STORAGE_COMMITMENT_PUSH {
            options = options.with_role_selection(p.abstract_syntax.as_str(), true, true);
        }
    }
    options
}

fn where_of(target: &Target) -> String {
    let tls = if target.tls.is_some() { " (TLS)" } else { "" };
    format!("{}@{}:{}{tls}", target.called_ae, target.host, target.port)
}

/// An error with its causes ("a: b: c"): a TLS failure's reason (unknown
/// issuer, expired, wrong name) is only in the innermost one.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

fn establish_error(where_: &str, e: UlError) -> EstablishFail {
    match e {
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
        other @ (UlError::TlsConnection { .. }
        | UlError::TlsHandshake { .. }
        | UlError::InvalidServerName { .. }) => {
            EstablishFail::Transient(tls_failure(where_, &chain(&other)))
        }
        other => {
            let detail = chain(&other);
            // Under TLS 1.3 the node refuses our certificate after the handshake:
            // its alert arrives with the first PDU read.
            if where_.ends_with("(TLS)") && looks_like_tls(&detail) {
                EstablishFail::Transient(tls_failure(where_, &detail))
            } else {
                EstablishFail::Transient(format!("cannot associate with {where_}: {detail}"))
            }
        }
    }
}

/// Whether an association error's text is a TLS alert or certificate problem.
pub fn looks_like_tls(detail: &str) -> bool {
    detail.contains("alert") || detail.contains("certificate") || detail.contains("TLS")
}

/// A TLS failure in words an operator can act on, with rustls's own reason kept.
pub fn tls_failure(where_: &str, detail: &str) -> String {
    // rustls's wording: a variant's name, or its "…Context" form's sentence.
    const HINTS: [(&[&str], &str); 8] = [
        (&["UnknownIssuer"], "the node's certificate is not signed by a CA in ca_file"),
        (
            &["NotValidForName", "not valid for name"],
            "the node's certificate does not name its host (fix the certificate, or set verify_hostname false)",
        ),
        (&["Expired", "certificate expired"], "the node's certificate has expired"),
        (
            &["NotValidYet", "not valid yet"],
            "the node's certificate is not valid yet (check both clocks)",
        ),
        (&["Revoked"], "the node's certificate is revoked"),
        (
            &["CertificateRequired"],
            "the node requires a client certificate (set cert_file and key_file)",
        ),
        (&["UnknownCA"], "the node does not trust our client certificate's CA"),
        (&["BadCertificate"], "the node refused our client certificate"),
    ];
    let hint = HINTS
        .iter()
        .find(|(needles, _)| needles.iter().any(|k| detail.contains(k)))
        .map(|(_, h)| format!("{h}; "))
        .unwrap_or_default();
    format!("TLS with {where_} failed: {hint}{detail}")
}

/// Socket options of an established association: no Nagle, the I/O deadline,
/// quick ACKs.
fn setup<S: Transport + CloseSocket>(
    mut assoc: ClientAssociation<S>,
    where_: &str,
    opts: &SendOptions,
) -> Result<ClientAssociation<S>, EstablishFail> {
    let setup = (|| {
        let stream = assoc.inner_stream().tcp();
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

/// A plain TCP association.
pub(crate) fn establish(
    target: &Target,
    proposals: &[Proposal],
    opts: &SendOptions,
) -> Result<ClientAssociation<TcpStream>, EstablishFail> {
    let where_ = where_of(target);
    let assoc = options(target, proposals, opts)
        .establish((target.host.as_str(), target.port))
        .map_err(|e| establish_error(&where_, e))?;
    setup(assoc, &where_, opts)
}

/// A DICOM TLS association: the node's certificate checked against the site's CA
/// (and its name against `host` unless the site turned that off).
pub(crate) fn establish_tls(
    target: &Target,
    tls: &NodeTls,
    proposals: &[Proposal],
    opts: &SendOptions,
) -> Result<ClientAssociation<TlsStream>, EstablishFail> {
    let where_ = where_of(target);
    let mut assoc = options(target, proposals, opts)
        .tls_config(tls.config.clone())
        .server_name(target.host.as_str())
        .establish_tls((target.host.as_str(), target.port))
        .map_err(|e| establish_error(&where_, e))?;
    // rustls takes at most 64 KiB of plaintext per write by default: a whole
    // 256 KiB chunk of PDUs goes into records and out in one go instead.
    assoc.inner_stream().conn.set_buffer_limit(None);
    setup(assoc, &where_, opts)
}

/// How one instance ended on the wire.
enum Step {
    /// Acknowledged (stored or refused) or failed before anything was sent:
    /// the association carries on. With the syntax it was converted to.
    Done(ItemOutcome, Duration, Option<String>),
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

fn send_one<S: Transport + CloseSocket>(
    assoc: &mut ClientAssociation<S>,
    wire: &mut Wire,
    message_id: u16,
    item: &Item,
    prefer: Option<&str>,
    owed: &mut Owed<'_>,
) -> Step {
    let converted;
    let mut converted_to = None;
    let choice = match prefer {
        Some(ts) => contexts::choose_preferred(assoc.presentation_contexts(), item, ts),
        None => contexts::choose(assoc.presentation_contexts(), item),
    };
    let pc_id = match choice {
        Choice::Exact { pc_id } => {
            converted = None;
            pc_id
        }
        Choice::Convert { pc_id, ts } => match convert(item, &ts) {
            Ok(bytes) => {
                converted = Some(bytes);
                converted_to = Some(ts);
                pc_id
            }
            Err(e) => return Step::Done(failed(e), Duration::ZERO, None),
        },
        Choice::Refused => {
            return Step::Done(
                failed(format!(
                    "the node accepted no presentation context for SOP class {} ({})",
                    item.sop_class_uid, item.transfer_syntax
                )),
                Duration::ZERO,
                None,
            )
        }
    };
    let command = match dimse::c_store_rq(message_id, &item.sop_class_uid, &item.sop_instance_uid) {
        Ok(c) => c,
        Err(e) => return Step::Done(failed(e.to_string()), Duration::ZERO, None),
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
                        None,
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
                Step::Done(outcome, Duration::ZERO, None)
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
        StatusClass::Success | StatusClass::Warning => Step::Done(
            ItemOutcome::Stored { status: rsp.status },
            rtt,
            converted_to,
        ),
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
            converted_to,
        ),
    }
}

/// Ends an association politely when its stream is at a PDU boundary.
fn close<S: Transport + CloseSocket>(assoc: ClientAssociation<S>, wire: &Wire, intact: bool) {
    if intact && !wire.has_pending_input() {
        if let Err(e) = assoc.release() {
            tracing::debug!(error = %e, "release failed");
        }
    } else {
        let _ = assoc.abort();
    }
}

/// Counts an association as open for as long as it lives.
struct Open<'a>(&'a PoolStats);

impl<'a> Open<'a> {
    fn new(stats: &'a PoolStats) -> Open<'a> {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Open(stats)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker on one lot: association after association until the lot is
/// empty or stops, or the pool wants this worker elsewhere (`generation` is
/// the pool's when the worker took the lot).
pub(crate) fn serve(pool: &Pool, lot: &Lot, target: &Target, opts: &SendOptions, generation: u64) {
    match &target.tls {
        None => serve_on(pool, lot, target, opts, generation, || {
            establish(target, &lot.proposals, opts)
        }),
        Some(tls) => serve_on(pool, lot, target, opts, generation, || {
            establish_tls(target, tls, &lot.proposals, opts)
        }),
    }
}

fn serve_on<S: Transport + CloseSocket>(
    pool: &Pool,
    lot: &Lot,
    target: &Target,
    opts: &SendOptions,
    generation: u64,
    connect: impl Fn() -> Result<ClientAssociation<S>, EstablishFail>,
) {
    let stats = pool.stats_ref();
    let mut owed = Owed {
        sink: &*lot.sink,
        ticket: None,
    };
    'associations: loop {
        if lot.halted() || lot.is_empty() || pool.should_yield(lot, generation) {
            return;
        }
        let mut assoc = match connect() {
            Ok(a) => a,
            Err(EstablishFail::Permanent(e)) => {
                tracing::warn!(node = %target.node_id, error = %e, "association refused for good");
                lot.permanent(e);
                return;
            }
            Err(EstablishFail::Transient(e)) => {
                tracing::info!(node = %target.node_id, error = %e, "association failed");
                lot.connect_failed(e);
                return;
            }
        };
        let _open = Open::new(stats);
        lot.associations.fetch_add(1, Ordering::Relaxed);
        let mut wire = Wire::new(assoc.acceptor_max_pdu_length(), our_max_pdu(opts));
        let mut message_id: u16 = 0;
        loop {
            if lot.halted() || pool.should_yield(lot, generation) {
                break;
            }
            let Some(item) = lot.take(stats) else { break };
            let guard = InFlight::new(lot, stats, &item);
            if pool.poisoned() {
                // Test builds: the pool is killed; the guard gives the item back.
                panic!("fault injection: node sender pool {}", target.node_id);
            }
            message_id = message_id.wrapping_add(1).max(1);
            match send_one(
                &mut assoc,
                &mut wire,
                message_id,
                &item,
                lot.prefer.as_deref(),
                &mut owed,
            ) {
                Step::Done(outcome, rtt, converted_to) => {
                    log_outcome(target, &item, &outcome);
                    count(stats, lot, &outcome, converted_to.is_some());
                    owed.ticket = Some(lot.sink.record(SendEvent::Acknowledged {
                        sop_instance_uid: item.sop_instance_uid.clone(),
                        outcome,
                        converted_to,
                        rtt,
                    }));
                    guard.done();
                }
                Step::DoneCut(outcome) => {
                    log_outcome(target, &item, &outcome);
                    count(stats, lot, &outcome, false);
                    owed.ticket = Some(lot.sink.record(SendEvent::Acknowledged {
                        sop_instance_uid: item.sop_instance_uid.clone(),
                        outcome,
                        converted_to: None,
                        rtt: Duration::ZERO,
                    }));
                    guard.done();
                    let _ = assoc.abort();
                    continue 'associations;
                }
                Step::Transient {
                    error,
                    intact: true,
                } => {
                    // Out of resources: the node asks us to come back later.
                    tracing::info!(node = %target.node_id, sop_instance_uid = %item.sop_instance_uid, error = %error, "transient failure");
                    guard.done();
                    lot.give_back(item, error.clone());
                    lot.sink.record(SendEvent::Transient { error });
                    close(assoc, &wire, true);
                    return;
                }
                Step::Transient {
                    error,
                    intact: false,
                } => {
                    guard.done();
                    let sop = item.sop_instance_uid.clone();
                    let _ = assoc.abort();
                    match lot.aborted(item, &error, stats) {
                        AbortVerdict::Requeued => {
                            tracing::info!(node = %target.node_id, sop_instance_uid = %sop, error = %error, "association ended with this instance in flight; it goes to the back of the queue");
                            continue 'associations;
                        }
                        AbortVerdict::FailedAlone(reason) => {
                            tracing::warn!(node = %target.node_id, sop_instance_uid = %sop, error = %reason, "instance failed alone");
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            owed.ticket = Some(lot.sink.record(SendEvent::Acknowledged {
                                sop_instance_uid: sop,
                                outcome: failed(reason),
                                converted_to: None,
                                rtt: Duration::ZERO,
                            }));
                            continue 'associations;
                        }
                        AbortVerdict::Outage => {
                            tracing::info!(node = %target.node_id, sop_instance_uid = %sop, error = %error, "node unavailable");
                            lot.sink.record(SendEvent::Transient { error });
                            return;
                        }
                    }
                }
            }
        }
        close(assoc, &wire, true);
        return;
    }
}

/// The node's counters for one acknowledged instance.
fn count(stats: &PoolStats, lot: &Lot, outcome: &ItemOutcome, converted: bool) {
    match outcome {
        ItemOutcome::Stored { .. } => {
            lot.stored_one();
            let c = if converted {
                &stats.transcoded
            } else {
                &stats.sent_as_is
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        ItemOutcome::Failed { error, .. } => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
        }
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

#[cfg(test)]
mod tls_words {
    use super::*;

    #[test]
    fn tls_failures_are_put_in_words_and_keep_the_librarys_reason() {
        let at = "PACS@h:1 (TLS)";
        for (detail, words) in [
            (
                "invalid peer certificate: UnknownIssuer",
                "not signed by a CA in ca_file",
            ),
            (
                "invalid peer certificate: certificate not valid for name \"h\"",
                "does not name its host",
            ),
            (
                "received fatal alert: CertificateRequired",
                "requires a client certificate",
            ),
            (
                "received fatal alert: UnknownCA",
                "does not trust our client",
            ),
        ] {
            let e = tls_failure(at, detail);
            assert!(
                e.contains(words) && e.ends_with(detail) && e.starts_with("TLS with PACS@h:1"),
                "{e}"
            );
        }
        assert_eq!(
            tls_failure(at, "connection reset"),
            "TLS with PACS@h:1 (TLS) failed: connection reset"
        );
        assert!(looks_like_tls("received fatal alert: HandshakeFailure"));
        assert!(!looks_like_tls("connection refused"));
    }
}
