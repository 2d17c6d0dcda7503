//! What the core actor owns, and lends out by borrow: the fleet, the
//! store handles, the publisher, the artifact store, the block server's
//! handle and the campaigns. The fields are private: the ops handlers and
//! the actor take what they need through the accessors, and the one
//! [`campaign::Ctx`] is built here ([`CoreState::campaigns_mut`]).
//!
//! Also the effects more than one layer above has: publishing changed
//! memberships (campaign members follow the groups), operator events, a
//! device record written through, and the campaign manager's calls
//! ([`campaigns`]). [`CoreError`] is why core has to stop.

pub mod campaigns;
pub mod enrollment;
pub mod error;
pub mod rollback;
pub mod slices;

use std::collections::HashMap;
use std::sync::Arc;

use schemas::msg::{Hello, Membership};
use schemas::ops::Event;
use schemas::topic::Topic;
use schemas::{DeviceId, GroupName};
use tracing::warn;

pub use error::CoreError;

use crate::artifacts::ArtifactStore;
use crate::blocks::BlockServerHandle;
use crate::campaign::{self, Campaigns};
use crate::fleet::{Fleet, Group};
use crate::identity::{CredentialStore, Identity};
use crate::metrics::Metrics;
use crate::mqtt::Publisher;
use crate::store::{Store, StoreError};

/// Everything core owns.
pub struct CoreState {
    fleet: Fleet,
    store: Store,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    artifacts: ArtifactStore,
    /// Absent in tests of core alone.
    blocks: Option<BlockServerHandle>,
    /// Every campaign, its gate and live tally.
    campaigns: Campaigns,
    /// Who may log in and register (shared with the broker).
    identity: Arc<Identity>,
    /// The credentials tree behind it.
    credentials: CredentialStore,
    /// The last Hello of each pending (enrolled, not yet accepted) device,
    /// and when it came: shown by `devices list`, registered at accept.
    held_hellos: HashMap<DeviceId, (Hello, u64)>,
    /// Devices a slice of work over the fleet covers ([`slices`]).
    slice: usize,
}

/// The parts [`CoreState::new`] puts together (loaded at start).
pub struct Parts {
    pub fleet: Fleet,
    pub store: Store,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    pub artifacts: ArtifactStore,
    pub blocks: Option<BlockServerHandle>,
    pub campaigns: Campaigns,
    pub identity: Arc<Identity>,
    pub credentials: CredentialStore,
    /// `[bridge] core_slice`.
    pub slice: usize,
}

impl CoreState {
    /// Core's state from what was loaded.
    pub fn new(p: Parts) -> Self {
        Self {
            fleet: p.fleet,
            store: p.store,
            publisher: p.publisher,
            metrics: p.metrics,
            artifacts: p.artifacts,
            blocks: p.blocks,
            campaigns: p.campaigns,
            identity: p.identity,
            credentials: p.credentials,
            held_hellos: HashMap::new(),
            slice: p.slice.max(1),
        }
    }

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

    /// The registry, groups and published memberships.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The fleet, to change it (then [`CoreState::publish_memberships`]).
    pub fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    /// The sled store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The one publishing connection.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// The block server, if one runs.
    pub fn blocks(&self) -> Option<&BlockServerHandle> {
        self.blocks.as_ref()
    }

    /// Who may log in and register (shared with the broker).
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The credentials tree.
    pub fn credentials(&self) -> &CredentialStore {
        &self.credentials
    }

    /// The campaigns, to read.
    pub fn campaigns(&self) -> &Campaigns {
        &self.campaigns
    }

    /// The campaigns and the context their manager is handed: the one
    /// place a [`campaign::Ctx`] is made.
    pub fn campaigns_mut(&mut self) -> (campaign::Ctx<'_>, &mut Campaigns) {
        (
            campaign::Ctx {
                fleet: &self.fleet,
                identity: &self.identity,
                store: &self.store,
                publisher: &self.publisher,
                blocks: self.blocks.as_ref(),
                metrics: &self.metrics,
            },
            &mut self.campaigns,
        )
    }

    /// Takes the fleet out to rebuild it (at start and when retained
    /// messages are republished).
    pub fn replace_fleet(&mut self, f: impl FnOnce(Fleet) -> Fleet) {
        let fleet = std::mem::take(&mut self.fleet);
        self.fleet = f(fleet);
    }

    /// Publishes changed memberships (retained, recorded in the store),
    /// then tells the campaigns, whose members follow the groups.
    pub async fn publish_memberships(
        &mut self,
        changes: Vec<(DeviceId, Vec<GroupName>)>,
    ) -> Result<(), CoreError> {
        let n = changes.len() as u64;
        let moved: Vec<DeviceId> = changes.iter().map(|(id, _)| id.clone()).collect();
        let msgs: Vec<(Topic, Membership)> = changes
            .into_iter()
            .map(|(id, groups)| (Topic::Groups(id), Membership { groups }))
            .collect();
        let topics: Vec<Topic> = msgs.iter().map(|(t, _)| t.clone()).collect();
        let payloads = self.publisher.controls(msgs).await?;
        // With an external Mosquitto each waits in the publisher's gate
        // until the broker has its grants (E1), not here.
        for (topic, payload) in topics.iter().zip(payloads) {
            self.publisher.retain(topic, payload).await?;
        }
        Metrics::add(&self.metrics.memberships_published, n);
        campaigns::devices_changed(self, &moved).await
    }

    /// Stores a group (new or replacing one of the same name), and
    /// publishes the memberships it changed. Returns whether it replaced
    /// one, and how many devices' memberships changed.
    pub async fn put_group(&mut self, g: Group) -> Result<(bool, usize), CoreError> {
        self.store.groups.put(&g.to_record())?;
        let replaced = self.fleet.put_group(g).is_some();
        let changed = self.publish_pending_memberships().await?;
        Ok((replaced, changed))
    }

    /// Publishes an event for operators on `P/ops/events`.
    pub async fn event(
        &self,
        kind: &str,
        message: String,
        data: serde_json::Value,
    ) -> Result<(), CoreError> {
        let e = Event {
            ts: crate::rt::unix_now(),
            kind: kind.to_string(),
            campaign: None,
            message,
            data,
        };
        self.publisher.event(&e).await?;
        Ok(())
    }

    /// Writes a device's record through to the store.
    pub fn put_device(&self, id: &DeviceId) -> Result<(), StoreError> {
        if let Some(r) = self.fleet.device(id) {
            self.store.devices.put(r)?;
        }
        Ok(())
    }
}
