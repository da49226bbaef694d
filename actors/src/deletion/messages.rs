//! Messages of the deletion actor.

use actix::Message;

use crate::envelope::Incoming;
use crate::health::HandlerFailed;

/// A `session.deleted` or `scan.deleted` event; answered once the catalog
/// transaction has committed (or the event was found invalid).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), HandlerFailed>")]
pub struct DeletionReceived(pub Incoming);

/// Published: a session (study) is gone; unfinished dispatches of it are cancelled.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct StudyDeleted {
    pub session_id: Option<String>,
    pub study_instance_uid: String,
}

/// Published: a scan is gone; unfinished dispatches of that scan are cancelled.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ScanDeleted {
    pub scan_id: Option<String>,
    pub study_instance_uid: String,
    pub scan_number: i32,
}
