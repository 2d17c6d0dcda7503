//! The block server: answers BlockRequests as PROTOCOL.md "What the bridge
//! promises" says. Requests within a merge window are merged; each wanted
//! block goes out once per window, on `P/artifacts/{a}/blocks` when several
//! devices want it and on `P/devices/{id}/blocks` when one does (a block
//! broadcast less than `resend_after_ms` ago waits until that broadcast is
//! that old, so late askers share one more pass); output is
//! paced by what the broker delivers (measured through a probe subscription,
//! [`flight`], by the [`pacing`] controller) and by a byte budget;
//! emergency artifacts go first but leave a tenth of the egress to the
//! others; memory stays bounded whatever devices ask. Artifacts that no
//! running campaign needs any more (paused, halted, aborted) are held: their
//! wants are dropped and their requests refused until a campaign serves
//! them again.
//!
//! # Layout
//!
//! - [`BlocksConfig`]: the `[blocks]` section (it lives in `config::blocks`).
//! - [`schedule`]: [`schedule::Scheduler`], the pure merge/priority/budget
//!   logic (given the time by the actor), with its [`wants`] bitset and
//!   the recent broadcasts it defers re-sends by.
//! - [`server`]: the actor: request checks (who may fetch what, E1),
//!   per-device rate limit, counters, one batch per window, sized by the
//!   pacer and the egress budget.
//! - [`pacing`]: [`pacing::Pacer`], the pure controller: deliveries per
//!   window from the broker's measured delay and throughput.
//! - [`flight`]: [`flight::Flight`], the broadcast blocks the broker has
//!   not delivered yet, filled by the worker and the egress connection.
//! - [`audience`]: who downloads what lately (the fan-out estimate).
//! - [`worker`]: encodes a batch off the runtime and publishes it, paced.
//! - [`encoder`] and [`cache`]: Merkle trees, file reads, encoded-block LRU.
//! - [`metrics`]: [`BlockMetrics`] and [`Refusal`].
//!
//! The benchmark (N devices downloading one image) and its minimal
//! protocol-speaking downloader are the harness's (`tests/`), not the
//! service's.
//!
//! ```text
//!  MqttLoop ──Incoming (request)──► server ──want──► Scheduler
//!  core/campaigns ──BlockEvent────►   │ every merge window: take(budget, now)
//!                                     ▼
//!                       worker ──spawn_blocking──► Encoder (tree, file, LRU)
//!                         │ governor (bytes/s)          ▲ Pacer (deliveries/window)
//!                         ▼                             │
//!                     Publisher ──► P/artifacts/{a}/blocks ──► broker ──► devices
//!                         Flight::sent                  └──► egress probe: Flight::seen
//! ```

pub mod audience;
pub mod cache;
pub mod encoder;
pub mod flight;
pub mod metrics;
pub mod pacing;
pub mod schedule;
pub mod server;
pub mod wants;
pub(crate) mod worker;

use std::sync::Arc;

use schemas::ArtifactId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use crate::config::blocks::{BlocksConfig, BlocksConfigError};
pub use metrics::{BlockMetrics, BlockSnapshot, Refusal};
pub use schedule::{ScheduleConfig, Scheduler, Target};

use crate::artifacts::ArtifactStore;
use crate::identity::Identity;
use crate::mqtt::{Incoming, Publisher};

/// Capacity of the request inbox: more than the broker's in-flight window
/// of unacknowledged QoS 1 messages to the bridge.
pub const REQUEST_INBOX: usize = 1024;
/// Capacity of the control inbox.
pub const EVENT_INBOX: usize = 256;

/// What other parts of the bridge tell the block server (requests come
/// from the MQTT loop on [`BlockServerHandle::requests`]).
#[derive(Debug, Clone)]
pub enum BlockEvent {
    /// An emergency campaign uses `artifact` (or no longer does).
    SetPriority {
        artifact: ArtifactId,
        emergency: bool,
    },
    /// `artifact` was deleted: drop its wants, tree and cached blocks.
    ArtifactRemoved(ArtifactId),
    /// No running campaign needs `artifact` now (`held`: its campaigns
    /// paused, halted or aborted): drop its wants, publish nothing more of
    /// it, refuse its requests. `held: false` serves it again.
    Hold { artifact: ArtifactId, held: bool },
}

