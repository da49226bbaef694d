//! Tests of `nodes.json` validation and `proxy.nodes_changed` changes.

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
    let n: Node =
        serde_json::from_value(json!({"node_id": "n", "ae_title": "A", "host": "h", "port": 104}))
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
    let err = parse_nodes_file(&json!({"nodes": [node_json("a"), node_json("a")]})).unwrap_err();
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
