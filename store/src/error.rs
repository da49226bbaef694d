//! [`StoreError`]: what can go wrong in the store, precise enough for a caller (or a test)
//! to match on the variant.

use std::path::PathBuf;

use sled::transaction::TransactionError;

/// An error from the local store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database directory could not be opened (missing permissions, locked by another
    /// process, unreadable files).
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The directory given to [`crate::Store::open`].
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// sled failed while reading, writing or flushing.
    #[error("store i/o failed: {0}")]
    Sled(#[from] sled::Error),
    /// A value (or key) read from disk could not be decoded. Never a panic: the caller
    /// decides whether to skip, repair or report it.
    #[error("corrupt entry in store tree {tree} at key {key}")]
    Corrupt {
        /// The sled tree holding the entry.
        tree: &'static str,
        /// The entry's key, rendered for humans (a sequence number in decimal, an id as
        /// text, other bytes in hex).
        key: String,
    },
    /// A UID that cannot be stored or turned into a file name: not made of digits and
    /// single dots, empty, or longer than [`crate::MAX_UID_LEN`]. UIDs come from the
    /// network, so this is the guard that keeps `..` and `/` out of storage paths.
    #[error("invalid {field} {uid:?}: a UID is digits separated by single dots")]
    InvalidUid {
        /// Which UID (`"StudyInstanceUID"`, `"SeriesInstanceUID"`, `"SOPInstanceUID"`).
        field: &'static str,
        /// The offending value, cut to its first 80 characters.
        uid: String,
    },
    /// An instance record the catalog refuses (see [`crate::Catalog::put_instance`]).
    #[error("instance {sop_instance_uid} refused: {reason}")]
    InvalidRecord {
        /// The record's SOP Instance UID.
        sop_instance_uid: String,
        /// Why, for humans.
        reason: String,
    },
    /// A value could not be encoded for storage (never expected for the store's own plain
    /// types; reported rather than panicking).
    #[error("cannot encode a value for store tree {tree}: {source}")]
    Encode {
        /// The sled tree the value was meant for.
        tree: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// A filesystem operation on the data dir failed (catalog repair, file deletions).
    #[error("file operation on {path} failed: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// A [`StoreError::InvalidUid`], cutting an absurdly long untrusted value for display.
    pub(crate) fn invalid_uid(field: &'static str, uid: &str) -> StoreError {
        StoreError::InvalidUid {
            field,
            uid: uid.chars().take(80).collect(),
        }
    }

    /// A [`StoreError::Io`] for `path`.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(error: TransactionError<StoreError>) -> Self {
        match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => StoreError::Sled(error),
        }
    }
}
