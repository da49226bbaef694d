//! Storage commitment for nodes that have it on (`storage_commitment` in
//! node-settings.json): once every instance is acknowledged, the node is asked
//! to commit them all (N-ACTION on an association of its own) and the node
//! stays `sending` at 100 % until its report (N-EVENT-REPORT, which arrives on
//! our ingest SCP) says every instance is committed: then `completed`. Failed
//! instances, instances missing from the report, or no report within
//! `commitment_timeout_s` make it `failed`, those instances journaled as not
//! delivered so the node's error names them and a replay sends them again.
//!
//! The wait is journaled (Transaction UID, when first asked): after a restart
//! the node is asked again under the same Transaction UID, since a report
//! sent while the appliance was down is lost, and the timeout still counts
//! from the first request.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use laminate_config::Node;
use laminate_store::{Ack, Catalog, CommitmentWait, Commitments, Journal, NodeStatus};

use super::shared::{JobEnv, JobShared};
use crate::commitment::{self, failure_reason, CommitmentReport};
use crate::send::{request_commitment, CommitRequestError};

/// A node that cannot be asked yet is asked again after this long.
const ASK_AGAIN: Duration = Duration::from_secs(10);
/// How long the requesting association stays open for a report on it, when
/// the node accepted to report there; a later report needs a new association.
const LINGER: Duration = Duration::from_secs(60);

/// Whether `node` wants its deliveries committed.
pub(super) fn wanted(node: &Node) -> bool {
    node.site.as_ref().is_some_and(|s| s.storage_commitment)
}

/// The node's `error` while it waits (its status stays `sending`).
pub const WAITING: &str = "waiting for storage commitment";

/// Asks `node` to commit `sops` and waits for its report, or resumes a
/// journaled wait; ends with the node `completed` or `failed` (or untouched
/// when it was cancelled meanwhile).
pub(super) async fn commit(env: &Rc<JobEnv>, sh: &Rc<JobShared>, node: &Node, sops: &[String]) {
    let (id, node_id) = (sh.id(), node.node_id.clone());
    let total = sops.len() as u64;
    let timeout_s = node.site.as_ref().map_or(
        laminate_config::node_settings::DEFAULT_COMMITMENT_TIMEOUT_S,
        |s| s.commitment_timeout_s,
    );
    let replays = sh.rec.borrow().replays;
    let wait = match env.store.commitment_get(&id, &node_id) {
        Ok(Some(w)) if w.replays == replays => {
            tracing::info!(dispatch = %id, node = %node_id, transaction_uid = %w.transaction_uid, "resuming the wait for storage commitment");
            Ok(w)
        }
        Ok(_) => {
            let w = CommitmentWait {
                transaction_uid: commitment::new_transaction_uid(),
                requested_at_ms: crate::clock::now_ms(),
                replays,
            };
            env.store.commitment_put(&id, &node_id, &w).map(|()| w)
        }
        Err(e) => Err(e),
    };
    let wait = match wait {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, dispatch = %id, node = %node_id, "cannot journal the storage commitment wait");
            fail(
                env,
                sh,
                &node_id,
                format!("storage commitment: journal: {e}"),
            );
            return;
        }
    };
    let tx = wait.transaction_uid.clone();
    let deadline_ms = wait
        .requested_at_ms
        .saturating_add(timeout_s.saturating_mul(1000));
    let remaining = || Duration::from_millis(deadline_ms.saturating_sub(crate::clock::now_ms()));
    sh.update_node(env, &node_id, |n| {
        n.status = NodeStatus::Sending;
        n.files_total = total;
        n.files_sent = total;
        n.error = Some(format!("{WAITING} (transaction {tx})"));
    });
    let mut refs = Vec::with_capacity(sops.len());
    for sop in sops {
        match env.store.get_instance(sop) {
            Ok(Some(rec)) => refs.push((rec.sop_class_uid, sop.clone())),
            // Its SOP class is unknown: not asked, so not committed.
            _ => {
                tracing::warn!(dispatch = %id, node = %node_id, sop = %sop, "no SOP class for a delivered instance; it cannot be committed")
            }
        }
    }
    // Waiting before asking: a node may report before its N-ACTION-RSP arrives.
    let mut expected = commitment::expect(&tx);
    #[cfg(feature = "fault-injection")]
    if let Some(pause) = crate::faults::commitment_pause() {
        tracing::warn!(dispatch = %id, node = %node_id, pause_s = pause.as_secs(), "fault injection: pausing before the storage commitment request");
        tokio::time::sleep(pause).await;
    }
    let target = env.senders.target(node);
    let opts = env.senders.options();
    loop {
        if sh.is_final(&node_id) {
            return forget(env, &id, &node_id);
        }
        let (t, o, x, r) = (target.clone(), opts.clone(), tx.clone(), refs.clone());
        let linger = LINGER.min(remaining());
        let asked = tokio::task::spawn_blocking(move || request_commitment(&t, &o, &x, &r, linger))
            .await
            .unwrap_or_else(|e| Err(CommitRequestError::Transient(e.to_string())));
        match asked {
            Ok(()) => {
                tracing::info!(dispatch = %id, node = %node_id, transaction_uid = %tx, instances = refs.len(), "storage commitment requested");
                break;
            }
            Err(CommitRequestError::Refused(e)) => {
                tracing::warn!(dispatch = %id, node = %node_id, error = %e, "storage commitment refused");
                forget(env, &id, &node_id);
                fail(env, sh, &node_id, format!("storage commitment: {e}"));
                return;
            }
            Err(CommitRequestError::Transient(e)) => {
                tracing::warn!(dispatch = %id, node = %node_id, error = %e, "cannot ask for storage commitment yet");
                if remaining().is_zero() {
                    return timed_out(env, sh, &node_id, sops, timeout_s).await;
                }
                sh.update_node(env, &node_id, |n| {
                    n.error = Some(format!("{WAITING}: cannot ask the node yet: {e}"));
                });
                let until = tokio::time::Instant::now() + ASK_AGAIN.min(remaining());
                while tokio::time::Instant::now() < until && !sh.is_final(&node_id) {
                    sh.sleep(until - tokio::time::Instant::now()).await;
                }
            }
        }
    }
    sh.update_node(env, &node_id, |n| {
        n.error = Some(format!("{WAITING} (transaction {tx})"));
    });
    let report = loop {
        if sh.is_final(&node_id) {
            return forget(env, &id, &node_id);
        }
        let left = remaining();
        if left.is_zero() {
            return timed_out(env, sh, &node_id, sops, timeout_s).await;
        }
        tokio::select! {
            r = expected.report() => match r {
                Some(r) => break r,
                None => return timed_out(env, sh, &node_id, sops, timeout_s).await,
            },
            _ = sh.sleep(left) => {}
        }
    };
    drop(expected);
    settle(env, sh, &node_id, sops, &report).await;
    forget(env, &id, &node_id);
}

