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
mod tests;
