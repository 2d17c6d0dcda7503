//! The block server: answers BlockRequests as PROTOCOL.md "What the bridge
//! promises" says. Requests within a merge window are merged; each wanted
//! block goes out once per window, on `P/artifacts/{a}/blocks` when several
//! devices want it and on `P/devices/{id}/blocks` when one does; output is
//! paced to a byte budget; emergency artifacts go first but leave a tenth
//! of the egress to the others; memory stays bounded whatever devices ask.
//!
//! # Layout
//!
//! - [`config`]: [`BlocksConfig`], the `[blocks]` section.
//! - [`schedule`]: [`schedule::Scheduler`], the pure merge/priority/budget
//!   logic, with its [`wants`] bitset.
//! - [`server`]: the actor: request checks, per-device rate limit, counters,
//!   one batch per window, sized to the egress and fan-out budgets.
//! - [`audience`]: who downloads what lately (the fan-out estimate).
//! - [`worker`]: encodes a batch off the runtime and publishes it, paced.
//! - [`encoder`] and [`cache`]: Merkle trees, file reads, encoded-block LRU.
//! - [`metrics`]: [`BlockMetrics`] and [`Refusal`].
//! - [`downloader`]: a minimal protocol-speaking device download loop
//!   (raw rumqttc), for the benchmark and tests.
//! - [`bench`]: N devices downloading one image at once, measured.
//!
//! ```text
//!  MqttLoop ──Incoming (request)──► server ──want──► Scheduler
//!  core/campaigns ──BlockEvent────►   │ every merge window: take(budget)
//!                                     ▼
//!                       worker ──spawn_blocking──► Encoder (tree, file, LRU)
//!                         │ governor (bytes/s)
//!                         ▼
//!                     Publisher ──► P/artifacts/{a}/blocks | P/devices/{id}/blocks
//! ```

pub mod audience;
pub mod bench;
pub mod cache;
pub mod config;
pub mod downloader;
pub mod encoder;
pub mod metrics;
pub mod schedule;
pub mod server;
pub mod wants;
pub(crate) mod worker;

use std::sync::Arc;

use bytes::Bytes;
use schemas::{ArtifactId, DeviceId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use config::{BlocksConfig, BlocksConfigError};
pub use metrics::{BlockMetrics, BlockSnapshot, Refusal};
pub use schedule::{ScheduleConfig, Scheduler, Target};

use crate::artifacts::ArtifactStore;
use crate::mqtt::{Incoming, Publisher};

/// Capacity of the request inbox: more than the broker's in-flight window
/// of unacknowledged QoS 1 messages to the bridge.
pub const REQUEST_INBOX: usize = 1024;
/// Capacity of the control inbox.
pub const EVENT_INBOX: usize = 256;

/// What other parts of the bridge tell the block server.
#[derive(Debug, Clone)]
pub enum BlockEvent {
    /// A BlockRequest's payload from `device` (the MQTT loop sends
    /// [`Incoming`]s on [`BlockServerHandle::requests`] instead).
    Request { device: DeviceId, payload: Bytes },
    /// An emergency campaign uses `artifact` (or no longer does).
    SetPriority {
        artifact: ArtifactId,
        emergency: bool,
    },
    /// `artifact` was deleted: drop its wants, tree and cached blocks.
    ArtifactRemoved(ArtifactId),
}

/// How to reach the block server. Cheap to clone.
#[derive(Clone)]
pub struct BlockServerHandle {
    events: mpsc::Sender<BlockEvent>,
    requests: mpsc::Sender<Incoming>,
    metrics: Arc<BlockMetrics>,
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
}

/// Starts the block server (actor and worker). It stops when `shutdown` is
/// cancelled or the publisher's connection task is gone; the handle
/// completes after both tasks ended.
pub fn spawn(
    cfg: BlocksConfig,
    artifacts: ArtifactStore,
    publisher: Publisher,
    shutdown: CancellationToken,
) -> (
    BlockServerHandle,
    JoinHandle<Result<(), crate::BridgeError>>,
) {
    let metrics = Arc::new(BlockMetrics::default());
    let (events_tx, events) = mpsc::channel(EVENT_INBOX);
    let (requests_tx, requests) = mpsc::channel(REQUEST_INBOX);
    // One batch queued while the worker publishes the previous one.
    let (batches, batches_rx) = mpsc::channel(1);
    let (failed_tx, failed) = mpsc::channel(64);
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
    };
    let server = server::Server {
        scheduler: Scheduler::new(ScheduleConfig {
            broadcast: cfg.broadcast,
            max_devices: cfg.max_devices,
        }),
        audience: audience::Audience::new(cfg.max_devices, server::AUDIENCE_TTL),
        cfg,
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
            .map_err(|e| crate::BridgeError::Task(format!("block worker: {e}")))
    });
    (
        BlockServerHandle {
            events: events_tx,
            requests: requests_tx,
            metrics,
        },
        task,
    )
}
