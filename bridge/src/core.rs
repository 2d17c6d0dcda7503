//! The core actor: owns the in-memory fleet (registry, groups, published
//! membership) and the operator command state, and writes through the
//! store. It also owns the artifact commands and the campaigns (their
//! manager is called from here: `campaign::hooks`, and a one-second tick).
//!
//! Two inboxes: MQTT messages it owns (Presence, operator commands), and
//! internal news from the status ingest actor (Hellos once their epoch is
//! stored, last seen, campaign state changes).

use std::collections::HashMap;
use std::sync::Arc;

use schemas::msg::{Hello, Membership, Presence, WireMessage};
use schemas::ops::Event;
use schemas::topic::Topic;
use schemas::{DeviceId, GroupName};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::fleet::{Fleet, Group};
use crate::metrics::{DropReason, Metrics};
use crate::mqtt::{Incoming, Publisher};
use crate::ops::Authenticator;
use crate::status::{HelloEffect, StatusUpdate};
use crate::store::{Store, StoreError};
use crate::BridgeError;

/// Capacity of each of core's inboxes.
pub const INBOX: usize = 1024;

/// Internal messages to core.
#[derive(Debug)]
pub enum CoreMsg {
    /// One committed batch of the status ingest actor.
    FromIngest {
        /// Hellos whose epoch is stored, in arrival order.
        hellos: Vec<(DeviceId, Hello, HelloEffect)>,
        /// Campaign states that changed.
        updates: Vec<StatusUpdate>,
        /// Devices heard from in the batch.
        seen: Vec<DeviceId>,
        /// Unix seconds of the commit.
        at: u64,
    },
}

/// Everything core owns; operator command handlers work on it.
pub struct CoreState {
    pub fleet: Fleet,
    pub store: Store,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    /// The artifact commands (upload, list, show, delete).
    pub artifacts: crate::artifacts::ArtifactOps,
    /// Every campaign, its gate and live tally ([`crate::campaign::hooks`]).
    pub campaigns: crate::campaign::Campaigns,
    /// Who may log in and register (shared with the broker).
    pub identity: Arc<crate::identity::Identity>,
    /// The credentials tree behind it.
    pub credentials: crate::identity::CredentialStore,
}

/// The actor.
pub struct Core {
    pub(crate) state: CoreState,
    pub(crate) mqtt: mpsc::Receiver<Incoming>,
    pub(crate) internal: mpsc::Receiver<CoreMsg>,
    /// The link's state: a reconnect of the publishing connection may mean
    /// a broker that restarted and lost its retained messages.
    pub(crate) link: tokio::sync::watch::Receiver<crate::mqtt::LinkState>,
}

impl CoreState {
    /// Loads the fleet from the store. Blocks (reads every device and
    /// group): call with `spawn_blocking`.
    pub fn load_fleet(store: &Store) -> Result<Fleet, StoreError> {
        let devices = store.devices.all()?;
        let mut groups = Vec::new();
        for r in store.groups.all()? {
            let name = r.name.clone();
            match Group::from_record(r) {
                Ok(g) => groups.push(g),
                Err(e) => warn!(group = %name, error = %e, "stored group no longer reads; skipped"),
            }
        }
        Ok(Fleet::new(devices, groups, HashMap::new()))
    }

    /// Publishes changed memberships (retained, recorded in the store).
    pub async fn publish_memberships(
        &mut self,
        changes: Vec<(DeviceId, Vec<GroupName>)>,
    ) -> Result<(), BridgeError> {
        let n = changes.len() as u64;
        let moved: Vec<DeviceId> = changes.iter().map(|(id, _)| id.clone()).collect();
        for (id, groups) in changes {
            let payload = Membership { groups }.encode();
            self.publisher.retain(&Topic::Groups(id), payload).await?;
        }
        Metrics::add(&self.metrics.memberships_published, n);
        // Campaign members follow the groups.
        crate::campaign::hooks::devices_changed(self, &moved).await
    }

