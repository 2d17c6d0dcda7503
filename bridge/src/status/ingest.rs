//! The status ingest actor: Hello and Status in one ordered inbox, stored
//! with group commit, acknowledged only once durable.
//!
//! A batch takes whatever is in the inbox, and keeps taking while more
//! arrives (checked after yielding to the event loop a few times), until
//! the inbox stays empty, `max_batch` messages are in, or `commit_window`
//! has passed since its first message. Then, in this order:
//!
//! 1. on the blocking pool ([`super::commit`], sled never runs on an async
//!    thread), every message is applied: a Hello sets the device's ack
//!    counter (its epoch and outbox); a Status is stored as its exact bytes
//!    (a duplicate once, a conflict aside) and its campaign state updated;
//! 2. there too, each touched device's counter and StatusAck are written;
//! 3. one `flush_async` makes all of it durable;
//! 4. each message gets its MQTT PUBACK, and each touched device its
//!    retained StatusAck, once;
//! 5. registry news (Hellos, last seen, campaign state changes) go to core.
//!
//! **When the PUBACK goes.** The device's guarantee is the StatusAck, which
//! always waits for the flush. The MQTT PUBACK only matters to a broker
//! that keeps the bridge's session across a bridge crash: with an external
//! broker it is sent after the flush (step 4), so reports it holds survive
//! a `kill -9` of the bridge. The embedded broker lives in the bridge's
//! process and keeps sessions in memory only, so holding the PUBACK back
//! protects nothing there and would cap each commit at rumqttd's fixed
//! window of 100 unacknowledged deliveries: with it a message is
//! acknowledged when it enters a batch ([`AckPolicy::OnReceipt`]), which
//! still bounds what the broker sends ahead.
//!
//! A message that does not decode, or a Status from a device that never
//! said Hello, is counted, logged and acknowledged, never stored. A store
//! error stops the actor (and the bridge): nothing unstored is ever
//! acknowledged with a StatusAck, and an external broker redelivers what
//! was not PUBACKed after the restart.

use std::sync::Arc;

use schemas::msg::Hello;
use schemas::topic::Topic;
use schemas::DeviceId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::commit::{Applied, Applier};
use super::quota::HelloQuota;
use super::tracker::{AckTracker, DeviceAcks};
use super::{CoreMsg, HelloEffect, StatusUpdate};
use crate::config::StatusConfig;
use crate::metrics::Metrics;
use crate::mqtt::{Incoming, PublishError, Publisher};
use crate::store::{Store, StoreError};

/// How many times a batch yields to the event loop for more messages
/// before it commits (tokio's timers are too coarse, at 1 ms, for this).
pub const IDLE_YIELDS: usize = 4;
/// The inbox: more than any broker's in-flight window, so the event loop's
/// `try_send` normally succeeds.
pub const INBOX: usize = 8192;
/// Most Hellos in one message to core (a registration costs core about
/// 0.1 ms at 100,000 devices, 0.2 ms at 1,000,000: a part of 256 was 50
/// to 150 ms on a busy machine at that size, issue 19).
pub const CORE_HELLOS: usize = 128;
/// Most status updates, and most devices seen, in one message to core
/// (at 1,000,000 devices a batch of 4,096 of each held core for 50 to
/// 700 ms, issue 19).
pub const CORE_UPDATES: usize = 512;

/// A part of a batch for core: Hellos, status updates, devices seen.
type Part = (
    Vec<(DeviceId, Hello, HelloEffect)>,
    Vec<StatusUpdate>,
    Vec<DeviceId>,
);

/// A committed batch in the parts core takes it in, in order: the Hellos,
/// [`CORE_HELLOS`] at a time, then the updates and seen devices,
/// [`CORE_UPDATES`] of each at a time. At least one part, unless all
/// three are empty.
fn parts(
    hellos: Vec<(DeviceId, Hello, HelloEffect)>,
    updates: Vec<StatusUpdate>,
    seen: Vec<DeviceId>,
) -> Vec<Part> {
    let mut out: Vec<Part> = chunks(hellos, CORE_HELLOS)
        .into_iter()
        .map(|h| (h, Vec::new(), Vec::new()))
        .collect();
    let updates = chunks(updates, CORE_UPDATES);
    let seen = chunks(seen, CORE_UPDATES);
    let n = updates.len().max(seen.len());
    let mut updates = updates.into_iter();
    let mut seen = seen.into_iter();
    for _ in 0..n {
        out.push((
            Vec::new(),
            updates.next().unwrap_or_default(),
            seen.next().unwrap_or_default(),
        ));
    }
    out
}

