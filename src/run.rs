//! `laminate-proxy run`: validate every setting before anything starts, load
//! the config files, open the store, start the actors and the HTTP server,
//! and wait for a signal.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use laminate_actors::disk::Floor;
use laminate_actors::ingest::{IngestActor, IngestHandle, IngestSettings, IngestShutdownRequested};
use laminate_actors::link::{tls, LinkSettings, LinkShutdownRequested};
use laminate_actors::system::{self, SystemConfig};
use laminate_config::settings::{validate_settings, RawSettings, Settings};
use laminate_store::Store;

use crate::cli::RunArgs;
use crate::http::{self, ActionPolicy, AppState};

/// Exit code for settings or config files the appliance refuses.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// Validates the settings: all problems at once, one line each.
pub fn settings_from(args: RunArgs) -> Result<Settings, Vec<String>> {
    validate_settings(RawSettings {
        backend_url: args.backend_url,
        api_url: args.api_url,
        proxy_key: args.proxy_key,
        data_dir: args.data_dir,
        http_addr: args.http_addr,
        status_token: args.status_token,
        ae_title: args.ae_title,
        dicom_addr: args.dicom_addr,
        ca_file: args.ca_file,
        log_format: args.log_format,
    })
    .map_err(|problems| problems.iter().map(|p| p.to_string()).collect())
}

/// Ingest options that are not in the contract's settings table (docs/protocol.md).
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    pub accept_any_called_ae: bool,
    /// `--ingest-min-free-bytes`: a fixed floor for the ingest SCP instead of `min_free_gb`.
    pub min_free_bytes: Option<u64>,
    /// The DICOM TLS listener (`--dicom-tls-*`), when on.
    pub tls: Option<laminate_actors::ingest::IngestTls>,
}

/// Audit trail options that are not in the contract's settings table.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// `host:port` of the syslog collector (`--audit-syslog`).
    pub syslog: Option<String>,
}

impl AuditOptions {
    fn from_args(args: &RunArgs) -> Result<Self, String> {
        let syslog = args.audit_syslog.clone().filter(|s| !s.trim().is_empty());
        if let Some(t) = &syslog {
            laminate_actors::audit::syslog::check_target(t)
                .map_err(|e| format!("--audit-syslog (LAMINATE_PROXY_AUDIT_SYSLOG): {e}"))?;
        }
        Ok(Self { syslog })
    }
}

