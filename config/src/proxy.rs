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
/// Seconds a DIMSE response may take: a minute covers a PACS committing a large
/// instance to slow storage, yet notices a hung association.
pub const DEFAULT_DIMSE_TIMEOUT_S: u64 = 60;
/// Hours a failed dispatch stays parked, replayed when its node answers again: three
/// days outlast a PACS down over a weekend.
pub const DEFAULT_PARK_HOURS: u64 = 72;
/// Bound of the DICOM cache in GB: none by default (the free-space floor still holds).
pub const DEFAULT_CACHE_MAX_GB: Option<f64> = None;
/// Free space (GB) never used up: 2 GB keeps the system and the logs alive when the
/// cache grows.
pub const DEFAULT_MIN_FREE_GB: f64 = 2.0;
/// Days finished dispatches stay queryable before they are pruned: a quarter of a year.
pub const DEFAULT_HISTORY_DAYS: u64 = 90;
/// Days of audit trail files kept: a year, what most sites' security offices ask for
/// first; a site bound to keep more (HIPAA: six years) raises it up to ten years.
pub const DEFAULT_AUDIT_DAYS: u64 = 365;

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
/// Allowed range of `dimse_timeout_s`.
pub const DIMSE_TIMEOUT_RANGE: RangeInclusive<u64> = 5..=3600;
/// Allowed range of `park_hours` (0 = never park).
pub const PARK_HOURS_RANGE: RangeInclusive<u64> = 0..=8760;
/// Allowed range of `cache_max_gb` when set.
pub const CACHE_MAX_GB_RANGE: RangeInclusive<f64> = 0.1..=1_000_000.0;
/// Allowed range of `min_free_gb`.
pub const MIN_FREE_GB_RANGE: RangeInclusive<f64> = 0.0..=100_000.0;
/// Allowed range of `history_days`.
pub const HISTORY_DAYS_RANGE: RangeInclusive<u64> = 1..=3650;
/// Allowed range of `audit_days`.
pub const AUDIT_DAYS_RANGE: RangeInclusive<u64> = 1..=3650;
/// Bytes in one GB as these settings count them (10^9, as disks are sold).
pub const BYTES_PER_GB: f64 = 1e9;

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
/// `dimse_timeout_s`
pub const KEY_DIMSE_TIMEOUT_S: &str = "dimse_timeout_s";
/// `park_hours`
pub const KEY_PARK_HOURS: &str = "park_hours";
/// `cache_max_gb`
pub const KEY_CACHE_MAX_GB: &str = "cache_max_gb";
/// `min_free_gb`
pub const KEY_MIN_FREE_GB: &str = "min_free_gb";
/// `history_days`
pub const KEY_HISTORY_DAYS: &str = "history_days";
/// `audit_days`
pub const KEY_AUDIT_DAYS: &str = "audit_days";

