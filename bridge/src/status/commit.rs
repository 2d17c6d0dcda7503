//! The store half of an ingest commit, run on the blocking pool (sled
//! never runs on an async thread): every message of the batch applied to
//! the tracker and the status trees, then each touched device's counter
//! and StatusAck written. What it returns is what the async half
//! publishes once one `flush_async` made it durable.
//!
//! [`Applier`] owns the tracker while it runs: the actor hands it over
//! for the call and takes it back, so the tracker is never shared.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use schemas::msg::{DecodeError, Hello, Status, StatusAck, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::{DeviceId, Epoch};
use tracing::{debug, info, warn};

use super::quota::HelloQuota;
use super::tracker::{AckTracker, HelloEffect};
use super::StatusUpdate;
use crate::metrics::{DropReason, Metrics};
use crate::mqtt::Incoming;
use crate::store::status::Inserted;
use crate::store::{CurrentState, EpochRecord, Store, StoreError};

/// The blocking side of the actor: tracker, store, counters.
pub(crate) struct Applier {
    pub(crate) tracker: AckTracker,
    /// Hellos per device and minute; handed over like the tracker.
    pub(crate) quota: HelloQuota,
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) topics: Topics,
    /// Signs each StatusAck (E2), once per device per batch.
    pub(crate) director: Option<Arc<crate::director::Director>>,
}

/// What a batch did, for the async half.
#[derive(Default)]
pub(crate) struct Applied {
    /// Hellos that set a counter, in arrival order.
    pub(crate) hellos: Vec<(DeviceId, Hello, HelloEffect)>,
    /// Campaign states that changed.
    pub(crate) updates: Vec<StatusUpdate>,
    /// The retained StatusAcks to publish (written to the store already).
    pub(crate) acks: Vec<(String, Bytes)>,
    /// Devices heard from.
    pub(crate) seen: Vec<DeviceId>,
}

/// What one device's part of a batch did.
#[derive(Default)]
struct Touch {
    /// A Hello came: the ack is republished even if unchanged.
    hello: bool,
}

impl Applier {
    /// Applies `batch` at `now` (Unix seconds). Blocks: sled.
    pub(crate) fn apply(&mut self, batch: &[Incoming], now: u64) -> Result<Applied, StoreError> {
        let mut touched: BTreeMap<DeviceId, Touch> = BTreeMap::new();
        let mut out = Applied::default();
        for m in batch {
            match &m.topic {
                Topic::Hello(id) => {
                    if let Some((hello, effect)) = self.hello(id, &m.payload, now) {
                        touched.entry(id.clone()).or_default().hello = true;
                        out.hellos.push((id.clone(), hello, effect));
                    }
                }
                Topic::Status(id) => {
                    if let Some(update) = self.status(id, &m.payload, now)? {
                        out.updates.push(update);
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

        // Counters and acks into the store (the caller flushes once); the
        // acks signed together (on more than one thread when many).
        let mut acks: Vec<(String, Option<u64>)> = Vec::new();
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
            match a.ack() {
                Some(seq) => acks.push((self.topics.build(&Topic::Ack(id.clone())), Some(seq))),
                // Nothing to acknowledge (outbox 0): withdraw an older
                // epoch's ack rather than leave it standing.
                None if touch.hello => {
                    acks.push((self.topics.build(&Topic::Ack(id.clone())), None))
                }
                None => {}
            }
        }
        let payloads: Vec<Bytes> = match &self.director {
            Some(d) => {
                let (pos, to_sign): (Vec<usize>, Vec<(StatusAck, String)>) = acks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (t, seq))| seq.map(|seq| (i, (StatusAck { seq }, t.clone()))))
                    .unzip();
                let mut signed = d.sign_many(&to_sign)?.into_iter();
                let mut pos = pos.into_iter().peekable();
                (0..acks.len())
                    .map(|i| {
                        if pos.next_if_eq(&i).is_some() {
                            signed.next().map(Bytes::from).unwrap_or_default()
                        } else {
                            Bytes::new()
                        }
                    })
                    .collect()
            }
            None => acks
                .iter()
                .map(|(_, seq)| {
                    seq.map_or_else(Bytes::new, |seq| StatusAck { seq }.encode().into())
                })
                .collect(),
        };
        for ((topic, _), payload) in acks.into_iter().zip(payloads) {
            self.store.retained.put(&topic, &payload)?;
            out.acks.push((topic, payload));
        }
        out.seen = touched.into_keys().collect();
        Ok(out)
    }

    fn hello(&mut self, id: &DeviceId, payload: &[u8], now: u64) -> Option<(Hello, HelloEffect)> {
        if !self.quota.allow(id, now) {
            self.metrics.count_drop(DropReason::HelloRate);
            if let Some(held) = self.metrics.quiet.hello_rate.tick() {
                warn!(device = %id, held, "dropped Hellos over the device's quota ([status] hellos_per_minute); counts since the last such line in held");
            }
            return None;
        }
        let hello = match Hello::decode(payload) {
            Ok(h) => h,
            Err(e) => {
                self.bad_payload(id, "hello", &e);
                return None;
            }
        };
        Metrics::add(&self.metrics.hellos, 1);
        if hello.proto != schemas::PROTOCOL_VERSION {
            if let Some(held) = self.metrics.quiet.other_proto.tick() {
                warn!(device = %id, proto = hello.proto, held, "hello speaks another protocol version; reading it as v1");
            }
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
            if let Some(held) = self.metrics.quiet.unknown_device.tick() {
                warn!(device = %id, seq = status.seq, held, "dropped a status from a device that never said hello");
            }
            return Ok(None);
        };
        let epoch = acks.epoch.clone();
        match self.store.status.insert(id, &epoch, status.seq, payload)? {
            Inserted::New => Metrics::add(&self.metrics.statuses_stored, 1),
            Inserted::Duplicate => Metrics::add(&self.metrics.statuses_duplicate, 1),
            Inserted::Conflict => {
                Metrics::add(&self.metrics.statuses_conflict, 1);
                if let Some(held) = self.metrics.quiet.conflict.tick() {
                    warn!(device = %id, epoch = %epoch, seq = status.seq, held, "status conflicts with the one stored under its seq: kept aside");
                }
            }
            Inserted::ConflictNotKept => {
                Metrics::add(&self.metrics.statuses_conflict, 1);
                self.metrics.count_drop(DropReason::ConflictNotKept);
                if let Some(held) = self.metrics.quiet.conflict.tick() {
                    warn!(device = %id, epoch = %epoch, seq = status.seq, held, "status conflicts with the one stored under its seq: counted, not kept (the device has the most conflicts kept aside already)");
                }
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
                artifact: c.artifact,
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
        if let Some(held) = self.metrics.quiet.undecodable.tick() {
            warn!(device = %id, message = what, error = %e, held, "dropped a payload that does not decode");
        }
    }
}