pub fn main(args: RunArgs) -> ExitCode {
    let tls = crate::ingest_tls::validate(&crate::ingest_tls::IngestTlsArgs {
        addr: args.dicom_tls_addr.clone(),
        cert: args.dicom_tls_cert.clone(),
        key: args.dicom_tls_key.clone(),
        ca: args.dicom_tls_ca.clone(),
    });
    let mut ingest = IngestOptions {
        accept_any_called_ae: args.ingest_accept_any_ae,
        min_free_bytes: args.ingest_min_free_bytes,
        tls: None,
    };
    let audit = AuditOptions::from_args(&args);
    let settings = settings_from(args);
    let (settings, audit) = match (settings, tls, audit) {
        (Ok(s), Ok(tls), Ok(a)) if tls.is_none() || s.dicom_addr.is_some() => {
            ingest.tls = tls;
            (s, a)
        }
        (settings, tls, audit) => {
            let mut lines = settings.err().unwrap_or_default();
            match tls {
                Err(more) => lines.extend(more),
                Ok(Some(_)) if lines.is_empty() && audit.is_ok() => lines.push("--dicom-tls-addr (LAMINATE_PROXY_DICOM_TLS_ADDR) needs the ingest SCP: set --dicom-addr (LAMINATE_PROXY_DICOM_ADDR) to an address, not `off`".into()),
                Ok(_) => {}
            }
            lines.extend(audit.err());
            for l in lines {
                eprintln!("laminate-proxy: {l}");
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    run_settings(settings, ingest, audit)
}

/// Runs the appliance with validated settings until a signal (also used by `demo`).
pub fn run_settings(settings: Settings, ingest: IngestOptions, audit: AuditOptions) -> ExitCode {
    match run(settings, ingest, audit) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Refusal::Config(msg)) => {
            eprintln!("laminate-proxy: {msg}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(Refusal::Failed(e)) => {
            eprintln!("laminate-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Refusal {
    /// A file or setting the operator must fix.
    Config(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        Refusal::Failed(e)
    }
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    for sub in ["", "storage", "spool"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    Ok(())
}

fn run(settings: Settings, ingest: IngestOptions, audit: AuditOptions) -> Result<(), Refusal> {
    prepare_data_dir(&settings.data_dir)?;
    let loaded = laminate_config::load_config(&settings.data_dir).map_err(|e| {
        Refusal::Config(format!(
            "{e} (fix or move the file; it is never overwritten)"
        ))
    })?;
    let log_hook = crate::logging::init(settings.log_format, loaded.settings.log_level.as_str());
    let tls = tls::client_config(settings.ca_file.as_deref())
        .map_err(|e| Refusal::Config(format!("--ca-file (LAMINATE_PROXY_CA_FILE): {e}")))?;
    let store_dir = settings.data_dir.join("store");
    let store = Store::open(&store_dir)
        .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
    let repaired = system::repair_cache(&store, &settings.data_dir)
        .context("cannot repair the local cache index")?;
    tracing::info!(report = ?repaired, "local cache checked");
    crate::malloc_tuning::trim();

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %settings.data_dir.display(),
        backend = %settings.ws_url_redacted(),
        proxy_key = %settings.proxy_key.redacted(),
        http = %settings.http_addr,
        malloc = crate::malloc_tuning::applied(),
        "laminate-proxy starting"
    );

    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let running = system::start(SystemConfig {
            data_dir: settings.data_dir.clone(),
            appliance_ae: settings.ae_title.clone(),
            link: LinkSettings {
                ws_url: settings.ws_url.to_string(),
                proxy_key: settings.proxy_key.expose().to_owned(),
                tls,
            },
            api_url: settings.api_url.clone(),
            loaded,
            store: store.clone(),
            log_level_hook: Some(log_hook),
            audit_syslog: audit.syslog,
        });
        let ingest = if let Some(addr) = settings.dicom_addr {
            let mut opts = IngestSettings::new(addr, settings.ae_title.clone(), settings.data_dir.clone());
            opts.accept_any_called_ae = ingest.accept_any_called_ae;
            opts.min_free = Floor::live(running.disk.clone(), ingest.min_free_bytes);
            opts.tls = ingest.tls.clone();
            let health = running.board.health.register("ingest");
            Some(IngestActor::start(health, opts, store.clone()).with_context(|| {
                format!("--dicom-addr {addr} (LAMINATE_PROXY_DICOM_ADDR) or --dicom-tls-addr (LAMINATE_PROXY_DICOM_TLS_ADDR), or `off` to disable them")
            })?)
        } else {
            None
        };
        let policy = ActionPolicy::new(
            settings.status_token.clone(),
            laminate_config::settings::is_loopback(&settings.http_addr),
        );
        let server = http::serve(
            settings.http_addr,
            AppState {
                running: running.clone(),
                policy,
            },
        )
        .with_context(|| {
            format!(
                "cannot listen on --http-addr {} (LAMINATE_PROXY_HTTP_ADDR)",
                settings.http_addr
            )
        })?;
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(url = %format!("http://{}/", settings.http_addr), "status page listening");

        wait_for_signal().await;
        shutdown(&running, ingest.as_ref(), handle, &store).await;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

/// How long the instances in flight get to finish (the container's stop grace is 10 s).
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(7);

/// The one shutdown path: stop taking work, let every C-STORE in flight get its
/// response (journaled; sent by the dispatches, and received by the ingest
/// SCP), close the associations and the link, stop the HTTP server, flush the
/// store.
pub async fn shutdown(
    running: &system::Running,
    ingest: Option<&IngestHandle>,
    http: actix_web::dev::ServerHandle,
    store: &Store,
) {
    let started = std::time::Instant::now();
    tracing::info!("shutting down: finishing the instances in flight");
    let dispatches = running
        .peers
        .dispatcher
        .send(laminate_actors::dispatch::ShutdownRequested)
        .timeout(DRAIN_DEADLINE);
    let ingested = async {
        match ingest {
            Some(ingest) => ingest
                .mailbox
                .send(IngestShutdownRequested)
                .timeout(DRAIN_DEADLINE)
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    let (dispatches, ingested) = futures_util::future::join(dispatches, ingested).await;
    if dispatches.is_err() {
        tracing::warn!(
            "instances still in flight at the deadline; they are sent again after restart"
        );
    }
    if ingested.is_err() {
        tracing::warn!(
            "instances still being received at the deadline; their senders must send them again"
        );
    }
    running.peers.link.do_send(LinkShutdownRequested);
    http.stop(true).await;
    let audit = laminate_actors::audit::AuditFlushRequested;
    if running
        .peers
        .audit
        .send(audit)
        .timeout(std::time::Duration::from_secs(2))
        .await
        .is_err()
    {
        tracing::warn!("the audit trail's last records may not be on disk");
    }
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "store flush at shutdown failed");
    }
    // Lets the link write its Close frame.
    actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
    tracing::info!(ms = started.elapsed().as_millis() as u64, "stopped");
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
