//! The deletion actor. See `mod.rs`.

use std::path::PathBuf;

use actix::prelude::*;
use laminate_store::{finish_file_deletion, Catalog, Deletion, Store, NO_TICKET};

use super::messages::{DeletionReceived, ScanDeleted, StudyDeleted};
use super::payload::{self, DeletionTarget};
use crate::envelope::EventKind;
use crate::health::{ActorHealth, ActorState, HandlerFailed, Monitored};
use crate::peers::PeersCell;

pub struct DeletionActor {
    health: ActorHealth,
    store: Store,
    data_dir: PathBuf,
    peers: PeersCell,
}

impl DeletionActor {
    pub fn new(health: ActorHealth, store: Store, data_dir: PathBuf, peers: PeersCell) -> Self {
        Self {
            health,
            store,
            data_dir,
            peers,
        }
    }

    /// The index transaction; runs on a blocking thread (a big session is
    /// thousands of entries and a flush).
    fn delete(store: &Store, target: &DeletionTarget) -> Result<Deletion, String> {
        match target {
            DeletionTarget::Session { study_uid } => store.delete_study(study_uid),
            DeletionTarget::Scan {
                study_uid,
                scan_number,
            } => store.delete_series_by_number(study_uid, *scan_number),
        }
        .map_err(|e| e.to_string())
    }

    /// Unlinks the ticket's files off the actor thread.
    fn finish_files(&self, ticket: u64) {
        if ticket == NO_TICKET {
            return;
        }
        let store = self.store.clone();
        let dir = self.data_dir.clone();
        let health = self.health.clone();
        actix_rt::spawn(async move {
            let done =
                tokio::task::spawn_blocking(move || finish_file_deletion(&store, &dir, ticket))
                    .await;
            match done {
                Ok(Ok(n)) => tracing::debug!(files = n, ticket, "deleted files removed"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, ticket, "removing deleted files failed; start-up repair will finish it");
                    health.record_error(format!("file deletion: {e}"));
                }
                Err(e) => tracing::error!(error = %e, "file deletion task failed"),
            }
        });
    }
}

impl Actor for DeletionActor {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Running);
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for DeletionActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.health.restarted();
    }
}

impl Monitored for DeletionActor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl Handler<DeletionReceived> for DeletionActor {
    type Result = AtomicResponse<Self, Result<(), HandlerFailed>>;
    fn handle(&mut self, msg: DeletionReceived, _: &mut Context<Self>) -> Self::Result {
        let ev = msg.0;
        let target = match ev.kind {
            EventKind::SessionDeleted => payload::session(&ev.payload),
            EventKind::ScanDeleted => payload::scan(&ev.payload),
            _ => Err("not a deletion event".to_owned()),
        };
        let target = match target {
            Ok(t) => t,
            Err(why) => {
                tracing::error!(event_type = %ev.event_type, correlation_id = %ev.correlation_id, error = %why, "deletion event rejected");
                self.health
                    .record_error(format!("{}: {why}", ev.event_type));
                return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(()))));
            }
        };
        // Unfinished dispatches of this session or scan stop (a download or an
        // extraction under way included), whether or not anything is cached.
        if let Some(peers) = self.peers.get() {
            match &target {
                DeletionTarget::Session { study_uid } => peers.dispatcher.do_send(StudyDeleted {
                    session_id: ev.entity_id.clone(),
                    study_instance_uid: study_uid.clone(),
                }),
                DeletionTarget::Scan {
                    study_uid,
                    scan_number,
                } => peers.dispatcher.do_send(ScanDeleted {
                    scan_id: ev.entity_id.clone(),
                    study_instance_uid: study_uid.clone(),
                    scan_number: *scan_number,
                }),
            }
        }
        let event = (ev.event_type.clone(), ev.correlation_id.clone());
        let (store, peers) = (self.store.clone(), self.peers.clone());
        let work = async move {
            let t = target.clone();
            let done = tokio::task::spawn_blocking(move || Self::delete(&store, &t)).await;
            let done = done.unwrap_or_else(|e| Err(format!("deletion task failed: {e}")));
            crate::audit::record(&peers, target.audit_event(event, &done));
            (target, done)
        };
        // Atomic: one deletion at a time, in the order the router handed them over,
        // while the actor's thread stays free for everyone else on it.
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |(target, done), act, _| match done {
                Ok(d) if d.removed.is_empty() => {
                    tracing::info!(target = ?target, "nothing to delete (unknown or already deleted)");
                    Ok(())
                }
                Ok(d) => {
                    let bytes: u64 = d.removed.iter().map(|r| r.size).sum();
                    tracing::info!(target = ?target, instances = d.removed.len(), bytes, patient_dropped = ?d.patient_mapping_dropped, "deleted from the local store");
                    act.finish_files(d.ticket);
                    Ok(())
                }
                Err(e) => {
                    // Not acknowledged: the event is acted on again when redelivered.
                    tracing::error!(error = %e, target = ?target, "deletion failed");
                    act.health.record_error(format!("deletion: {e}"));
                    Err(HandlerFailed::Failed(format!("deletion: {e}")))
                }
            },
        )))
    }
}

crate::delivered_handlers!(DeletionActor: DeletionReceived);