/// Every key this version interprets, in documentation order.
pub const RECOGNISED_KEYS: [&str; 12] = [
    KEY_HEARTBEAT_INTERVAL_S,
    KEY_MAX_CONCURRENT_DISPATCHES,
    KEY_NODE_RETRY_MAX_ATTEMPTS,
    KEY_NODE_RETRY_MAX_BACKOFF_S,
    KEY_SPOOL_RETENTION_HOURS,
    KEY_LOG_LEVEL,
    KEY_DIMSE_TIMEOUT_S,
    KEY_PARK_HOURS,
    KEY_CACHE_MAX_GB,
    KEY_MIN_FREE_GB,
    KEY_HISTORY_DAYS,
    KEY_AUDIT_DAYS,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Seconds a DIMSE response may take (5–3600, default 60).
    pub dimse_timeout_s: u64,
    /// Hours a failed dispatch stays parked (0–8760, default 72).
    pub park_hours: u64,
    /// Bound of the DICOM cache in GB (0.1–1000000; `None`, the default: unbounded).
    pub cache_max_gb: Option<f64>,
    /// Free space in GB never used up (0–100000, default 2).
    pub min_free_gb: f64,
    /// Days finished dispatches are kept (1–3650, default 90).
    pub history_days: u64,
    /// Days the audit trail's daily files are kept (1–3650, default 365).
    pub audit_days: u64,
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
            dimse_timeout_s: DEFAULT_DIMSE_TIMEOUT_S,
            park_hours: DEFAULT_PARK_HOURS,
            cache_max_gb: DEFAULT_CACHE_MAX_GB,
            min_free_gb: DEFAULT_MIN_FREE_GB,
            history_days: DEFAULT_HISTORY_DAYS,
            audit_days: DEFAULT_AUDIT_DAYS,
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
            self.dimse_timeout_s != other.dimse_timeout_s,
            self.park_hours != other.park_hours,
            self.cache_max_gb != other.cache_max_gb,
            self.min_free_gb != other.min_free_gb,
            self.history_days != other.history_days,
            self.audit_days != other.audit_days,
        ];
        RECOGNISED_KEYS
            .iter()
            .zip(differs)
            .filter(|(_, d)| *d)
            .map(|(k, _)| (*k).to_owned())
            .collect()
    }

    /// `cache_max_gb` in bytes (`None`: unbounded).
    pub fn cache_max_bytes(&self) -> Option<u64> {
        self.cache_max_gb.map(gb_to_bytes)
    }

    /// `min_free_gb` in bytes.
    pub fn min_free_bytes(&self) -> u64 {
        gb_to_bytes(self.min_free_gb)
    }

    /// `history_days` in milliseconds.
    pub fn history_ms(&self) -> u64 {
        self.history_days.saturating_mul(86_400_000)
    }
}

/// GB (validated: finite, 0–1000000) as bytes.
fn gb_to_bytes(gb: f64) -> u64 {
    // In range by validation: at most 10^15 bytes, exact enough in f64 and far below u64::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bytes = (gb * BYTES_PER_GB).round().max(0.0) as u64;
    bytes
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
        raw.insert(KEY_DIMSE_TIMEOUT_S.into(), s.dimse_timeout_s.into());
        raw.insert(KEY_PARK_HOURS.into(), s.park_hours.into());
        raw.insert(KEY_CACHE_MAX_GB.into(), s.cache_max_gb.into());
        raw.insert(KEY_MIN_FREE_GB.into(), s.min_free_gb.into());
        raw.insert(KEY_HISTORY_DAYS.into(), s.history_days.into());
        raw.insert(KEY_AUDIT_DAYS.into(), s.audit_days.into());
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
            dimse_timeout_s: r.int(KEY_DIMSE_TIMEOUT_S, DIMSE_TIMEOUT_RANGE, d.dimse_timeout_s),
            park_hours: r.int(KEY_PARK_HOURS, PARK_HOURS_RANGE, d.park_hours),
            cache_max_gb: r.optional_number(KEY_CACHE_MAX_GB, CACHE_MAX_GB_RANGE, d.cache_max_gb),
            min_free_gb: r.number(KEY_MIN_FREE_GB, MIN_FREE_GB_RANGE, d.min_free_gb),
            history_days: r.int(KEY_HISTORY_DAYS, HISTORY_DAYS_RANGE, d.history_days),
            audit_days: r.int(KEY_AUDIT_DAYS, AUDIT_DAYS_RANGE, d.audit_days),
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

    /// A number (integer or not) in `range`; absent or `null` is the default.
    fn number(&mut self, key: &str, range: RangeInclusive<f64>, default: f64) -> f64 {
        self.optional_number(key, range, Some(default))
            .unwrap_or(default)
    }

    /// A number in `range`, or `None` when absent or `null` and the default is `None`.
    fn optional_number(
        &mut self,
        key: &str,
        range: RangeInclusive<f64>,
        default: Option<f64>,
    ) -> Option<f64> {
        let Some(v) = self.raw.get(key).filter(|v| !v.is_null()) else {
            return default;
        };
        let message = match v.as_f64() {
            Some(n) if range.contains(&n) => return Some(n),
            Some(n) => format!("must be {}-{}, got {n}", range.start(), range.end()),
            None => format!(
                "must be a number {}-{}, got {}",
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
mod tests;