/// `v` in order, in pieces of at most `n` (none for an empty `v`).
fn chunks<T>(v: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(v.len().div_ceil(n));
    let mut items = v.into_iter().peekable();
    while items.peek().is_some() {
        out.push(items.by_ref().take(n).collect());
    }
    out
}

/// Why the ingest actor stopped: its store or its connection failed.
/// Nothing unstored was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the status commit task failed: {0}")]
    Task(String),
}

/// The actor.
pub struct Ingest {
    pub(crate) rx: mpsc::Receiver<Incoming>,
    pub(crate) store: Store,
    pub(crate) publisher: Publisher,
    pub(crate) core: mpsc::Sender<CoreMsg>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: StatusConfig,
    pub(crate) tracker: AckTracker,
    /// Hellos per device and minute (`config.hellos_per_minute`).
    pub(crate) quota: HelloQuota,
    pub(crate) ack_policy: AckPolicy,
}

/// When a message's MQTT PUBACK is sent (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPolicy {
    /// After the batch is flushed: the broker keeps what is not stored.
    AfterFlush,
    /// When the message enters a batch: for a broker that dies with us.
    OnReceipt,
}

impl AckPolicy {
    /// The policy for a broker config.
    pub fn for_broker(b: &broker::BrokerConfig) -> Self {
        match b {
            broker::BrokerConfig::Embedded(_) => AckPolicy::OnReceipt,
            broker::BrokerConfig::External(_) => AckPolicy::AfterFlush,
        }
    }
}

impl Ingest {
    /// Loads every device's ack counter from the store. Blocks briefly
    /// (one scan of the epochs tree): call before spawning.
    pub fn load_tracker(store: &Store) -> Result<AckTracker, StoreError> {
        let mut t = AckTracker::new();
        for (id, r) in store.status.epochs()? {
            let mut acks = DeviceAcks::new(r.epoch.clone(), r.base);
            acks.next = r.next.max(r.base);
            // Reports stored above a gap when the bridge stopped.
            for seq in
                store
                    .status
                    .seqs_from(&id, &r.epoch, acks.next, super::tracker::MAX_ABOVE)?
            {
                acks.stored(seq);
            }
            t.restore(id, acks);
        }
        Ok(t)
    }

