//! What the ingest actor receives: from its association threads, and the
//! shutdown.

use actix::Message;

/// One instance was stored, indexed and acknowledged with C-STORE-RSP 0x0000.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct InstanceIngested {
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    /// Size of the stored file (preamble and file meta included).
    pub bytes: u64,
}

/// The appliance is stopping: stop accepting, let every instance being
/// received finish, close every association; answered once they have all
/// ended.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct IngestShutdownRequested;
