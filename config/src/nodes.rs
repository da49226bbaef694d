//! The DICOM nodes this appliance sends to (`nodes.json`, PROTOCOL.md §6): the node
//! definition, its validation rules, and applying a `proxy.nodes_changed` event.
//!
//! Node definitions arrive from the backend and from a hand-edited file, so they are
//! parsed from raw JSON field by field: a wrong type is a [`Problem`], never a panic,
//! and every problem of every node is reported at once.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ae_title::check_ae_title;
use crate::error::{ConfigError, Problem};
use crate::value::{describe, integer};

/// Associations opened to one node in parallel when `max_associations` is not set:
/// enough to hide round-trip latency, few enough that a small PACS is not swamped.
pub const DEFAULT_MAX_ASSOCIATIONS: u32 = 4;
/// Upper bound for `max_associations`: beyond this a PACS gains nothing and
/// per-association memory adds up.
pub const MAX_MAX_ASSOCIATIONS: u32 = 64;

/// The fields this crate interprets; everything else on a node is kept in `extra`.
const KNOWN_FIELDS: [&str; 9] = [
    "node_id",
    "name",
    "ae_title",
    "host",
    "port",
    "storage_path",
    "is_active",
    "max_associations",
    "calling_ae_title",
];

fn default_true() -> bool {
    true
}

/// One DICOM destination (a PACS or another storage SCP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The backend's id for the node; dispatches name nodes by it. Unique, non-empty.
    pub node_id: String,
    /// Human-readable name (default `""`).
    #[serde(default)]
    pub name: String,
    /// The node's (called) AE title.
    pub ae_title: String,
    /// Host name or IP address of the node.
    pub host: String,
    /// DICOM port of the node, 1–65535.
    pub port: u16,
    /// Storage path on the node's side: kept and shown, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_path: Option<String>,
    /// Inactive nodes are kept but receive nothing (default `true`).
    #[serde(default = "default_true")]
    pub is_active: bool,
    /// Parallel associations to this node, 1–64; see [`Node::max_associations()`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_associations: Option<u32>,
    /// Calling AE title used towards this node; see [`Node::calling_ae()`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_ae_title: Option<String>,
    /// Fields this version does not know, kept so that writing the file back loses nothing.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The site's own settings for this node (`node-settings.json`), attached by
    /// the config actor; never part of `nodes.json`.
    #[serde(skip)]
    pub site: Option<std::sync::Arc<crate::node_settings::NodeSettings>>,
}

impl Node {
    /// The number of parallel associations to use: the site's (`node-settings.json`),
    /// else the backend's, else [`DEFAULT_MAX_ASSOCIATIONS`].
    pub fn max_associations(&self) -> u32 {
        self.site
            .as_ref()
            .and_then(|s| s.max_associations)
            .or(self.max_associations)
            .unwrap_or(DEFAULT_MAX_ASSOCIATIONS)
    }

    /// The calling AE title to present to this node: its `calling_ae_title`, or the
    /// appliance's own AE title.
    pub fn calling_ae<'a>(&'a self, appliance_ae: &'a str) -> &'a str {
        self.calling_ae_title.as_deref().unwrap_or(appliance_ae)
    }
}

/// The content of `nodes.json`: `{"nodes": [...]}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodesFile {
    /// Every configured node, active or not, in file order.
    pub nodes: Vec<Node>,
}

impl NodesFile {
    /// The node with this id, if configured.
    pub fn get(&self, node_id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.node_id == node_id)
    }
}

/// The `action` of a `proxy.nodes_changed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeAction {
    /// New nodes; their ids must not exist yet.
    Added,
    /// Nodes to drop; their ids must exist. Items need only `node_id`.
    Removed,
    /// New definitions replacing existing nodes of the same id entirely.
    Updated,
    /// The whole list is replaced.
    Replaced,
}

impl NodeAction {
    /// The wire name (`added`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Updated => "updated",
            Self::Replaced => "replaced",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "added" => Some(Self::Added),
            "removed" => Some(Self::Removed),
            "updated" => Some(Self::Updated),
            "replaced" => Some(Self::Replaced),
            _ => None,
        }
    }
}

impl fmt::Display for NodeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a change did, by node id: lets the caller cancel work for removed nodes and
/// reconnect senders of updated ones.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NodesDiff {
    /// Ids present now and not before (in new-list order).
    pub added: Vec<String>,
    /// Ids present before and not now (in old-list order).
    pub removed: Vec<String>,
    /// Ids present in both whose definition changed (in new-list order).
    pub updated: Vec<String>,
}

