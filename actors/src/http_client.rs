//! The awc clients of the appliance (backend WebSocket, archive downloads), built
//! on TCP connections with `TCP_NODELAY`.
//!
//! awc's stock connector leaves Nagle on. A WebSocket carries small frames that
//! go out back to back (a status, then a `pong`; the outbox drain); with Nagle the
//! second waits for the peer's delayed ACK of the first, about 40 ms on Linux
//! (shared/bench describes the same trap for DICOM). The connector here is
//! actix-tls's own, with the option set on every connection it makes.

use std::sync::Arc;

use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService, Resolver};
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;
use tokio::net::TcpStream;

/// actix-tls's TCP connector with `TCP_NODELAY` set on what it connects.
#[derive(Clone)]
pub struct NoDelayConnector {
    inner: ConnectorService,
}

impl Default for NoDelayConnector {
    fn default() -> Self {
        NoDelayConnector {
            inner: actix_tls::connect::Connector::new(Resolver::default()).service(),
        }
    }
}

impl Service<ConnectInfo<Uri>> for NoDelayConnector {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        Service::<ConnectInfo<Uri>>::poll_ready(&self.inner, cx)
    }

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let conn = connecting.await?;
            if let Err(e) = conn.io_ref().set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            Ok(conn)
        })
    }
}

/// An awc client builder over [`NoDelayConnector`], with rustls for `https`/`wss`.
pub fn client_builder(tls: Arc<rustls::ClientConfig>) -> awc::ClientBuilder<NoDelayConnector> {
    awc::Client::builder().connector(
        awc::Connector::new()
            .connector(NoDelayConnector::default())
            .rustls_0_23(tls),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn connections_are_made_with_tcp_nodelay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let uri: Uri = format!("http://127.0.0.1:{port}/").parse().expect("uri");
        let conn = NoDelayConnector::default()
            .call(ConnectInfo::new(uri))
            .await
            .expect("connect");
        assert!(conn.io_ref().nodelay().expect("nodelay"));
    }
}
