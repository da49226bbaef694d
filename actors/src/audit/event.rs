//! What happened, as the hooks in the other actors and the HTTP server tell it,
//! and how each becomes an [`AuditRecord`]. The events carry identifiers and
//! counts only: never a key, a token or pixel data.

use serde_json::{json, Map, Value};

use super::record::{
    event_id, event_type, outcome, ActiveParticipant, AuditRecord, Code, ParticipantObject,
};

/// Whether an operator's request carried a bearer token and how the rule judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// A token was given and matched.
    Accepted,
    /// Refused by the token rule (no token where one is needed, a wrong one, or
    /// actions disabled).
    Refused,
    /// No token needed and none checked (loopback without `--status-token`).
    NotNeeded,
    /// Answered before the token rule ran (an unknown path, an unreadable form).
    NotChecked,
}

impl TokenUse {
    fn as_str(self) -> &'static str {
        match self {
            TokenUse::Accepted => "accepted",
            TokenUse::Refused => "refused",
            TokenUse::NotNeeded => "not needed",
            TokenUse::NotChecked => "not checked",
        }
    }
}

/// A node as the audit trail names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    pub ae_title: String,
    /// The calling AE title used towards it.
    pub calling_ae_title: String,
    pub host: String,
    pub port: u16,
}

/// What a record needs besides its event: our AE title, and the cache and the
/// configuration to name patients and nodes by.
pub struct Lookups<'a> {
    pub appliance: &'a str,
    pub patient_of: &'a dyn Fn(&str) -> Option<String>,
    pub node_of: &'a dyn Fn(&str) -> Option<NodeSeen>,
}

/// One happening worth an audit record.
#[derive(Debug, Clone)]
pub enum AuditEvent {
    /// A dispatch reached a final status on one node.
    Delivery {
        dispatch_id: String,
        correlation_id: String,
        /// `session`, `subject` or `scan`, and its Laminate id.
        entity_type: String,
        entity_id: String,
        subject_id: Option<String>,
        study_uids: Vec<String>,
        node_id: String,
        /// `completed`, `failed` or `cancelled`.
        status: String,
        files_sent: u64,
        files_total: u64,
        error: Option<String>,
    },
    /// `session.deleted` / `scan.deleted` acted on (or failed).
    Deletion {
        event_type: String,
        correlation_id: String,
        study_uid: String,
        scan_number: Option<i32>,
        instances: u64,
        bytes: u64,
        patient_ids: Vec<String>,
        error: Option<String>,
    },
    /// A `proxy.*` configuration event applied or rejected.
    ConfigChange {
        event_type: String,
        correlation_id: String,
        /// The payload's top-level keys (the values are in the config files).
        keys: Vec<String>,
        error: Option<String>,
    },
    /// A POST to the local API or the page's forms.
    OperatorAction {
        /// e.g. `POST /api/dispatches/{id}/replay`.
        action: String,
        /// The dispatch or node the action named.
        target: Option<String>,
        client: Option<String>,
        token: TokenUse,
        /// The HTTP status answered (a form's 303 counts by its own outcome).
        status: u16,
        error: Option<String>,
    },
    /// The backend link opened (the backend accepted the key) or was refused.
    Link {
        /// host:port of the backend; never the URL (it carries the key).
        backend: String,
        rejected: Option<String>,
    },
}

impl AuditEvent {
    /// The backend link opened, or (`rejected`: why) the backend refused the key.
    pub fn link(ws_url: &str, rejected: Option<&str>) -> Self {
        AuditEvent::Link {
            backend: Self::backend_of(ws_url),
            rejected: rejected.map(str::to_owned),
        }
    }

    /// A `proxy.*` event applied (`Ok`) or rejected.
    pub fn config_change(ev: &crate::envelope::Incoming, outcome: &Result<(), String>) -> Self {
        AuditEvent::ConfigChange {
            event_type: ev.event_type.clone(),
            correlation_id: ev.correlation_id.clone(),
            keys: ev
                .payload
                .iter()
                .flat_map(|(k, v)| match v {
                    Value::Object(inner) if !inner.is_empty() => {
                        inner.keys().map(|i| format!("{k}.{i}")).collect()
                    }
                    _ => vec![k.clone()],
                })
                .collect(),
            error: outcome.as_ref().err().cloned(),
        }
    }

    /// A dispatch's final status on one node.
    pub fn delivery(
        rec: &laminate_store::DispatchRecord,
        node: &laminate_store::NodeProgress,
    ) -> Self {
        AuditEvent::Delivery {
            dispatch_id: rec.id.clone(),
            correlation_id: rec.correlation_id.clone(),
            entity_type: rec.entity_type.clone(),
            entity_id: rec.entity_id.clone(),
            subject_id: rec.subject_id.clone(),
            study_uids: rec.study_uids.clone(),
            node_id: node.node_id.clone(),
            status: node.status.as_str().to_owned(),
            files_sent: node.files_sent,
            files_total: node.files_total,
            error: node.error.clone(),
        }
    }

