//! The status ingest actor: Hello and Status in one ordered inbox, stored
//! with group commit, acknowledged only once durable.
//!
//! A batch takes whatever is in the inbox, and keeps taking while more
//! arrives (checked after yielding to the event loop a few times), until
//! the inbox stays empty, `max_batch` messages are in, or `commit_window`
//! has passed since its first message. Then, in this order:
//!
//! 1. every message is applied: a Hello sets the device's ack counter (its
//!    epoch and outbox); a Status is stored as its exact bytes (a duplicate
//!    once, a conflict aside) and its campaign state updated;
//! 2. each touched device's counter and StatusAck are written to the store;
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

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use schemas::msg::{DecodeError, Hello, Status, StatusAck, WireMessage};
use schemas::topic::Topic;
use schemas::{DeviceId, Epoch};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::tracker::{AckTracker, DeviceAcks, HelloEffect};
use super::StatusUpdate;
use crate::config::StatusConfig;
use crate::core::CoreMsg;
use crate::metrics::{DropReason, Metrics};
use crate::mqtt::{Incoming, Publisher};
use crate::store::status::Inserted;
use crate::store::{CurrentState, EpochRecord, Store, StoreError};
use crate::BridgeError;

/// How many times a batch yields to the event loop for more messages
/// before it commits (tokio's timers are too coarse, at 1 ms, for this).
pub const IDLE_YIELDS: usize = 4;
/// The inbox: more than any broker's in-flight window, so the event loop's
/// `try_send` normally succeeds.
pub const INBOX: usize = 8192;

