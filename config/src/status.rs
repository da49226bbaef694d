//! The appliance's operational status as set by the backend (`status.json`,
//! PROTOCOL.md §6), and reading a `proxy.status_changed` event into it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ConfigError, Problem};
use crate::value::describe;

/// The backend's view of the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyState {
    /// Normal operation.
    #[default]
    Active,
    /// Dispatch work paused.
    Paused,
    /// Under maintenance.
    Maintenance,
}

impl ProxyState {
    /// The wire name (`active`, `paused`, `maintenance`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Maintenance => "maintenance",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "maintenance" => Some(Self::Maintenance),
            _ => None,
        }
    }
}

impl fmt::Display for ProxyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The content of `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFile {
    /// The state reported in heartbeats.
    pub status: ProxyState,
    /// `false` pauses dispatch work; `true` lets it run.
    pub is_active: bool,
    /// Why the status was set (free text from the backend, may be empty).
    pub reason: String,
    /// When the status was last set (RFC 3339, `""` if never).
    pub updated_at: String,
}

impl Default for StatusFile {
    /// Active and running: a fresh appliance works until told otherwise.
    fn default() -> Self {
        Self {
            status: ProxyState::Active,
            is_active: true,
            reason: String::new(),
            updated_at: String::new(),
        }
    }
}

/// Reads the status members of `obj` (PROTOCOL.md §3): either of `status` and
/// `is_active` may be absent and then follows from the other (`status` `active` ↔
/// `is_active` true; `paused`/`maintenance` → false; `is_active` false alone →
/// `paused`); both absent is a problem. When both are given they are kept as given,
/// even if they look contradictory (`maintenance` with `is_active: true`): the
/// backend said exactly that. `reason` defaults to `""`; `null` counts as absent.
fn read_status(
    obj: &Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<(ProxyState, bool, String)> {
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    // Outer `None`: absent; inner `None`: present but unusable (a problem is recorded).
    let status = get("status").map(|v| {
        let s = v.as_str().and_then(ProxyState::parse);
        if s.is_none() {
            problems.push(Problem::new(
                "status",
                format!("must be active, paused or maintenance, got {}", describe(v)),
            ));
        }
        s
    });
    let is_active = get("is_active").map(|v| match v {
        Value::Bool(b) => Some(*b),
        v => {
            problems.push(Problem::new(
                "is_active",
                format!("must be true or false, got {}", describe(v)),
            ));
            None
        }
    });
    let (status, is_active) = match (status, is_active) {
        (None, None) => {
            problems.push(Problem::new(
                "status",
                "is required when is_active is absent (give status, is_active or both)",
            ));
            (None, None)
        }
        (Some(s), None) => (s, s.map(|s| s == ProxyState::Active)),
        (None, Some(a)) => (
            a.map(|a| {
                if a {
                    ProxyState::Active
                } else {
                    ProxyState::Paused
                }
            }),
            a,
        ),
        (Some(s), Some(a)) => (s, a),
    };
    let reason = match get("reason") {
        None => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            problems.push(Problem::new(
                "reason",
                format!("must be a string, got {}", describe(v)),
            ));
            None
        }
    };
    Some((status?, is_active?, reason?))
}

/// Reads a `proxy.status_changed` payload (`{"status": ..., "is_active": ...,
/// "reason": ...}`) into the new `status.json` content stamped `now_rfc3339`.
///
/// Either of `status` and `is_active` may be absent (see [`read_status`]), not both;
/// `reason` defaults to `""`. Wrong types, unknown statuses and neither field are
/// [`ConfigError::Invalid`] (all of them); a non-object payload is
/// [`ConfigError::BadPayload`].
pub fn parse_status_change(payload: &Value, now_rfc3339: &str) -> Result<StatusFile, ConfigError> {
    let obj = payload.as_object().ok_or_else(|| {
        ConfigError::BadPayload(format!(
            "payload must be an object, got {}",
            describe(payload)
        ))
    })?;
    let mut problems = Vec::new();
    match read_status(obj, &mut problems) {
        Some((status, is_active, reason)) if problems.is_empty() => Ok(StatusFile {
            status,
            is_active,
            reason,
            updated_at: now_rfc3339.to_owned(),
        }),
        _ => Err(ConfigError::Invalid(problems)),
    }
}

/// Parses the content of `status.json`, with the same rules as an event plus an
/// optional string `updated_at` (default `""`). Unknown members are ignored.
pub fn parse_status_file(v: &Value) -> Result<StatusFile, Vec<Problem>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![Problem::new(
            "(top level)",
            format!("must be an object, got {}", describe(v)),
        )]);
    };
    let mut problems = Vec::new();
    let fields = read_status(obj, &mut problems);
    let updated_at = match obj.get("updated_at") {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(Problem::new(
                "updated_at",
                format!("must be a string, got {}", describe(other)),
            ));
            None
        }
    };
    match (fields, updated_at) {
        (Some((status, is_active, reason)), Some(updated_at)) if problems.is_empty() => {
            Ok(StatusFile {
                status,
                is_active,
                reason,
                updated_at,
            })
        }
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: &str = "2025-10-04T10:30:00.000Z";

    #[test]
    fn default_is_active() {
        let d = StatusFile::default();
        assert_eq!(
            (
                d.status,
                d.is_active,
                d.reason.as_str(),
                d.updated_at.as_str()
            ),
            (ProxyState::Active, true, "", "")
        );
    }

    #[test]
    fn full_payload() {
        let s = parse_status_change(
            &json!({"status": "paused", "is_active": false, "reason": "PACS upgrade"}),
            NOW,
        )
        .unwrap();
        assert_eq!(s.status, ProxyState::Paused);
        assert!(!s.is_active);
        assert_eq!(s.reason, "PACS upgrade");
        assert_eq!(s.updated_at, NOW);
    }

    #[test]
    fn is_active_is_derived_when_absent() {
        for (status, expected) in [("active", true), ("paused", false), ("maintenance", false)] {
            let s = parse_status_change(&json!({ "status": status }), NOW).unwrap();
            assert_eq!(s.is_active, expected, "{status}");
            assert_eq!(s.reason, "");
        }
        // Explicit values win, even when they look contradictory.
        let s =
            parse_status_change(&json!({"status": "maintenance", "is_active": true}), NOW).unwrap();
        assert!(s.is_active);
    }

    #[test]
    fn status_is_derived_when_only_is_active_is_given() {
        // The seed's handler sends and reads only `is_active`.
        let s = parse_status_change(&json!({"is_active": false}), NOW).unwrap();
        assert_eq!(
            (s.status, s.is_active, s.reason.as_str()),
            (ProxyState::Paused, false, "")
        );
        let s = parse_status_change(&json!({"is_active": true, "reason": "back"}), NOW).unwrap();
        assert_eq!(
            (s.status, s.is_active, s.reason.as_str()),
            (ProxyState::Active, true, "back")
        );
        let s = parse_status_change(&json!({"status": null, "is_active": false}), NOW).unwrap();
        assert_eq!(s.status, ProxyState::Paused, "null counts as absent");
        // A bad is_active alone says so, and nothing else.
        let err = parse_status_change(&json!({"is_active": "no"}), NOW).unwrap_err();
        let ConfigError::Invalid(p) = err else {
            panic!("{err:?}")
        };
        let fields: Vec<_> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["is_active"]);
        // status.json follows the same rule.
        let f = parse_status_file(&json!({"is_active": false})).unwrap();
        assert_eq!((f.status, f.is_active), (ProxyState::Paused, false));
    }

    #[test]
    fn problems_are_all_reported() {
        let err = parse_status_change(
            &json!({"status": "sleeping", "is_active": "no", "reason": 5}),
            NOW,
        )
        .unwrap_err();
        let ConfigError::Invalid(p) = err else {
            panic!("{err:?}")
        };
        let fields: Vec<_> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["status", "is_active", "reason"]);
        let err = parse_status_change(&json!({"reason": "why"}), NOW).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid(ref p) if p.len() == 1 && p[0].field == "status" && p[0].message.contains("is_active")),
            "{err:?}"
        );
        let err =
            parse_status_change(&json!({"status": null, "is_active": null}), NOW).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(ref p) if p[0].field == "status"));
        let err = parse_status_change(&json!("paused"), NOW).unwrap_err();
        assert!(matches!(err, ConfigError::BadPayload(_)));
    }

    #[test]
    fn file_round_trip() {
        let s = StatusFile {
            status: ProxyState::Maintenance,
            is_active: false,
            reason: "r".into(),
            updated_at: NOW.into(),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            json!({"status": "maintenance", "is_active": false, "reason": "r", "updated_at": NOW})
        );
        assert_eq!(parse_status_file(&v).unwrap(), s);
        assert_eq!(
            parse_status_file(&json!({"status": "paused"}))
                .unwrap()
                .updated_at,
            ""
        );
        assert!(parse_status_file(&json!({"status": "active", "updated_at": 1})).is_err());
        assert!(parse_status_file(&json!([])).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(
            status in prop_oneof![Just(json!("active")), Just(json!("paused")), Just(json!(null)),
                                  any::<i32>().prop_map(Value::from), ".{0,8}".prop_map(Value::String)],
            is_active in prop_oneof![Just(json!(null)), any::<bool>().prop_map(Value::Bool),
                                     any::<i32>().prop_map(Value::from)],
            reason in prop_oneof![Just(json!(null)), ".{0,8}".prop_map(Value::String),
                                  any::<bool>().prop_map(Value::Bool)],
        ) {
            let v = json!({"status": status, "is_active": is_active, "reason": reason});
            let _ = parse_status_change(&v, NOW);
            let _ = parse_status_file(&v);
        }
    }
}
