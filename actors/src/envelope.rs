//! The event envelope of PROTOCOL.md §2: parsing untrusted incoming frames and
//! building outgoing ones.
//!
//! Parsing never panics and never trusts a field's type; a frame that does not
//! fit is a typed [`EnvelopeError`] the router counts and logs. Outgoing events
//! always carry all seven fields.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// How much of a bad frame is quoted in the log.
pub const LOG_EXCERPT_BYTES: usize = 512;

/// What was wrong with an incoming frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("event_type is missing")]
    MissingEventType,
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("binary frames are not events")]
    Binary,
}

/// Every event type the backend may send (PROTOCOL.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Ping,
    SessionDeleted,
    ScanDeleted,
    SubjectDispatch,
    SessionDispatch,
    ScanDispatch,
    NodesChanged,
    ConfigChanged,
    StatusChanged,
    Unknown,
}

impl EventKind {
    pub fn of(event_type: &str) -> EventKind {
        match event_type {
            "ping" => EventKind::Ping,
            "session.deleted" => EventKind::SessionDeleted,
            "scan.deleted" => EventKind::ScanDeleted,
            "subject.dispatch" => EventKind::SubjectDispatch,
            "session.dispatch" => EventKind::SessionDispatch,
            "scan.dispatch" => EventKind::ScanDispatch,
            "proxy.nodes_changed" => EventKind::NodesChanged,
            "proxy.config_changed" => EventKind::ConfigChanged,
            "proxy.status_changed" => EventKind::StatusChanged,
            _ => EventKind::Unknown,
        }
    }
}

/// A validated incoming event.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub event_type: String,
    pub kind: EventKind,
    pub workspace_id: Option<String>,
    pub timestamp: Option<String>,
    /// The backend's correlation id, or a stable hash of the frame when it sent none.
    pub correlation_id: String,
    /// True when `correlation_id` was derived from the frame's bytes.
    pub correlation_derived: bool,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub payload: Map<String, Value>,
}

/// Parses one text frame. `null` counts as omitted for the optional strings and
/// for `payload`; unknown extra fields are ignored.
pub fn parse_incoming(frame: &[u8]) -> Result<Incoming, EnvelopeError> {
    let value: Value =
        serde_json::from_slice(frame).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(EnvelopeError::NotObject);
    };
    let event_type = match obj.remove("event_type") {
        Some(Value::String(s)) if !s.is_empty() => s,
        None | Some(Value::Null) => return Err(EnvelopeError::MissingEventType),
        Some(Value::String(_)) => return Err(EnvelopeError::MissingEventType),
        Some(_) => {
            return Err(EnvelopeError::WrongType {
                field: "event_type",
                expected: "a string",
            })
        }
    };
    let workspace_id = optional_string(&mut obj, "workspace_id")?;
    let timestamp = optional_string(&mut obj, "timestamp")?;
    let correlation_id = optional_string(&mut obj, "correlation_id")?;
    let entity_type = optional_string(&mut obj, "entity_type")?;
    let entity_id = optional_string(&mut obj, "entity_id")?;
    let payload = match obj.remove("payload") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(EnvelopeError::WrongType {
                field: "payload",
                expected: "an object",
            })
        }
    };
    let (correlation_id, correlation_derived) = match correlation_id {
        Some(c) if !c.is_empty() => (c, false),
        _ => (derived_correlation_id(frame), true),
    };
    Ok(Incoming {
        kind: EventKind::of(&event_type),
        event_type,
        workspace_id,
        timestamp,
        correlation_id,
        correlation_derived,
        entity_type,
        entity_id,
        payload,
    })
}

fn optional_string(
    obj: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, EnvelopeError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "a string or null",
        }),
    }
}

/// A stable id for a frame without `correlation_id`: the same bytes give the
/// same id, so a re-sent frame still de-duplicates (PROTOCOL.md §2).
pub fn derived_correlation_id(frame: &[u8]) -> String {
    let digest = Sha256::digest(frame);
    format!("sha256:{}", hex::encode(&digest[..16]))
}

/// The first [`LOG_EXCERPT_BYTES`] of a frame, lossily decoded, for logs.
pub fn excerpt(frame: &[u8]) -> String {
    let end = frame.len().min(LOG_EXCERPT_BYTES);
    String::from_utf8_lossy(&frame[..end]).into_owned()
}

/// An event the appliance sends. Serialises with all seven envelope fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outgoing {
    pub event_type: String,
    pub workspace_id: String,
    pub timestamp: String,
    pub correlation_id: String,
    pub entity_type: String,
    pub entity_id: String,
    pub payload: Value,
}

