//! Runtime settings the backend may change (`proxy.json`, PROTOCOL.md §6): their
//! defaults and ranges, and merging a `proxy.config_changed` event key by key.
//!
//! The file is kept as raw JSON ([`ProxyFile`]) so that keys this version does not
//! know survive a rewrite; the typed [`ProxySettings`] are derived from it.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ConfigError, Problem};
use crate::value::{describe, integer};

/// Seconds between heartbeats: the backend's own ping period (seed: 30 s), so the
/// backend sees the appliance as often as it checks on it.
pub const DEFAULT_HEARTBEAT_INTERVAL_S: u64 = 30;
/// Dispatches processed at once: two keeps one download overlapping one send
/// without letting many large archives compete for disk and bandwidth.
pub const DEFAULT_MAX_CONCURRENT_DISPATCHES: u32 = 2;
/// Retries in a row before a node is given up on: with the 2 s doubling backoff
/// capped at 300 s, ten tries cover roughly half an hour of outage.
pub const DEFAULT_NODE_RETRY_MAX_ATTEMPTS: u32 = 10;
/// Longest wait between retries: five minutes notices a recovered PACS soon
/// without hammering one that is down for maintenance.
pub const DEFAULT_NODE_RETRY_MAX_BACKOFF_S: u64 = 300;
/// Hours finished spool directories are kept: a day leaves time to inspect a
/// failed job before its files are reclaimed.
pub const DEFAULT_SPOOL_RETENTION_HOURS: u64 = 24;
/// Log verbosity: `info` shows every event and state change without per-instance noise.
pub const DEFAULT_LOG_LEVEL: LogLevel = LogLevel::Info;

/// Allowed range of `heartbeat_interval_s`.
pub const HEARTBEAT_INTERVAL_RANGE: RangeInclusive<u64> = 5..=3600;
/// Allowed range of `max_concurrent_dispatches`.
pub const MAX_CONCURRENT_DISPATCHES_RANGE: RangeInclusive<u32> = 1..=64;
/// Allowed range of `node_retry_max_attempts` (0 = never retry).
pub const NODE_RETRY_MAX_ATTEMPTS_RANGE: RangeInclusive<u32> = 0..=1000;
/// Allowed range of `node_retry_max_backoff_s`.
pub const NODE_RETRY_MAX_BACKOFF_RANGE: RangeInclusive<u64> = 1..=86_400;
/// Allowed range of `spool_retention_hours` (0 = delete as soon as finished).
pub const SPOOL_RETENTION_RANGE: RangeInclusive<u64> = 0..=8760;

/// `heartbeat_interval_s`
pub const KEY_HEARTBEAT_INTERVAL_S: &str = "heartbeat_interval_s";
/// `max_concurrent_dispatches`
pub const KEY_MAX_CONCURRENT_DISPATCHES: &str = "max_concurrent_dispatches";
/// `node_retry_max_attempts`
pub const KEY_NODE_RETRY_MAX_ATTEMPTS: &str = "node_retry_max_attempts";
/// `node_retry_max_backoff_s`
pub const KEY_NODE_RETRY_MAX_BACKOFF_S: &str = "node_retry_max_backoff_s";
/// `spool_retention_hours`
pub const KEY_SPOOL_RETENTION_HOURS: &str = "spool_retention_hours";
/// `log_level`
pub const KEY_LOG_LEVEL: &str = "log_level";

/// Every key this version interprets, in documentation order.
pub const RECOGNISED_KEYS: [&str; 6] = [
    KEY_HEARTBEAT_INTERVAL_S,
    KEY_MAX_CONCURRENT_DISPATCHES,
    KEY_NODE_RETRY_MAX_ATTEMPTS,
    KEY_NODE_RETRY_MAX_BACKOFF_S,
    KEY_SPOOL_RETENTION_HOURS,
    KEY_LOG_LEVEL,
];

