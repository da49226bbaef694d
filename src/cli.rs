//! The command line (APPLIANCE.md "Command line"): subcommands, flags and the
//! environment variables that stand for them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use laminate_config::settings::{DEFAULT_AE_TITLE, DEFAULT_DICOM_ADDR, DEFAULT_HTTP_ADDR};

#[derive(Debug, Parser)]
#[command(
    name = "laminate-proxy",
    version,
    about = "Laminate edge appliance: backend link, dispatch to PACS, DICOM ingest, status page"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The service: backend link, dispatch, DICOM ingest, store, status page.
    Run(RunArgs),
    /// The whole system on this machine with nothing else installed.
    Demo(DemoArgs),
    /// Rebuild the local cache's index from the files under `storage/` (appliance stopped).
    RebuildIndex {
        /// The data dir (as for `run`).
        #[arg(long, env = "LAMINATE_PROXY_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Check the data dir, config files, settings, backend, nodes and ports (same settings as `run`); exit 0 when nothing failed.
    Doctor(RunArgs),
    /// Exit 0 if the local /readyz answers ready (Docker HEALTHCHECK).
    Healthcheck(LocalApiArgs),
    /// Dispatches of a running appliance.
    Dispatches {
        #[command(subcommand)]
        command: DispatchesCommand,
        #[command(flatten)]
        api: LocalApiArgs,
    },
    /// PACS nodes of a running appliance.
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
        #[command(flatten)]
        api: LocalApiArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DispatchesCommand {
    /// List dispatches, newest first (one page of --limit; --all follows the pages).
    List {
        /// Only this state: active, completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Dispatches per page (the API's default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Every page, not only the first.
        #[arg(long)]
        all: bool,
    },
    /// Replay dispatches (by id or correlation id), or every failed one.
    Replay {
        /// Dispatch ids or correlation ids.
        ids: Vec<String>,
        /// Replay every failed dispatch.
        #[arg(long, conflicts_with = "ids")]
        failed: bool,
        /// With --failed: only those updated since this RFC 3339 time.
        #[arg(long, requires = "failed")]
        since: Option<String>,
        /// Only these nodes (repeatable).
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the nodes with their last C-ECHO.
    List,
    /// Run a C-ECHO now and print the round trip.
    Echo { node_id: String },
    /// Re-read node-settings.json now (a change is also noticed within seconds).
    Reload,
}

/// How operator commands find the running appliance (same flags as `run`).
#[derive(Debug, Clone, Args)]
pub struct LocalApiArgs {
    #[arg(long, env = "LAMINATE_PROXY_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR, global = true)]
    pub http_addr: String,
    #[arg(
        long,
        env = "LAMINATE_PROXY_STATUS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub status_token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Backend WebSocket URL, e.g. wss://laminate.example/
    #[arg(long, env = "LAMINATE_BACKEND_URL")]
    pub backend_url: Option<String>,
    /// Backend REST URL (default: derived from --backend-url).
    #[arg(long, env = "LAMINATE_API_URL")]
    pub api_url: Option<String>,
    /// The appliance's key (never printed).
    #[arg(long, env = "LAMINATE_PROXY_KEY", hide_env_values = true)]
    pub proxy_key: Option<String>,
    /// Where config files, the store, the DICOM cache and the spool live.
    #[arg(long, env = "LAMINATE_PROXY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Status page and local API address.
    #[arg(long, env = "LAMINATE_PROXY_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,
    /// Bearer token required for operator actions.
    #[arg(long, env = "LAMINATE_PROXY_STATUS_TOKEN", hide_env_values = true)]
    pub status_token: Option<String>,
    /// The appliance's DICOM AE title.
    #[arg(long, env = "LAMINATE_PROXY_AE_TITLE", default_value = DEFAULT_AE_TITLE)]
    pub ae_title: String,
    /// The ingest SCP's address, or `off`.
    #[arg(long, env = "LAMINATE_PROXY_DICOM_ADDR", default_value = DEFAULT_DICOM_ADDR)]
    pub dicom_addr: String,
    /// Extra PEM root certificates for wss/https.
    #[arg(long, env = "LAMINATE_PROXY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// `text` or `json`.
    #[arg(long, env = "LAMINATE_PROXY_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Ingest: accept C-STORE whatever AE title the sender calls (default: only ours).
    #[arg(long, env = "LAMINATE_PROXY_INGEST_ACCEPT_ANY_AE")]
    pub ingest_accept_any_ae: bool,
    /// Ingest: under this much free disk space, C-STORE is answered 0xA700 (out of resources).
    /// Overrides `min_free_gb` (proxy.json, live) for the ingest SCP only; unset: `min_free_gb`.
    #[arg(long, env = "LAMINATE_PROXY_INGEST_MIN_FREE_BYTES")]
    pub ingest_min_free_bytes: Option<u64>,
    /// Forward the audit trail as RFC 5424 syslog over TCP to this collector (host:port).
    #[arg(long, env = "LAMINATE_PROXY_AUDIT_SYSLOG")]
    pub audit_syslog: Option<String>,
    /// Ingest: a second listener speaking DICOM TLS, or `off`.
    #[arg(long, env = "LAMINATE_PROXY_DICOM_TLS_ADDR", default_value = "off")]
    pub dicom_tls_addr: String,
    /// Ingest TLS: the listener's PEM certificate (chain).
    #[arg(long, env = "LAMINATE_PROXY_DICOM_TLS_CERT")]
    pub dicom_tls_cert: Option<PathBuf>,
    /// Ingest TLS: the PEM private key of --dicom-tls-cert.
    #[arg(long, env = "LAMINATE_PROXY_DICOM_TLS_KEY")]
    pub dicom_tls_key: Option<PathBuf>,
    /// Ingest TLS: PEM CA file; when set, senders must present a certificate it signed.
    #[arg(long, env = "LAMINATE_PROXY_DICOM_TLS_CA")]
    pub dicom_tls_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Status page address.
    #[arg(long, default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,
    /// Data dir (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Every environment variable the binary reads (the Dockerfile check uses it).
pub const ENV_VARS: &[&str] = &[
    "LAMINATE_BACKEND_URL",
    "LAMINATE_API_URL",
    "LAMINATE_PROXY_KEY",
    "LAMINATE_PROXY_DATA_DIR",
    "LAMINATE_PROXY_HTTP_ADDR",
    "LAMINATE_PROXY_STATUS_TOKEN",
    "LAMINATE_PROXY_AE_TITLE",
    "LAMINATE_PROXY_DICOM_ADDR",
    "LAMINATE_PROXY_CA_FILE",
    "LAMINATE_PROXY_LOG_FORMAT",
    "LAMINATE_PROXY_INGEST_ACCEPT_ANY_AE",
    "LAMINATE_PROXY_INGEST_MIN_FREE_BYTES",
    "LAMINATE_PROXY_AUDIT_SYSLOG",
    "LAMINATE_PROXY_DICOM_TLS_ADDR",
    "LAMINATE_PROXY_DICOM_TLS_CERT",
    "LAMINATE_PROXY_DICOM_TLS_KEY",
    "LAMINATE_PROXY_DICOM_TLS_CA",
];