/// Why the block server stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum BlocksError {
    #[error("the block worker failed: {0}")]
    Worker(String),
}

/// How to reach the block server. Cheap to clone.
#[derive(Clone)]
pub struct BlockServerHandle {
    events: mpsc::Sender<BlockEvent>,
    requests: mpsc::Sender<Incoming>,
    metrics: Arc<BlockMetrics>,
    flight: Arc<flight::Flight>,
}

impl BlockServerHandle {
    /// The inbox for `Topic::Request` messages: `Routes::blocks`.
    pub fn requests(&self) -> mpsc::Sender<Incoming> {
        self.requests.clone()
    }

    /// Sends an event, waiting for room. False when the server stopped.
    pub async fn send(&self, event: BlockEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// Marks `artifact` as an emergency's (its blocks go first) or not.
    pub async fn set_priority(&self, artifact: ArtifactId, emergency: bool) -> bool {
        self.send(BlockEvent::SetPriority {
            artifact,
            emergency,
        })
        .await
    }

    /// Holds (or serves again) an artifact no running campaign needs.
    pub async fn hold(&self, artifact: ArtifactId, held: bool) -> bool {
        self.send(BlockEvent::Hold { artifact, held }).await
    }

    /// Tells the server an artifact is gone, without waiting. If the inbox
    /// is full the server still finds out at its next read of the store.
    pub fn artifact_removed(&self, artifact: ArtifactId) {
        if let Err(e) = self.events.try_send(BlockEvent::ArtifactRemoved(artifact)) {
            warn!(error = %e, "block server not told of a deleted artifact");
        }
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.metrics
    }

    /// What the probe saw of the broker's deliveries.
    pub fn flight(&self) -> &Arc<flight::Flight> {
        &self.flight
    }
}

/// Starts the block server (actor and worker). It stops when `shutdown` is
/// cancelled or the publisher's connection task is gone; the handle
/// completes after both tasks ended. `flight` is filled by the egress
/// connection's probe subscription (the publishing connection's egress). Unless
/// `[devices] admission = "open"`, `identity` decides who may fetch what
/// ([`Identity::may_fetch`]).
pub fn spawn(
    cfg: BlocksConfig,
    artifacts: ArtifactStore,
    identity: Arc<Identity>,
    publisher: Publisher,
    flight: Arc<flight::Flight>,
    shutdown: CancellationToken,
) -> (BlockServerHandle, JoinHandle<Result<(), BlocksError>>) {
    let metrics = Arc::new(BlockMetrics::default());
    let (events_tx, events) = mpsc::channel(EVENT_INBOX);
    let (requests_tx, requests) = mpsc::channel(REQUEST_INBOX);
    // One batch queued while the worker publishes the previous one.
    let (batches, batches_rx) = mpsc::channel(1);
    let (failed_tx, failed) = mpsc::channel(64);
    let held = Arc::new(worker::Held::default());
    let worker = worker::Worker {
        rx: batches_rx,
        encoder: encoder::Encoder::new(
            artifacts.clone(),
            cfg.max_loaded_artifacts,
            cfg.cache_bytes,
        ),
        publisher: publisher.clone(),
        limiter: worker::egress_limiter(&cfg),
        metrics: metrics.clone(),
        failed: failed_tx,
        flight: flight.clone(),
        held: held.clone(),
    };
    let server = server::Server {
        scheduler: Scheduler::new(ScheduleConfig {
            broadcast: cfg.broadcast,
            max_devices: cfg.max_devices,
            resend_after: cfg.resend_after(),
        }),
        audience: audience::Audience::new(cfg.max_devices, server::AUDIENCE_TTL),
        pacer: pacing::Pacer::new(cfg.merge_window(), cfg.fanout_per_sec),
        flight: flight.clone(),
        held,
        cfg,
        identity,
        store: artifacts,
        publisher,
        metrics: metrics.clone(),
        events,
        requests,
        batches,
        failed,
    };
    let task = tokio::spawn(async move {
        let worker_task = tokio::spawn(worker.run(shutdown.clone()));
        server.run(shutdown).await;
        // The server dropped the batch sender: the worker ends after its batch.
        worker_task
            .await
            .map_err(|e| BlocksError::Worker(e.to_string()))
    });
    (
        BlockServerHandle {
            events: events_tx,
            requests: requests_tx,
            metrics,
            flight,
        },
        task,
    )
}
