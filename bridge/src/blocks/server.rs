//! The block server actor: takes BlockRequests (authorised, checked, rate
//! limited, counted), feeds the [`Scheduler`], and once per merge window hands the
//! window's blocks to the worker. It never waits on the network: a
//! request's PUBACK is queued on the publisher, and when the worker is
//! still busy with the previous window the blocks simply stay pending,
//! merging with newer requests. Each window's size comes from the
//! [`Pacer`] (deliveries the broker can take, from the probe's [`Flight`])
//! and the egress budget.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use schemas::msg::{BlockRequest, WireMessage};
use schemas::topic::Topic;
use schemas::{ArtifactId, DeviceId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::audience::Audience;
use super::flight::{Flight, FlightTotals};
use super::metrics::{BlockMetrics, Refusal};
use super::pacing::Pacer;
use super::schedule::{Scheduler, Shape, Wanted};
use super::worker::{Batch, Held};
use super::{BlockEvent, BlocksConfig};
use crate::artifacts::ArtifactStore;
use crate::identity::{Admission, Identity, Refused};
use crate::mqtt::{Incoming, Publisher};

/// Most blocks handed to the worker per window, whatever the budget.
const MAX_BATCH: usize = 4096;
/// How often the per-device limiter forgets quiet devices.
const LIMITER_SWEEP: Duration = Duration::from_secs(10);
/// A flood of made-up device ids sweeps the limiter early past this.
const LIMITER_MAX_KEYS: usize = 100_000;
/// Artifact shapes remembered (a sled read on a miss).
const MAX_SHAPES: usize = 1024;
/// How long a request keeps a device in an artifact's audience.
pub(crate) const AUDIENCE_TTL: Duration = Duration::from_secs(60);
/// One log line per refusal reason per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct Server {
    pub cfg: BlocksConfig,
    pub store: ArtifactStore,
    /// Who may fetch what (PROTOCOL.md E1), asked unless admission is
    /// `open` (version 1: anyone fetches anything).
    pub identity: Arc<Identity>,
    pub publisher: Publisher,
    pub metrics: Arc<BlockMetrics>,
    pub events: mpsc::Receiver<BlockEvent>,
    pub requests: mpsc::Receiver<Incoming>,
    pub batches: mpsc::Sender<Batch>,
    pub failed: mpsc::Receiver<ArtifactId>,
    pub scheduler: Scheduler,
    pub audience: Audience,
    pub pacer: Pacer,
    pub flight: Arc<Flight>,
    pub held: Arc<Held>,
}

