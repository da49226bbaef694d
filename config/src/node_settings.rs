//! The site's own per-node settings, `node-settings.json` in the data dir:
//! `{"NODE_ID": {"tls": {...}, "storage_commitment": false, "commitment_timeout_s": 300,
//! "max_associations": 4, "prefer_transfer_syntax": "as-is"}}`, every field optional.
//!
//! The backend never writes this file and the appliance never rewrites it: it holds
//! what only the site knows (certificates, how hard its PACS may be pushed). It is
//! validated whole: a wrong field anywhere rejects the file and the settings in force
//! stay. Unknown fields are refused too: a misspelt `"tsl"` would otherwise send in
//! clear what the site meant to protect. The TLS material named by `tls` is read and
//! checked here as well ([`crate::node_tls`]), so a file that is accepted can be used.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{join_problems, ConfigError, Problem};
use crate::node_tls::{load_client_tls, NodeTls};
use crate::nodes::{Node, MAX_MAX_ASSOCIATIONS};
use crate::value::{describe, integer};

/// The site's node settings file in the data dir.
pub const NODE_SETTINGS_FILE: &str = "node-settings.json";

/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// Default of `commitment_timeout_s`: how long a node may take to commit a delivery.
pub const DEFAULT_COMMITMENT_TIMEOUT_S: u64 = 300;
/// Upper bound of `commitment_timeout_s` (a day).
pub const MAX_COMMITMENT_TIMEOUT_S: u64 = 86_400;

const KNOWN_FIELDS: [&str; 5] = [
    "tls",
    "storage_commitment",
    "commitment_timeout_s",
    "max_associations",
    "prefer_transfer_syntax",
];
const TLS_FIELDS: [&str; 4] = ["ca_file", "cert_file", "key_file", "verify_hostname"];

/// What transfer syntax instances go to a node in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PreferredSyntax {
    /// Each instance in its own syntax, converted only when the node refuses it.
    #[default]
    AsIs,
    /// Every instance in this (native) syntax, converted when it is in another.
    Uid(String),
}

impl PreferredSyntax {
    /// The UID to convert every instance to, if one is set.
    pub fn uid(&self) -> Option<&str> {
        match self {
            Self::AsIs => None,
            Self::Uid(u) => Some(u),
        }
    }

    /// As written in the file: `as-is` or the UID.
    pub fn as_str(&self) -> &str {
        self.uid().unwrap_or("as-is")
    }
}

/// One node's site-local settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    /// DICOM TLS towards the node; `None` is plain TCP.
    pub tls: Option<NodeTls>,
    /// Completed only once the node commits every instance (storage commitment).
    pub storage_commitment: bool,
    /// How long a storage commitment may take, in seconds.
    pub commitment_timeout_s: u64,
    /// Overrides the backend's `max_associations` for this node.
    pub max_associations: Option<u32>,
    /// `as-is` or a native transfer syntax UID every instance is sent in.
    pub prefer_transfer_syntax: PreferredSyntax,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            tls: None,
            storage_commitment: false,
            commitment_timeout_s: DEFAULT_COMMITMENT_TIMEOUT_S,
            max_associations: None,
            prefer_transfer_syntax: PreferredSyntax::AsIs,
        }
    }
}

/// The whole file, by node id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSettingsFile {
    /// Settings per `node_id` (ids not in `nodes.json` are kept for when they appear).
    pub nodes: BTreeMap<String, Arc<NodeSettings>>,
}

impl NodeSettingsFile {
    /// The nodes with their site settings attached (`Node::site`).
    pub fn apply(&self, nodes: &[Node]) -> Vec<Node> {
        nodes
            .iter()
            .map(|n| {
                let mut n = n.clone();
                n.site = self.nodes.get(&n.node_id).cloned();
                n
            })
            .collect()
    }
}

