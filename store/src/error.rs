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
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(error: TransactionError<StoreError>) -> Self {
        match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => StoreError::Sled(error),
        }
    }
}