/// The `log_level` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation (default).
    Info,
    /// Something is off but handled.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The name as written in `proxy.json` (and understood by tracing filters).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl Default for LogLevel {
    fn default() -> Self {
        DEFAULT_LOG_LEVEL
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of `trace`, `debug`, `info`, `warn`, `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of trace, debug, info, warn, error")]
pub struct UnknownLogLevel;

impl FromStr for LogLevel {
    type Err = UnknownLogLevel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            _ => Err(UnknownLogLevel),
        }
    }
}

/// The effective runtime settings (defaults where `proxy.json` says nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySettings {
    /// Seconds between `proxy.heartbeat` events (5–3600, default 30).
    pub heartbeat_interval_s: u64,
    /// Dispatches worked on at once (1–64, default 2).
    pub max_concurrent_dispatches: u32,
    /// Retries in a row before a node's dispatch fails (0–1000, default 10).
    pub node_retry_max_attempts: u32,
    /// Cap of the retry backoff in seconds (1–86400, default 300).
    pub node_retry_max_backoff_s: u64,
    /// Hours finished spool directories are kept (0–8760, default 24).
    pub spool_retention_hours: u64,
    /// Log verbosity (default `info`).
    pub log_level: LogLevel,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_s: DEFAULT_HEARTBEAT_INTERVAL_S,
            max_concurrent_dispatches: DEFAULT_MAX_CONCURRENT_DISPATCHES,
            node_retry_max_attempts: DEFAULT_NODE_RETRY_MAX_ATTEMPTS,
            node_retry_max_backoff_s: DEFAULT_NODE_RETRY_MAX_BACKOFF_S,
            spool_retention_hours: DEFAULT_SPOOL_RETENTION_HOURS,
            log_level: DEFAULT_LOG_LEVEL,
        }
    }
}

impl ProxySettings {
    /// The recognised keys whose values differ between `self` and `other`, in
    /// [`RECOGNISED_KEYS`] order.
    pub fn changed_keys(&self, other: &Self) -> Vec<String> {
        let differs = [
            self.heartbeat_interval_s != other.heartbeat_interval_s,
            self.max_concurrent_dispatches != other.max_concurrent_dispatches,
            self.node_retry_max_attempts != other.node_retry_max_attempts,
            self.node_retry_max_backoff_s != other.node_retry_max_backoff_s,
            self.spool_retention_hours != other.spool_retention_hours,
            self.log_level != other.log_level,
        ];
        RECOGNISED_KEYS
            .iter()
            .zip(differs)
            .filter(|(_, d)| *d)
            .map(|(k, _)| (*k).to_owned())
            .collect()
    }
}

/// Exactly what `proxy.json` holds: a JSON object, recognised and unknown keys alike.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProxyFile {
    /// The file's members.
    pub raw: Map<String, Value>,
}

impl ProxyFile {
    /// A file spelling out every recognised setting (what is written when
    /// `proxy.json` is missing, so an operator sees what can be set).
    pub fn from_settings(s: &ProxySettings) -> Self {
        let mut raw = Map::new();
        raw.insert(
            KEY_HEARTBEAT_INTERVAL_S.into(),
            s.heartbeat_interval_s.into(),
        );
        raw.insert(
            KEY_MAX_CONCURRENT_DISPATCHES.into(),
            s.max_concurrent_dispatches.into(),
        );
        raw.insert(
            KEY_NODE_RETRY_MAX_ATTEMPTS.into(),
            s.node_retry_max_attempts.into(),
        );
        raw.insert(
            KEY_NODE_RETRY_MAX_BACKOFF_S.into(),
            s.node_retry_max_backoff_s.into(),
        );
        raw.insert(
            KEY_SPOOL_RETENTION_HOURS.into(),
            s.spool_retention_hours.into(),
        );
        raw.insert(KEY_LOG_LEVEL.into(), s.log_level.as_str().into());
        Self { raw }
    }

    /// The file's content from parsed JSON, which must be an object.
    pub fn from_value(v: Value) -> Result<Self, Problem> {
        match v {
            Value::Object(raw) => Ok(Self { raw }),
            other => Err(Problem::new(
                "(top level)",
                format!("must be an object, got {}", describe(&other)),
            )),
        }
    }

    /// The effective settings: each recognised key's value, or its default when the
    /// key is absent or `null`. Every wrong type or out-of-range value is reported
    /// ([`ConfigError::Invalid`], fields named by key).
    pub fn settings(&self) -> Result<ProxySettings, ConfigError> {
        let mut r = Reader {
            raw: &self.raw,
            problems: Vec::new(),
        };
        let d = ProxySettings::default();
        let s = ProxySettings {
            heartbeat_interval_s: r.int(
                KEY_HEARTBEAT_INTERVAL_S,
                HEARTBEAT_INTERVAL_RANGE,
                d.heartbeat_interval_s,
            ),
            max_concurrent_dispatches: r.int(
                KEY_MAX_CONCURRENT_DISPATCHES,
                MAX_CONCURRENT_DISPATCHES_RANGE,
                d.max_concurrent_dispatches,
            ),
            node_retry_max_attempts: r.int(
                KEY_NODE_RETRY_MAX_ATTEMPTS,
                NODE_RETRY_MAX_ATTEMPTS_RANGE,
                d.node_retry_max_attempts,
            ),
            node_retry_max_backoff_s: r.int(
                KEY_NODE_RETRY_MAX_BACKOFF_S,
                NODE_RETRY_MAX_BACKOFF_RANGE,
                d.node_retry_max_backoff_s,
            ),
            spool_retention_hours: r.int(
                KEY_SPOOL_RETENTION_HOURS,
                SPOOL_RETENTION_RANGE,
                d.spool_retention_hours,
            ),
            log_level: r.log_level(d.log_level),
        };
        if r.problems.is_empty() {
            Ok(s)
        } else {
            Err(ConfigError::Invalid(r.problems))
        }
    }

    /// Keys present in the file that this version does not interpret, sorted.
    pub fn unknown_keys(&self) -> Vec<String> {
        unknown_of(self.raw.keys())
    }
}

/// The keys among `keys` that are not recognised, sorted and deduplicated.
fn unknown_of<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = keys
        .filter(|k| !RECOGNISED_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Reads recognised keys, collecting problems.
struct Reader<'a> {
    raw: &'a Map<String, Value>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn int<T>(&mut self, key: &str, range: RangeInclusive<T>, default: T) -> T
    where
        T: Copy + fmt::Display + TryFrom<i128> + Into<i128>,
    {
        let Some(v) = self.raw.get(key).filter(|v| !v.is_null()) else {
            return default;
        };
        let (lo, hi) = ((*range.start()).into(), (*range.end()).into());
        let message = match integer(v) {
            Some(n) if (lo..=hi).contains(&n) => match T::try_from(n) {
                Ok(t) => return t,
                // Unreachable: n is inside a range of T. Reported rather than unwrapped.
                Err(_) => format!("must be {}-{}, got {n}", range.start(), range.end()),
            },
            Some(n) => format!("must be {}-{}, got {n}", range.start(), range.end()),
            None => format!(
                "must be an integer {}-{}, got {}",
                range.start(),
                range.end(),
                describe(v)
            ),
        };
        self.problems.push(Problem::new(key, message));
        default
    }

    fn log_level(&mut self, default: LogLevel) -> LogLevel {
        let Some(v) = self.raw.get(KEY_LOG_LEVEL).filter(|v| !v.is_null()) else {
            return default;
        };
        match v.as_str().map(LogLevel::from_str) {
            Some(Ok(level)) => level,
            _ => {
                self.problems.push(Problem::new(
                    KEY_LOG_LEVEL,
                    format!("{}, got {}", UnknownLogLevel, describe(v)),
                ));
                default
            }
        }
    }
}

/// The result of merging a `proxy.config_changed` event.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigMerge {
    /// The new content of `proxy.json` (to be saved by the caller).
    pub file: ProxyFile,
    /// The effective settings after the merge.
    pub settings: ProxySettings,
    /// Recognised settings whose effective value changed, in [`RECOGNISED_KEYS`] order.
    pub changed: Vec<String>,
    /// Unknown keys named by the change (kept in the file, or removed for `null`), sorted.
    pub unknown: Vec<String>,
}

/// Merges a `proxy.config_changed` payload (`{"config": {...}}`) into `current`, key
/// by key: a value sets the key, `null` removes it (back to its default), unknown
/// keys are kept and reported. Any wrong type or out-of-range recognised value
/// rejects the whole change with every problem ([`ConfigError::Invalid`]); a payload
/// without an object `config` is [`ConfigError::BadPayload`]. Nothing is written.
pub fn merge_config_change(
    current: &ProxyFile,
    payload: &Value,
) -> Result<ConfigMerge, ConfigError> {
    let config = match payload.get("config") {
        Some(Value::Object(c)) => c,
        Some(other) => {
            return Err(ConfigError::BadPayload(format!(
                "\"config\" must be an object, got {}",
                describe(other)
            )))
        }
        None => {
            return Err(ConfigError::BadPayload(
                "\"config\" object is required".to_owned(),
            ))
        }
    };

    let mut file = current.clone();
    for (k, v) in config {
        if v.is_null() {
            file.raw.remove(k);
        } else {
            file.raw.insert(k.clone(), v.clone());
        }
    }
    let settings = file.settings()?;
    // A current file that does not validate (built by hand) counts as defaults.
    let before = current.settings().unwrap_or_default();
    Ok(ConfigMerge {
        changed: before.changed_keys(&settings),
        unknown: unknown_of(config.keys()),
        file,
        settings,
    })
}

#[cfg(test)]
mod tests {
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
        ] {
            assert!(ok(k, json!(lo)), "{k}={lo}");
            assert!(ok(k, json!(hi)), "{k}={hi}");
            assert!(!ok(k, json!(lo - 1)), "{k}={}", lo - 1);
            assert!(!ok(k, json!(hi + 1)), "{k}={}", hi + 1);
            assert!(!ok(k, json!(format!("{lo}"))), "{k} as string");
            assert!(!ok(k, json!(lo as f64 + 0.5)), "{k} fractional");
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
}