    /// The backend's host:port from its WebSocket URL (whose query holds the key).
    pub fn backend_of(ws_url: &str) -> String {
        url::Url::parse(ws_url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_owned();
                Some(match u.port_or_known_default() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            })
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// The record, stamped `at`.
    pub fn into_record(self, at: String, look: &Lookups<'_>) -> AuditRecord {
        let (appliance, patient_of) = (look.appliance, look.patient_of);
        let app = |requestor| ActiveParticipant::new("application", appliance, requestor);
        let backend = || ActiveParticipant::new("backend", "laminate-backend", true);
        match self {
            AuditEvent::Delivery {
                dispatch_id,
                correlation_id,
                entity_type,
                entity_id,
                subject_id,
                study_uids,
                node_id,
                status,
                files_sent,
                files_total,
                error,
            } => {
                let mut objects = Vec::new();
                let mut patients: Vec<String> =
                    study_uids.iter().filter_map(|s| patient_of(s)).collect();
                patients.sort();
                patients.dedup();
                for p in patients {
                    objects.push(ParticipantObject::new("patient", p));
                }
                for s in &study_uids {
                    objects.push(ParticipantObject::new("study", s.clone()));
                }
                if let Some(s) = subject_id {
                    objects.push(ParticipantObject::new("subject", s));
                }
                objects.push(ParticipantObject::new(&entity_type, entity_id));
                objects.push(ParticipantObject::new("dispatch", dispatch_id));
                let result = match status.as_str() {
                    "completed" => outcome::SUCCESS,
                    "cancelled" => outcome::MINOR_FAILURE,
                    _ => outcome::SERIOUS_FAILURE,
                };
                let seen = (look.node_of)(&node_id);
                let mut source = ActiveParticipant::new("source", appliance, false);
                let mut destination = ActiveParticipant::new("destination", &node_id, false);
                if let Some(n) = seen {
                    source.user_id = n.calling_ae_title;
                    destination.alternative_user_id = Some(format!("AETITLES={}", n.ae_title));
                    destination.network_access_point = Some(format!("{}:{}", n.host, n.port));
                }
                AuditRecord {
                    at,
                    event_id: event_id::instances_transferred(),
                    event_type: None,
                    action: "R".into(),
                    outcome: result,
                    active_participants: vec![source, destination, backend()],
                    participant_objects: objects,
                    detail: obj(json!({
                        "node_id": node_id, "status": status, "count": files_sent,
                        "files_total": files_total, "correlation_id": correlation_id,
                        "error": error,
                    })),
                }
            }
            AuditEvent::Deletion {
                event_type,
                correlation_id,
                study_uid,
                scan_number,
                instances,
                bytes,
                patient_ids,
                error,
            } => {
                let mut objects: Vec<ParticipantObject> = patient_ids
                    .into_iter()
                    .map(|p| ParticipantObject::new("patient", p))
                    .collect();
                objects.push(ParticipantObject::new("study", study_uid));
                if let Some(n) = scan_number {
                    objects.push(ParticipantObject::new("series", format!("scan {n}")));
                }
                AuditRecord {
                    at,
                    event_id: event_id::study_deleted(),
                    event_type: None,
                    action: "D".into(),
                    outcome: failure_if(&error, outcome::SERIOUS_FAILURE),
                    active_participants: vec![backend(), app(false)],
                    participant_objects: objects,
                    detail: obj(json!({
                        "event": event_type, "correlation_id": correlation_id,
                        "scan_number": scan_number, "count": instances, "bytes": bytes,
                        "error": error,
                    })),
                }
            }
            AuditEvent::ConfigChange {
                event_type,
                correlation_id,
                keys,
                error,
            } => {
                let (kind, file) = match event_type.as_str() {
                    "proxy.nodes_changed" => (event_type::network_configuration(), "nodes.json"),
                    "proxy.status_changed" => (event_type::software_configuration(), "status.json"),
                    _ => (event_type::software_configuration(), "proxy.json"),
                };
                AuditRecord {
                    at,
                    event_id: event_id::security_alert(),
                    event_type: Some(kind),
                    action: "U".into(),
                    outcome: failure_if(&error, outcome::MINOR_FAILURE),
                    active_participants: vec![backend(), app(false)],
                    participant_objects: vec![ParticipantObject::new("config", file)],
                    detail: obj(json!({
                        "event": event_type, "correlation_id": correlation_id,
                        "applied": error.is_none(), "keys": keys, "error": error,
                    })),
                }
            }
            AuditEvent::OperatorAction {
                action,
                target,
                client,
                token,
                status,
                error,
            } => {
                let mut operator = ActiveParticipant::new("operator", "operator", true).at(client);
                operator.token = Some(token.as_str().to_owned());
                let ok = (200..400).contains(&status) && error.is_none();
                let objects = target
                    .map(|t| {
                        let kind = if action.contains("/nodes/") {
                            "node"
                        } else {
                            "dispatch"
                        };
                        vec![ParticipantObject::new(kind, t)]
                    })
                    .unwrap_or_default();
                AuditRecord {
                    at,
                    event_id: event_id::security_alert(),
                    event_type: Some(event_type::use_of_restricted_function()),
                    action: "E".into(),
                    outcome: if ok {
                        outcome::SUCCESS
                    } else {
                        outcome::MINOR_FAILURE
                    },
                    active_participants: vec![operator, app(false)],
                    participant_objects: objects,
                    detail: obj(json!({ "action": action, "status": status, "error": error })),
                }
            }
            AuditEvent::Link {
                backend: host,
                rejected,
            } => AuditRecord {
                at,
                event_id: event_id::user_authentication(),
                event_type: Some(event_type::login()),
                action: "E".into(),
                outcome: failure_if(&rejected, outcome::MINOR_FAILURE),
                active_participants: vec![
                    app(true),
                    ActiveParticipant::new("backend", "laminate-backend", false).at(Some(host)),
                ],
                participant_objects: Vec::new(),
                detail: obj(json!({
                    "link": if rejected.is_some() { "rejected" } else { "connected" },
                    "error": rejected,
                })),
            },
        }
    }

    /// The event id a record of this event will carry (for logs and tests).
    pub fn event_id(&self) -> Code {
        match self {
            AuditEvent::Delivery { .. } => event_id::instances_transferred(),
            AuditEvent::Deletion { .. } => event_id::study_deleted(),
            AuditEvent::ConfigChange { .. } | AuditEvent::OperatorAction { .. } => {
                event_id::security_alert()
            }
            AuditEvent::Link { .. } => event_id::user_authentication(),
        }
    }
}

fn failure_if(error: &Option<String>, code: u8) -> u8 {
    if error.is_some() {
        code
    } else {
        outcome::SUCCESS
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_patient(_: &str) -> Option<String> {
        None
    }

    fn no_node(_: &str) -> Option<NodeSeen> {
        None
    }

    const NONE: Lookups<'static> = Lookups {
        appliance: "AE",
        patient_of: &no_patient,
        node_of: &no_node,
    };

    #[test]
    fn the_backend_is_named_by_host_and_port_never_by_its_url() {
        let b = AuditEvent::backend_of("wss://laminate.example/proxy/ws?proxy_key=pk_secret");
        assert_eq!(b, "laminate.example:443");
        assert_eq!(AuditEvent::backend_of("not a url"), "unknown");
    }

    #[test]
    fn a_delivery_names_patient_study_node_count_and_outcome() {
        let ev = AuditEvent::Delivery {
            dispatch_id: "d000001".into(),
            correlation_id: "c1".into(),
            entity_type: "session".into(),
            entity_id: "s1".into(),
            subject_id: Some("subj".into()),
            study_uids: vec!["1.2.3".into()],
            node_id: "node_1".into(),
            status: "failed".into(),
            files_sent: 3,
            files_total: 5,
            error: Some("refused".into()),
        };
        let node = |id: &str| {
            (id == "node_1").then(|| NodeSeen {
                ae_title: "PACS_A".into(),
                calling_ae_title: "OUR_AE".into(),
                host: "10.0.0.5".into(),
                port: 104,
            })
        };
        let rec = ev.into_record(
            "t".into(),
            &Lookups {
                appliance: "LAMINATE_PROXY",
                patient_of: &|s| (s == "1.2.3").then(|| "PID".to_owned()),
                node_of: &node,
            },
        );
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["event_id"]["code"], "110104");
        assert_eq!(v["outcome"], 8);
        assert_eq!(
            v["participant_objects"][0],
            json!({"type": "patient", "id": "PID"})
        );
        assert_eq!(
            v["participant_objects"][1],
            json!({"type": "study", "id": "1.2.3"})
        );
        assert_eq!(v["active_participants"][0]["user_id"], "OUR_AE");
        assert_eq!(
            v["active_participants"][1],
            json!({"role": "destination", "user_id": "node_1", "requestor": false,
                   "alternative_user_id": "AETITLES=PACS_A",
                   "network_access_point": "10.0.0.5:104"})
        );
        assert_eq!(v["detail"]["count"], 3);
        assert!(v.get("event_type").is_none());
    }

    #[test]
    fn outcomes_follow_the_standard_codes() {
        let link = |rejected: Option<&str>| {
            AuditEvent::Link {
                backend: "h:443".into(),
                rejected: rejected.map(str::to_owned),
            }
            .into_record("t".into(), &NONE)
            .outcome
        };
        assert_eq!((link(None), link(Some("4003"))), (0, 4));
        let op = |status, token| {
            AuditEvent::OperatorAction {
                action: "POST /api/nodes/{id}/echo".into(),
                target: Some("node_1".into()),
                client: Some("127.0.0.1".into()),
                token,
                status,
                error: None,
            }
            .into_record("t".into(), &NONE)
        };
        let ok = op(200, TokenUse::Accepted);
        assert_eq!(ok.outcome, 0);
        assert_eq!(ok.active_participants[0].token.as_deref(), Some("accepted"));
        assert_eq!(ok.participant_objects[0].kind, "node");
        assert_eq!(op(401, TokenUse::Refused).outcome, 4);
    }
}
