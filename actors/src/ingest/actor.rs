//! The ingest actor: owns the listening socket, accepts connections and hands
//! each one to its own association thread. See `mod.rs`.

use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource, Pdu,
};
use laminate_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::drain::Drain;
use super::messages::{IngestShutdownRequested, InstanceIngested};
use super::scp::{self, Shared};
use super::writer::Dirs;
use crate::disk::Floor;
use crate::health::{panic_message, ActorHealth, ActorState, Mailbox, Monitored};

/// Disk floor of [`IngestSettings::new`]: under 1 GiB free, C-STORE answers 0xA700
/// (out of resources) rather than filling the disk the store and logs live on. The
/// appliance uses `min_free_gb` instead ([`Floor::Live`]).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;
/// Default cap on simultaneous associations (one thread each).
pub const DEFAULT_MAX_ASSOCIATIONS: usize = 32;
/// After a failed `accept` (out of file descriptors, say), wait this long
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// If the listening socket cannot be (re)armed, try again after this long.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// A peer refused for the association cap gets this long to send its
/// A-ASSOCIATE-RQ before the A-ASSOCIATE-RJ.
const BUSY_REJECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an A-ASSOCIATE-RQ read (and discarded) before rejecting it.
const MAX_REJECTED_RQ: u64 = 1 << 20;

/// What the ingest SCP needs.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Where to listen (`--dicom-addr`).
    pub addr: SocketAddr,
    /// Our AE title (`--ae-title`); the called AE title must equal it unless
    /// `accept_any_called_ae`.
    pub ae_title: String,
    pub accept_any_called_ae: bool,
    /// The data dir; instances go to `{data_dir}/storage/`.
    pub data_dir: PathBuf,
    /// Under this much free space, C-STORE answers 0xA700 without writing: `min_free_gb`
    /// as it stands, or a fixed floor (`--ingest-min-free-bytes`).
    pub min_free: Floor,
    /// Simultaneous associations; more are rejected (transient, local limit
    /// exceeded) so the sender retries later.
    pub max_associations: usize,
    /// A second listener speaking DICOM TLS (`--dicom-tls-addr`), sharing the
    /// association cap and everything else with the plain one.
    pub tls: Option<IngestTls>,
}

/// The ingest SCP's TLS listener.
#[derive(Clone)]
pub struct IngestTls {
    /// Where to listen (`--dicom-tls-addr`).
    pub addr: SocketAddr,
    /// Certificate, key and, with `--dicom-tls-ca`, required client certificates.
    pub config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for IngestTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestTls")
            .field("addr", &self.addr)
            .finish()
    }
}

impl IngestSettings {
    /// Settings with the default disk floor and association cap.
    pub fn new(
        addr: SocketAddr,
        ae_title: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            addr,
            ae_title: ae_title.into(),
            accept_any_called_ae: false,
            data_dir: data_dir.into(),
            min_free: Floor::fixed(DEFAULT_MIN_FREE_BYTES),
            max_associations: DEFAULT_MAX_ASSOCIATIONS,
            tls: None,
        }
    }
}

/// Why the ingest SCP could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot listen for DICOM on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot prepare the DICOM storage directory {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The started actor.
pub struct IngestHandle {
    pub mailbox: Mailbox<IngestActor>,
    /// The address actually bound (the port, when `addr` asked for port 0).
    pub local_addr: SocketAddr,
    /// The TLS listener's, when there is one.
    pub tls_local_addr: Option<SocketAddr>,
}

pub struct IngestActor {
    health: ActorHealth,
    settings: IngestSettings,
    store: Store,
    dirs: Dirs,
    /// Bound once in [`IngestActor::start`] and kept across restarts, so a
    /// restart never loses the port; each incarnation accepts on a clone.
    listener: std::net::TcpListener,
    /// The TLS listener, likewise.
    tls_listener: Option<std::net::TcpListener>,
    /// One permit per running association; outlives restarts with the actor.
    slots: Arc<Semaphore>,
    /// Every association, whichever incarnation accepted it; for the shutdown.
    drain: Arc<Drain>,
    /// The accept loop of this incarnation.
    accepting: Option<SpawnHandle>,
    instances: u64,
    bytes: u64,
}

