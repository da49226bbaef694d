//! A node's pool against a small dicom-ul SCP that accepts many associations,
//! counts how many are open at once, and aborts the association on chosen
//! instances: the cap holds across dispatches, priorities decide who gets a
//! free association, and an instance the node keeps aborting on is converted,
//! then fails alone while the rest arrives.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::pdu::{PDataValueType, Pdu};

use super::pool::{Pool, PoolStats, Rank};
use super::tests::{items_of, options, uids_of, write_instance, Events, Fixture};
use super::*;
use crate::dimse::{self, EXPLICIT_VR_LE, IMPLICIT_VR_LE};

const CT: &str = uids::CT_IMAGE_STORAGE;

/// What the SCP saw.
#[derive(Default)]
struct Seen {
    open: AtomicUsize,
    max_open: AtomicUsize,
    /// (SOP Instance UID, transfer syntax of its context), in arrival order.
    stored: Mutex<Vec<(String, String)>>,
    aborted: Mutex<Vec<String>>,
}

/// An SCP on a free port: every association on its own thread; aborts the
/// association when an instance in `poison` arrives in its native implicit
/// syntax (accepts it converted to explicit when `convertible`); answers
/// each C-STORE after `delay`.
fn picky_scp(poison: BTreeSet<String>, convertible: bool, delay: Duration) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let poison = Arc::new(poison);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (seen, poison) = (s.clone(), poison.clone());
            std::thread::spawn(move || serve(stream, &seen, &poison, convertible, delay));
        }
    });
    (port, seen)
}

fn serve(
    stream: std::net::TcpStream,
    seen: &Seen,
    poison: &BTreeSet<String>,
    convertible: bool,
    delay: Duration,
) {
    let Ok(mut assoc) = ServerAssociationOptions::new()
        .promiscuous(true)
        .with_abstract_syntax(CT)
        .with_transfer_syntax(IMPLICIT_VR_LE)
        .with_transfer_syntax(EXPLICIT_VR_LE)
        .max_pdu_length(65536)
        .read_timeout(Duration::from_secs(10))
        .establish(stream)
    else {
        return;
    };
    let now = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_open.fetch_max(now, Ordering::SeqCst);
    let contexts: Vec<(u8, String)> = assoc
        .presentation_contexts()
        .iter()
        .map(|c| (c.id, c.transfer_syntax.trim_end_matches('\0').to_owned()))
        .collect();
    let syntax_of = |pc: u8| {
        contexts
            .iter()
            .find(|(id, _)| *id == pc)
            .map(|(_, ts)| ts.clone())
            .unwrap_or_default()
    };
    let mut current: Option<(u8, u16, String)> = None;
    'assoc: loop {
        match assoc.receive() {
            Ok(Pdu::PData { data }) => {
                for pdv in data {
                    if pdv.value_type == PDataValueType::Command {
                        let Ok(cmd) = InMemDicomObject::read_dataset_with_ts(
                            &pdv.data[..],
                            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                        ) else {
                            break 'assoc;
                        };
                        let id = cmd
                            .element(tags::MESSAGE_ID)
                            .ok()
                            .and_then(|e| e.to_int::<u16>().ok())
                            .unwrap_or(0);
                        let uid = cmd
                            .element(tags::AFFECTED_SOP_INSTANCE_UID)
                            .ok()
                            .and_then(|e| e.to_str().ok())
                            .map(|s| s.trim_end_matches('\0').to_string())
                            .unwrap_or_default();
                        current = Some((pdv.presentation_context_id, id, uid));
                    } else if pdv.is_last {
                        let Some((pc, id, uid)) = current.take() else {
                            break 'assoc;
                        };
                        let ts = syntax_of(pc);
                        let refuse =
                            poison.contains(&uid) && !(convertible && ts == EXPLICIT_VR_LE);
                        if refuse {
                            seen.aborted.lock().expect("lock").push(uid);
                            let _ = assoc.abort();
                            break 'assoc;
                        }
                        std::thread::sleep(delay);
                        seen.stored.lock().expect("lock").push((uid.clone(), ts));
                        let rsp = dimse::encode_command(vec![
                            DataElement::new(
                                tags::AFFECTED_SOP_CLASS_UID,
                                VR::UI,
                                PrimitiveValue::from(CT),
                            ),
                            DataElement::new(
                                tags::COMMAND_FIELD,
                                VR::US,
                                PrimitiveValue::from(dimse::C_STORE_RSP),
                            ),
                            DataElement::new(
                                tags::MESSAGE_ID_BEING_RESPONDED_TO,
                                VR::US,
                                PrimitiveValue::from(id),
                            ),
                            DataElement::new(
                                tags::COMMAND_DATA_SET_TYPE,
                                VR::US,
                                PrimitiveValue::from(dimse::NO_DATA_SET),
                            ),
                            DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(0_u16)),
                            DataElement::new(
                                tags::AFFECTED_SOP_INSTANCE_UID,
                                VR::UI,
                                PrimitiveValue::from(uid.as_str()),
                            ),
                        ])
                        .expect("rsp");
                        if assoc.send(&dimse::command_pdu(pc, rsp)).is_err() {
                            break 'assoc;
                        }
                    }
                }
            }
            Ok(Pdu::ReleaseRQ) => {
                let _ = assoc.send(&Pdu::ReleaseRP);
                break;
            }
            _ => break,
        }
    }
    seen.open.fetch_sub(1, Ordering::SeqCst);
}

