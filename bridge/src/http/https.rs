//! HTTPS (`[http] tls_cert`, `tls_key`): the accept loop that axum's
//! `serve` is for plain HTTP. Each accepted stream gets [`HANDSHAKE`] to
//! finish its TLS handshake (a failed or slow one is counted in
//! [`Handshakes`] and dropped, the loop goes on), then one hyper HTTP/1.1
//! connection serving the same [`Router`], told its peer's address (the
//! auth layer asks for it). At shutdown no new stream is taken, every
//! connection is asked to finish its request in hand, and after
//! [`super::SHUTDOWN_WAIT`] the rest are dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::SHUTDOWN_WAIT;

/// How long a client has for its TLS handshake.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// The pause after a failed accept (out of file descriptors, say).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// TLS handshakes that failed or timed out (plain HTTP on the HTTPS port
/// among them).
#[derive(Debug, Default)]
pub struct Handshakes {
    pub failed: AtomicU64,
}

/// Serves `app` over TLS until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    handshakes: Arc<Handshakes>,
    shutdown: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "https: accept failed; trying again");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        conns.spawn(connection(
            tcp,
            peer,
            acceptor.clone(),
            app.clone(),
            handshakes.clone(),
            shutdown.clone(),
        ));
    }
    let drained = tokio::time::timeout(SHUTDOWN_WAIT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(wait = ?SHUTDOWN_WAIT, "https: requests still open at shutdown; their connections are closed");
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    handshakes: Arc<Handshakes>,
    shutdown: CancellationToken,
) {
    let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            handshakes.failed.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %peer, error = %e, "https: handshake failed");
            return;
        }
        Err(_) => {
            handshakes.failed.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %peer, "https: handshake timed out");
            return;
        }
    };
    let app = app.layer(axum::Extension(ConnectInfo(peer)));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(peer = %peer, error = %e, "https: connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
