#![forbid(unsafe_code)]
//! The supervised actix actors of laminate-proxy.
//!
//! Actors only talk by messages (each in its own folder: `mod.rs` docs and
//! exports, `messages.rs`, `actor.rs`), and every one runs under a
//! `Supervisor` so a failure restarts it without touching the others.
//!
//! # Layout
//! - [`link`]: the WebSocket client to the backend, its backoff and the outbox drain.
//! - [`router`]: parses, validates and de-duplicates incoming events and routes them.
//! - [`config`]: applies `proxy.*` events to the config files and tells the others.
//! - [`heartbeat`]: `proxy.heartbeat` on connect and every interval.
//! - [`nodes`]: C-ECHO of the PACS nodes.
//! - [`dispatch`]: the dispatcher and one job per dispatch: download → extract → index → send → report.
//! - [`send`]: the C-STORE sender: a node's pool of associations and its queue.
//! - [`node_sender`]: one supervised actor per node owning its sender pool.
//! - [`ingest`]: the C-STORE SCP modalities send studies to; fills the local DICOM cache.
//! - [`disk`]: the bounded cache: eviction, the free-space floor, the disk's figures.
//! - [`audit`]: the audit trail: `audit/` day files, `/api/audit`, syslog forwarding.
//! - [`deletion`]: `session.deleted` / `scan.deleted` against the local store.
//! - [`envelope`]: the wire envelope, parsing untrusted frames and building outgoing ones.
//! - [`dimse`]: DIMSE command sets (C-ECHO, C-STORE) shared by the DICOM code.
//! - [`health`]: actor health registry, mailbox gauges and the panic guard.
//! - [`board`]: what the actors observed, read by the HTTP API and the heartbeat.
//! - [`feed`]: the board's live feed, recent events and send figures (status page, `/metrics`).
//! - [`throughput`]: each node's sends minute by minute for the last hour (the page's sparklines).
//! - [`peers`]: the actors' addresses, set once at start-up.
//! - [`system`]: starts and wires everything.
//! - [`clock`]: the protocol's timestamps.
//! - [`commitment`]: Storage Commitment data sets and the reports waiting to be handed over.
//! - [`http_client`]: awc clients whose TCP connections never wait on Nagle.

pub mod audit;
pub mod board;
pub mod clock;
pub mod commitment;
pub mod config;
pub mod deletion;
pub mod dimse;
pub mod disk;
pub mod dispatch;
pub mod envelope;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod feed;
pub mod health;
pub mod heartbeat;
pub mod http_client;
pub mod ingest;
pub mod link;
pub mod node_sender;
pub mod nodes;
pub mod peers;
pub mod router;
pub mod send;
pub mod system;
pub mod throughput;
pub mod transcode;