/// Parses and validates the file's JSON; relative file names in `tls` are taken
/// from `base` (the data dir) and the TLS material is loaded and checked.
/// Every problem of every node is reported.
pub fn parse_node_settings(v: &Value, base: &Path) -> Result<NodeSettingsFile, Vec<Problem>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![Problem::new(
            "(file)",
            format!("must be an object keyed by node_id, got {}", describe(v)),
        )]);
    };
    let mut problems = Vec::new();
    let mut nodes = BTreeMap::new();
    for (id, entry) in obj {
        if id.trim().is_empty() {
            problems.push(Problem::new("\"\"", "node_id must not be empty"));
            continue;
        }
        match parse_entry(id, entry, base) {
            Ok(s) => {
                nodes.insert(id.clone(), Arc::new(s));
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(NodeSettingsFile { nodes })
    } else {
        Err(problems)
    }
}

fn parse_entry(id: &str, v: &Value, base: &Path) -> Result<NodeSettings, Vec<Problem>> {
    let at = |field: &str| format!("{id}.{field}");
    let Some(obj) = v.as_object() else {
        return Err(vec![Problem::new(
            id,
            format!("must be an object, got {}", describe(v)),
        )]);
    };
    let mut problems = Vec::new();
    for k in obj.keys() {
        if !KNOWN_FIELDS.contains(&k.as_str()) {
            problems.push(Problem::new(
                at(k),
                format!("unknown field (known: {})", KNOWN_FIELDS.join(", ")),
            ));
        }
    }
    let mut s = NodeSettings::default();
    match obj.get("storage_commitment") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => s.storage_commitment = *b,
        Some(other) => problems.push(Problem::new(
            at("storage_commitment"),
            format!("must be true or false, got {}", describe(other)),
        )),
    }
    match obj.get("commitment_timeout_s") {
        None | Some(Value::Null) => {}
        Some(v) => match integer(v) {
            Some(n) if (1..=i128::from(MAX_COMMITMENT_TIMEOUT_S)).contains(&n) => {
                s.commitment_timeout_s = u64::try_from(n).unwrap_or(DEFAULT_COMMITMENT_TIMEOUT_S);
            }
            _ => problems.push(Problem::new(
                at("commitment_timeout_s"),
                format!(
                    "must be 1-{MAX_COMMITMENT_TIMEOUT_S} seconds, got {}",
                    describe(v)
                ),
            )),
        },
    }
    match obj.get("max_associations") {
        None | Some(Value::Null) => {}
        Some(v) => match integer(v) {
            Some(n) if (1..=i128::from(MAX_MAX_ASSOCIATIONS)).contains(&n) => {
                s.max_associations = u32::try_from(n).ok();
            }
            _ => problems.push(Problem::new(
                at("max_associations"),
                format!("must be 1-{MAX_MAX_ASSOCIATIONS}, got {}", describe(v)),
            )),
        },
    }
    match obj.get("prefer_transfer_syntax") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "as-is" => {}
        Some(Value::String(t)) if t == EXPLICIT_VR_LE || t == IMPLICIT_VR_LE => {
            s.prefer_transfer_syntax = PreferredSyntax::Uid(t.clone());
        }
        Some(other) => problems.push(Problem::new(
            at("prefer_transfer_syntax"),
            format!(
                "must be \"as-is\", \"{EXPLICIT_VR_LE}\" (Explicit VR Little Endian) or \"{IMPLICIT_VR_LE}\" (Implicit VR Little Endian): only native syntaxes can be produced, got {}",
                describe(other)
            ),
        )),
    }
    match obj.get("tls") {
        None | Some(Value::Null) => {}
        Some(Value::Object(t)) => match parse_tls(id, t, base) {
            Ok(tls) => s.tls = Some(tls),
            Err(mut p) => problems.append(&mut p),
        },
        Some(other) => problems.push(Problem::new(
            at("tls"),
            format!("must be an object, got {}", describe(other)),
        )),
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems)
    }
}

