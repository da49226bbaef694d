//! The data dir's three configuration files (`nodes.json`, `proxy.json`,
//! `status.json`): loading them at start-up and saving them after a change.
//!
//! A missing file is created with its default content, so an operator finds every
//! file to read and edit. A file that exists but cannot be used is reported with its
//! path and is never overwritten: it may hold an operator's work.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::atomic::write_json_atomic;
use crate::error::{join_problems, ConfigError, Problem};
use crate::node_settings::{load_node_settings, NodeSettingsFile};
use crate::nodes::{parse_nodes_file, NodesFile};
use crate::proxy::{ProxyFile, ProxySettings};
use crate::status::{parse_status_file, StatusFile};

/// Node definitions (PROTOCOL.md §6).
pub const NODES_FILE: &str = "nodes.json";
/// Runtime settings (PROTOCOL.md §6).
pub const PROXY_FILE: &str = "proxy.json";
/// Operational status set by the backend (PROTOCOL.md §6).
pub const STATUS_FILE: &str = "status.json";

/// Everything read from the data dir at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// `nodes.json`.
    pub nodes: NodesFile,
    /// `proxy.json` as on disk.
    pub proxy: ProxyFile,
    /// The effective settings of `proxy`.
    pub settings: ProxySettings,
    /// `status.json`.
    pub status: StatusFile,
    /// `node-settings.json` (empty when the site has none; never written here).
    pub node_settings: NodeSettingsFile,
}

/// Loads the three files from `data_dir` (created if missing), and the site's
/// `node-settings.json` when there is one (an invalid one refuses the start like
/// the others: the site meant TLS or a cap that would otherwise be ignored).
///
/// Missing files get their defaults, which are then written atomically; this happens
/// only once all three files have been read successfully, so a failed start leaves
/// the directory as it was. An existing file that is not JSON, has the wrong shape
/// or holds an invalid node or setting is [`ConfigError::Corrupt`] (naming the file
/// and every problem) and is left untouched. Unknown `proxy.json` keys are logged.
pub fn load_config(data_dir: &Path) -> Result<LoadedConfig, ConfigError> {
    fs::create_dir_all(data_dir).map_err(|source| ConfigError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;

    let nodes_path = data_dir.join(NODES_FILE);
    let proxy_path = data_dir.join(PROXY_FILE);
    let status_path = data_dir.join(STATUS_FILE);

    let nodes = read_json(&nodes_path)?
        .map(|v| parse_nodes_file(&v).map_err(|p| corrupt_problems(&nodes_path, &p)))
        .transpose()?;
    let proxy = read_json(&proxy_path)?
        .map(|v| ProxyFile::from_value(v).map_err(|p| corrupt_problems(&proxy_path, &[p])))
        .transpose()?;
    let settings = match &proxy {
        Some(file) => file.settings().map_err(|e| match e {
            ConfigError::Invalid(p) => corrupt_problems(&proxy_path, &p),
            other => other,
        })?,
        None => ProxySettings::default(),
    };
    let status = read_json(&status_path)?
        .map(|v| parse_status_file(&v).map_err(|p| corrupt_problems(&status_path, &p)))
        .transpose()?;

    let node_settings = load_node_settings(data_dir)?.unwrap_or_default();

    let nodes = match nodes {
        Some(n) => n,
        None => {
            let n = NodesFile::default();
            save_nodes(data_dir, &n)?;
            tracing::info!(path = %nodes_path.display(), "created default nodes file");
            n
        }
    };
    let proxy = match proxy {
        Some(p) => {
            let unknown = p.unknown_keys();
            if !unknown.is_empty() {
                tracing::warn!(path = %proxy_path.display(), keys = ?unknown, "unknown settings kept");
            }
            p
        }
        None => {
            let p = ProxyFile::from_settings(&settings);
            save_proxy(data_dir, &p)?;
            tracing::info!(path = %proxy_path.display(), "created default proxy settings file");
            p
        }
    };
    let status = match status {
        Some(s) => s,
        None => {
            let s = StatusFile::default();
            save_status(data_dir, &s)?;
            tracing::info!(path = %status_path.display(), "created default status file");
            s
        }
    };

    Ok(LoadedConfig {
        nodes,
        proxy,
        settings,
        status,
        node_settings,
    })
}

/// Writes `nodes.json` in `data_dir` atomically.
pub fn save_nodes(data_dir: &Path, nodes: &NodesFile) -> Result<(), ConfigError> {
    write_json_atomic(&data_dir.join(NODES_FILE), nodes)
}

/// Writes `proxy.json` in `data_dir` atomically.
pub fn save_proxy(data_dir: &Path, proxy: &ProxyFile) -> Result<(), ConfigError> {
    write_json_atomic(&data_dir.join(PROXY_FILE), proxy)
}

/// Writes `status.json` in `data_dir` atomically.
pub fn save_status(data_dir: &Path, status: &StatusFile) -> Result<(), ConfigError> {
    write_json_atomic(&data_dir.join(STATUS_FILE), status)
}

/// The parsed JSON of `path`, or `None` when the file does not exist.
fn read_json(path: &Path) -> Result<Option<Value>, ConfigError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ConfigError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })
}

