//! The send stage of a dispatch: per open node, the instances it still needs
//! (the ack journal says which) handed to that node's sender pool, progress
//! reported as answers become durable, transient failures retried with the
//! retry policy's backoff, under the stage watchdog. A node with storage
//! commitment is then asked to commit them (`commitment.rs`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use laminate_store::{Ack, Catalog, Journal, NodeStatus};
use tokio::sync::mpsc;

use super::ack_journal::AckJournal;
use super::retry::Retries;
use super::shared::{JobEnv, JobShared};
use crate::node_sender::InstancesHanded;
use crate::send::pool::Rank;
use crate::send::{Item, ItemOutcome, SendEvent};

/// `sending` progress is reported at most this often per node (PROTOCOL.md §4).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn send_stage(env: &Rc<JobEnv>, sh: &Rc<JobShared>) {
    let id = sh.id();
    let sops = match env.store.journal_instances(&id) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            tracing::error!(error = %e, dispatch = %id, "cannot read the instance set");
            sh.update_open(env, NodeStatus::Failed, Some(format!("journal: {e}")));
            return;
        }
    };
    let tasks: Vec<_> = sh
        .open_nodes()
        .into_iter()
        .map(|node| send_to_node(env.clone(), sh.clone(), node, sops.clone()))
        .collect();
    futures_util::future::join_all(tasks).await;
}

/// The instances a node still needs, and the counts so far.
struct NodeWork {
    items: Vec<Item>,
    stored: u64,
    refused: Vec<(String, String)>,
}

fn node_work(env: &JobEnv, id: &str, node_id: &str, sops: &[String]) -> Result<NodeWork, String> {
    let acks = env
        .store
        .journal_acks(id, node_id)
        .map_err(|e| e.to_string())?;
    let mut work = NodeWork {
        items: Vec::new(),
        stored: 0,
        refused: Vec::new(),
    };
    for sop in sops {
        match acks.get(sop) {
            Some(a) if a.stored => work.stored += 1,
            Some(a) => work.refused.push((
                sop.clone(),
                a.error.clone().unwrap_or_else(|| "refused".into()),
            )),
            None => {
                let item = env
                    .store
                    .get_instance(sop)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "no longer in the local cache (deleted?)".to_owned())
                    .and_then(|rec| {
                        Item::from_file(env.data_dir.join(&rec.path)).map_err(|e| e.to_string())
                    });
                match item {
                    Ok(mut item) => {
                        item.sop_instance_uid = sop.clone();
                        work.items.push(item);
                    }
                    Err(why) => {
                        // Journaled like a refusal so a restart does not try again.
                        let ack = Ack {
                            stored: false,
                            status: None,
                            error: Some(why.clone()),
                            converted_to: None,
                        };
                        env.store
                            .journal_ack(id, node_id, sop, &ack)
                            .map_err(|e| e.to_string())?;
                        work.refused.push((sop.clone(), why));
                    }
                }
            }
        }
    }
    Ok(work)
}

/// The node's `error` when some instances failed (APPLIANCE.md: `2 of 215
/// failed: …`), naming the first; the local API lists them all.
fn refusal_summary(refused: &[(String, String)], total: usize) -> String {
    let (sop, why) = &refused[0];
    format!("{} of {} failed: {}: {}", refused.len(), total, sop, why)
}