impl NodesDiff {
    /// The difference between two node lists; an unchanged node appears nowhere.
    pub fn between(old: &[Node], new: &[Node]) -> Self {
        let mut diff = Self::default();
        for n in new {
            match old.iter().find(|o| o.node_id == n.node_id) {
                None => diff.added.push(n.node_id.clone()),
                Some(o) if o != n => diff.updated.push(n.node_id.clone()),
                Some(_) => {}
            }
        }
        for o in old {
            if !new.iter().any(|n| n.node_id == o.node_id) {
                diff.removed.push(o.node_id.clone());
            }
        }
        diff
    }

    /// True when the change altered nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty()
    }
}

/// `nodes[i]` / `nodes[i].field`: where a problem is, in payload or file terms.
fn at(index: usize, field: &str) -> String {
    format!("nodes[{index}].{field}")
}

// ---- rules on typed values (shared by parsing and `validate_nodes`) ----

fn check_node_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), String> {
    if host.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    // A stray space or newline (easy to paste into a hand-edited file) would only
    // surface later as an unresolvable name; say so now.
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    Ok(())
}

fn port_message(got: &str) -> String {
    format!("must be 1-65535, got {got}")
}

fn max_associations_message(got: &str) -> String {
    format!("must be 1-{MAX_MAX_ASSOCIATIONS}, got {got}")
}

/// The per-node rules on an already typed node, each failure pushed as a problem.
fn check_node(node: &Node, index: usize, problems: &mut Vec<Problem>) {
    let mut rule = |field: &str, result: Result<(), String>| {
        if let Err(m) = result {
            problems.push(Problem::new(at(index, field), m));
        }
    };
    rule("node_id", check_node_id(&node.node_id));
    rule("ae_title", check_ae_title(&node.ae_title));
    rule("host", check_host(&node.host));
    if node.port == 0 {
        rule("port", Err(port_message("0")));
    }
    if let Some(m) = node.max_associations {
        if !(1..=MAX_MAX_ASSOCIATIONS).contains(&m) {
            rule(
                "max_associations",
                Err(max_associations_message(&m.to_string())),
            );
        }
    }
    if let Some(t) = &node.calling_ae_title {
        rule("calling_ae_title", check_ae_title(t));
    }
}

/// Problems of ids that occur more than once (one problem per later occurrence).
fn check_unique<'a>(ids: impl Iterator<Item = (usize, &'a str)>, problems: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (index, id) in ids {
        if !seen.insert(id) {
            problems.push(Problem::new(
                at(index, "node_id"),
                format!("duplicate node_id {id:?}"),
            ));
        }
    }
}

/// Validates typed nodes against every rule of PROTOCOL.md §6, including that
/// `node_id`s are unique across the list. Returns every problem (empty = valid).
pub fn validate_nodes(nodes: &[Node]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        check_node(n, i, &mut problems);
    }
    check_unique(
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.node_id.as_str())),
        &mut problems,
    );
    problems
}

// ---- parsing raw JSON ----

/// Collects problems while reading the fields of one JSON object.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    index: usize,
    problems: Vec<Problem>,
}

impl<'a> Fields<'a> {
    /// The member, with `null` counted as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems
            .push(Problem::new(at(self.index, key), message));
    }

    fn required(&mut self, key: &str) -> Option<&'a Value> {
        let v = self.get(key);
        if v.is_none() {
            self.problem(key, "is required");
        }
        v
    }

    fn string_of(&mut self, key: &str, v: &'a Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(key, format!("must be a string, got {}", describe(other)));
                None
            }
        }
    }

    /// A required string that must pass `rule`.
    fn required_string(
        &mut self,
        key: &str,
        rule: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let v = self.required(key)?;
        let s = self.string_of(key, v)?;
        self.apply(key, s, rule)
    }

    /// An optional string that, when present, must pass `rule`.
    fn optional_string(
        &mut self,
        key: &str,
        rule: fn(&str) -> Result<(), String>,
    ) -> Result<Option<String>, ()> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let s = self.string_of(key, v).ok_or(())?;
                self.apply(key, s, rule).map(Some).ok_or(())
            }
        }
    }

    fn apply(
        &mut self,
        key: &str,
        s: String,
        rule: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        match rule(&s) {
            Ok(()) => Some(s),
            Err(m) => {
                self.problem(key, m);
                None
            }
        }
    }

    /// An integer in `range`; `message` renders the range problem for a given value.
    fn integer_in(
        &mut self,
        key: &str,
        v: &Value,
        range: std::ops::RangeInclusive<i128>,
        message: fn(&str) -> String,
    ) -> Option<i128> {
        match integer(v) {
            Some(n) if range.contains(&n) => Some(n),
            Some(n) => {
                self.problem(key, message(&n.to_string()));
                None
            }
            None => {
                let m = message(&describe(v));
                self.problem(key, format!("must be an integer, {m}"));
                None
            }
        }
    }
}

