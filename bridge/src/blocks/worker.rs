//! The worker: takes one window's batch from the actor, encodes it on a
//! blocking thread ([`Encoder`]), then publishes block by block, paced by
//! governor at `egress_bytes_per_sec`. Only this task waits on the
//! publisher's bounded request queue, so the actor keeps taking requests
//! (and merging them) while blocks go out. Each broadcast block is recorded
//! in the [`Flight`] as it goes; a block of an artifact held since the batch
//! was made is skipped.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use schemas::topic::Topic;
use schemas::ArtifactId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::encoder::Encoder;
use super::flight::Flight;
use super::metrics::BlockMetrics;
use super::schedule::{Send, Target};
use super::BlocksConfig;
use crate::mqtt::Publisher;

/// One window's work.
pub(crate) struct Batch {
    pub items: Vec<Send>,
    /// Artifacts to forget before encoding (deleted since the last batch).
    pub forget: Vec<ArtifactId>,
    /// Devices downloading each artifact of the batch: a broadcast block's
    /// deliveries.
    pub audience: HashMap<ArtifactId, u64>,
}

/// Artifacts held (no running campaign needs them), shared by the actor
/// (which writes) and the worker (which checks before every publish).
#[derive(Debug, Default)]
pub(crate) struct Held(RwLock<HashSet<ArtifactId>>);

impl Held {
    pub fn set(&self, artifact: &ArtifactId, held: bool) {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        if held {
            g.insert(artifact.clone());
        } else {
            g.remove(artifact);
        }
    }

    pub fn contains(&self, artifact: &ArtifactId) -> bool {
        let g = self.0.read().unwrap_or_else(|p| p.into_inner());
        !g.is_empty() && g.contains(artifact)
    }
}

/// The egress limiter: `egress_bytes_per_sec`, with a burst of one window
/// (at least one largest block).
pub(crate) fn egress_limiter(cfg: &BlocksConfig) -> DefaultDirectRateLimiter {
    // validate() keeps egress within u32; fall back to the default if not.
    let rate = u32::try_from(cfg.egress_bytes_per_sec).unwrap_or(u32::MAX);
    let burst = u32::try_from(cfg.window_budget().max(MAX_BLOCK_MESSAGE)).unwrap_or(u32::MAX);
    let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota)
}

/// The largest Block message: a 64 KiB block with its proof and framing.
const MAX_BLOCK_MESSAGE: u64 = schemas::msg::limits::MAX_BLOCK_BYTES as u64;

pub(crate) struct Worker {
    pub rx: mpsc::Receiver<Batch>,
    pub encoder: Encoder,
    pub publisher: Publisher,
    pub limiter: DefaultDirectRateLimiter,
    pub metrics: Arc<BlockMetrics>,
    /// Artifacts that failed to encode, back to the actor (best effort).
    pub failed: mpsc::Sender<ArtifactId>,
    pub flight: Arc<Flight>,
    pub held: Arc<Held>,
}

impl Worker {
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let mut batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                b = self.rx.recv() => match b {
                    Some(b) => b,
                    None => return,
                },
            };
            let mut encoder = self.encoder;
            let audience = std::mem::take(&mut batch.audience);
            let job = tokio::task::spawn_blocking(move || {
                for a in &batch.forget {
                    encoder.forget(a);
                }
                let mut seen: Vec<&ArtifactId> = Vec::new();
                for s in &batch.items {
                    if !seen.contains(&&s.artifact) {
                        seen.push(&s.artifact);
                        encoder.revalidate(&s.artifact);
                    }
                }
                let out: Vec<_> = batch
                    .items
                    .into_iter()
                    .map(|s| {
                        let r = encoder.encode(&s.artifact, s.index);
                        (s, r)
                    })
                    .collect();
                (encoder, out)
            })
            .await;
            let (encoder, encoded) = match job {
                Ok(x) => x,
                Err(e) => {
                    // The encoder panicked: a bug. Its state is lost with it.
                    warn!(error = %e, "block encoder failed; block server stops");
                    return;
                }
            };
            self.encoder = encoder;
            let mut failed: Option<ArtifactId> = None;
            for (send, result) in encoded {
                let bytes = match result {
                    Ok(b) => b,
                    Err(e) => {
                        BlockMetrics::add(&self.metrics.encode_failed, 1);
                        if failed.as_ref() != Some(&send.artifact) {
                            warn!(artifact = %send.artifact, index = send.index, error = %e, "block not served");
                            let _ = self.failed.try_send(send.artifact.clone());
                            failed = Some(send.artifact.clone());
                        }
                        continue;
                    }
                };
                if let Some(n) = NonZeroU32::new(u32::try_from(bytes.len()).unwrap_or(u32::MAX)) {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        // Err only when n is over the burst, which is at
                        // least one largest block: then send unpaced.
                        _ = self.limiter.until_n_ready(n) => {}
                    }
                }
                let len = bytes.len() as u64;
                if self.held.contains(&send.artifact) {
                    // Held since the batch was made (or while this block
                    // waited for the limiter): not one more block of it.
                    continue;
                }
                let (topic, blocks, bytes_counter) = match send.target {
                    Target::Broadcast => {
                        let n = audience.get(&send.artifact).copied().unwrap_or(1);
                        // Before the publish: its copy may come back at once.
                        self.flight
                            .sent(&send.artifact, send.index, n, Instant::now());
                        (
                            Topic::ArtifactBlocks(send.artifact),
                            &self.metrics.blocks_broadcast,
                            &self.metrics.bytes_broadcast,
                        )
                    }
                    Target::Device(id) => (
                        Topic::DeviceBlocks(id),
                        &self.metrics.blocks_unicast,
                        &self.metrics.bytes_unicast,
                    ),
                };
                if self.publisher.publish(&topic, bytes, false).await.is_err() {
                    // The connection task is gone: the bridge is stopping.
                    return;
                }
                BlockMetrics::add(blocks, 1);
                BlockMetrics::add(bytes_counter, len);
            }
        }
    }
}