/// The actor.
pub struct Ingest {
    pub(crate) rx: mpsc::Receiver<Incoming>,
    pub(crate) store: Store,
    pub(crate) publisher: Publisher,
    pub(crate) core: mpsc::Sender<CoreMsg>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: StatusConfig,
    pub(crate) tracker: AckTracker,
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

/// What one device's part of a batch did.
#[derive(Default)]
struct Touch {
    /// A Hello came: the ack is republished even if unchanged.
    hello: bool,
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
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), BridgeError> {
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
            let batch = self.gather(first).await?;
            self.commit(batch).await?;
        }
        debug!("status ingest stopped");
        Ok(())
    }

    /// Republishes the retained StatusAcks from the store, before anything
    /// new is acknowledged (so an old value never lands after a new one).
    async fn republish(&self) -> Result<(), BridgeError> {
        let mut n = 0u64;
        for (topic, payload) in self.store.retained.all()? {
            if matches!(self.publisher.topics().parse(&topic), Ok(Topic::Ack(_))) {
                self.publisher
                    .publish_str(topic, payload.into(), true)
                    .await?;
                n += 1;
            }
        }
        Metrics::add(&self.metrics.retained_republished, n);
        if n > 0 {
            info!(acks = n, "republished retained status acks");
        }
        Ok(())
    }

    async fn gather(&mut self, first: Incoming) -> Result<Vec<Incoming>, BridgeError> {
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

    async fn take(&mut self, batch: &mut Vec<Incoming>, m: Incoming) -> Result<(), BridgeError> {
        if self.ack_policy == AckPolicy::OnReceipt {
            self.publisher.ack(m.ack).await?;
        }
        batch.push(m);
        Ok(())
    }

    async fn commit(&mut self, batch: Vec<Incoming>) -> Result<(), BridgeError> {
        let now = crate::unix_now();
        let mut touched: BTreeMap<DeviceId, Touch> = BTreeMap::new();
        let mut hellos = Vec::new();
        let mut updates = Vec::new();
        for m in &batch {
            match &m.topic {
                Topic::Hello(id) => {
                    if let Some((hello, effect)) = self.hello(id, &m.payload) {
                        touched.entry(id.clone()).or_default().hello = true;
                        hellos.push((id.clone(), hello, effect));
                    }
                }
                Topic::Status(id) => {
                    if let Some(update) = self.status(id, &m.payload, now)? {
                        updates.push(update);
                    }
                    if self.tracker.get(id).is_some() {
                        touched.entry(id.clone()).or_default();
                    }
                }
                other => {
                    self.metrics.count_drop(DropReason::BadTopic);
                    warn!(topic = ?other, "status ingest got a topic it does not own");
                }
            }
        }

        // Counters and acks into the store, then one flush for everything.
        let mut acks = Vec::with_capacity(touched.len());
        for (id, touch) in &touched {
            let Some(a) = self.tracker.get(id) else {
                continue;
            };
            self.store.status.put_epoch(
                id,
                &EpochRecord {
                    epoch: a.epoch.clone(),
                    base: a.base,
                    next: a.next,
                },
            )?;
            let payload: Bytes = match a.ack() {
                Some(seq) => StatusAck { seq }.encode().into(),
                // Nothing to acknowledge (outbox 0): withdraw an older
                // epoch's ack rather than leave it standing.
                None if touch.hello => Bytes::new(),
                None => continue,
            };
            let topic = self.publisher.topics().build(&Topic::Ack(id.clone()));
            self.store.retained.put(&topic, &payload)?;
            acks.push((topic, payload));
        }
        self.store.flush().await?;
        Metrics::add(&self.metrics.commits, 1);

        if self.ack_policy == AckPolicy::AfterFlush {
            for m in &batch {
                self.publisher.ack(m.ack).await?;
            }
        }
        let n_acks = acks.len() as u64;
        for (topic, payload) in acks {
            self.publisher.publish_str(topic, payload, true).await?;
        }
        Metrics::add(&self.metrics.acks_published, n_acks);

        let seen: Vec<DeviceId> = touched.into_keys().collect();
        if !hellos.is_empty() || !updates.is_empty() || !seen.is_empty() {
            // Core is the registry's owner; a closed inbox means shutdown.
            let _ = self
                .core
                .send(CoreMsg::FromIngest {
                    hellos,
                    updates,
                    seen,
                    at: now,
                })
                .await;
        }
        Ok(())
    }

    fn hello(&mut self, id: &DeviceId, payload: &[u8]) -> Option<(Hello, HelloEffect)> {
        let hello = match Hello::decode(payload) {
            Ok(h) => h,
            Err(e) => {
                self.bad_payload(id, "hello", &e);
                return None;
            }
        };
        Metrics::add(&self.metrics.hellos, 1);
        if hello.proto != schemas::PROTOCOL_VERSION {
            warn!(device = %id, proto = hello.proto, "hello speaks another protocol version; reading it as v1");
        }
        let status = &self.store.status;
        let effect = self
            .tracker
            .hello(id, &hello.epoch, hello.outbox, |epoch: &Epoch, seq| {
                // On a store error, count the seq as missing: the ack stays
                // lower, which is always safe.
                status.is_stored(id, epoch, seq).unwrap_or(false)
            });
        match effect {
            HelloEffect::NewEpoch => {
                info!(device = %id, epoch = %hello.epoch, outbox = hello.outbox, "device started a new status epoch")
            }
            HelloEffect::First | HelloEffect::SameEpoch => {
                debug!(device = %id, epoch = %hello.epoch, outbox = hello.outbox, "hello")
            }
        }
        Some((hello, effect))
    }

    fn status(
        &mut self,
        id: &DeviceId,
        payload: &[u8],
        now: u64,
    ) -> Result<Option<StatusUpdate>, StoreError> {
        let status = match Status::decode(payload) {
            Ok(s) => s,
            Err(e) => {
                self.bad_payload(id, "status", &e);
                return Ok(None);
            }
        };
        let Some(acks) = self.tracker.get(id) else {
            self.metrics.count_drop(DropReason::UnknownDevice);
            warn!(device = %id, seq = status.seq, "dropped a status from a device that never said hello");
            return Ok(None);
        };
        let epoch = acks.epoch.clone();
        match self.store.status.insert(id, &epoch, status.seq, payload)? {
            Inserted::New => Metrics::add(&self.metrics.statuses_stored, 1),
            Inserted::Duplicate => Metrics::add(&self.metrics.statuses_duplicate, 1),
            Inserted::Conflict => {
                Metrics::add(&self.metrics.statuses_conflict, 1);
                warn!(device = %id, epoch = %epoch, seq = status.seq, "status conflicts with the one stored under its seq: kept aside");
            }
        }
        self.tracker.stored(id, status.seq);
        let Some(campaign) = status.campaign.clone() else {
            return Ok(None);
        };
        let current = CurrentState {
            campaign,
            state: status.state,
            error: status.error,
            detail: status.detail.clone(),
            artifact: status.artifact.clone(),
            progress: status.progress,
            epoch,
            seq: status.seq,
            at: now,
        };
        Ok(self
            .store
            .status
            .update_current(id, current)?
            .map(|c| StatusUpdate {
                device: id.clone(),
                campaign: c.campaign,
                state: c.state,
                error: c.error,
                outcome: status.outcome(),
                detail: c.detail,
                versions: status.versions,
                at: now,
            }))
    }

    fn bad_payload(&self, id: &DeviceId, what: &'static str, e: &DecodeError) {
        let reason = match e {
            DecodeError::TooLarge { .. } => DropReason::Oversized,
            _ => DropReason::Malformed,
        };
        self.metrics.count_drop(reason);
        warn!(device = %id, message = what, error = %e, "dropped a payload that does not decode");
    }
}
