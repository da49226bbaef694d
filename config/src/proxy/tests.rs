//! Tests of `proxy.json`'s settings: defaults, ranges, merging.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn proxy(v: Value) -> ProxyFile {
    ProxyFile::from_value(v).unwrap()
}

fn fields(err: &ConfigError) -> Vec<&str> {
    match err {
        ConfigError::Invalid(p) => p.iter().map(|p| p.field.as_str()).collect(),
        other => panic!("not Invalid: {other:?}"),
    }
}

#[test]
fn defaults() {
    let s = ProxySettings::default();
    assert_eq!(s.heartbeat_interval_s, 30);
    assert_eq!(s.max_concurrent_dispatches, 2);
    assert_eq!(s.node_retry_max_attempts, 10);
    assert_eq!(s.node_retry_max_backoff_s, 300);
    assert_eq!(s.spool_retention_hours, 24);
    assert_eq!(s.log_level, LogLevel::Info);
    assert_eq!(s.dimse_timeout_s, 60);
    assert_eq!(s.park_hours, 72);
    assert_eq!(s.cache_max_gb, None);
    assert_eq!(s.cache_max_bytes(), None);
    assert_eq!(s.min_free_gb, 2.0);
    assert_eq!(s.min_free_bytes(), 2_000_000_000);
    assert_eq!(s.history_days, 90);
    assert_eq!(s.history_ms(), 90 * 86_400_000);
    assert_eq!(s.audit_days, 365);
    assert_eq!(ProxyFile::default().settings().unwrap(), s);
    assert_eq!(ProxyFile::from_settings(&s).settings().unwrap(), s);
    assert!(ProxyFile::from_settings(&s).unknown_keys().is_empty());
}

#[test]
fn reads_values_and_accepts_integral_floats() {
    let f = proxy(json!({"heartbeat_interval_s": 60.0, "log_level": "debug",
                         "spool_retention_hours": 0, "node_retry_max_attempts": null}));
    let s = f.settings().unwrap();
    assert_eq!(s.heartbeat_interval_s, 60);
    assert_eq!(s.log_level, LogLevel::Debug);
    assert_eq!(s.spool_retention_hours, 0);
    assert_eq!(s.node_retry_max_attempts, 10);
}

#[test]
fn range_edges() {
    let ok = |k: &str, v: Value| proxy(json!({ k: v })).settings().is_ok();
    for (k, lo, hi) in [
        (KEY_HEARTBEAT_INTERVAL_S, 5, 3600),
        (KEY_MAX_CONCURRENT_DISPATCHES, 1, 64),
        (KEY_NODE_RETRY_MAX_ATTEMPTS, 0, 1000),
        (KEY_NODE_RETRY_MAX_BACKOFF_S, 1, 86_400),
        (KEY_SPOOL_RETENTION_HOURS, 0, 8760),
        (KEY_DIMSE_TIMEOUT_S, 5, 3600),
        (KEY_PARK_HOURS, 0, 8760),
        (KEY_HISTORY_DAYS, 1, 3650),
        (KEY_AUDIT_DAYS, 1, 3650),
    ] {
        assert!(ok(k, json!(lo)), "{k}={lo}");
        assert!(ok(k, json!(hi)), "{k}={hi}");
        assert!(!ok(k, json!(lo - 1)), "{k}={}", lo - 1);
        assert!(!ok(k, json!(hi + 1)), "{k}={}", hi + 1);
        assert!(!ok(k, json!(format!("{lo}"))), "{k} as string");
        assert!(!ok(k, json!(lo as f64 + 0.5)), "{k} fractional");
        assert!(!ok(k, json!(true)), "{k} bool");
    }
    for (k, lo, hi, below, above) in [
        (KEY_CACHE_MAX_GB, 0.1, 1_000_000.0, 0.09, 1_000_000.5),
        (KEY_MIN_FREE_GB, 0.0, 100_000.0, -0.01, 100_000.1),
    ] {
        assert!(ok(k, json!(lo)), "{k}={lo}");
        assert!(ok(k, json!(hi)), "{k}={hi}");
        assert!(ok(k, json!(2.5)), "{k} fractional is fine");
        assert!(!ok(k, json!(below)), "{k}={below}");
        assert!(!ok(k, json!(above)), "{k}={above}");
        assert!(!ok(k, json!("2")), "{k} as string");
        assert!(!ok(k, json!(true)), "{k} bool");
    }
    for l in ["trace", "debug", "info", "warn", "error"] {
        assert!(ok(KEY_LOG_LEVEL, json!(l)));
    }
    assert!(!ok(KEY_LOG_LEVEL, json!("verbose")));
    assert!(!ok(KEY_LOG_LEVEL, json!(3)));
}

#[test]
fn problem_text() {
    let err = proxy(json!({"heartbeat_interval_s": 1}))
        .settings()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "heartbeat_interval_s: must be 5-3600, got 1"
    );
    let err = proxy(json!({"heartbeat_interval_s": "30"}))
        .settings()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "heartbeat_interval_s: must be an integer 5-3600, got string \"30\""
    );
}

#[test]
fn unknown_keys_are_listed_sorted() {
    let f = proxy(json!({"zeta": 1, "alpha": true, "log_level": "info"}));
    assert_eq!(f.unknown_keys(), ["alpha", "zeta"]);
    assert!(f.settings().is_ok());
}