/// Applies a report: `completed` when it commits every instance, else the
/// uncommitted ones are journaled as not delivered and the node `failed`.
async fn settle(
    env: &JobEnv,
    sh: &JobShared,
    node_id: &str,
    sops: &[String],
    report: &CommitmentReport,
) {
    let id = sh.id();
    let committed: BTreeSet<&str> = report.committed.iter().map(String::as_str).collect();
    let reasons: BTreeMap<&str, u16> = report
        .failed
        .iter()
        .map(|(s, r)| (s.as_str(), *r))
        .collect();
    let missing: Vec<(String, String)> = sops
        .iter()
        .filter(|s| !committed.contains(s.as_str()))
        .map(|s| {
            let why = match reasons.get(s.as_str()) {
                Some(r) => format!(
                    "not committed by the node: {} (0x{r:04X})",
                    failure_reason(*r)
                ),
                None => "not committed: missing from the node's report".to_owned(),
            };
            (s.clone(), why)
        })
        .collect();
    tracing::info!(dispatch = %id, node = %node_id, transaction_uid = %report.transaction_uid, committed = sops.len() - missing.len(), failed = missing.len(), "storage commitment settled");
    if missing.is_empty() {
        sh.update_node(env, node_id, |n| {
            n.status = NodeStatus::Completed;
            n.error = None;
        });
    } else {
        not_committed(env, sh, node_id, sops.len(), &missing).await;
    }
}

async fn timed_out(env: &JobEnv, sh: &JobShared, node_id: &str, sops: &[String], timeout_s: u64) {
    let id = sh.id();
    tracing::warn!(dispatch = %id, node = %node_id, timeout_s, "no storage commitment report in time");
    let why = format!("not committed within commitment_timeout_s ({timeout_s} s)");
    let missing: Vec<_> = sops.iter().map(|s| (s.clone(), why.clone())).collect();
    forget(env, &id, node_id);
    not_committed(env, sh, node_id, sops.len(), &missing).await;
}

/// Journals `missing` as not delivered (a replay sends them again; a
/// restart does not ask again) and fails the node naming the first.
async fn not_committed(
    env: &JobEnv,
    sh: &JobShared,
    node_id: &str,
    total: usize,
    missing: &[(String, String)],
) {
    let id = sh.id();
    // One flush for them all, off the actix thread: a timeout can name thousands.
    let (store, rows) = (env.store.clone(), missing.to_vec());
    let (i, n) = (id.clone(), node_id.to_owned());
    let journaled = tokio::task::spawn_blocking(move || {
        for (sop, why) in &rows {
            let ack = Ack {
                stored: false,
                status: None,
                error: Some(why.clone()),
                converted_to: None,
            };
            store.journal_ack_deferred(&i, &n, sop, &ack)?;
        }
        store.flush()
    })
    .await;
    match journaled {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, dispatch = %id, node = %node_id, "cannot journal the uncommitted instances")
        }
        Err(e) => {
            tracing::error!(error = %e, dispatch = %id, node = %node_id, "cannot journal the uncommitted instances")
        }
    }
    let stored = (total - missing.len()) as u64;
    let (sop, why) = &missing[0];
    let error = format!("{} of {} failed: {}: {}", missing.len(), total, sop, why);
    sh.update_node(env, node_id, |n| {
        n.status = NodeStatus::Failed;
        n.files_sent = stored;
        n.error = Some(error);
    });
}

fn fail(env: &JobEnv, sh: &JobShared, node_id: &str, error: String) {
    sh.update_node(env, node_id, |n| {
        n.status = NodeStatus::Failed;
        n.error = Some(error);
    });
}

fn forget(env: &JobEnv, id: &str, node_id: &str) {
    if let Err(e) = env.store.commitment_remove(id, node_id) {
        tracing::warn!(error = %e, dispatch = %id, node = %node_id, "cannot forget a storage commitment wait");
    }
}
