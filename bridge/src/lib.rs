//! The ota bridge: the service operators run (`ota serve`). It registers
//! devices from their Hello, keeps groups and publishes each device's
//! membership, stores every Status durably before acknowledging it, and
//! takes signed operator commands. Also the operator client library the
//! CLI uses ([`client`]).
//!
//! # Layers
//!
//! Each module uses only the ones below it (`python3 tools/module_cycles.py .`
//! checks that no crate has an import cycle):
//!
//! ```text
//!  http ─────────── the read-only HTTP listener: dashboard, JSON, /metrics;
//!   │               asks core through its query inbox
//!  core  repair ─── the actor: runs every change to core's state, in order;
//!   │               the retained-topic watcher
//!   │
//!  ops ──────────── operator commands: auth, audit, dispatch, handlers;
//!   │               maps each layer's error into the reply (ops::errors)
//!  state ────────── CoreState (private fields, lent by borrow), the one
//!   │               campaign::Ctx, membership publishing, CoreError
//!  campaign ─────── specs, the pure gate, the manager (handed a Ctx)
//!   │
//!  blocks   status ─ the block server actor; the ack tracker and ingest actor
//!   │        │
//!  artifacts fleet ─ artifact store and uploads; registry, selectors, groups
//!   │        │
//!  mqtt ─────┴───── the connection, its event loop, the Publisher
//!   │
//!  director ─────── the director key: signs control messages (E2)
//!   │
//!  store  config  metrics  quiet  rt ── sled trees; ota.toml; counters; warnings once per interval; clock, blocking
//!
//!  client ───────── the operator client (`ota` CLI), on ops' reply shapes
//! ```
//!
//! - [`config`]: `ota.toml` in two steps (raw serde, then validated);
//!   `config::blocks` is the `[blocks]` section.
//! - [`store`]: sled at `data_dir/db`, one file per domain (devices, groups,
//!   status, retained, audit).
//! - [`rt`]: [`unix_now`] and running work on the blocking pool.
//! - `testutil` (tests only): ids and labels from strings, for the unit tests.
//! - `serve`: [`run`], `ota serve`'s life: start, wait for the signal or a
//!   failed actor, stop.
//! - [`metrics`]: counters, logged periodically (`counters`, the log
//!   line) and exported on `/metrics` ([`http`]).
//! - [`quiet`]: repeated warnings (bad input, refused commands) logged once
//!   per interval with a count.
//! - [`director`]: the director key and its counter, which never goes
//!   backwards (E2's signed Membership, Announcement, StatusAck).
//! - [`mqtt`]: the one rumqttc connection: options, the event loop task
//!   that routes publishes to actors, the [`mqtt::Publisher`].
//! - [`fleet`]: the registry, label selectors, groups and membership.
//! - [`identity`]: device credentials and E1's topic authority, which the
//!   embedded broker asks on every CONNECT, PUBLISH and SUBSCRIBE.
//! - [`mosquitto`]: E1 as an external Mosquitto's files, kept current.
//! - [`artifacts`]: the artifact store (sled index, content-addressed
//!   files) and verified resumable uploads.
//! - [`status`]: the pure ack tracker and the ingest actor (group commit,
//!   flush, PUBACK, retained StatusAck); what it tells core
//!   ([`status::CoreMsg`]).
//! - [`blocks`]: the block server actor (merge window, pacing, emergency
//!   priority).
//! - [`campaign`]: campaign specs, the wave gate (pure) and the manager
//!   (announcements, tallies, timers, the emergency lane).
//! - [`state`]: [`state::CoreState`], what core owns, and where core calls
//!   the campaign manager ([`state::campaigns`]).
//! - [`ops`]: operator commands: verification, audit, dispatch, the
//!   fleet, artifact and campaign handlers, [`ops::OpsError`].
//! - [`core`]: the actor owning the state and the operator commands.
//! - [`http`]: `[http]`, the read-only listener (axum): the dashboard page,
//!   `/api/...` JSON and `/metrics` (Prometheus text), bearer tokens or
//!   anonymous loopback.
//! - [`repair`]: watches the retained topics the bridge owns and
//!   overwrites what it did not publish.
//! - [`client`]: [`client::OpsClient`], signed commands over MQTT, and
//!   the operator's side of an artifact push.
//!
//! # Data flow
//!
//! ```text
//!  broker ──poll()──► mqtt::MqttLoop ──try_send──► status::Ingest ──► sled (blocking pool), flush
//!                          │                          │   └──► PUBACK, retained StatusAck
//!                          │                          ▼ CoreMsg
//!                          └─────────try_send──────► core::Core ──► state, ops, campaign
//!                       (presence, commands)          │   └──► Membership, replies, events
//!                          │                          └─try_send─► ops::uploads (blocking pool)
//!                          │                                          └──► reply
//!                          └─────────try_send──────► blocks (server ──► worker) ──► Block publishes
//!                        (requests, QoS 0)
//! ```
//!
//! docs/ARCHITECTURE.md follows a Status and a block through these, one
//! hop per step.
//!
//! Shutdown is passed in ([`run`]): the actors finish the batch in hand,
//! the connection closes cleanly, the store is flushed.

