//! Turning a dispatch event into a journaled record: payload validation and the
//! choice of target nodes (only nodes configured here and active; the others are
//! the backend's business elsewhere).

use laminate_config::Node;
use laminate_store::{DispatchKind, DispatchRecord, NodeProgress, Priority, Stage};
use serde_json::Value;

use crate::envelope::{EventKind, Incoming};

/// What a valid dispatch event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchRequest {
    pub kind: DispatchKind,
    pub entity_id: String,
    pub nodes: Vec<String>,
    pub priority: Priority,
    pub subject_id: Option<String>,
    pub session_id: Option<String>,
    pub label: Option<String>,
}

/// Validates a dispatch event's envelope and payload.
pub fn parse_request(ev: &Incoming) -> Result<DispatchRequest, String> {
    let kind = match ev.kind {
        EventKind::SubjectDispatch => DispatchKind::Subject,
        EventKind::SessionDispatch => DispatchKind::Session,
        EventKind::ScanDispatch => DispatchKind::Scan,
        _ => return Err("not a dispatch event".into()),
    };
    let entity_id = ev
        .entity_id
        .clone()
        .filter(|e| !e.trim().is_empty())
        .ok_or("entity_id (the id to download) is missing")?;
    let nodes = match ev.payload.get("nodes") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or("nodes must be strings"))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("nodes must be an array of node ids".into()),
        None => return Err("nodes is missing".into()),
    };
    let priority = match ev.payload.get("priority") {
        None | Some(Value::Null) => Priority::Normal,
        Some(Value::String(p)) => match p.as_str() {
            "high" => Priority::High,
            "normal" => Priority::Normal,
            "low" => Priority::Low,
            other => return Err(format!("priority \"{other}\" is not high, normal or low")),
        },
        Some(other) => return Err(format!("priority must be a string, got {other}")),
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match ev.payload.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{key} must be a string, got {other}")),
        }
    };
    let subject_id = match kind {
        DispatchKind::Subject => Some(entity_id.clone()),
        _ => text("subject_id")?,
    };
    let session_id = match kind {
        DispatchKind::Session => Some(entity_id.clone()),
        DispatchKind::Scan => text("session_id")?,
        DispatchKind::Subject => None,
    };
    let label = text(match kind {
        DispatchKind::Subject => "subject_label",
        DispatchKind::Session => "session_label",
        DispatchKind::Scan => "scan_label",
    })?;
    Ok(DispatchRequest {
        kind,
        entity_id,
        nodes,
        priority,
        subject_id,
        session_id,
        label,
    })
}

/// The requested nodes that are configured here and active, in request order, once each.
pub fn target_nodes(requested: &[String], configured: &[Node]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in requested {
        let managed = configured.iter().any(|n| &n.node_id == id && n.is_active);
        if managed && !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// The new record for an accepted dispatch.
pub fn new_record(
    ev: &Incoming,
    req: DispatchRequest,
    targets: &[String],
    seq: u64,
    now_ms: u64,
) -> DispatchRecord {
    DispatchRecord {
        id: format!("d{:06}", seq + 1),
        seq,
        correlation_id: ev.correlation_id.clone(),
        workspace_id: ev.workspace_id.clone().unwrap_or_default(),
        entity_type: ev.entity_type.clone().unwrap_or_else(|| match req.kind {
            DispatchKind::Subject => "subject".into(),
            DispatchKind::Session => "session".into(),
            DispatchKind::Scan => "scan".into(),
        }),
        entity_id: req.entity_id,
        kind: req.kind,
        priority: req.priority,
        subject_id: req.subject_id,
        session_id: req.session_id,
        label: req.label,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        stage: Stage::Queued,
        study_uids: Vec::new(),
        nodes: targets.iter().map(|n| NodeProgress::queued(n)).collect(),
        replays: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::parse_incoming;
    use serde_json::json;

    fn ev(v: Value) -> Incoming {
        parse_incoming(v.to_string().as_bytes()).expect("valid envelope")
    }

    fn node(id: &str, active: bool) -> Node {
        serde_json::from_value(json!({"node_id": id, "ae_title": "AE", "host": "127.0.0.1", "port": 104, "is_active": active}))
            .expect("node")
    }

    #[test]
    fn a_session_dispatch_is_parsed_with_defaults() {
        let r = parse_request(&ev(
            json!({"event_type": "session.dispatch", "entity_id": "sess_1",
            "payload": {"subject_id": "subj_1", "nodes": ["n1"], "session_label": "MRI"}}),
        ))
        .expect("valid");
        assert_eq!(r.kind, DispatchKind::Session);
        assert_eq!(r.priority, Priority::Normal);
        assert_eq!(r.session_id.as_deref(), Some("sess_1"));
        assert_eq!(r.subject_id.as_deref(), Some("subj_1"));
        assert_eq!(r.label.as_deref(), Some("MRI"));
    }

    #[test]
    fn invalid_payloads_are_refused_with_a_reason() {
        for payload in [
            json!({}),
            json!({"nodes": "n1"}),
            json!({"nodes": [1]}),
            json!({"nodes": ["n1"], "priority": "urgent"}),
        ] {
            let e = ev(
                json!({"event_type": "scan.dispatch", "entity_id": "scan_1", "payload": payload}),
            );
            assert!(parse_request(&e).is_err(), "{payload}");
        }
        let no_entity = ev(json!({"event_type": "scan.dispatch", "payload": {"nodes": ["n1"]}}));
        assert!(parse_request(&no_entity).is_err());
    }

    #[test]
    fn only_active_configured_nodes_are_targets() {
        let configured = [node("n1", true), node("n2", false), node("n3", true)];
        let requested: Vec<String> = ["n9", "n3", "n2", "n1", "n3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(target_nodes(&requested, &configured), ["n3", "n1"]);
    }
}
