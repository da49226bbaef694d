//! Logging: one tracing subscriber, text or JSON, whose level follows
//! `proxy.json`'s `log_level` live (`RUST_LOG`, when set, wins).

use std::sync::Arc;

use laminate_actors::config::LogLevelHook;
use laminate_config::settings::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

fn filter_for(level: &str) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        // Dependencies stay at warn so `debug` means our own debug output.
        _ => EnvFilter::new(format!("warn,laminate_proxy={level},laminate_actors={level},laminate_store={level},laminate_config={level}")),
    }
}

/// Installs the global subscriber; returns the hook that changes its level.
pub fn init(format: LogFormat, level: &str) -> LogLevelHook {
    let (filter, handle) = reload::Layer::new(filter_for(level));
    let registry = Registry::default().with(filter);
    let installed = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    if installed.is_err() {
        eprintln!("warning: a logger was already installed");
    }
    Arc::new(move |level: &str| {
        if handle.modify(|f| *f = filter_for(level)).is_ok() {
            tracing::info!(level, "log level changed");
        }
    })
}