/// Per-device request limiter.
fn device_limiter(cfg: &BlocksConfig) -> DefaultKeyedRateLimiter<DeviceId> {
    let rate = NonZeroU32::new(cfg.device_requests_per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(cfg.device_request_burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

/// Rate-limited warnings: the first of each reason, then one every
/// [`LOG_EVERY`] with how many were not logged.
#[derive(Default)]
struct LogLimiter {
    last: HashMap<Refusal, (Instant, u64)>,
}

impl LogLimiter {
    /// `Some(suppressed since the last line)` when this one may be logged.
    fn allow(&mut self, r: Refusal, now: Instant) -> Option<u64> {
        match self.last.get_mut(&r) {
            Some((at, suppressed)) if now.duration_since(*at) < LOG_EVERY => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                *at = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                self.last.insert(r, (now, 0));
                Some(0)
            }
        }
    }
}

impl Server {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let limiter = device_limiter(&self.cfg);
        let mut logs = LogLimiter::default();
        let mut shapes: HashMap<ArtifactId, Shape> = HashMap::new();
        let mut forget: Vec<ArtifactId> = Vec::new();
        let mut tick = tokio::time::interval(self.cfg.merge_window());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(LIMITER_SWEEP);
        let mut pace = PaceState::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(m) = self.requests.recv() => {
                    match &m.topic {
                        Topic::Request(device) => {
                            let device = device.clone();
                            self.on_request(&device, &m.payload, &limiter, &mut shapes, &mut logs);
                        }
                        other => debug!(topic = ?other, "not a request topic; ignored"),
                    }
                    // Nothing to make durable: acknowledge at once.
                    self.publisher.ack(m.ack);
                }
                Some(ev) = self.events.recv() => match ev {
                    BlockEvent::SetPriority { artifact, emergency } => {
                        debug!(artifact = %artifact, emergency, "block priority set");
                        self.scheduler.set_emergency(&artifact, emergency);
                    }
                    BlockEvent::Hold { artifact, held } => {
                        debug!(artifact = %artifact, held, "block serving held or resumed");
                        self.held.set(&artifact, held);
                        if held {
                            self.scheduler.drop_wants(&artifact);
                            self.audience.remove_artifact(&artifact);
                        }
                    }
                    BlockEvent::ArtifactRemoved(artifact) => {
                        self.scheduler.remove_artifact(&artifact);
                        self.audience.remove_artifact(&artifact);
                        shapes.remove(&artifact);
                        forget.push(artifact);
                    }
                },
                Some(artifact) = self.failed.recv() => {
                    // Not servable now (deleted, damaged): drop its wants;
                    // a later request reads the store again.
                    self.scheduler.remove_artifact(&artifact);
                    shapes.remove(&artifact);
                    forget.push(artifact);
                }
                _ = tick.tick() => self.dispatch(&mut forget, &mut pace),
                _ = sweep.tick() => {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                    self.audience.prune(Instant::now());
                }
            }
            if limiter.len() > LIMITER_MAX_KEYS {
                limiter.retain_recent();
            }
        }
    }

    /// Hands this window's blocks to the worker, if it is ready for them.
    /// The pacer hears of every window, busy or idle.
    fn dispatch(&mut self, forget: &mut Vec<ArtifactId>, pace: &mut PaceState) {
        let now = Instant::now();
        let w = self.flight.take_window(now, &mut pace.last);
        let allowance = self.pacer.on_window(&w, pace.limited, now);
        debug!(
            rate = allowance.rate as u64,
            allowed = allowance.deliveries,
            window = allowance.window,
            bw = self.pacer.bandwidth() as u64,
            delay_ms = w.delay.as_millis() as u64,
            in_flight = w.in_flight,
            delivered = w.delivered,
            lost = w.lost,
            ack_ms = w.max_ack.as_millis() as u64,
            limited = pace.limited,
            "pace window"
        );
        BlockMetrics::set(&self.metrics.pace_rate, allowance.rate as u64);
        BlockMetrics::set(&self.metrics.pace_backoffs, self.pacer.backoffs());
        pace.limited = false;
        if self.scheduler.is_idle() && forget.is_empty() {
            return;
        }
        let Ok(permit) = self.batches.try_reserve() else {
            // The worker is still publishing: keep merging.
            return;
        };
        let items = self
            .scheduler
            .take(self.budget(allowance.deliveries), MAX_BATCH, now);
        // Held back by the allowance, not deferred (a deferred block waits
        // for its time, not for the broker).
        pace.limited = self.scheduler.has_ready();
        if items.is_empty() && forget.is_empty() {
            return;
        }
        let mut audience = HashMap::new();
        for s in &items {
            audience
                .entry(s.artifact.clone())
                .or_insert_with(|| self.audience.size(&s.artifact));
        }
        permit.send(Batch {
            items,
            forget: std::mem::take(forget),
            audience,
        });
    }

    /// This window's byte budget: the egress budget, and no more broadcast
    /// blocks than `deliveries` (the pacer's) to the largest audience, and
    /// the `fanout_bytes_per_sec` ceiling if set (a fraction of a block
    /// carries over in the scheduler's credit). A unicast block is one
    /// delivery.
    fn budget(&self, deliveries: u64) -> u64 {
        let egress = self.cfg.window_budget();
        let fanout = self
            .scheduler
            .pending_artifacts()
            .map(|(a, shape)| {
                let audience = if self.cfg.broadcast {
                    self.audience.size(a)
                } else {
                    1
                };
                let by_count = deliveries.saturating_mul(shape.cost) / audience;
                let by_bytes = self
                    .cfg
                    .window_fanout_bytes()
                    .map_or(u64::MAX, |b| b / audience);
                by_count.min(by_bytes)
            })
            .min()
            .unwrap_or(egress);
        egress.min(fanout).max(1)
    }

    fn on_request(
        &mut self,
        device: &DeviceId,
        payload: &[u8],
        limiter: &DefaultKeyedRateLimiter<DeviceId>,
        shapes: &mut HashMap<ArtifactId, Shape>,
        logs: &mut LogLimiter,
    ) {
        let mut refuse = |r: Refusal, artifact: Option<&ArtifactId>, detail: &str| {
            self.metrics.refuse(r);
            if let Some(suppressed) = logs.allow(r, Instant::now()) {
                warn!(
                    device = %device,
                    artifact = artifact.map(|a| a.as_str()).unwrap_or(""),
                    reason = r.as_str(),
                    detail,
                    suppressed,
                    "block request refused"
                );
            }
        };
        // Cheapest first: a flooding device costs a hash lookup or two.
        // Only admitted devices get a limiter key or a place in an
        // audience: invented ids (which the broker's ACLs keep out anyway)
        // neither fill the limiter nor swell the fan-out estimate.
        let authorise = *self.identity.admission() != Admission::Open;
        if authorise && !self.identity.takes_part(device) {
            return self.not_announced(device, None, "the device is not admitted");
        }
        if limiter.check_key(device).is_err() {
            return refuse(Refusal::RateLimited, None, "over the device's request rate");
        }
        let req = match BlockRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => return refuse(Refusal::Malformed, None, &e.to_string()),
        };
        if authorise && !self.identity.may_fetch(device, &req.artifact) {
            return self.not_announced(
                device,
                Some(&req.artifact),
                "no campaign announces this artifact to the device",
            );
        }
        if self.held.contains(&req.artifact) {
            return refuse(
                Refusal::Held,
                Some(&req.artifact),
                "no running campaign serves this artifact now (paused, halted or aborted)",
            );
        }
        let shape = match shapes.get(&req.artifact) {
            Some(s) => *s,
            None => match self.store.get(&req.artifact) {
                Ok(Some(record)) => {
                    let s = shape_of(&req.artifact, record.blocks, record.block_size);
                    if shapes.len() >= MAX_SHAPES {
                        shapes.clear();
                    }
                    shapes.insert(req.artifact.clone(), s);
                    s
                }
                Ok(None) => {
                    return refuse(Refusal::UnknownArtifact, Some(&req.artifact), "not stored")
                }
                Err(e) => {
                    return refuse(
                        Refusal::UnknownArtifact,
                        Some(&req.artifact),
                        &e.to_string(),
                    )
                }
            },
        };
        if req.offset >= shape.blocks {
            return refuse(
                Refusal::PastEnd,
                Some(&req.artifact),
                "offset past the last block",
            );
        }
        let blocks = shape.blocks;
        let mut wanted = req.wanted().take_while(|i| *i < blocks).peekable();
        if wanted.peek().is_none() {
            return refuse(
                Refusal::Empty,
                Some(&req.artifact),
                "the bitmap asks for no block",
            );
        }
        match self
            .scheduler
            .want(device, &req.artifact, shape, wanted, Instant::now())
        {
            Wanted::Added { merged, .. } => {
                self.audience.saw(&req.artifact, device, Instant::now());
                BlockMetrics::add(&self.metrics.requests, 1);
                BlockMetrics::add(&self.metrics.merged, u64::from(merged));
            }
            Wanted::Overloaded => refuse(
                Refusal::Overloaded,
                Some(&req.artifact),
                "too many devices at once",
            ),
        }
    }
}

