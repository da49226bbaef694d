//! Configuration of laminate-proxy: the `run` settings from the command line and
//! environment, and the data dir's `nodes.json`, `proxy.json` and `status.json`
//! (PROTOCOL.md §6), including applying the backend's `proxy.*_changed` events to them.
//!
//! Nothing here talks to the network or spawns tasks: every function takes values
//! (or a directory) and returns values or a typed [`ConfigError`], so the actors that
//! own the configuration decide when to apply and save a change.
//!
//! # Layout
//!
//! - [`error`]: [`ConfigError`] and [`Problem`], the one validation finding that lists are made of.
//! - [`atomic`]: crash-safe replacement of a JSON file (temp file, fsync, rename, fsync dir).
//! - [`ae_title`]: the DICOM AE title rule shared by nodes and `--ae-title`.
//! - [`nodes`]: node definitions, their validation and applying `proxy.nodes_changed`.
//! - [`proxy`]: runtime settings of `proxy.json` and merging `proxy.config_changed`.
//! - [`status`]: the operational status of `status.json` and reading `proxy.status_changed`.
//! - [`node_settings`]: the site's `node-settings.json` (TLS, caps, syntax), validated whole.
//! - [`node_tls`]: DICOM TLS material read into rustls configurations.
//! - [`files`]: loading the three files at start-up (defaults written, corrupt files kept) and saving them.
//! - [`settings`]: validating the `run` settings and deriving the backend URLs, with the key redacted.
//! - `value` (private): reading integers and describing wrong values in untrusted JSON.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ae_title;
pub mod atomic;
pub mod error;
pub mod files;
pub mod node_settings;
pub mod node_tls;
pub mod nodes;
pub mod proxy;
pub mod settings;
pub mod status;
mod value;

pub use ae_title::check_ae_title;
pub use atomic::write_json_atomic;
pub use error::{ConfigError, Problem};
pub use files::{
    load_config, save_nodes, save_proxy, save_status, LoadedConfig, NODES_FILE, PROXY_FILE,
    STATUS_FILE,
};
pub use node_settings::{
    load_node_settings, node_settings_stamp, parse_node_settings, FileStamp, NodeSettings,
    NodeSettingsFile, PreferredSyntax, NODE_SETTINGS_FILE,
};
pub use node_tls::{load_client_tls, load_server_tls, NodeTls, TlsMaterialError};
pub use nodes::{
    apply_nodes_change, parse_node, parse_nodes_file, validate_nodes, Node, NodeAction, NodesDiff,
    NodesFile, DEFAULT_MAX_ASSOCIATIONS,
};
pub use proxy::{merge_config_change, ConfigMerge, LogLevel, ProxyFile, ProxySettings};
pub use settings::{
    api_endpoint, api_endpoint_segments, derive_api_url, is_loopback, validate_settings,
    ws_endpoint, LogFormat, ProxyKey, RawSettings, SettingProblem, Settings,
};
pub use status::{parse_status_change, parse_status_file, ProxyState, StatusFile};