async fn send_to_node(env: Rc<JobEnv>, sh: Rc<JobShared>, node_id: String, sops: Rc<Vec<String>>) {
    let id = sh.id();
    let total = sops.len() as u64;
    let mut retries = Retries::default();
    loop {
        sh.wait_unpaused().await;
        if sh.is_final(&node_id) {
            return;
        }
        let Some(node) = sh.node_config(&node_id) else {
            sh.update_node(&env, &node_id, |n| {
                n.status = NodeStatus::Cancelled;
                n.error = Some("the node was removed or deactivated".into());
            });
            return;
        };
        let preparing = Instant::now();
        let work = match node_work(&env, &id, &node_id, &sops) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, dispatch = %id, node = %node_id, "cannot prepare the instances");
                sh.update_node(&env, &node_id, |n| {
                    n.status = NodeStatus::Failed;
                    n.error = Some(format!("cannot prepare the instances: {e}"));
                });
                return;
            }
        };
        if work.items.is_empty() {
            if work.refused.is_empty() && super::commitment::wanted(&node) {
                super::commitment::commit(&env, &sh, &node, &sops).await;
                return;
            }
            let stored = work.stored;
            sh.update_node(&env, &node_id, |n| {
                n.files_total = total;
                n.files_sent = stored;
                if work.refused.is_empty() {
                    n.status = NodeStatus::Completed;
                    n.error = None;
                } else {
                    n.status = NodeStatus::Failed;
                    n.error = Some(refusal_summary(&work.refused, total as usize));
                }
            });
            return;
        }
        let stored_before = work.stored;
        tracing::info!(dispatch = %id, node = %node_id, instances = work.items.len(), prepare_s = preparing.elapsed().as_secs_f64(), "sending");
        let sending = Instant::now();
        sh.update_node(&env, &node_id, |n| {
            n.status = NodeStatus::Sending;
            n.files_total = total;
            n.files_sent = stored_before;
            n.error = None;
        });
        // The node's own sender pool sends them: its associations, its cap,
        // shared with every other dispatch to this node.
        let sender = env.senders.sender_for(&node);
        let stop = sh.batch_flag(&node_id);
        let (tx, mut rx) = mpsc::unbounded_channel::<SendEvent>();
        let journal = Arc::new(AckJournal::new(
            env.store.clone(),
            &id,
            &node_id,
            env.board.clone(),
            &work.items,
            node.max_associations(),
            tx,
        ));
        let rank = {
            let r = sh.rec.borrow();
            Rank {
                priority: r.priority as u8,
                seq: r.seq,
            }
        };
        let handed = InstancesHanded {
            items: work.items,
            rank,
            cancel: stop.clone(),
            sink: journal.clone(),
        };
        let reaper = sender.clone();
        let batch = async move {
            let done = sender
                .send(handed)
                .await
                .map_err(|e| format!("the node's sender is gone: {e}"))?;
            let outcome = done
                .await
                .map_err(|_| "the node's sender pool stopped".to_owned())?;
            // Everything recorded is made durable and reported.
            tokio::task::spawn_blocking(move || journal.finish())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(outcome)
        };
        tokio::pin!(batch);
        sh.batch_started();
        // A response not coming within the DIMSE timeout ends the association
        // on the sender thread; the watchdog also covers the connect and
        // anything else an association could wait on without a deadline.
        // Waiting in the node's queue behind other dispatches is progress too,
        // as long as the node's pool stores something.
        let beat = sh.watch.lane("send", Some(&node_id));
        let opts = env.senders.options();
        let limit = opts.io_timeout + opts.connect_timeout;
        let pool = env.board.sent.pool(&node_id);
        let pool_done = || {
            pool.as_ref().map_or(0, |p| {
                p.sent_as_is.load(std::sync::atomic::Ordering::Relaxed)
                    + p.transcoded.load(std::sync::atomic::Ordering::Relaxed)
                    + p.failed.load(std::sync::atomic::Ordering::Relaxed)
            })
        };
        let mut pool_seen = pool_done();
        let mut pool_check = tokio::time::interval(Duration::from_secs(1));
        let mut stalled: Option<String> = None;
        let mut reaped = false;
        let mut stored = stored_before;
        let mut last_report = Instant::now();
        let outcome = loop {
            tokio::select! {
                _ = pool_check.tick() => {
                    let now = pool_done();
                    if now != pool_seen {
                        pool_seen = now;
                        beat.tick();
                    }
                    // Stopped while waiting for an association: the pool
                    // ends our lots now (see `Pool::reap`), asked once.
                    if !reaped && stop.load(std::sync::atomic::Ordering::SeqCst) {
                        reaped = true;
                        reaper.do_send(crate::node_sender::BatchStopped);
                    }
                }
                s = beat.stalled(limit), if stalled.is_none() => {
                    // Cancelled: the batch stops after the instance in
                    // flight (its socket deadlines bound that) and the node
                    // is retried like any transient failure.
                    tracing::warn!(dispatch = %id, node = %node_id, stalled = %s, "send stalled; stopping the batch");
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    stalled = Some(s.to_string());
                }
                ev = rx.recv() => match ev {
                    Some(SendEvent::Acknowledged { outcome: ItemOutcome::Stored { .. }, .. }) => {
                        beat.tick();
                        stored += 1;
                        retries.reset();
                        if last_report.elapsed() >= PROGRESS_EVERY {
                            last_report = Instant::now();
                            sh.update_node(&env, &node_id, |n| n.files_sent = stored);
                        }
                    }
                    Some(SendEvent::Acknowledged { sop_instance_uid, outcome: ItemOutcome::Failed { error, .. }, .. }) => {
                        beat.tick();
                        retries.reset();
                        tracing::warn!(dispatch = %id, node = %node_id, sop = %sop_instance_uid, error = %error, "instance refused");
                    }
                    Some(SendEvent::Transient { error }) => {
                        tracing::warn!(dispatch = %id, node = %node_id, error = %error, "node transiently unavailable");
                    }
                    None => {}
                },
                done = &mut batch => break done,
            }
        };
        sh.batch_ended();
        sh.watch.close(&beat);
        tracing::info!(dispatch = %id, node = %node_id, send_s = sending.elapsed().as_secs_f64(), "batch ended");
        // Events sent just before the batch returned.
        while let Ok(ev) = rx.try_recv() {
            if let SendEvent::Acknowledged {
                outcome: ItemOutcome::Stored { .. },
                ..
            } = ev
            {
                stored += 1;
                retries.reset();
            }
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "sender failed");
                crate::send::BatchOutcome {
                    remaining: Vec::new(),
                    transient_error: Some(format!("sender failed: {e}")),
                    associations: 0,
                }
            }
        };
        sh.update_node(&env, &node_id, |n| n.files_sent = stored);
        if sh.is_final(&node_id) || sh.paused.get() {
            continue;
        }
        match stalled.or(outcome.transient_error) {
            None => continue,
            Some(err) => match retries.next(&sh.policy.get()) {
                None => {
                    let tries = retries.failures();
                    let error = format!("{err} (gave up after {tries} tries)");
                    super::parking::give_up(&env, &sh, &node_id, error);
                    return;
                }
                Some(delay) => {
                    sh.update_node(&env, &node_id, |n| {
                        n.status = NodeStatus::Retrying;
                        n.error = Some(format!("{err}; next try in {} s", delay.as_secs()));
                    });
                    // Ends early when the node answers C-ECHO again (from now:
                    // an answer before this failure says nothing about it).
                    sh.take_wake(&node_id);
                    let until = Instant::now() + delay;
                    while Instant::now() < until
                        && !sh.is_final(&node_id)
                        && !sh.take_wake(&node_id)
                    {
                        sh.sleep(until - Instant::now()).await;
                    }
                }
            },
        }
    }
}