fn no_rule(_: &str) -> Result<(), String> {
    Ok(())
}

fn ae_rule(s: &str) -> Result<(), String> {
    check_ae_title(s)
}

/// Parses and validates one node definition (`index` is its position, used in the
/// problems' field names). Unknown fields are kept in [`Node::extra`]; `null` counts
/// as absent. Reports every problem of the node; uniqueness across a list is
/// checked by [`validate_nodes`] / [`apply_nodes_change`].
pub fn parse_node(v: &Value, index: usize) -> Result<Node, Vec<Problem>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![Problem::new(
            format!("nodes[{index}]"),
            format!("must be an object, got {}", describe(v)),
        )]);
    };
    let mut f = Fields {
        obj,
        index,
        problems: Vec::new(),
    };

    let node_id = f.required_string("node_id", check_node_id);
    let name = f.optional_string("name", no_rule);
    let ae_title = f.required_string("ae_title", ae_rule);
    let host = f.required_string("host", check_host);
    let port = f
        .required("port")
        .and_then(|v| f.integer_in("port", v, 1..=65_535, port_message));
    let storage_path = f.optional_string("storage_path", no_rule);
    let is_active = match f.get("is_active") {
        None => Some(true),
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            f.problem(
                "is_active",
                format!("must be true or false, got {}", describe(other)),
            );
            None
        }
    };
    let max_associations = match f.get("max_associations") {
        None => Ok(None),
        Some(v) => f
            .integer_in(
                "max_associations",
                v,
                1..=i128::from(MAX_MAX_ASSOCIATIONS),
                max_associations_message,
            )
            .map(Some)
            .ok_or(()),
    };
    let calling_ae_title = f.optional_string("calling_ae_title", ae_rule);

    let extra: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !KNOWN_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    match (
        node_id,
        name,
        ae_title,
        host,
        port,
        storage_path,
        is_active,
        max_associations,
        calling_ae_title,
    ) {
        (
            Some(node_id),
            Ok(name),
            Some(ae_title),
            Some(host),
            Some(port),
            Ok(storage_path),
            Some(is_active),
            Ok(max_associations),
            Ok(calling_ae_title),
        ) if f.problems.is_empty() => Ok(Node {
            node_id,
            name: name.unwrap_or_default(),
            ae_title,
            host,
            // Both conversions are within range: checked by `integer_in` above.
            port: u16::try_from(port).unwrap_or(u16::MAX),
            storage_path,
            is_active,
            max_associations: max_associations.map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            calling_ae_title,
            extra,
            site: None,
        }),
        _ => Err(f.problems),
    }
}

/// Parses a list of node definitions, reporting every problem of every node,
/// including duplicate ids within the list.
fn parse_node_list(items: &[Value]) -> Result<Vec<Node>, Vec<Problem>> {
    let mut nodes = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match parse_node(v, i) {
            Ok(n) => nodes.push(n),
            Err(p) => problems.extend(p),
        }
    }
    // Duplicates are checked on the raw ids so that they are reported even when the
    // nodes carrying them have other problems.
    check_unique(
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i, v.get("node_id")?.as_str()?))),
        &mut problems,
    );
    if problems.is_empty() {
        Ok(nodes)
    } else {
        Err(problems)
    }
}

/// Parses the content of `nodes.json`: an object with a `nodes` array of valid,
/// uniquely identified nodes. Other top-level members are ignored.
pub fn parse_nodes_file(v: &Value) -> Result<NodesFile, Vec<Problem>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![Problem::new(
            "(top level)",
            format!(
                "must be an object {{\"nodes\": [...]}}, got {}",
                describe(v)
            ),
        )]);
    };
    match obj.get("nodes") {
        Some(Value::Array(items)) => parse_node_list(items).map(|nodes| NodesFile { nodes }),
        Some(other) => Err(vec![Problem::new(
            "nodes",
            format!("must be an array, got {}", describe(other)),
        )]),
        None => Err(vec![Problem::new("nodes", "is required")]),
    }
}