impl IngestActor {
    /// Prepares `{data_dir}/storage`, binds `settings.addr` and starts the
    /// actor under a `Supervisor`. Call inside a running actix System. A bind
    /// failure is returned here, at start-up, not left to the actor.
    pub fn start(
        health: ActorHealth,
        settings: IngestSettings,
        store: Store,
    ) -> Result<IngestHandle, IngestError> {
        let dirs = Dirs::new(&settings.data_dir);
        let stale = dirs.prepare().map_err(|source| IngestError::Storage {
            path: dirs.incoming.clone(),
            source,
        })?;
        if stale > 0 {
            tracing::info!(files = stale, "removed unfinished incoming instances");
        }
        let bind_err = |source| IngestError::Bind {
            addr: settings.addr,
            source,
        };
        let listener = std::net::TcpListener::bind(settings.addr).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        tracing::info!(addr = %local_addr, ae_title = %settings.ae_title, "DICOM ingest listening");
        let tls_listener = match &settings.tls {
            Some(t) => {
                let tls_err = |source| IngestError::Bind {
                    addr: t.addr,
                    source,
                };
                let l = std::net::TcpListener::bind(t.addr).map_err(tls_err)?;
                tracing::info!(addr = %l.local_addr().map_err(tls_err)?, "DICOM TLS ingest listening");
                Some(l)
            }
            None => None,
        };
        let tls_local_addr = match &tls_listener {
            Some(l) => Some(l.local_addr().map_err(bind_err)?),
            None => None,
        };
        let slots = Arc::new(Semaphore::new(settings.max_associations.max(1)));
        let h = health.clone();
        let addr = Supervisor::start(move |_| IngestActor {
            health: h,
            settings,
            store,
            dirs,
            listener,
            tls_listener,
            slots,
            drain: Arc::new(Drain::new()),
            accepting: None,
            instances: 0,
            bytes: 0,
        });
        Ok(IngestHandle {
            mailbox: Mailbox::new(addr, health),
            local_addr,
            tls_local_addr,
        })
    }

    /// Arms the accept loops on clones of the listening sockets.
    fn listen(&mut self, ctx: &mut Context<Self>) {
        if self.drain.is_draining() {
            return;
        }
        let arm = |l: &std::net::TcpListener| {
            l.try_clone().and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
        };
        let armed = arm(&self.listener).and_then(|plain| {
            let tls = self.tls_listener.as_ref().map(arm).transpose()?;
            Ok((plain, tls))
        });
        let (listener, tls_listener) = match armed {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("cannot accept DICOM connections: {e}");
                tracing::error!(error = %msg, "ingest listener");
                self.health.record_error(msg);
                self.health.set_state(ActorState::Restarting);
                ctx.run_later(LISTEN_RETRY, |act, ctx| act.listen(ctx));
                return;
            }
        };
        let shared = |options, tls| {
            Arc::new(Shared {
                options,
                dirs: self.dirs.clone(),
                store: self.store.clone(),
                min_free: self.settings.min_free.clone(),
                events: Mailbox::new(ctx.address(), self.health.clone()),
                drain: self.drain.clone(),
                tls,
            })
        };
        let plain = shared(scp::options(&self.settings), false);
        let secure = self.settings.tls.as_ref().map(|t| {
            shared(
                scp::options(&self.settings).tls_config(t.config.clone()),
                true,
            )
        });
        let (slots, health) = (self.slots.clone(), self.health.clone());
        let tls_loop = tls_listener
            .zip(secure)
            .map(|(l, shared)| accept_loop(l, shared, slots.clone(), health.clone()));
        let accepting = async move {
            let plain = accept_loop(listener, plain, slots, health);
            match tls_loop {
                Some(tls) => {
                    futures_util::future::join(plain, tls).await;
                }
                None => plain.await,
            }
        };
        self.accepting = Some(ctx.spawn(accepting.into_actor(self)));
        self.health.set_state(ActorState::Running);
    }
}

