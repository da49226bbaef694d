//! `dispatch.status` events (PROTOCOL.md §4): built from the journaled record,
//! written to the durable outbox, and the link told to drain it. `sending`
//! progress is coalesced per (dispatch, node) while it waits.

use laminate_store::{DispatchRecord, NodeProgress, NodeStatus, Outbox, Store};
use serde_json::json;

use crate::envelope::Outgoing;
use crate::link::OutboxAppended;
use crate::peers::PeersCell;

/// The event for one node of a dispatch.
pub fn status_event(rec: &DispatchRecord, node: &NodeProgress) -> Outgoing {
    Outgoing {
        event_type: "dispatch.status".into(),
        workspace_id: rec.workspace_id.clone(),
        timestamp: crate::clock::now_rfc3339(),
        correlation_id: rec.correlation_id.clone(),
        entity_type: rec.entity_type.clone(),
        entity_id: rec.entity_id.clone(),
        payload: json!({
            "node_id": node.node_id,
            "status": node.status.as_str(),
            "progress": node.progress(),
            "files_sent": node.files_sent,
            "files_total": node.files_total,
            "error": node.error,
        }),
    }
}

/// Queues the node's current status in the outbox and wakes the link.
pub fn report(store: &Store, peers: &PeersCell, rec: &DispatchRecord, node_id: &str) {
    let Some(node) = rec.node(node_id) else {
        return;
    };
    if node.status.is_final() {
        crate::audit::record(peers, crate::audit::AuditEvent::delivery(rec, node));
    }
    let frame = status_event(rec, node).to_frame();
    let key = format!("{}/{}", rec.id, node_id);
    let progress = node.status == NodeStatus::Sending;
    match store.outbox_push(frame.as_bytes(), Some(&key), progress) {
        Ok(_) => {
            tracing::debug!(dispatch = %rec.id, node = node_id, status = node.status.as_str(), progress = node.progress(), "dispatch status queued");
            if let Some(p) = peers.get() {
                p.link.do_send(OutboxAppended);
            }
        }
        Err(e) => tracing::error!(error = %e, dispatch = %rec.id, "cannot queue a dispatch status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use laminate_store::{DispatchKind, Priority, Stage};

    #[test]
    fn the_event_carries_the_dispatch_envelope_and_the_node_payload() {
        let mut node = NodeProgress::queued("n1");
        node.status = NodeStatus::Sending;
        node.files_sent = 2;
        node.files_total = 3;
        let rec = DispatchRecord {
            id: "d1".into(),
            seq: 0,
            correlation_id: "corr".into(),
            workspace_id: "ws".into(),
            entity_type: "session".into(),
            entity_id: "sess_1".into(),
            kind: DispatchKind::Session,
            priority: Priority::High,
            subject_id: None,
            session_id: None,
            label: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            stage: Stage::Sending,
            study_uids: vec![],
            nodes: vec![node.clone()],
            replays: 0,
        };
        let v: serde_json::Value =
            serde_json::from_str(&status_event(&rec, &node).to_frame()).expect("json");
        assert_eq!(v["correlation_id"], "corr");
        assert_eq!(v["entity_type"], "session");
        assert_eq!(v["entity_id"], "sess_1");
        assert_eq!(v["payload"]["progress"], 66);
        assert_eq!(v["payload"]["error"], serde_json::Value::Null);
    }
}