fn target(port: u16, max: u32) -> Target {
    Target {
        node_id: "picky".into(),
        host: "127.0.0.1".into(),
        port,
        called_ae: "PICKY".into(),
        calling_ae: "LAMINATE".into(),
        max_associations: max,
        tls: None,
        prefer_ts: None,
    }
}

fn fixtures(dir: &std::path::Path, n: usize) -> Vec<Fixture> {
    (0..n)
        .map(|_| write_instance(dir, CT, IMPLICIT_VR_LE, 32, None))
        .collect()
}

/// A sink collecting events for a pool submission.
#[derive(Default)]
struct Collect(Events);

impl EventSink for Collect {
    fn record(&self, ev: SendEvent) -> Ticket {
        self.0.record(ev);
        0
    }
    fn wait_durable(&self, _: Ticket) {}
}

fn submit(
    pool: &Pool,
    items: Vec<Item>,
    priority: u8,
    seq: u64,
) -> (tokio::sync::oneshot::Receiver<BatchOutcome>, Arc<Collect>) {
    let sink = Arc::new(Collect::default());
    let rx = pool.submit(
        items,
        Rank { priority, seq },
        Arc::new(AtomicBool::new(false)),
        sink.clone(),
    );
    (rx, sink)
}

#[test]
fn an_instance_the_node_aborts_on_is_converted_for_its_last_try_and_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fixtures(dir.path(), 6);
    let poisoned = f[1].uid.clone();
    let (port, seen) = picky_scp([poisoned.clone()].into(), true, Duration::ZERO);
    let pool = Pool::new(target(port, 1), options(), Arc::new(PoolStats::default()));
    let (rx, sink) = submit(&pool, items_of(&f), 1, 1);
    let outcome = rx.blocking_recv().expect("outcome");
    assert_eq!(outcome.transient_error, None);
    assert!(outcome.remaining.is_empty());
    assert_eq!(sink.0.stored(), uids_of(&f));
    assert_eq!(seen.aborted.lock().expect("lock").len(), 2);
    let stored = seen.stored.lock().expect("lock").clone();
    let (_, ts) = stored
        .iter()
        .find(|(u, _)| *u == poisoned)
        .expect("arrived");
    assert_eq!(ts, EXPLICIT_VR_LE, "its third try was converted");
    assert_eq!(pool.stats().transcoded.load(Ordering::Relaxed), 1);
    assert_eq!(pool.stats().sent_as_is.load(Ordering::Relaxed), 5);
}

#[test]
fn an_instance_aborted_three_times_fails_alone_and_the_rest_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fixtures(dir.path(), 8);
    let poisoned = f[7].uid.clone();
    let (port, seen) = picky_scp([poisoned.clone()].into(), false, Duration::ZERO);
    let pool = Pool::new(target(port, 2), options(), Arc::new(PoolStats::default()));
    let (rx, sink) = submit(&pool, items_of(&f), 1, 1);
    let outcome = rx.blocking_recv().expect("outcome");
    assert_eq!(outcome.transient_error, None, "not taken for an outage");
    assert!(outcome.remaining.is_empty());
    let mut expected = uids_of(&f);
    expected.remove(&poisoned);
    assert_eq!(sink.0.stored(), expected);
    let failed: Vec<(String, ItemOutcome)> = sink
        .0
        .acks()
        .into_iter()
        .filter(|(_, o)| matches!(o, ItemOutcome::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, poisoned);
    let ItemOutcome::Failed { error, .. } = &failed[0].1 else {
        unreachable!()
    };
    assert!(
        error.starts_with("node aborted the association on this instance 3 times"),
        "{error}"
    );
    assert_eq!(seen.aborted.lock().expect("lock").len(), 3);
    assert_eq!(pool.stats().failed.load(Ordering::Relaxed), 1);
}