pub mod artifacts;
pub mod blocks;
pub mod campaign;
pub mod client;
pub mod config;
pub mod core;
mod counters;
pub mod director;
mod error;
pub mod fleet;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod mosquitto;
pub mod mqtt;
pub mod ops;
pub mod quiet;
pub mod repair;
pub mod rt;
mod serve;
pub mod sharded;
pub mod state;
pub mod status;
pub mod store;
#[cfg(test)]
mod testutil;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::{Config, ConfigError};
pub use metrics::{DropReason, Metrics};

use mqtt::{LinkState, MqttLoop, Publisher, Routes};
use store::{Store, StoreError};

pub use error::BridgeError;
pub use serve::run;

pub use rt::unix_now;

/// An actor task: it ends with an error only when the bridge cannot go on.
type ActorHandle = JoinHandle<Result<(), BridgeError>>;

/// How long shutdown waits for the broker to see our DISCONNECT.
const DISCONNECT_WAIT: Duration = Duration::from_secs(2);

/// A running bridge. [`run`] is start, wait for the shutdown signal, stop;
/// tests use the handle to wait until it is subscribed and to read its
/// counters.
pub struct Bridge {
    metrics: Arc<Metrics>,
    identity: Arc<identity::Identity>,
    blocks: blocks::BlockServerHandle,
    artifacts: artifacts::ArtifactStore,
    link: watch::Receiver<LinkState>,
    /// Where the HTTP listener is bound, when `[http]` is on.
    http_addr: Option<std::net::SocketAddr>,
    store: Store,
    publisher: Publisher,
    endpoint: broker::Endpoint,
    actors_token: CancellationToken,
    loop_token: CancellationToken,
    /// An actor's handle is taken out once [`Bridge::failed`] saw it end.
    actors: Vec<(&'static str, Option<ActorHandle>)>,
    mqtt_loop: JoinHandle<()>,
    egress_task: JoinHandle<()>,
    metrics_log: JoinHandle<()>,
    /// Kept for as long as the bridge runs (rumqttd cannot be stopped).
    _broker: Option<broker::EmbeddedBroker>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BridgeError> {
    rt::blocking(f)
        .await
        .map_err(|e| BridgeError::Task(e.to_string()))
}

impl Bridge {
    /// Opens the store, starts the embedded broker if configured, connects
    /// and spawns the actors. Returns once they run; the connection may
    /// still be coming up (see [`Bridge::ready`]).
    pub async fn start(mut config: Config) -> Result<Bridge, BridgeError> {
        if config.bridge.operator_keys.is_empty() {
            return Err(BridgeError::NoOperatorKeys);
        }
        let Some(director_key) = config.bridge.director_key.clone() else {
            return Err(BridgeError::NoDirectorKey);
        };
        config::client_tls::fill(&mut config).await?;
        // The HTTP listener binds first: a taken port fails the start
        // before anything else runs.
        let http_listener = match &config.http {
            Some(h) => Some(http::bind(h).await?),
            None => None,
        };
        let data_dir = config.bridge.data_dir.clone();
        let d = data_dir.clone();
        blocking(move || store::private::create_dir(&d))
            .await?
            .map_err(|source| BridgeError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
        let cache = config.bridge.cache_bytes;
        let store = blocking(move || Store::open_with_cache(&data_dir, cache)).await??;
        let (ttl, counters) = (config.bridge.control_ttl, store.counter.clone());
        let d = blocking(move || director::Director::open(director_key, ttl, counters)).await??;
        info!(kid = %hex::encode(d.kid()), ttl_secs = ttl.as_secs(), "control messages are signed with the director key");
        let director = Some(Arc::new(d));
        let db = store.db().clone();
        let (credentials, records) = blocking(move || {
            let c = identity::CredentialStore::open(&db)?;
            let all = c.all()?;
            Ok::<_, StoreError>((c, all))
        })
        .await??;
        let identity = Arc::new(identity::Identity::new(config.identity(), &records));
        info!(
            provisioned = records.len(),
            admission = ?config.devices.admission,
            "device credentials loaded"
        );

        let embedded = match &config.broker {
            broker::BrokerConfig::Embedded(e) => {
                let e = e.clone();
                let b = blocking(move || broker::start(&e)).await??;
                info!(listen = %b.addr(), tls_listen = ?b.tls_addr(), "embedded broker running");
                identity::wire_embedded(&b, &identity);
                Some(b)
            }
            broker::BrokerConfig::External(x) => {
                info!(host = %x.host, port = x.port, tls = x.tls, "using an external broker");
                None
            }
        };
        let endpoint = config.endpoint();

        let metrics = Arc::new(Metrics::default());
        let (ingress, eventloop) = rumqttc::AsyncClient::new(
            mqtt::options::ingress_options(&config),
            mqtt::options::REQUEST_QUEUE,
        );
        let (egress, egress_loop) = rumqttc::AsyncClient::new(
            mqtt::options::egress_options(&config),
            mqtt::options::REQUEST_QUEUE,
        );
        let generation = Arc::new(AtomicU64::new(0));
        let probe_client = egress.clone();
        let publisher = Publisher::new(
            egress,
            ingress,
            config.bridge.topics.clone(),
            store.retained.clone(),
            generation.clone(),
        )
        .with_identity(identity.clone())
        .with_director(director)
        .with_gate(config.mosquitto().is_some());
        let (events_tx, _) = tokio::sync::broadcast::channel(http::events::CAPACITY);
        let publisher = match &config.http {
            Some(_) => publisher.with_events(events_tx.clone()),
            None => publisher,
        };
        let (s, dir) = (store.clone(), config.bridge.data_dir.clone());
        let artifact_store =
            blocking(move || artifacts::ArtifactStore::open(s.db(), &dir)).await??;
        let actors_token = CancellationToken::new();
        // Before connecting: puts the bridge's login in Mosquitto's files.
        let sync = mosquitto::sync::start(&config, &identity, &publisher, &actors_token).await;
        let flight = Arc::new(blocks::flight::Flight::default());
        let (block_server, blocks_task) = blocks::spawn(
            config.blocks.clone(),
            artifact_store.clone(),
            identity.clone(),
            publisher.clone(),
            flight.clone(),
            actors_token.clone(),
        );
        let (ingest_tx, ingest_rx) = mpsc::channel(status::ingest::INBOX);
        let (core_mqtt_tx, core_mqtt_rx) = mpsc::channel(core::INBOX);
        let (core_tx, core_rx) = mpsc::channel(core::INBOX);
        let inboxes = http::ask::Inboxes {
            core_mqtt: core_mqtt_tx.downgrade(),
            core_internal: core_tx.downgrade(),
            status_ingest: ingest_tx.downgrade(),
        };
        let (repair_tx, repair_rx) = mpsc::channel(repair::INBOX);
        let routes = Routes {
            ingest: ingest_tx,
            core: core_mqtt_tx,
            blocks: Some(block_server.requests()), // leftovers: see mqtt::egress
            repair: Some(repair_tx),
        };
        let (link_tx, link) = watch::channel(LinkState::default());
        let loop_token = CancellationToken::new();
        use mqtt::egress::Requests;
        let probe = mqtt::egress::Probe {
            client: probe_client,
            topics: config.bridge.topics.clone(),
            sink: flight,
            requests: Some(Requests::new(block_server.requests(), &metrics)),
        };
        let egress_task = tokio::spawn(mqtt::egress::run(
            egress_loop,
            link_tx.clone(),
            Some(probe),
            loop_token.clone().cancelled_owned(),
        ));
        let mqtt_loop = tokio::spawn(
            MqttLoop::new(
                eventloop,
                publisher.clone(),
                routes,
                metrics.clone(),
                generation,
                link_tx,
            )
            .run(loop_token.clone().cancelled_owned()),
        );

        let s = store.clone();
        let tracker = blocking(move || status::Ingest::load_tracker(&s)).await??;
        let s = store.clone();
        let fleet = blocking(move || state::CoreState::load_fleet(&s)).await??;
        let s = store.clone();
        let campaigns = blocking(move || campaign::Campaigns::load(&s)).await??;
        let window = config.bridge.command_window_secs;
        let audience = publisher
            .director()
            .map(|d| schemas::keys::kid_to_hex(&d.kid()));
        let mut auth = ops::Authenticator::new(config.bridge.operator_keys.clone(), window)
            .with_audience(audience);
        let s = store.clone();
        let recent =
            blocking(move || s.audit.since(unix_now().saturating_sub(2 * window))).await??;
        let seeded = auth.seed(&recent);
        info!(
            devices = fleet.len(),
            counters = tracker.len(),
            replay_ids = seeded,
            "state loaded"
        );

        let ingest = status::Ingest {
            rx: ingest_rx,
            store: store.clone(),
            publisher: publisher.clone(),
            core: core_tx,
            metrics: metrics.clone(),
            quota: status::quota::HelloQuota::new(config.status.hellos_per_minute),
            config: config.status,
            tracker,
            ack_policy: status::ingest::AckPolicy::for_broker(&config.broker),
        };
        let (uploads, uploads_task) = ops::uploads::spawn(
            artifact_store.clone(),
            &config.bridge.release_keys,
            store.clone(),
            publisher.clone(),
            actors_token.clone(),
        );
        let (query_tx, query_rx) = mpsc::channel(ops::queries::INBOX);
        let http = match (&config.http, http_listener) {
            (Some(h), Some(bound)) => {
                let shared = Arc::new(http::Shared {
                    config: h.clone(),
                    core: http::ask::CoreLink::new(query_tx, inboxes),
                    metrics: metrics.clone(),
                    blocks: block_server.metrics().clone(),
                    identity: identity.clone(),
                    artifacts: artifact_store.clone(),
                    refusals: http::auth::Refusals::default(),
                    events: events_tx,
                    shutdown: actors_token.clone(),
                    handshakes: Default::default(),
                    broker: embedded.as_ref().map(|b| b.counters()),
                });
                Some((bound, shared))
            }
            _ => None,
        };
        let http_addr = match &http {
            Some((b, _)) => Some(b.listener.local_addr().map_err(http::HttpError::Serve)?),
            None => None,
        };
        let core = core::Core {
            state: state::CoreState::new(state::Parts {
                fleet,
                store: store.clone(),
                publisher: publisher.clone(),
                metrics: metrics.clone(),
                artifacts: artifact_store.clone(),
                blocks: Some(block_server.clone()),
                campaigns,
                identity: identity.clone(),
                credentials,
                slice: config.bridge.core_slice,
            }),
            ops: ops::Ops::new(auth, uploads),
            mqtt: core_mqtt_rx,
            internal: core_rx,
            queries: http.is_some().then_some(query_rx),
            link: link.clone(),
            waiting: None,
            held: Default::default(),
        };
        let mut actors = vec![
            (
                "status ingest",
                Some(tokio::spawn({
                    let token = actors_token.clone();
                    async move { Ok(ingest.run(token).await?) }
                })),
            ),
            (
                "core",
                Some(tokio::spawn({
                    let token = actors_token.clone();
                    async move { Ok(core.run(token).await?) }
                })),
            ),
            (
                "retained repair",
                Some(tokio::spawn({
                    let token = actors_token.clone();
                    let r = repair::Repair::new(
                        repair_rx,
                        store.clone(),
                        publisher.clone(),
                        metrics.clone(),
                    );
                    async move { Ok(r.run(token).await?) }
                })),
            ),
            (
                "artifact uploads",
                Some(tokio::spawn(async move {
                    match uploads_task.await {
                        Ok(r) => Ok(r?),
                        Err(e) => Err(BridgeError::Task(format!("artifact uploads: {e}"))),
                    }
                })),
            ),
            (
                "block server",
                Some(tokio::spawn(async move {
                    match blocks_task.await {
                        Ok(r) => Ok(r?),
                        Err(e) => Err(BridgeError::Task(format!("block server: {e}"))),
                    }
                })),
            ),
        ];
        if let Some(h) = sync {
            actors.push(("mosquitto sync", Some(h)));
        }
        if let Some(keep) = config.bridge.audit_retention {
            let (s, token) = (store.clone(), actors_token.clone());
            actors.push((
                "audit retention",
                Some(tokio::spawn(async move {
                    Ok(ops::retention::run(s, keep, token).await?)
                })),
            ));
        }
        if let Some((bound, shared)) = http {
            let token = actors_token.clone();
            actors.push((
                "http listener",
                Some(tokio::spawn(async move {
                    Ok(http::serve(bound, shared, token).await?)
                })),
            ));
        }
        let metrics_log = tokio::spawn(counters::log_every(
            metrics.clone(),
            identity.clone(),
            config.bridge.metrics_interval,
            actors_token.clone(),
        ));
        Ok(Bridge {
            metrics,
            identity,
            blocks: block_server,
            artifacts: artifact_store,
            link,
            http_addr,
            store,
            publisher,
            endpoint,
            actors_token,
            loop_token,
            actors,
            mqtt_loop,
            egress_task,
            metrics_log,
            _broker: embedded,
        })
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Who may log in, publish and subscribe; its refusal counters.
    pub fn identity(&self) -> &Arc<identity::Identity> {
        &self.identity
    }

    /// Where the bridge's broker listens (for clients in tests).
    pub fn endpoint(&self) -> &broker::Endpoint {
        &self.endpoint
    }

    /// The embedded broker's counters (logins by credential, failed TLS
    /// handshakes); `None` on an external broker.
    pub fn broker_counters(&self) -> Option<broker::BrokerCounters> {
        self._broker.as_ref().map(|b| b.counters())
    }

    /// Where the HTTP listener listens (`[http]`), with the port it got.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// The store (tests read what was stored).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The block server (its counters; priorities).
    pub fn blocks(&self) -> &blocks::BlockServerHandle {
        &self.blocks
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &artifacts::ArtifactStore {
        &self.artifacts
    }

    /// The connection state now.
    pub fn link(&self) -> LinkState {
        *self.link.borrow()
    }

    /// Waits until the bridge is connected (both ways) and subscribed.
    pub async fn ready(&self) {
        let mut rx = self.link.clone();
        // An error means the loops stopped; then there is nothing to wait for.
        let _ = rx.wait_for(|s| s.subscribed && s.egress_connected).await;
    }

    /// Completes when an actor stops on its own (an error): the bridge
    /// cannot go on and should be stopped.
    pub async fn failed(&mut self) -> BridgeError {
        let running: Vec<_> = self
            .actors
            .iter_mut()
            .enumerate()
            .filter_map(|(i, (_, h))| h.as_mut().map(|h| Box::pin(async move { (i, h.await) })))
            .collect();
        if running.is_empty() {
            return std::future::pending().await;
        }
        let ((i, result), _, _) = futures::future::select_all(running).await;
        let name = self.actors[i].0;
        self.actors[i].1 = None;
        match result {
            Ok(Ok(())) => BridgeError::Task(format!("{name} stopped unexpectedly")),
            Ok(Err(e)) => e,
            Err(e) => BridgeError::Task(format!("{name}: {e}")),
        }
    }

    /// Stops: the actors finish the batch in hand, the connection closes,
    /// the store is flushed. Returns the first error an actor had.
    pub async fn shutdown(self) -> Result<(), BridgeError> {
        self.actors_token.cancel();
        let mut first_err = None;
        for (name, h) in self.actors {
            let Some(h) = h else { continue };
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    error!(task = name, error = %e, "task failed");
                    first_err.get_or_insert(e);
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    error!(task = name, error = %e, "task panicked");
                    first_err.get_or_insert(BridgeError::Task(format!("{name}: {e}")));
                }
            }
        }
        // Let the PUBACKs and acks queued by the actors go out, then close.
        self.publisher.disconnect().await;
        let mut link = self.link.clone();
        if tokio::time::timeout(
            DISCONNECT_WAIT,
            link.wait_for(|s| !s.connected && !s.egress_connected),
        )
        .await
        .is_err()
        {
            warn!("the broker did not close the connection in time; closing it ourselves");
        }
        self.loop_token.cancel();
        let _ = self.mqtt_loop.await;
        let _ = self.egress_task.await;
        let _ = self.metrics_log.await;
        self.store.flush().await?;
        counters::log_once(&self.metrics, &self.identity, "bridge stopped");
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