#[test]
fn merge_sets_keeps_unknown_and_reports_changes() {
    let current = proxy(json!({"heartbeat_interval_s": 30, "custom": "x"}));
    let m = merge_config_change(
        &current,
        &json!({"config": {"heartbeat_interval_s": 60, "max_concurrent_dispatches": 2,
                           "future_key": [1]}}),
    )
    .unwrap();
    assert_eq!(m.settings.heartbeat_interval_s, 60);
    assert_eq!(
        m.changed,
        ["heartbeat_interval_s"],
        "2 is the default: no change"
    );
    assert_eq!(m.unknown, ["future_key"]);
    assert_eq!(m.file.raw.get("future_key"), Some(&json!([1])));
    assert_eq!(m.file.raw.get("custom"), Some(&json!("x")));
    assert_eq!(m.file.raw.get("max_concurrent_dispatches"), Some(&json!(2)));
    assert_eq!(m.file.unknown_keys(), ["custom", "future_key"]);
}

#[test]
fn merge_null_removes_the_key() {
    let current = proxy(json!({"heartbeat_interval_s": 60, "custom": 1}));
    let m = merge_config_change(
        &current,
        &json!({"config": {"heartbeat_interval_s": null, "custom": null}}),
    )
    .unwrap();
    assert!(m.file.raw.is_empty());
    assert_eq!(m.settings.heartbeat_interval_s, 30);
    assert_eq!(m.changed, ["heartbeat_interval_s"]);
    assert_eq!(m.unknown, ["custom"]);
}

#[test]
fn merge_rejects_the_whole_change_with_every_problem() {
    let current = proxy(json!({"heartbeat_interval_s": 60}));
    let err = merge_config_change(
        &current,
        &json!({"config": {"heartbeat_interval_s": 10, "max_concurrent_dispatches": 0,
                           "log_level": "loud", "spool_retention_hours": "24",
                           "future": 1}}),
    )
    .unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "max_concurrent_dispatches",
            "spool_retention_hours",
            "log_level"
        ]
    );
    // The current file is untouched (it is borrowed; the caller keeps using it).
    assert_eq!(current.settings().unwrap().heartbeat_interval_s, 60);
}

#[test]
fn merge_bad_payloads() {
    for p in [
        json!({}),
        json!(null),
        json!({"config": null}),
        json!({"config": [1]}),
        json!({"config": "x"}),
        json!({"heartbeat_interval_s": 30}),
    ] {
        let err = merge_config_change(&ProxyFile::default(), &p).unwrap_err();
        assert!(matches!(err, ConfigError::BadPayload(_)), "{p}: {err:?}");
    }
}

#[test]
fn empty_merge_changes_nothing() {
    let current = proxy(json!({"log_level": "warn"}));
    let m = merge_config_change(&current, &json!({"config": {}})).unwrap();
    assert_eq!(m.file, current);
    assert!(m.changed.is_empty() && m.unknown.is_empty());
}

#[test]
fn file_is_transparent_json() {
    let f = proxy(json!({"a": 1}));
    assert_eq!(serde_json::to_value(&f).unwrap(), json!({"a": 1}));
    assert!(ProxyFile::from_value(json!([])).is_err());
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..100_000).prop_map(Value::from),
        prop_oneof![Just("info".to_owned()), ".{0,6}".prop_map(String::from)]
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(RECOGNISED_KEYS.to_vec()).prop_map(str::to_owned),
            Just("config".to_owned()),
            "[a-z]{1,5}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn merge_never_panics(current in arb_json(), payload in arb_json(), config in arb_json()) {
        let current = ProxyFile::from_value(current).unwrap_or_default();
        let _ = current.settings();
        let _ = merge_config_change(&current, &payload);
        if let Ok(m) = merge_config_change(&current, &json!({"config": config.clone()})) {
            // What is accepted validates again when read back from the file.
            prop_assert_eq!(m.file.settings().unwrap(), m.settings);
            for (k, v) in config.as_object().into_iter().flatten() {
                // A null removes its key; any other value is stored as given.
                prop_assert_eq!(m.file.raw.get(k), (!v.is_null()).then_some(v));
            }
        }
    }
}

#[test]
fn disk_and_history_settings_read_and_convert() {
    let s = proxy(
        json!({"cache_max_gb": 0.5, "min_free_gb": 0, "history_days": 1,
                         "park_hours": 0, "dimse_timeout_s": 5, "audit_days": 7}),
    )
    .settings()
    .unwrap();
    assert_eq!(s.cache_max_bytes(), Some(500_000_000));
    assert_eq!(s.min_free_bytes(), 0);
    assert_eq!(s.history_ms(), 86_400_000);
    assert_eq!((s.park_hours, s.dimse_timeout_s), (0, 5));
    let d = ProxySettings::default();
    assert_eq!(
        d.changed_keys(&s),
        [
            "dimse_timeout_s",
            "park_hours",
            "cache_max_gb",
            "min_free_gb",
            "history_days",
            "audit_days"
        ]
    );
    // `null` is the default again: unbounded.
    let m = merge_config_change(
        &proxy(json!({"cache_max_gb": 3})),
        &json!({"config": {"cache_max_gb": null}}),
    )
    .unwrap();
    assert_eq!(m.settings.cache_max_gb, None);
    assert_eq!(m.changed, ["cache_max_gb"]);
    let err = proxy(json!({"cache_max_gb": 0})).settings().unwrap_err();
    assert_eq!(err.to_string(), "cache_max_gb: must be 0.1-1000000, got 0");
}
