//! Builders for tests, here and in the crates that use the store (feature
//! `test-support`, which only their dev-dependencies turn on).

use crate::{DispatchKind, DispatchRecord, NodeProgress, NodeStatus, Priority, Stage};

/// A session dispatch `id` to one node `n1` in `status`, at `stage`, created and
/// last updated at `updated_at_ms`.
pub fn dispatch_record(
    id: &str,
    status: NodeStatus,
    stage: Stage,
    updated_at_ms: u64,
) -> DispatchRecord {
    let mut node = NodeProgress::queued("n1");
    node.status = status;
    DispatchRecord {
        id: id.into(),
        seq: 0,
        correlation_id: format!("c_{id}"),
        workspace_id: "ws".into(),
        entity_type: "session".into(),
        entity_id: "s".into(),
        kind: DispatchKind::Session,
        priority: Priority::Normal,
        subject_id: None,
        session_id: None,
        label: None,
        created_at_ms: updated_at_ms,
        updated_at_ms,
        stage,
        study_uids: vec![],
        nodes: vec![node],
        replays: 0,
    }
}