impl Server {
    /// Counts a request the identity does not allow. It is logged by the
    /// identity's refusal counters, once per interval with the others.
    fn not_announced(&self, device: &DeviceId, artifact: Option<&ArtifactId>, why: &str) {
        self.metrics.refuse(Refusal::NotAnnounced);
        let what = match artifact {
            Some(a) => format!("block request for {a}: {why}"),
            None => format!("block request: {why}"),
        };
        self.identity
            .refusals()
            .count(Refused::Blocks, device.as_str(), &what);
    }
}

/// The pacer's memory between windows.
#[derive(Default)]
struct PaceState {
    /// The probe's totals at the last window.
    last: FlightTotals,
    /// The last window's allowance held blocks back.
    limited: bool,
}

/// The scheduler's view of an artifact: its block count, and what one
/// encoded block costs (data, a 32-byte proof entry per tree level, the
/// artifact id and CBOR framing).
pub(crate) fn shape_of(artifact: &ArtifactId, blocks: u32, block_size: u32) -> Shape {
    let depth = u64::from(32 - blocks.saturating_sub(1).leading_zeros());
    Shape {
        blocks,
        cost: u64::from(block_size) + 34 * depth + artifact.as_str().len() as u64 + 48,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_covers_the_encoded_block() {
        let a = ArtifactId::new("fw-1.0.0-esp32").unwrap();
        for blocks in [1u32, 2, 3, 256, 1000, 16384] {
            let tree_depth = (blocks as f64).log2().ceil() as usize;
            let b = schemas::msg::Block {
                artifact: a.clone(),
                index: blocks - 1,
                data: vec![0; 4096],
                proof: vec![[0; 32]; tree_depth],
            };
            let cost = shape_of(&a, blocks, 4096).cost;
            let real = b.encode().len() as u64;
            assert!(
                cost >= real && cost < real + 64,
                "{blocks} blocks: cost {cost}, real {real}"
            );
        }
    }

    #[test]
    fn log_limiter_counts_what_it_holds_back() {
        let mut l = LogLimiter::default();
        let t = Instant::now();
        assert_eq!(l.allow(Refusal::Malformed, t), Some(0));
        assert_eq!(l.allow(Refusal::Malformed, t), None);
        assert_eq!(l.allow(Refusal::Malformed, t), None);
        assert_eq!(l.allow(Refusal::PastEnd, t), Some(0));
        assert_eq!(l.allow(Refusal::Malformed, t + LOG_EVERY), Some(2));
    }
}
