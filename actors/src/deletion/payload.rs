//! The deletion events' payloads, validated.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionTarget {
    Session { study_uid: String },
    Scan { study_uid: String, scan_number: i32 },
}

impl DeletionTarget {
    /// The audit trail's record of this deletion (`event`: its type and correlation id).
    pub fn audit_event(
        &self,
        event: (String, String),
        done: &Result<laminate_store::Deletion, String>,
    ) -> crate::audit::AuditEvent {
        let (study_uid, scan_number) = match self {
            DeletionTarget::Session { study_uid } => (study_uid.clone(), None),
            DeletionTarget::Scan {
                study_uid,
                scan_number,
            } => (study_uid.clone(), Some(*scan_number)),
        };
        let removed = done.as_ref().map(|d| d.removed.as_slice()).unwrap_or(&[]);
        let mut patient_ids: Vec<String> = removed
            .iter()
            .filter_map(|r| r.patient_id.clone())
            .collect();
        patient_ids.sort();
        patient_ids.dedup();
        crate::audit::AuditEvent::Deletion {
            event_type: event.0,
            correlation_id: event.1,
            study_uid,
            scan_number,
            instances: removed.len() as u64,
            bytes: removed.iter().map(|r| r.size).sum(),
            patient_ids,
            error: done.as_ref().err().cloned(),
        }
    }
}

/// `session.deleted`: `{"study_instance_uid": "1.2.3"}`.
pub fn session(payload: &Map<String, Value>) -> Result<DeletionTarget, String> {
    Ok(DeletionTarget::Session {
        study_uid: study_uid(payload)?,
    })
}

/// `scan.deleted`: `{"study_instance_uid": "1.2.3", "scan_number": 4}`, the number an
/// integer or a numeric string.
pub fn scan(payload: &Map<String, Value>) -> Result<DeletionTarget, String> {
    let study_uid = study_uid(payload)?;
    let scan_number = match payload.get("scan_number") {
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| format!("scan_number {n} is not a series number"))?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<i32>()
            .map_err(|_| format!("scan_number \"{s}\" is not a number"))?,
        Some(other) => return Err(format!("scan_number must be an integer, got {other}")),
        None => return Err("scan_number is missing".into()),
    };
    Ok(DeletionTarget::Scan {
        study_uid,
        scan_number,
    })
}

fn study_uid(payload: &Map<String, Value>) -> Result<String, String> {
    match payload.get("study_instance_uid") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err("study_instance_uid is missing".into())
        }
        Some(other) => Err(format!("study_instance_uid must be a string, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn scan_number_may_be_an_integer_or_a_numeric_string() {
        let a = scan(&obj(json!({"study_instance_uid": "1.2", "scan_number": 4})));
        let b = scan(&obj(
            json!({"study_instance_uid": "1.2", "scan_number": " 4 "}),
        ));
        assert_eq!(a, b);
        assert_eq!(
            a,
            Ok(DeletionTarget::Scan {
                study_uid: "1.2".into(),
                scan_number: 4
            })
        );
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        assert!(scan(&obj(
            json!({"study_instance_uid": "1.2", "scan_number": "four"})
        ))
        .is_err());
        assert!(scan(&obj(
            json!({"study_instance_uid": "1.2", "scan_number": 4.5})
        ))
        .is_err());
        assert!(scan(&obj(json!({"study_instance_uid": "1.2"}))).is_err());
        assert!(session(&obj(json!({"study_instance_uid": 12}))).is_err());
        assert!(session(&obj(json!({}))).is_err());
    }
}