impl Outgoing {
    /// The JSON text frame.
    pub fn to_frame(&self) -> String {
        // Serialising a struct of strings and a Value cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `pong` for a `ping`: same correlation id, entity echoed.
    pub fn pong(ping: &Incoming, workspace_id: &str) -> Outgoing {
        Outgoing {
            event_type: "pong".into(),
            workspace_id: ping
                .workspace_id
                .clone()
                .unwrap_or_else(|| workspace_id.to_owned()),
            timestamp: crate::clock::now_rfc3339(),
            correlation_id: ping.correlation_id.clone(),
            entity_type: ping.entity_type.clone().unwrap_or_default(),
            entity_id: ping.entity_id.clone().unwrap_or_default(),
            payload: Value::Object(Map::new()),
        }
    }
}

/// A fresh correlation id for events the appliance starts itself (heartbeats).
pub fn fresh_correlation_id(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}_{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_envelope_parses() {
        let f = br#"{"event_type":"session.dispatch","workspace_id":"ws_123","timestamp":"2025-10-04T10:30:00.000Z","correlation_id":"corr_abc","entity_type":"session","entity_id":"sess_456","payload":{"nodes":["n1"]},"extra":1}"#;
        let e = parse_incoming(f).expect("parses");
        assert_eq!(e.kind, EventKind::SessionDispatch);
        assert_eq!(e.correlation_id, "corr_abc");
        assert!(!e.correlation_derived);
        assert_eq!(e.entity_id.as_deref(), Some("sess_456"));
        assert_eq!(e.payload["nodes"][0], "n1");
    }

    #[test]
    fn seed_wscat_example_without_correlation_id_gets_stable_hash() {
        let f = br#"{"event_type":"session.dispatch","workspace_id":"ws_123","entity_id":"sess_456","payload":{}}"#;
        let a = parse_incoming(f).expect("parses");
        let b = parse_incoming(f).expect("parses");
        assert!(a.correlation_derived);
        assert_eq!(a.correlation_id, b.correlation_id);
        let other = parse_incoming(br#"{"event_type":"session.dispatch","entity_id":"x"}"#)
            .expect("parses");
        assert_ne!(a.correlation_id, other.correlation_id);
    }

    #[test]
    fn nulls_count_as_omitted() {
        let f =
            br#"{"event_type":"ping","workspace_id":null,"correlation_id":null,"payload":null}"#;
        let e = parse_incoming(f).expect("parses");
        assert_eq!(e.workspace_id, None);
        assert!(e.correlation_derived);
        assert!(e.payload.is_empty());
    }

    #[test]
    fn wrong_types_are_rejected_by_field() {
        assert!(matches!(
            parse_incoming(b"nope"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(parse_incoming(b"[1]"), Err(EnvelopeError::NotObject));
        assert_eq!(parse_incoming(b"{}"), Err(EnvelopeError::MissingEventType));
        assert!(matches!(
            parse_incoming(br#"{"event_type":5}"#),
            Err(EnvelopeError::WrongType {
                field: "event_type",
                ..
            })
        ));
        assert!(matches!(
            parse_incoming(br#"{"event_type":"ping","correlation_id":7}"#),
            Err(EnvelopeError::WrongType {
                field: "correlation_id",
                ..
            })
        ));
        assert!(matches!(
            parse_incoming(br#"{"event_type":"ping","payload":[]}"#),
            Err(EnvelopeError::WrongType {
                field: "payload",
                ..
            })
        ));
    }

    #[test]
    fn unknown_event_types_parse_as_unknown() {
        let e = parse_incoming(br#"{"event_type":"future.thing"}"#).expect("parses");
        assert_eq!(e.kind, EventKind::Unknown);
    }

    #[test]
    fn outgoing_carries_all_seven_fields() {
        let ping = parse_incoming(br#"{"event_type":"ping","correlation_id":"c1"}"#).expect("ok");
        let v: Value =
            serde_json::from_str(&Outgoing::pong(&ping, "ws_9").to_frame()).expect("json");
        for f in [
            "event_type",
            "workspace_id",
            "timestamp",
            "correlation_id",
            "entity_type",
            "entity_id",
            "payload",
        ] {
            assert!(v.get(f).is_some(), "missing {f}");
        }
        assert_eq!(v["correlation_id"], "c1");
        assert_eq!(v["workspace_id"], "ws_9");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn excerpt_is_bounded() {
        assert_eq!(excerpt(&[b'a'; 2000]).len(), LOG_EXCERPT_BYTES);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_incoming(&bytes);
        }

        #[test]
        fn arbitrary_json_objects_never_panic(
            et in proptest::option::of(any::<String>()),
            cid in proptest::option::of(any::<String>()),
            n in any::<i64>(),
        ) {
            let v = serde_json::json!({"event_type": et, "correlation_id": cid, "payload": {"n": n}, "entity_id": n});
            let _ = parse_incoming(v.to_string().as_bytes());
        }
    }
}
