//! The crate's error vocabulary: [`ConfigError`] for every fallible operation, and
//! [`Problem`], one validation finding, so that a rejected change can list everything
//! that is wrong with it at once.

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::Serialize;

/// One thing wrong with a value, located by a JSON-path-like field name.
///
/// Displays as `"<field>: <message>"`, e.g. `nodes[1].port: must be 1-65535, got 0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where the problem is, e.g. `nodes[1].port` or `heartbeat_interval_s`.
    pub field: String,
    /// What is wrong, e.g. `must be 1-65535, got 0`.
    pub message: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins problems with `"; "` (the form used in logs and on the status page).
pub fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong reading, changing or writing the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or writing `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A value could not be serialized to JSON for `path` (cannot happen for this
    /// crate's own types; kept typed rather than unwrapped).
    #[error("{}: cannot serialize: {source}", path.display())]
    Serialize {
        /// The file that was to be written.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A file on disk exists but is not usable. It is left untouched.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file that is wrong.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A change (or a value) failed validation; every problem found is listed.
    #[error("{}", join_problems(.0))]
    Invalid(Vec<Problem>),
    /// An `updated` or `removed` node change names a node that is not configured.
    #[error("unknown node_id {0:?}")]
    UnknownNode(String),
    /// An `added` node change names a node that is already configured.
    #[error("node_id {0:?} already exists")]
    DuplicateNode(String),
    /// An event payload does not have the expected shape (missing or mistyped
    /// top-level member, unknown action).
    #[error("bad payload: {0}")]
    BadPayload(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_display() {
        let p = Problem::new("nodes[1].port", "must be 1-65535, got 0");
        assert_eq!(p.to_string(), "nodes[1].port: must be 1-65535, got 0");
    }

    #[test]
    fn invalid_joins_all_problems() {
        let e = ConfigError::Invalid(vec![Problem::new("a", "x"), Problem::new("b", "y")]);
        assert_eq!(e.to_string(), "a: x; b: y");
    }

    #[test]
    fn corrupt_names_the_path() {
        let e = ConfigError::Corrupt {
            path: PathBuf::from("/d/nodes.json"),
            reason: "not valid JSON".into(),
        };
        assert_eq!(e.to_string(), "/d/nodes.json: not valid JSON");
    }
}