/// Accepts forever (until the actor stops and drops this future).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    health: ActorHealth,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a DICOM connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => run_association(stream, peer, shared.clone(), permit, health.clone()),
            // A TLS peer could not read a plain rejection: it is just closed.
            Err(_) if shared.tls => {
                tracing::warn!(%peer, "association limit reached; closing the TLS connection");
            }
            Err(_) => {
                tracing::warn!(%peer, "association limit reached; rejecting");
                actix_rt::spawn(reject_busy(stream));
            }
        }
    }
}

/// Moves the connection to a blocking socket on its own thread.
fn run_association(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    health: ActorHealth,
) {
    let stream = match stream.into_std().and_then(|s| {
        s.set_nonblocking(false)?;
        // Responses are single writes; never let Nagle hold one back.
        s.set_nodelay(true)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot set up the DICOM connection");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("dicom-scp".into())
        .spawn(move || {
            let _permit = permit;
            let outcome = catch_unwind(AssertUnwindSafe(|| scp::serve(stream, peer, &shared)));
            if let Err(payload) = outcome {
                // The association is gone (its socket and temporary file were
                // dropped while unwinding); the listener and the others go on.
                let msg = format!(
                    "association from {peer} panicked: {}",
                    panic_message(payload.as_ref())
                );
                tracing::error!(error = %msg, "ingest association");
                health.record_error(msg);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(%peer, error = %e, "cannot start an association thread");
    }
}

/// Answers an association over the cap with A-ASSOCIATE-RJ (transient, local
/// limit exceeded) so the sender retries later. The request is read first: a
/// socket closed on unread data resets, and the peer might lose the answer.
async fn reject_busy(mut stream: tokio::net::TcpStream) {
    let rejection = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut bytes = Vec::with_capacity(16);
    if dicom_ul::write_pdu(&mut bytes, &rejection).is_err() {
        return;
    }
    let exchange = async {
        let mut head = [0u8; 6];
        stream.read_exact(&mut head).await?;
        let len = u64::from(u32::from_be_bytes([head[2], head[3], head[4], head[5]]));
        let mut body = (&mut stream).take(len.min(MAX_REJECTED_RQ));
        tokio::io::copy(&mut body, &mut tokio::io::sink()).await?;
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(BUSY_REJECT_TIMEOUT, exchange).await;
}

impl Actor for IngestActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.listen(ctx);
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.health.set_state(ActorState::Stopped);
    }
}

impl Supervised for IngestActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Running associations are threads of their own and carry on.
        self.health.restarted();
    }
}

impl Monitored for IngestActor {
    fn health(&self) -> &ActorHealth {
        &self.health
    }
}

impl Handler<InstanceIngested> for IngestActor {
    type Result = ();
    fn handle(&mut self, msg: InstanceIngested, _: &mut Context<Self>) {
        self.instances += 1;
        let before = self.bytes;
        self.bytes += msg.bytes;
        self.settings.min_free.grew(before, self.bytes);
        tracing::info!(
            sop_instance_uid = %msg.sop_instance_uid,
            study_instance_uid = %msg.study_instance_uid,
            bytes = msg.bytes,
            total_instances = self.instances,
            total_bytes = self.bytes,
            "instance ingested"
        );
    }
}

impl Handler<IngestShutdownRequested> for IngestActor {
    type Result = ResponseFuture<()>;
    /// Stops accepting, closes waiting associations at once and busy ones
    /// after their current instance, and resolves when every association
    /// thread has ended (the caller bounds the wait).
    fn handle(&mut self, _: IngestShutdownRequested, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(accepting) = self.accepting.take() {
            ctx.cancel_future(accepting);
        }
        let woken = self.drain.start();
        let (slots, all) = (self.slots.clone(), self.settings.max_associations.max(1));
        let busy = all - slots.available_permits();
        tracing::info!(
            associations = busy,
            waiting = woken,
            "ingest: closing associations"
        );
        Box::pin(async move {
            let Ok(all) = u32::try_from(all) else {
                return;
            };
            // Every permit back means every association thread has ended; they
            // are kept, so nothing new starts.
            if let Ok(permits) = slots.acquire_many_owned(all).await {
                permits.forget();
            }
        })
    }
}

crate::delivered_handlers!(IngestActor: InstanceIngested, IngestShutdownRequested);