    /// Publishes an event for operators on `P/ops/events`.
    pub async fn event(
        &self,
        kind: &str,
        message: String,
        data: serde_json::Value,
    ) -> Result<(), BridgeError> {
        let e = Event {
            ts: crate::unix_now(),
            kind: kind.to_string(),
            campaign: None,
            message,
            data,
        };
        // Invariant: an Event holds strings, numbers and JSON values only.
        let json = serde_json::to_vec(&e).expect("an event always serializes");
        self.publisher
            .publish(&Topic::OpsEvents, json, false)
            .await?;
        Ok(())
    }

    fn put_device(&self, id: &DeviceId) -> Result<(), StoreError> {
        if let Some(r) = self.fleet.device(id) {
            self.store.devices.put(r)?;
        }
        Ok(())
    }
}

impl Core {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), BridgeError> {
        self.start().await?;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + crate::campaign::hooks::FIRST_TICK,
            crate::campaign::hooks::TICK,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut egress_up = self.link.borrow().egress_connected;
        let mut egress_seen = egress_up;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = self.link.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let up = self.link.borrow_and_update().egress_connected;
                    if up && !egress_up && egress_seen {
                        // A broker that restarted lost its retained
                        // messages (Mosquitto without persistence, or
                        // rumqttd always): heal it from the store, as at
                        // start. Devices that reconnect find their
                        // Membership and announcements again.
                        info!("publishing connection is back: republishing retained messages");
                        self.republish_retained().await?;
                    }
                    egress_seen |= up;
                    egress_up = up;
                }
                _ = tick.tick() => crate::campaign::hooks::tick(&mut self.state).await?,
                m = self.internal.recv() => match m {
                    Some(m) => self.internal(m).await?,
                    None => break,
                },
                m = self.mqtt.recv() => match m {
                    Some(m) => self.mqtt(m).await?,
                    None => break,
                },
            }
        }
        debug!("core stopped");
        Ok(())
    }

    /// Republishes the retained messages core owns (all but StatusAcks),
    /// then publishes whatever membership changed while the bridge was down.
    async fn start(&mut self) -> Result<(), BridgeError> {
        let n = self.republish_retained().await?;
        let s = &mut self.state;
        let changes = s.fleet.membership_changes(None);
        if !changes.is_empty() {
            info!(
                devices = changes.len(),
                "publishing memberships that changed while the bridge was down"
            );
        }
        s.publish_memberships(changes).await?;
        info!(
            devices = s.fleet.len(),
            groups = s.fleet.groups().len(),
            retained = n,
            "core ready"
        );
        crate::campaign::hooks::started(&mut self.state).await?;
        Ok(())
    }

    /// Publishes every retained message core owns from the store (at start,
    /// and when the publishing connection comes back, so a broker that lost
    /// its retained messages heals). Returns how many.
    async fn republish_retained(&mut self) -> Result<u64, BridgeError> {
        let s = &mut self.state;
        let topics = s.publisher.topics().clone();
        let mut published = HashMap::new();
        let mut n = 0u64;
        for (topic, payload) in s.store.retained.all()? {
            if let Ok(t) = topics.parse(&topic) {
                // Grants follow what is retained, before it goes out.
                s.identity.observe(&t, &payload);
            }
            match topics.parse(&topic) {
                Ok(Topic::Ack(_)) => continue,
                Ok(Topic::Groups(id)) => match Membership::decode_retained(&payload) {
                    Ok(m) => {
                        published.insert(id, m.groups);
                    }
                    Err(e) => {
                        warn!(device = %id, error = %e, "stored membership does not decode; it will be recomputed")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    // Written under another prefix: not ours any more.
                    warn!(topic = %topic, error = %e, "stored retained message is not under our prefix; not republished");
                    continue;
                }
            }
            s.publisher.publish_str(topic, payload.into(), true).await?;
            n += 1;
        }
        Metrics::add(&s.metrics.retained_republished, n);
        let fleet = std::mem::take(&mut s.fleet);
        s.fleet = fleet.with_published(published);
        Ok(n)
    }

    async fn internal(&mut self, m: CoreMsg) -> Result<(), BridgeError> {
        match m {
            CoreMsg::FromIngest {
                hellos,
                updates,
                seen,
                at,
            } => {
                for (id, hello, effect) in hellos {
                    self.hello(&id, &hello, effect, at).await?;
                }
                for id in seen {
                    if self.state.fleet.seen(&id, at) {
                        self.state.put_device(&id)?;
                    }
                }
                crate::campaign::hooks::statuses(&mut self.state, &updates).await?;
                for u in updates {
                    self.status_update(u);
                }
            }
        }
        Ok(())
    }

    async fn hello(
        &mut self,
        id: &DeviceId,
        hello: &Hello,
        effect: HelloEffect,
        at: u64,
    ) -> Result<(), BridgeError> {
        let s = &mut self.state;
        if !s.identity.takes_part(id) {
            // Not provisioned (or revoked): an impostor's Hello registers
            // nothing. Counted, logged once per interval.
            s.identity.refusals().count(
                crate::identity::Refused::UnknownHello,
                id.as_str(),
                "hello",
            );
            return Ok(());
        }
        let change = s.fleet.hello(id, hello, at);
        s.put_device(id)?;
        if change.registered {
            info!(device = %id, arch = %hello.arch, "device registered");
            s.event(
                "device.registered",
                format!("device {id} registered ({})", hello.arch),
                serde_json::json!({ "device": id, "arch": hello.arch }),
            )
            .await?;
            crate::campaign::hooks::devices_changed(s, std::slice::from_ref(id)).await?;
        } else if change.rebooted {
            info!(device = %id, boot_id = %hello.boot_id, "device rebooted");
        }
        if effect == HelloEffect::NewEpoch {
            debug!(device = %id, "new status epoch");
        }
        if change.labels_changed {
            let changes = s.fleet.membership_changes(Some(id));
            s.publish_memberships(changes).await?;
        }
        Ok(())
    }

    /// A device's campaign state changed (already counted by the campaign
    /// manager, `campaign::hooks::statuses`): logged.
    fn status_update(&mut self, u: StatusUpdate) {
        if u.outcome.is_some() {
            info!(device = %u.device, campaign = %u.campaign, state = %u.state, error = ?u.error, "device finished a campaign");
        } else {
            debug!(device = %u.device, campaign = %u.campaign, state = %u.state, "campaign state");
        }
    }

    async fn mqtt(&mut self, m: Incoming) -> Result<(), BridgeError> {
        match &m.topic {
            Topic::Presence(id) => self.presence(id, &m)?,
            Topic::OpsCommands => crate::ops::handle(&mut self.state, &m.payload).await?,
            other => {
                self.state.metrics.count_drop(DropReason::BadTopic);
                warn!(topic = ?other, "core got a topic it does not own");
            }
        }
        self.state.publisher.ack(m.ack).await?;
        Ok(())
    }

    fn presence(&mut self, id: &DeviceId, m: &Incoming) -> Result<(), BridgeError> {
        let s = &mut self.state;
        if m.payload.is_empty() {
            // A cleared retained presence: nothing to learn.
            return Ok(());
        }
        let p = match Presence::decode(&m.payload) {
            Ok(p) => p,
            Err(e) => {
                s.metrics.count_drop(match e {
                    schemas::msg::DecodeError::TooLarge { .. } => DropReason::Oversized,
                    _ => DropReason::Malformed,
                });
                warn!(device = %id, message = "presence", error = %e, "dropped a payload that does not decode");
                return Ok(());
            }
        };
        Metrics::add(&s.metrics.presence, 1);
        match s.fleet.presence(id, p.online, crate::unix_now()) {
            None => {
                debug!(device = %id, online = p.online, "presence of a device that has not said hello")
            }
            Some(changed) => {
                if changed {
                    debug!(device = %id, online = p.online, "presence");
                }
                s.put_device(id)?;
            }
        }
        Ok(())
    }
}
