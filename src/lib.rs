// `deny`, not `forbid`: `malloc_tuning` alone allows it, to call mallopt.
#![deny(unsafe_code)]
//! laminate-proxy: the binary's library — command line, wiring, HTTP status
//! page and API, operator commands, and the backend simulator.
//!
//! # Layout
//! - [`cli`]: subcommands, flags and environment variables.
//! - [`demo`]: `laminate-proxy demo` — simulator, embedded PACS, synthetic study, the appliance.
//! - [`run`]: `laminate-proxy run` — settings, config files, store, actors, HTTP, signals.
//! - [`ingest_tls`]: the ingest SCP's DICOM TLS listener flags, checked before start.
//! - [`doctor`]: `laminate-proxy doctor` — every check `run` depends on, one line each.
//! - [`http`]: the local HTTP server (probes, JSON API, operator actions).
//! - [`ops`]: operator commands against a running appliance (`healthcheck`, `nodes`).
//! - [`logging`]: the tracing subscriber and its live level.
//! - [`malloc_tuning`]: glibc's allocator set up for months of running.
//! - [`sim`]: the backend simulator used by the tests and `demo`.

pub mod cli;
pub mod demo;
pub mod doctor;
pub mod http;
pub mod ingest_tls;
pub mod logging;
pub mod malloc_tuning;
pub mod ops;
pub mod run;
pub mod sim;