fn corrupt_problems(path: &Path, problems: &[Problem]) -> ConfigError {
    ConfigError::Corrupt {
        path: PathBuf::from(path),
        reason: join_problems(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::LogLevel;
    use crate::status::ProxyState;
    use serde_json::json;

    fn read(dir: &Path, name: &str) -> Value {
        serde_json::from_str(&fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    }

    #[test]
    fn missing_files_get_defaults_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let c = load_config(&dir).unwrap();
        assert!(c.nodes.nodes.is_empty());
        assert_eq!(c.settings, ProxySettings::default());
        assert_eq!(c.status, StatusFile::default());
        assert_eq!(read(&dir, NODES_FILE), json!({"nodes": []}));
        assert_eq!(read(&dir, PROXY_FILE)["heartbeat_interval_s"], json!(30));
        assert_eq!(read(&dir, PROXY_FILE)["log_level"], json!("info"));
        assert_eq!(read(&dir, STATUS_FILE)["status"], json!("active"));
        // Loading again reads what was written.
        assert_eq!(load_config(&dir).unwrap(), c);
    }

    #[test]
    fn existing_files_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(
            dir.join(NODES_FILE),
            r#"{"nodes": [{"node_id": "node_1", "name": "Main PACS", "ae_title": "MAIN_PACS",
                "host": "10.0.1.100", "port": 11112, "storage_path": "/data/dicom/main", "is_active": true}]}"#,
        )
        .unwrap();
        fs::write(dir.join(PROXY_FILE), r#"{"log_level": "warn", "x": 1}"#).unwrap();
        fs::write(
            dir.join(STATUS_FILE),
            r#"{"status": "paused", "is_active": false, "reason": "", "updated_at": "2025-10-04T10:30:00.000Z"}"#,
        )
        .unwrap();
        let c = load_config(dir).unwrap();
        assert_eq!(c.nodes.nodes[0].node_id, "node_1");
        assert_eq!(c.settings.log_level, LogLevel::Warn);
        assert_eq!(c.proxy.unknown_keys(), ["x"]);
        assert_eq!(c.status.status, ProxyState::Paused);
        // Only defaults are written: the existing proxy.json is not filled in.
        assert_eq!(read(dir, PROXY_FILE), json!({"log_level": "warn", "x": 1}));
    }

    fn assert_corrupt_and_untouched(name: &str, content: &str, reason_contains: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(name), content).unwrap();
        let err = load_config(dir).unwrap_err();
        match &err {
            ConfigError::Corrupt { path, reason } => {
                assert_eq!(path, &dir.join(name));
                assert!(reason.contains(reason_contains), "{name}: {reason}");
            }
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        assert!(err.to_string().contains(name), "{err}");
        assert_eq!(fs::read_to_string(dir.join(name)).unwrap(), content);
        // Nothing else was created either: a failed start leaves the dir as it was.
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_files_are_reported_and_never_overwritten() {
        assert_corrupt_and_untouched(NODES_FILE, "{not json", "not valid JSON");
        assert_corrupt_and_untouched(NODES_FILE, "", "not valid JSON");
        assert_corrupt_and_untouched(NODES_FILE, "[]", "must be an object");
        assert_corrupt_and_untouched(NODES_FILE, r#"{"nodes": 3}"#, "nodes: must be an array");
        assert_corrupt_and_untouched(
            NODES_FILE,
            r#"{"nodes": [{"node_id": "a", "ae_title": "A", "host": "h", "port": 0}]}"#,
            "nodes[0].port: must be 1-65535, got 0",
        );
        assert_corrupt_and_untouched(
            NODES_FILE,
            r#"{"nodes": [{"node_id": "a", "ae_title": "A", "host": "h", "port": 1},
                          {"node_id": "a", "ae_title": "A", "host": "h", "port": 2}]}"#,
            "duplicate",
        );
        assert_corrupt_and_untouched(PROXY_FILE, "[1]", "must be an object");
        assert_corrupt_and_untouched(
            PROXY_FILE,
            r#"{"heartbeat_interval_s": 1, "log_level": "loud"}"#,
            "heartbeat_interval_s: must be 5-3600, got 1; log_level",
        );
        assert_corrupt_and_untouched(STATUS_FILE, r#"{"status": "asleep"}"#, "status");
        assert_corrupt_and_untouched(STATUS_FILE, "null", "must be an object");
    }

    #[test]
    fn save_then_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let nodes = parse_nodes_file(&json!({"nodes": [
            {"node_id": "a", "ae_title": "A", "host": "h", "port": 104, "vendor": {"k": 1}}
        ]}))
        .unwrap();
        save_nodes(dir, &nodes).unwrap();
        let proxy = ProxyFile::from_value(json!({"spool_retention_hours": 48})).unwrap();
        save_proxy(dir, &proxy).unwrap();
        let status = StatusFile {
            status: ProxyState::Maintenance,
            is_active: false,
            reason: "upgrade".into(),
            updated_at: "2025-10-04T10:30:00.000Z".into(),
        };
        save_status(dir, &status).unwrap();
        let c = load_config(dir).unwrap();
        assert_eq!(c.nodes, nodes);
        assert_eq!(c.proxy, proxy);
        assert_eq!(c.settings.spool_retention_hours, 48);
        assert_eq!(c.status, status);
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [NODES_FILE, PROXY_FILE, STATUS_FILE]);
    }

    #[test]
    fn data_dir_that_is_a_file_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("file");
        fs::write(&f, "x").unwrap();
        let err = load_config(&f).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    }
}