    /// Runs until `shutdown` is cancelled; the batch in hand is finished
    /// first.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), IngestError> {
        self.republish().await?;
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                m = self.rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            let started = Instant::now();
            let batch = self.gather(first).await?;
            self.commit(batch, started).await?;
        }
        debug!("status ingest stopped");
        Ok(())
    }

    /// Republishes the retained StatusAcks from the store, before anything
    /// new is acknowledged (so an old value never lands after a new one).
    async fn republish(&self) -> Result<(), IngestError> {
        let mut n = 0u64;
        let store = self.store.clone();
        let retained = crate::rt::blocking(move || store.retained.all())
            .await
            .map_err(|e| IngestError::Task(e.to_string()))??;
        for (topic, payload) in retained {
            let Ok(t @ Topic::Ack(_)) = self.publisher.topics().parse(&topic) else {
                continue;
            };
            // Signed afresh, so acks stored unsigned (or by an earlier
            // director key) reach devices that check them.
            let payload = match self.publisher.director() {
                Some(d) => match d.resign(&t, &topic, &payload)? {
                    Some(p) => {
                        self.store.retained.put(&topic, &p)?;
                        p
                    }
                    None => payload,
                },
                None => payload,
            };
            self.publisher
                .publish_str(topic, payload.into(), true)
                .await?;
            n += 1;
        }
        Metrics::add(&self.metrics.retained_republished, n);
        if n > 0 {
            info!(acks = n, "republished retained status acks");
        }
        Ok(())
    }

    async fn gather(&mut self, first: Incoming) -> Result<Vec<Incoming>, IngestError> {
        let max = self.config.max_batch;
        let mut batch = Vec::with_capacity(max.min(1024));
        self.take(&mut batch, first).await?;
        let deadline = Instant::now() + self.config.commit_window;
        let mut idle = 0;
        while batch.len() < max && Instant::now() < deadline {
            match self.rx.try_recv() {
                Ok(m) => {
                    idle = 0;
                    self.take(&mut batch, m).await?;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if idle == IDLE_YIELDS {
                        break;
                    }
                    idle += 1;
                    tokio::task::yield_now().await;
                }
            }
        }
        Ok(batch)
    }

    async fn take(&mut self, batch: &mut Vec<Incoming>, m: Incoming) -> Result<(), IngestError> {
        if self.ack_policy == AckPolicy::OnReceipt {
            self.publisher.ack(m.ack);
        }
        batch.push(m);
        Ok(())
    }

    /// Commits `batch`, whose first message arrived at `started`.
    async fn commit(&mut self, batch: Vec<Incoming>, started: Instant) -> Result<(), IngestError> {
        let now = crate::rt::unix_now();
        // Phase 1, on the blocking pool: the tracker and every sled write.
        let mut applier = Applier {
            tracker: std::mem::take(&mut self.tracker),
            quota: std::mem::take(&mut self.quota),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            topics: self.publisher.topics().clone(),
            director: self.publisher.director().cloned(),
        };
        let (applier, batch, applied) = crate::rt::blocking(move || {
            let applied = applier.apply(&batch, now);
            (applier, batch, applied)
        })
        .await
        .map_err(|e| IngestError::Task(e.to_string()))?;
        self.tracker = applier.tracker;
        self.quota = applier.quota;
        let Applied {
            hellos,
            updates,
            acks,
            seen,
        } = applied?;

        // Phase 2: one flush for everything, then the acknowledgements.
        self.store.flush().await?;
        Metrics::add(&self.metrics.commits, 1);
        self.metrics.commit_latency.observe(started.elapsed());

        if self.ack_policy == AckPolicy::AfterFlush {
            for m in &batch {
                self.publisher.ack(m.ack);
            }
        }
        let n_acks = acks.len() as u64;
        for (topic, payload) in acks {
            self.publisher.publish_str(topic, payload, true).await?;
        }
        Metrics::add(&self.metrics.acks_published, n_acks);

        if !hellos.is_empty() || !updates.is_empty() || !seen.is_empty() {
            // Core is the registry's owner; a closed inbox means shutdown.
            // A batch goes in parts: its Hellos first, CORE_HELLOS at a
            // time, then its updates and seen devices, CORE_UPDATES of
            // each at a time. Core handles one part at a time, so an
            // operator's command or a query waits for one part at most,
            // not for a batch of 4,096 (issue 19).
            for part in parts(hellos, updates, seen) {
                let _ = self
                    .core
                    .send(CoreMsg::FromIngest {
                        hellos: part.0,
                        updates: part.1,
                        seen: part.2,
                        at: now,
                        sent: std::time::Instant::now(),
                    })
                    .await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_to_core_in_parts_in_order() {
        let ids = |n: usize| -> Vec<DeviceId> {
            (0..n)
                .map(|i| DeviceId::new(format!("d{i}")).unwrap())
                .collect()
        };
        assert!(parts(Vec::new(), Vec::new(), Vec::new()).is_empty());
        // 1,100 seen and no Hello: three parts, in order, none over the cap.
        let p = parts(Vec::new(), Vec::new(), ids(1100));
        assert_eq!(
            p.iter().map(|p| p.2.len()).collect::<Vec<_>>(),
            [512, 512, 76]
        );
        let flat: Vec<DeviceId> = p.into_iter().flat_map(|p| p.2).collect();
        assert_eq!(flat, ids(1100));
        // Hellos first, CORE_HELLOS at a time, then the rest.
        let hello = Hello {
            proto: 1,
            arch: "esp32".into(),
            versions: Default::default(),
            labels: Default::default(),
            boot_id: "b1".into(),
            epoch: schemas::Epoch::new("ep000001").unwrap(),
            outbox: 1,
            features: Vec::new(),
        };
        let hellos: Vec<_> = ids(CORE_HELLOS + 1)
            .into_iter()
            .map(|id| (id, hello.clone(), HelloEffect::SameEpoch))
            .collect();
        let p = parts(hellos, Vec::new(), ids(3));
        assert_eq!(
            p.iter().map(|p| (p.0.len(), p.2.len())).collect::<Vec<_>>(),
            [(CORE_HELLOS, 0), (1, 0), (0, 3)]
        );
    }
}
