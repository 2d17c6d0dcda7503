//! The read-only HTTP listener (`[http]`): the dashboard page, a JSON API
//! and `/metrics`, with axum on the bridge's runtime. Nothing on it changes
//! state: every route is a GET that reads, commands stay signed MQTT
//! (the `ota` CLI), so the listener needs no operator key.
//!
//! - [`auth`]: bearer tokens (hashed, constant time) or anonymous loopback;
//!   refusals counted and logged once per interval.
//! - [`ask`]: core's query inbox (bounded, never waited on) and the short
//!   cache in front of it.
//! - [`api`]: the JSON routes and `/metrics`; [`scrape`] encodes the
//!   counters with `prometheus-client`.
//! - [`openapi`]: the OpenAPI document, derived from the handlers and the
//!   types they serve, at `/api/v1/openapi.json`.
//! - [`events`]: `/api/v1/events`, the bridge's operator events as
//!   Server-Sent Events (what `P/ops/events` carries).
//! - [`page`]: the dashboard, one HTML file compiled into the binary.
//! - [`https`]: the accept loop for `tls_cert`/`tls_key` (rustls through
//!   tokio-rustls, the workspace's one TLS stack).
//! - [`error`]: [`ApiError`] and its JSON responses.
//!
//! ```text
//!  GET /                                page (no data in it: no token needed)
//!  GET /metrics                         Prometheus text
//!  GET /api/v1/fleet                    counts by arch, version, standing
//!  GET /api/v1/devices                  ?group=G&label=SELECTOR&arch=A&state=online
//!                                       &version=COMPONENT:VERSION&after=ID&limit=N
//!  GET /api/v1/groups                   group list
//!  GET /api/v1/artifacts                artifact list
//!  GET /api/v1/campaigns                campaign list
//!  GET /api/v1/campaigns/{id}           campaign status
//!  GET /api/v1/campaigns/{id}/members   ?outcome=failure&after=ID&limit=N
//!  GET /api/v1/events                   Server-Sent Events: every operator event
//!  GET /api/v1/openapi.json             the OpenAPI document
//! ```
//!
//! Shutdown: the bridge's token stops accepting; requests in hand get
//! [`SHUTDOWN_WAIT`] to finish, then their connections are closed.

pub mod api;
pub mod ask;
pub mod auth;
pub mod error;
pub mod events;
pub mod https;
pub mod openapi;
pub mod page;
pub mod scrape;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::ApiError;

use crate::blocks::metrics::BlockMetrics;
use crate::config::http::HttpConfig;
use crate::identity::Identity;
use crate::metrics::Metrics;

/// How long requests in hand may take once the bridge stops.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Why the listener could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on [http] listen = \"{addr}\": {source} (another process on that port? pick another, or remove [http])")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP listener failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("[http] tls_cert/tls_key: {0}")]
    Tls(#[from] tls::TlsError),
}

/// What the handlers read.
pub struct Shared {
    pub config: HttpConfig,
    pub core: ask::CoreLink,
    pub metrics: Arc<Metrics>,
    pub blocks: Arc<BlockMetrics>,
    pub identity: Arc<Identity>,
    pub artifacts: crate::artifacts::ArtifactStore,
    pub refusals: auth::Refusals,
    /// Every operator event the bridge publishes (`/api/v1/events`).
    pub events: tokio::sync::broadcast::Sender<bytes::Bytes>,
    /// The bridge's stop: ends the event streams.
    pub shutdown: CancellationToken,
    /// Failed TLS handshakes (HTTPS only).
    pub handshakes: Arc<https::Handshakes>,
    /// The embedded broker's counters (`None` on an external broker).
    pub broker: Option<broker::BrokerCounters>,
}

/// A bound listener, and its TLS when `[http]` has `tls_cert`.
pub struct Bound {
    pub listener: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds `[http] listen` and reads the TLS files (before the bridge's
/// actors start, so that a taken port or a bad file fails the start).
pub async fn bind(cfg: &HttpConfig) -> Result<Bound, HttpError> {
    let tls = match &cfg.tls {
        None => None,
        Some(t) => {
            let (cert, key) = (t.cert.clone(), t.key.clone());
            let config = crate::rt::blocking(move || tls::server_config(&cert, &key))
                .await
                .map_err(|e| HttpError::Serve(std::io::Error::other(e.to_string())))??;
            Some(tokio_rustls::TlsAcceptor::from(config))
        }
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: cfg.listen,
            source,
        })?;
    Ok(Bound { listener, tls })
}

/// Every route that reads (a token, or anonymous loopback), by its path
/// as the OpenAPI document writes it.
pub fn routes() -> Vec<(&'static str, MethodRouter<Arc<Shared>>)> {
    vec![
        ("/metrics", get(api::metrics)),
        ("/api/v1/fleet", get(api::fleet)),
        ("/api/v1/devices", get(api::devices)),
        ("/api/v1/groups", get(api::groups)),
        ("/api/v1/artifacts", get(api::artifacts)),
        ("/api/v1/campaigns", get(api::campaigns)),
        ("/api/v1/campaigns/{id}", get(api::campaign)),
        ("/api/v1/campaigns/{id}/members", get(api::members)),
        ("/api/v1/events", get(events::stream)),
        ("/api/v1/openapi.json", get(openapi::openapi_json)),
    ]
}

/// An OpenAPI path in axum 0.7's syntax: `{id}` is `:id`.
fn axum_path(path: &str) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!(":{name}"),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Every route.
pub fn router(shared: Arc<Shared>) -> Router {
    let reads = routes()
        .into_iter()
        .fold(Router::new(), |r, (path, method)| {
            r.route(&axum_path(path), method)
        })
        .route_layer(middleware::from_fn_with_state(shared.clone(), readers_only));
    Router::new()
        .route("/", get(page::dashboard))
        .merge(reads)
        .fallback(|| async {
            ApiError::NotFound(
                "no such page: see / for the dashboard, /api/v1/... (its map: \
                 /api/v1/openapi.json) and /metrics"
                    .into(),
            )
        })
        .layer(middleware::from_fn(no_store))
        .with_state(shared)
}

/// Lets a reader through ([`auth::decide`]), or answers 401.
async fn readers_only(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth::decide(&s.config, peer.ip(), header) {
        Ok(()) => next.run(req).await,
        Err(r) => {
            s.refusals.count(r, peer.ip());
            ApiError::Unauthorized(r, s.config.allow_anonymous_loopback).into_response()
        }
    }
}

/// Live data: never cached by a browser or proxy.
async fn no_store(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Serves until `shutdown` is cancelled, then lets requests in hand finish
/// for at most [`SHUTDOWN_WAIT`].
pub async fn serve(
    bound: Bound,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let Bound { listener, tls } = bound;
    let addr = listener.local_addr().map_err(HttpError::Serve)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(listen = %addr, url = %format!("{scheme}://{addr}/"), "http listener running (read-only)");
    if let Some(acceptor) = tls {
        let handshakes = shared.handshakes.clone();
        https::serve(listener, acceptor, router(shared), handshakes, shutdown).await;
        return Ok(());
    }
    let app = router(shared).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.map_err(HttpError::Serve),
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_WAIT).await;
        } => {
            warn!(wait = ?SHUTDOWN_WAIT, "http: requests still open at shutdown; their connections are closed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_in_axum_syntax() {
        assert_eq!(
            super::axum_path("/api/v1/campaigns/{id}/members"),
            "/api/v1/campaigns/:id/members"
        );
        assert_eq!(super::axum_path("/metrics"), "/metrics");
    }
}
