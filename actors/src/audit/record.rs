//! One line of the audit trail: the fields of a DICOM PS3.15 A.5 / RFC 3881 audit
//! message (event id, action, outcome, active participants, participant objects),
//! spelled as readable JSON rather than the standard's XML.

use serde::{Deserialize, Serialize};

/// A coded term of DICOM's audit vocabularies (DCM context groups 400/401).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub code: String,
    pub name: String,
}

impl Code {
    fn of(code: &str, name: &str) -> Code {
        Code {
            code: code.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Event ids (CID 400) the appliance records.
pub mod event_id {
    use super::Code;
    pub fn instances_transferred() -> Code {
        Code::of("110104", "DICOM Instances Transferred")
    }
    pub fn study_deleted() -> Code {
        Code::of("110105", "DICOM Study Deleted")
    }
    pub fn security_alert() -> Code {
        Code::of("110113", "Security Alert")
    }
    pub fn user_authentication() -> Code {
        Code::of("110114", "User Authentication")
    }
}

/// Event type codes (CID 401) that say which kind of alert or authentication.
pub mod event_type {
    use super::Code;
    pub fn network_configuration() -> Code {
        Code::of("110128", "Network Configuration")
    }
    pub fn software_configuration() -> Code {
        Code::of("110131", "Software Configuration")
    }
    pub fn use_of_restricted_function() -> Code {
        Code::of("110132", "Use of Restricted Function")
    }
    pub fn login() -> Code {
        Code::of("110122", "Login")
    }
}

/// Event outcome indicator (PS3.15 / RFC 3881).
pub mod outcome {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Minor failure: the action was refused or stopped; nothing was harmed.
    pub const MINOR_FAILURE: u8 = 4;
    /// Serious failure: the action failed.
    pub const SERIOUS_FAILURE: u8 = 8;
}

/// Who took part: the appliance, a PACS node, the backend, an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveParticipant {
    /// `application` (this appliance), `source`, `destination`, `backend`, `operator`.
    pub role: String,
    /// An AE title, a node id, `laminate-backend` or `operator`.
    pub user_id: String,
    /// A node's AE titles, as DICOM spells it: `AETITLES=PACS_A`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative_user_id: Option<String>,
    /// Whether this participant asked for the action.
    pub requestor: bool,
    /// Host, host:port or client IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access_point: Option<String>,
    /// Operator actions: `accepted` (a bearer token was given and matched),
    /// `refused` (given or missing where one is needed) or `not needed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl ActiveParticipant {
    pub fn new(role: &str, user_id: &str, requestor: bool) -> Self {
        Self {
            role: role.to_owned(),
            user_id: user_id.to_owned(),
            requestor,
            alternative_user_id: None,
            network_access_point: None,
            token: None,
        }
    }
    pub fn at(mut self, access_point: Option<String>) -> Self {
        self.network_access_point = access_point;
        self
    }
}

/// What the action was about: a patient, a study, a series, a dispatch, a node, a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantObject {
    /// `patient`, `study`, `series`, `dispatch`, `session`, `subject`, `node`, `config`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl ParticipantObject {
    pub fn new(kind: &str, id: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            id: id.into(),
        }
    }
}

/// One audit record, one line of `audit/YYYY-MM-DD.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When it happened (RFC 3339 UTC, milliseconds).
    pub at: String,
    pub event_id: Code,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<Code>,
    /// `C`reate, `R`ead, `U`pdate, `D`elete, `E`xecute.
    pub action: String,
    /// 0 success, 4 minor failure, 8 serious failure.
    pub outcome: u8,
    pub active_participants: Vec<ActiveParticipant>,
    pub participant_objects: Vec<ParticipantObject>,
    /// What else an auditor needs to read the record (event-specific, flat).
    pub detail: serde_json::Map<String, serde_json::Value>,
}