/// The ids of a `removed` change: each item an object with a non-empty string
/// `node_id` (other members ignored), no id twice.
fn parse_removed_ids(items: &[Value]) -> Result<Vec<String>, Vec<Problem>> {
    let mut ids = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let id = match v.as_object().map(|o| o.get("node_id")) {
            None => Err((
                format!("nodes[{i}]"),
                format!("must be an object with a node_id, got {}", describe(v)),
            )),
            Some(None | Some(Value::Null)) => Err((at(i, "node_id"), "is required".to_owned())),
            Some(Some(Value::String(s))) => check_node_id(s)
                .map(|()| s.clone())
                .map_err(|m| (at(i, "node_id"), m)),
            Some(Some(other)) => Err((
                at(i, "node_id"),
                format!("must be a string, got {}", describe(other)),
            )),
        };
        match id {
            Ok(id) => ids.push(id),
            Err((field, message)) => problems.push(Problem::new(field, message)),
        }
    }
    check_unique(
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i, v.get("node_id")?.as_str()?))),
        &mut problems,
    );
    if problems.is_empty() {
        Ok(ids)
    } else {
        Err(problems)
    }
}

/// Applies a `proxy.nodes_changed` payload (`{"action": ..., "nodes": [...]}`) to
/// `current`, returning the new list and what changed. Nothing is written.
///
/// The change is all or nothing (PROTOCOL.md §6):
/// - a payload without a known `action` string or a `nodes` array → [`ConfigError::BadPayload`];
/// - any invalid node, or an id twice in the payload → [`ConfigError::Invalid`] listing
///   every problem (fields are named after the payload, `nodes[i].field`);
/// - `added` with an id already configured → [`ConfigError::DuplicateNode`];
/// - `updated` / `removed` with an id not configured → [`ConfigError::UnknownNode`]
///   (the first such id in payload order).
///
/// `added` appends, `updated` replaces each named node entirely (keeping its
/// position), `removed` drops, `replaced` swaps the whole list. The diff compares
/// the old and new lists, so an `updated` node whose definition did not change is
/// not reported as updated.
pub fn apply_nodes_change(
    current: &NodesFile,
    payload: &Value,
) -> Result<(NodesFile, NodesDiff), ConfigError> {
    let obj = payload.as_object().ok_or_else(|| {
        ConfigError::BadPayload(format!(
            "payload must be an object, got {}",
            describe(payload)
        ))
    })?;
    let action = match obj.get("action") {
        Some(Value::String(s)) => NodeAction::parse(s).ok_or_else(|| {
            ConfigError::BadPayload(format!(
                "\"action\" must be added, removed, updated or replaced, got {}",
                describe(&Value::String(s.clone()))
            ))
        })?,
        Some(other) => {
            return Err(ConfigError::BadPayload(format!(
                "\"action\" must be a string, got {}",
                describe(other)
            )))
        }
        None => return Err(ConfigError::BadPayload("\"action\" is required".to_owned())),
    };
    let items = match obj.get("nodes") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ConfigError::BadPayload(format!(
                "\"nodes\" must be an array, got {}",
                describe(other)
            )))
        }
        None => return Err(ConfigError::BadPayload("\"nodes\" is required".to_owned())),
    };

    let old = &current.nodes;
    let exists = |id: &str| old.iter().any(|n| n.node_id == id);
    let new: Vec<Node> = match action {
        NodeAction::Removed => {
            let ids = parse_removed_ids(items).map_err(ConfigError::Invalid)?;
            if let Some(unknown) = ids.iter().find(|id| !exists(id)) {
                return Err(ConfigError::UnknownNode(unknown.clone()));
            }
            old.iter()
                .filter(|n| !ids.contains(&n.node_id))
                .cloned()
                .collect()
        }
        NodeAction::Added => {
            let nodes = parse_node_list(items).map_err(ConfigError::Invalid)?;
            if let Some(dup) = nodes.iter().find(|n| exists(&n.node_id)) {
                return Err(ConfigError::DuplicateNode(dup.node_id.clone()));
            }
            old.iter().cloned().chain(nodes).collect()
        }
        NodeAction::Updated => {
            let nodes = parse_node_list(items).map_err(ConfigError::Invalid)?;
            if let Some(unknown) = nodes.iter().find(|n| !exists(&n.node_id)) {
                return Err(ConfigError::UnknownNode(unknown.node_id.clone()));
            }
            old.iter()
                .map(|o| {
                    nodes
                        .iter()
                        .find(|n| n.node_id == o.node_id)
                        .unwrap_or(o)
                        .clone()
                })
                .collect()
        }
        NodeAction::Replaced => parse_node_list(items).map_err(ConfigError::Invalid)?,
    };

    // The current list may have been built by hand (not through this module); never
    // hand back a list that would be refused on the next start.
    let problems = validate_nodes(&new);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let diff = NodesDiff::between(old, &new);
    Ok((NodesFile { nodes: new }, diff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn node_json(id: &str) -> Value {
        json!({"node_id": id, "name": "Main PACS", "ae_title": "MAIN_PACS",
               "host": "10.0.1.100", "port": 11112, "storage_path": "/data/dicom/main",
               "is_active": true})
    }

    fn node(id: &str) -> Node {
        parse_node(&node_json(id), 0).unwrap()
    }

    fn file(ids: &[&str]) -> NodesFile {
        NodesFile {
            nodes: ids.iter().map(|id| node(id)).collect(),
        }
    }

    fn fields(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    fn ids(f: &NodesFile) -> Vec<&str> {
        f.nodes.iter().map(|n| n.node_id.as_str()).collect()
    }

    #[test]
    fn parses_the_spec_example() {
        let n = node("node_1");
        assert_eq!(n.node_id, "node_1");
        assert_eq!(n.name, "Main PACS");
        assert_eq!(n.port, 11112);
        assert_eq!(n.storage_path.as_deref(), Some("/data/dicom/main"));
        assert!(n.is_active);
        assert_eq!(n.max_associations(), DEFAULT_MAX_ASSOCIATIONS);
        assert_eq!(n.calling_ae("LAMINATE_PROXY"), "LAMINATE_PROXY");
        assert!(n.extra.is_empty());
    }

    #[test]
    fn defaults_and_optional_fields() {
        let n = parse_node(
            &json!({"node_id": "n", "ae_title": "A", "host": "h", "port": 104,
                    "max_associations": 8, "calling_ae_title": "ME", "name": null}),
            0,
        )
        .unwrap();
        assert_eq!(n.name, "");
        assert!(n.is_active);
        assert_eq!(n.storage_path, None);
        assert_eq!(n.max_associations(), 8);
        assert_eq!(n.calling_ae("LAMINATE_PROXY"), "ME");
    }

    #[test]
    fn unknown_fields_are_kept_through_a_round_trip() {
        let mut v = node_json("n");
        v["vendor"] = json!({"x": 1});
        let n = parse_node(&v, 0).unwrap();
        assert_eq!(n.extra.get("vendor"), Some(&json!({"x": 1})));
        let back = serde_json::to_value(&n).unwrap();
        assert_eq!(back, v);
        let again: Node = serde_json::from_value(back).unwrap();
        assert_eq!(again, n);
    }

    #[test]
    fn serde_defaults_match_the_parser() {
        let n: Node = serde_json::from_value(
            json!({"node_id": "n", "ae_title": "A", "host": "h", "port": 104}),
        )
        .unwrap();
        assert!(n.is_active);
        assert_eq!(n.name, "");
        let v = serde_json::to_value(&n).unwrap();
        assert!(v.get("max_associations").is_none());
        assert!(v.get("storage_path").is_none());
        assert!(v.get("calling_ae_title").is_none());
    }

    #[test]
    fn port_rules() {
        let with_port = |p: Value| {
            let mut v = node_json("n");
            v["port"] = p;
            parse_node(&v, 1)
        };
        let err = with_port(json!(0)).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].to_string(), "nodes[1].port: must be 1-65535, got 0");
        assert!(with_port(json!(65536)).is_err());
        assert!(with_port(json!(-1)).is_err());
        assert!(with_port(json!(104.5)).is_err());
        let err = with_port(json!("11112")).unwrap_err();
        assert_eq!(err[0].field, "nodes[1].port");
        assert!(err[0].message.contains("integer"), "{}", err[0]);
        assert_eq!(with_port(json!(65535)).unwrap().port, 65535);
        assert_eq!(with_port(json!(1)).unwrap().port, 1);
        assert_eq!(with_port(json!(104.0)).unwrap().port, 104);
        let mut v = node_json("n");
        v.as_object_mut().unwrap().remove("port");
        assert_eq!(fields(&parse_node(&v, 0).unwrap_err()), ["nodes[0].port"]);
    }

    #[test]
    fn ae_title_rules() {
        for bad in ["", "    ", "A\\B", "0123456789ABCDEFG", "TAB\t"] {
            let mut v = node_json("n");
            v["ae_title"] = json!(bad);
            let err = parse_node(&v, 0).unwrap_err();
            assert_eq!(fields(&err), ["nodes[0].ae_title"], "{bad:?}");
        }
        for bad in ["", "   ", "X\\"] {
            let mut v = node_json("n");
            v["calling_ae_title"] = json!(bad);
            let err = parse_node(&v, 0).unwrap_err();
            assert_eq!(fields(&err), ["nodes[0].calling_ae_title"], "{bad:?}");
        }
        let mut v = node_json("n");
        v["ae_title"] = json!("0123456789ABCDEF");
        assert!(parse_node(&v, 0).is_ok());
    }

    #[test]
    fn host_node_id_and_max_associations_rules() {
        for (field, bad) in [
            ("node_id", json!("")),
            ("node_id", json!(7)),
            ("host", json!("")),
            ("host", json!("  ")),
            ("host", json!("10.0.0.1 ")),
            ("max_associations", json!(0)),
            ("max_associations", json!(65)),
            ("max_associations", json!("4")),
            ("is_active", json!("yes")),
            ("name", json!(1)),
            ("storage_path", json!([])),
        ] {
            let mut v = node_json("n");
            v[field] = bad.clone();
            let err = parse_node(&v, 3).unwrap_err();
            assert_eq!(
                fields(&err),
                [format!("nodes[3].{field}")],
                "{field} = {bad}"
            );
        }
    }

    #[test]
    fn reports_every_problem_of_a_node() {
        let err = parse_node(
            &json!({"node_id": "", "ae_title": "", "host": "", "port": 0,
                    "max_associations": 0, "is_active": 1}),
            2,
        )
        .unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "nodes[2].node_id",
                "nodes[2].ae_title",
                "nodes[2].host",
                "nodes[2].port",
                "nodes[2].is_active",
                "nodes[2].max_associations",
            ]
        );
        let err = parse_node(&json!({}), 0).unwrap_err();
        assert_eq!(err.len(), 4, "{err:?}");
        let err = parse_node(&json!("node_1"), 5).unwrap_err();
        assert_eq!(fields(&err), ["nodes[5]"]);
    }

    #[test]
    fn validate_nodes_checks_uniqueness_and_rules() {
        assert!(validate_nodes(&file(&["a", "b"]).nodes).is_empty());
        let mut nodes = file(&["a", "b", "a"]).nodes;
        let p = validate_nodes(&nodes);
        assert_eq!(fields(&p), ["nodes[2].node_id"]);
        assert!(p[0].message.contains("duplicate"));
        nodes[1].port = 0;
        nodes[1].ae_title = String::new();
        nodes[1].max_associations = Some(100);
        nodes[1].calling_ae_title = Some("   ".into());
        let p = validate_nodes(&nodes);
        assert_eq!(
            fields(&p),
            [
                "nodes[1].ae_title",
                "nodes[1].port",
                "nodes[1].max_associations",
                "nodes[1].calling_ae_title",
                "nodes[2].node_id",
            ]
        );
    }

    #[test]
    fn nodes_file_parsing() {
        let f = parse_nodes_file(&json!({"nodes": [node_json("a")]})).unwrap();
        assert_eq!(ids(&f), ["a"]);
        assert_eq!(f.get("a").map(|n| n.port), Some(11112));
        assert!(parse_nodes_file(&json!({"nodes": []}))
            .unwrap()
            .nodes
            .is_empty());
        assert!(parse_nodes_file(&json!([])).is_err());
        assert!(parse_nodes_file(&json!({})).is_err());
        assert!(parse_nodes_file(&json!({"nodes": {}})).is_err());
        let err =
            parse_nodes_file(&json!({"nodes": [node_json("a"), node_json("a")]})).unwrap_err();
        assert_eq!(fields(&err), ["nodes[1].node_id"]);
    }

    #[test]
    fn added() {
        let (f, d) = apply_nodes_change(
            &file(&["a"]),
            &json!({"action": "added", "nodes": [node_json("b"), node_json("c")]}),
        )
        .unwrap();
        assert_eq!(ids(&f), ["a", "b", "c"]);
        assert_eq!(d.added, ["b", "c"]);
        assert!(d.removed.is_empty() && d.updated.is_empty());
    }

    #[test]
    fn added_existing_id_is_a_duplicate() {
        let err = apply_nodes_change(
            &file(&["a"]),
            &json!({"action": "added", "nodes": [node_json("b"), node_json("a")]}),
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::DuplicateNode(ref id) if id == "a"),
            "{err:?}"
        );
    }

    #[test]
    fn same_id_twice_in_a_payload_is_invalid() {
        for action in ["added", "updated", "replaced"] {
            let err = apply_nodes_change(
                &file(&["a"]),
                &json!({"action": action, "nodes": [node_json("a"), node_json("a")]}),
            )
            .unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{action}: {err:?}");
        }
        let err = apply_nodes_change(
            &file(&["a"]),
            &json!({"action": "removed", "nodes": [{"node_id": "a"}, {"node_id": "a"}]}),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn removed_needs_only_node_id() {
        let (f, d) = apply_nodes_change(
            &file(&["a", "b", "c"]),
            &json!({"action": "removed", "nodes": [{"node_id": "b"}]}),
        )
        .unwrap();
        assert_eq!(ids(&f), ["a", "c"]);
        assert_eq!(d.removed, ["b"]);
        assert!(d.added.is_empty() && d.updated.is_empty());
    }

    #[test]
    fn removed_unknown_and_malformed() {
        let err = apply_nodes_change(
            &file(&["a"]),
            &json!({"action": "removed", "nodes": [{"node_id": "zz"}]}),
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::UnknownNode(ref id) if id == "zz"),
            "{err:?}"
        );
        let err = apply_nodes_change(
            &file(&["a"]),
            &json!({"action": "removed", "nodes": ["a", {"node_id": 1}, {}]}),
        )
        .unwrap_err();
        let ConfigError::Invalid(p) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            fields(&p),
            ["nodes[0]", "nodes[1].node_id", "nodes[2].node_id"]
        );
    }

    #[test]
    fn updated_replaces_the_whole_definition_in_place() {
        let mut current = file(&["a", "b"]);
        current.nodes[1].max_associations = Some(9);
        let mut new_b = json!({"node_id": "b", "ae_title": "NEW", "host": "h2", "port": 4242});
        new_b["name"] = json!("B");
        let (f, d) =
            apply_nodes_change(&current, &json!({"action": "updated", "nodes": [new_b]})).unwrap();
        assert_eq!(ids(&f), ["a", "b"]);
        let b = f.get("b").unwrap();
        assert_eq!(
            (b.ae_title.as_str(), b.host.as_str(), b.port),
            ("NEW", "h2", 4242)
        );
        assert_eq!(b.max_associations, None, "old fields are not merged in");
        assert_eq!(b.storage_path, None);
        assert_eq!(d.updated, ["b"]);
        assert!(d.added.is_empty() && d.removed.is_empty());
    }

    #[test]
    fn updated_unknown_id() {
        let err = apply_nodes_change(
            &file(&["a"]),
            &json!({"action": "updated", "nodes": [node_json("a"), node_json("x")]}),
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::UnknownNode(ref id) if id == "x"),
            "{err:?}"
        );
    }

    #[test]
    fn updated_without_change_reports_nothing() {
        let (f, d) = apply_nodes_change(
            &file(&["a"]),
            &json!({"action": "updated", "nodes": [node_json("a")]}),
        )
        .unwrap();
        assert_eq!(ids(&f), ["a"]);
        assert!(d.is_empty());
    }

    #[test]
    fn replaced_swaps_the_list_and_diffs() {
        let mut changed_b = node_json("b");
        changed_b["port"] = json!(2000);
        let (f, d) = apply_nodes_change(
            &file(&["a", "b", "c"]),
            &json!({"action": "replaced", "nodes": [changed_b, node_json("c"), node_json("d")]}),
        )
        .unwrap();
        assert_eq!(ids(&f), ["b", "c", "d"]);
        assert_eq!(
            d,
            NodesDiff {
                added: vec!["d".into()],
                removed: vec!["a".into()],
                updated: vec!["b".into()],
            }
        );
        let (f, d) =
            apply_nodes_change(&file(&["a"]), &json!({"action": "replaced", "nodes": []})).unwrap();
        assert!(f.nodes.is_empty());
        assert_eq!(d.removed, ["a"]);
    }

    #[test]
    fn any_invalid_node_rejects_the_whole_change_with_all_problems() {
        let mut bad1 = node_json("x");
        bad1["port"] = json!("11112");
        let mut bad3 = node_json("z");
        bad3["ae_title"] = json!("");
        bad3["host"] = json!("");
        let current = file(&["a"]);
        let err = apply_nodes_change(
            &current,
            &json!({"action": "replaced", "nodes": [node_json("w"), bad1, node_json("y"), bad3]}),
        )
        .unwrap_err();
        let ConfigError::Invalid(p) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            fields(p),
            ["nodes[1].port", "nodes[3].ae_title", "nodes[3].host"]
        );
        assert!(err.to_string().contains("; "), "{err}");
    }

    #[test]
    fn bad_payloads() {
        let current = file(&["a"]);
        for payload in [
            json!(null),
            json!([]),
            json!({}),
            json!({"action": "added"}),
            json!({"action": "renamed", "nodes": []}),
            json!({"action": 1, "nodes": []}),
            json!({"action": "replaced", "nodes": {"node_id": "a"}}),
            json!({"action": "replaced", "nodes": null}),
            json!({"nodes": []}),
        ] {
            let err = apply_nodes_change(&current, &payload).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadPayload(_)),
                "{payload}: {err:?}"
            );
        }
    }

    #[test]
    fn action_serde_is_lowercase() {
        assert_eq!(
            serde_json::to_value(NodeAction::Replaced).unwrap(),
            json!("replaced")
        );
        let a: NodeAction = serde_json::from_value(json!("removed")).unwrap();
        assert_eq!(a, NodeAction::Removed);
        assert_eq!(NodeAction::Added.to_string(), "added");
    }

    /// Arbitrary JSON, biased towards node-shaped objects so that the interesting
    /// code paths (field checks, not only "must be an object") are reached.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (0u32..70_000).prop_map(Value::from),
            "[ -~]{0,20}".prop_map(Value::String),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 8, |inner| {
            let key = prop_oneof![
                Just("node_id".to_owned()),
                Just("ae_title".to_owned()),
                Just("host".to_owned()),
                Just("port".to_owned()),
                Just("is_active".to_owned()),
                Just("max_associations".to_owned()),
                Just("calling_ae_title".to_owned()),
                Just("name".to_owned()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..9)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_payload() -> impl Strategy<Value = Value> {
        let action = prop_oneof![
            Just(json!("added")),
            Just(json!("removed")),
            Just(json!("updated")),
            Just(json!("replaced")),
            arb_json(),
        ];
        let ids = prop_oneof![Just("a"), Just("b"), Just("c"), Just("")];
        let item = prop_oneof![
            arb_json(),
            (ids.clone(), 0u32..70_000).prop_map(|(id, port)| {
                json!({"node_id": id, "ae_title": "AE", "host": "h", "port": port})
            }),
            ids.prop_map(|id| json!({"node_id": id})),
        ];
        (action, prop::collection::vec(item, 0..5))
            .prop_map(|(action, nodes)| json!({"action": action, "nodes": nodes}))
    }

    proptest! {
        #[test]
        fn parse_node_never_panics(v in arb_json(), i in 0usize..10) {
            if let Ok(n) = parse_node(&v, i) {
                prop_assert!(validate_nodes(std::slice::from_ref(&n)).is_empty());
                // What was accepted survives the file round trip unchanged.
                let back = serde_json::to_value(&n).unwrap();
                prop_assert_eq!(parse_node(&back, i).unwrap(), n);
            }
        }

        #[test]
        fn nodes_file_parsing_never_panics(v in arb_json()) {
            let _ = parse_nodes_file(&v);
            let _ = parse_nodes_file(&json!({"nodes": v}));
        }

        #[test]
        fn apply_never_panics_and_keeps_the_list_valid(payload in arb_payload()) {
            let current = file(&["a", "b"]);
            if let Ok((f, diff)) = apply_nodes_change(&current, &payload) {
                prop_assert!(validate_nodes(&f.nodes).is_empty());
                prop_assert_eq!(diff, NodesDiff::between(&current.nodes, &f.nodes));
            }
        }
    }
}