fn parse_tls(id: &str, t: &Map<String, Value>, base: &Path) -> Result<NodeTls, Vec<Problem>> {
    let at = |field: &str| format!("{id}.tls.{field}");
    let mut problems = Vec::new();
    for k in t.keys() {
        if !TLS_FIELDS.contains(&k.as_str()) {
            problems.push(Problem::new(
                at(k),
                format!("unknown field (known: {})", TLS_FIELDS.join(", ")),
            ));
        }
    }
    let mut path = |field: &str| -> Option<PathBuf> {
        match t.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(base.join(s)),
            Some(other) => {
                problems.push(Problem::new(
                    at(field),
                    format!("must be a file name, got {}", describe(other)),
                ));
                None
            }
        }
    };
    let ca_file = path("ca_file");
    let cert_file = path("cert_file");
    let key_file = path("key_file");
    let verify_hostname = match t.get("verify_hostname") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            problems.push(Problem::new(
                at("verify_hostname"),
                format!("must be true or false, got {}", describe(other)),
            ));
            true
        }
    };
    if ca_file.is_none() && !t.contains_key("ca_file") {
        problems.push(Problem::new(
            at("ca_file"),
            "is required: the PEM file of the CA(s) that signed the node's certificate",
        ));
    }
    if cert_file.is_some() != key_file.is_some() {
        problems.push(Problem::new(
            format!("{id}.tls"),
            "cert_file and key_file go together (the client certificate for mutual TLS and its private key)",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(ca_file) = ca_file else {
        return Err(problems);
    };
    let client = match (&cert_file, &key_file) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    load_client_tls(&ca_file, client, verify_hostname)
        .map(|config| NodeTls {
            ca_file: ca_file.clone(),
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            verify_hostname,
            config,
        })
        .map_err(|e| vec![Problem::new(format!("{id}.tls"), e.to_string())])
}

/// Reads `node-settings.json` from `data_dir`: `Ok(None)` when there is none, else
/// the validated file or [`ConfigError::Corrupt`] naming it and every problem.
/// Never writes anything: the file is the site's.
pub fn load_node_settings(data_dir: &Path) -> Result<Option<NodeSettingsFile>, ConfigError> {
    let path = data_dir.join(NODE_SETTINGS_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConfigError::Io { path, source }),
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| ConfigError::Corrupt {
        path: path.clone(),
        reason: format!("not valid JSON: {e}"),
    })?;
    parse_node_settings(&value, data_dir)
        .map(Some)
        .map_err(|p| ConfigError::Corrupt {
            path,
            reason: join_problems(&p),
        })
}

/// One file's version on disk (modification time and length), `None` when absent.
pub type FileStamp = Option<(std::time::SystemTime, u64)>;

fn file_stamp(path: &Path) -> FileStamp {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What identifies the version in force, to notice a change by polling: the
/// stamps of `node-settings.json` and of every TLS file `settings` (the
/// settings read from it) names, so that certificates renewed in place are
/// picked up without touching the JSON file.
pub fn node_settings_stamp(data_dir: &Path, settings: &NodeSettingsFile) -> Vec<FileStamp> {
    let mut stamps = vec![file_stamp(&data_dir.join(NODE_SETTINGS_FILE))];
    for tls in settings.nodes.values().filter_map(|n| n.tls.as_ref()) {
        for path in std::iter::once(&tls.ca_file)
            .chain(&tls.cert_file)
            .chain(&tls.key_file)
        {
            stamps.push(file_stamp(path));
        }
    }
    stamps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NodeSettingsFile, String> {
        parse_node_settings(&v, Path::new("/nonexistent")).map_err(|p| join_problems(&p))
    }

    #[test]
    fn every_field_is_optional_and_defaults_apply() {
        let f = parse(json!({"pacs": {}})).unwrap();
        assert_eq!(*f.nodes["pacs"], NodeSettings::default());
        assert_eq!(f.nodes["pacs"].commitment_timeout_s, 300);
        assert_eq!(parse(json!({})).unwrap(), NodeSettingsFile::default());
    }

    #[test]
    fn values_are_read() {
        let f = parse(
            json!({"pacs": {"storage_commitment": true, "commitment_timeout_s": 60,
            "max_associations": 2, "prefer_transfer_syntax": IMPLICIT_VR_LE}}),
        )
        .unwrap();
        let s = &f.nodes["pacs"];
        assert!(s.storage_commitment);
        assert_eq!(s.commitment_timeout_s, 60);
        assert_eq!(s.max_associations, Some(2));
        assert_eq!(s.prefer_transfer_syntax.uid(), Some(IMPLICIT_VR_LE));
        let f = parse(json!({"pacs": {"prefer_transfer_syntax": "as-is"}})).unwrap();
        assert_eq!(
            f.nodes["pacs"].prefer_transfer_syntax,
            PreferredSyntax::AsIs
        );
    }

    #[test]
    fn every_problem_is_reported_with_where_it_is() {
        let e = parse(json!({
            "a": {"max_associations": 0, "storage_commitment": "yes"},
            "b": {"prefer_transfer_syntax": "1.2.840.10008.1.2.4.50", "tsl": {}},
            "c": 3
        }))
        .unwrap_err();
        for part in [
            "a.max_associations: must be 1-64, got 0",
            "a.storage_commitment: must be true or false",
            "b.prefer_transfer_syntax: must be \"as-is\"",
            "only native syntaxes",
            "b.tsl: unknown field",
            "c: must be an object, got 3",
        ] {
            assert!(e.contains(part), "{part:?} not in {e}");
        }
        assert!(parse(json!([])).unwrap_err().contains("keyed by node_id"));
        assert!(parse(json!({"a": {"commitment_timeout_s": 0}}))
            .unwrap_err()
            .contains("a.commitment_timeout_s: must be 1-86400"));
    }

    #[test]
    fn tls_needs_a_ca_and_both_halves_of_a_client_identity() {
        let e = parse(json!({"a": {"tls": {"cert_file": "c.pem"}}})).unwrap_err();
        assert!(e.contains("a.tls.ca_file: is required"), "{e}");
        assert!(e.contains("cert_file and key_file go together"), "{e}");
        let e = parse(json!({"a": {"tls": {"ca_file": "ca.pem", "verify_hostname": "no"}}}))
            .unwrap_err();
        assert!(
            e.contains("a.tls.verify_hostname: must be true or false"),
            "{e}"
        );
        let e = parse(json!({"a": {"tls": true}})).unwrap_err();
        assert!(e.contains("a.tls: must be an object"), "{e}");
    }

    #[test]
    fn missing_tls_files_are_named() {
        let e = parse(json!({"a": {"tls": {"ca_file": "ca.pem"}}})).unwrap_err();
        assert!(e.contains("a.tls:"), "{e}");
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn missing_file_is_none_and_a_bad_one_is_corrupt_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(load_node_settings(tmp.path()).unwrap(), None);
        let none = NodeSettingsFile::default();
        assert_eq!(node_settings_stamp(tmp.path(), &none), vec![None]);
        let path = tmp.path().join(NODE_SETTINGS_FILE);
        fs::write(&path, "{\"a\": {\"max_associations\": 99}}").unwrap();
        let e = load_node_settings(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains(NODE_SETTINGS_FILE) && e.contains("a.max_associations"),
            "{e}"
        );
        fs::write(&path, "{oops").unwrap();
        let e = load_node_settings(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{oops");
        fs::write(&path, "{\"a\": {\"max_associations\": 3}}").unwrap();
        let f = load_node_settings(tmp.path()).unwrap().unwrap();
        assert_eq!(f.nodes["a"].max_associations, Some(3));
        assert!(node_settings_stamp(tmp.path(), &f)[0].is_some());
    }

    #[test]
    fn the_stamp_covers_the_tls_files_in_force() {
        let tmp = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ca = tmp.path().join("ca.pem");
        fs::write(&ca, cert.pem()).unwrap();
        fs::write(
            tmp.path().join(NODE_SETTINGS_FILE),
            json!({"a": {"tls": {"ca_file": "ca.pem"}}}).to_string(),
        )
        .unwrap();
        let f = load_node_settings(tmp.path()).unwrap().unwrap();
        let before = node_settings_stamp(tmp.path(), &f);
        assert_eq!(before.len(), 2);
        fs::write(&ca, format!("{}\n", cert.pem())).unwrap();
        assert_ne!(node_settings_stamp(tmp.path(), &f), before);
    }
}