#[test]
fn the_cap_holds_for_the_node_across_dispatches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        fixtures(dir.path(), 12),
        fixtures(dir.path(), 12),
        fixtures(dir.path(), 12),
    );
    let (port, seen) = picky_scp(BTreeSet::new(), false, Duration::from_millis(10));
    let pool = Pool::new(target(port, 2), options(), Arc::new(PoolStats::default()));
    let subs = [
        submit(&pool, items_of(&a), 1, 1),
        submit(&pool, items_of(&b), 1, 2),
        submit(&pool, items_of(&c), 0, 3),
    ];
    let mut all = BTreeSet::new();
    for (rx, sink) in subs {
        let outcome = rx.blocking_recv().expect("outcome");
        assert_eq!(outcome.transient_error, None);
        all.extend(sink.0.stored());
    }
    assert_eq!(all.len(), 36);
    assert_eq!(
        seen.max_open.load(Ordering::SeqCst),
        2,
        "never more than the cap"
    );
}

#[test]
fn a_high_priority_dispatch_gets_the_next_free_association() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (low, high) = (fixtures(dir.path(), 20), fixtures(dir.path(), 5));
    let (port, seen) = picky_scp(BTreeSet::new(), false, Duration::from_millis(20));
    let pool = Pool::new(target(port, 1), options(), Arc::new(PoolStats::default()));
    let (low_rx, _) = submit(&pool, items_of(&low), 2, 1);
    // Let the low one take the association first.
    while seen.stored.lock().expect("lock").len() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (high_rx, _) = submit(&pool, items_of(&high), 0, 2);
    high_rx.blocking_recv().expect("high outcome");
    low_rx.blocking_recv().expect("low outcome");
    let order: Vec<String> = seen
        .stored
        .lock()
        .expect("lock")
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    let high_uids = uids_of(&high);
    let last_high = order
        .iter()
        .rposition(|u| high_uids.contains(u))
        .expect("high arrived");
    let low_before = order[..last_high]
        .iter()
        .filter(|u| !high_uids.contains(*u))
        .count();
    // The two before it was queued, and at most one more in flight.
    assert!(
        low_before <= 3,
        "{low_before} low instances before the high ones: {order:?}"
    );
    assert_eq!(order.len(), 25);
}

/// Waits for a batch's end on another thread, up to `timeout`.
fn outcome_within(
    rx: tokio::sync::oneshot::Receiver<BatchOutcome>,
    timeout: Duration,
) -> Option<BatchOutcome> {
    let (tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rx.blocking_recv());
    });
    done.recv_timeout(timeout).ok().and_then(Result::ok)
}

/// A port that takes each connection and drops it after `hold`, so that every
/// worker of a pool fails to associate at about the same moment.
fn dropping_port(hold: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                std::thread::sleep(hold);
                drop(stream);
            });
        }
    });
    port
}

#[test]
fn a_lot_whose_associations_all_fail_to_connect_at_once_ends_with_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = fixtures(dir.path(), 40);
    let port = dropping_port(Duration::from_millis(100));
    // Several workers start together and fail together, many times over: the
    // lot must end every time (it once stayed queued with nobody serving it).
    for round in 0..10 {
        let pool = Pool::new(target(port, 4), options(), Arc::new(PoolStats::default()));
        let (rx, _) = submit(&pool, items_of(&f), 1, 1);
        let outcome = outcome_within(rx, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("round {round}: the lot never ended"));
        let error = outcome.transient_error.expect("a transient error");
        assert!(error.contains("cannot associate"), "{error}");
        assert_eq!(outcome.remaining.len(), 40);
        assert_eq!(pool.stats().queued.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn a_stopped_lot_waiting_for_an_association_ends_at_once_when_reaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (long, short) = (fixtures(dir.path(), 40), fixtures(dir.path(), 5));
    let (port, seen) = picky_scp(BTreeSet::new(), false, Duration::from_millis(50));
    let pool = Pool::new(target(port, 1), options(), Arc::new(PoolStats::default()));
    let (long_rx, _) = submit(&pool, items_of(&long), 1, 1);
    while seen.stored.lock().expect("lock").is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Queued behind the long one, then cancelled by its dispatch.
    let cancel = Arc::new(AtomicBool::new(false));
    let short_rx = pool.submit(
        items_of(&short),
        Rank {
            priority: 1,
            seq: 2,
        },
        cancel.clone(),
        Arc::new(Collect::default()),
    );
    cancel.store(true, Ordering::SeqCst);
    pool.reap();
    let outcome = outcome_within(short_rx, Duration::from_secs(1)).expect("ended at once");
    assert_eq!(outcome.transient_error, None, "a cancel is not a failure");
    assert_eq!(outcome.remaining.len(), 5);
    // The long one goes on undisturbed.
    let long_outcome = outcome_within(long_rx, Duration::from_secs(30)).expect("long ended");
    assert!(long_outcome.remaining.is_empty());
    assert_eq!(seen.stored.lock().expect("lock").len(), 40);
}
