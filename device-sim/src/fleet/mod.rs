//! The fleet simulator: thousands of reference agents in one process, each
//! with its own MQTT connection, in-memory state and faults drawn from a
//! profile.
//!
//! # Layout
//!
//! - [`profile`]: `config/fleet.toml`, raw then validated.
//! - [`device`]: one simulated device's spec and hooks (faults, counters).
//! - [`stats`]: live counters, snapshots, waiting for a condition.
//! - [`run`]: `ota sim`: spawn, live counters on the terminal, summary.
//!
//! Memory: a device keeps its state as saved bytes and its own block
//! bitmap; image bytes live once per process ([`SharedImages`]); blocks are
//! verified, copied there once and dropped.

pub mod device;
pub mod profile;
pub mod run;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use schemas::control::DirectorKeys;
use schemas::cose::TrustStore;
use schemas::topic::Topics;
use schemas::DeviceId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::agent::pace::{Backoff, Pacer};
use crate::agent::{
    run_device, AgentConfig, BusyFor, DeferPolicy, DeviceIoConfig, MemoryInstaller, MemoryStore,
    NeverDefer, SharedImages, Timing,
};
pub use profile::{Profile, ProfileError};
pub use stats::{FleetStats, Tracker};

/// What to simulate and where.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// How many devices.
    pub devices: usize,
    /// The first device's number (ids count from it; default 1).
    pub first: usize,
    /// The profile.
    pub profile: Profile,
    /// A factory line: devices named `{NAME}-{n:05}` sharing arch, versions
    /// and labels (with `line = NAME`), powered up together.
    pub factory_line: Option<String>,
    /// Timings for every agent (the protocol's by default).
    pub timing: Timing,
    /// MQTT logins by device id (username, password), from provisioning
    /// files; a device not listed logs in without one.
    pub logins: Arc<BTreeMap<DeviceId, (String, String)>>,
    /// TLS (`mqtts://`); `None`: plain MQTT.
    pub tls: Option<FleetTls>,
}

/// The fleet's TLS: each device's config (its provisioning file's CA and
/// certificate), and one for devices without a file of their own.
#[derive(Debug, Clone)]
pub struct FleetTls {
    /// Devices not in `devices`: the server verified, no client certificate.
    pub shared: Arc<tls::rustls::ClientConfig>,
    /// Devices' own configs, by id.
    pub devices: Arc<BTreeMap<DeviceId, Arc<tls::rustls::ClientConfig>>>,
}

impl FleetTls {
    /// The config device `id` connects with.
    pub fn config_for(&self, id: &DeviceId) -> Arc<tls::rustls::ClientConfig> {
        self.devices
            .get(id)
            .cloned()
            .unwrap_or_else(|| self.shared.clone())
    }
}

impl FleetConfig {
    /// The device ids this fleet will have (to provision them first).
    pub fn ids(&self) -> Result<Vec<DeviceId>, FleetError> {
        (0..self.devices)
            .map(|i| {
                device::spec(&self.profile, self.first + i, self.factory_line.as_deref())
                    .map(|s| s.id)
                    .map_err(FleetError::from)
            })
            .collect()
    }

    /// `devices` devices of `profile` against `host:port`.
    pub fn new(host: impl Into<String>, port: u16, devices: usize, profile: Profile) -> Self {
        let timing = Timing {
            progress_every_ms: profile.progress_every_ms,
            ..Timing::default()
        }
        .within_protocol();
        Self {
            host: host.into(),
            port,
            devices,
            first: 1,
            profile,
            factory_line: None,
            timing,
            logins: Arc::new(BTreeMap::new()),
            tls: None,
        }
    }
}

/// Why a fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A device id would be invalid.
    #[error("device ids: {0}; choose a shorter id prefix or factory line name of [A-Za-z0-9._-]")]
    Name(#[from] schemas::NameError),
    /// The topic prefix is invalid.
    #[error("topic prefix: {0}")]
    Topics(#[from] schemas::topic::TopicError),
}

/// The fleet simulator's entry point.
pub struct Fleet;

impl Fleet {
    /// Spawns every device on the current tokio runtime. Connects are paced
    /// by the profile's `connects_per_second`.
    pub fn spawn(cfg: FleetConfig) -> Result<FleetHandle, FleetError> {
        let p = &cfg.profile;
        let topics = Topics::new(p.topic_prefix.clone())?;
        let specs = (0..cfg.devices)
            .map(|i| device::spec(p, cfg.first + i, cfg.factory_line.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        if p.trusted.is_empty() {
            warn!("the profile trusts no release key: every campaign will fail with unknown_key");
        }
        let tracker = Arc::new(Tracker::new(specs.iter().map(|s| s.id.clone()).collect()));
        let cancel = CancellationToken::new();
        let pacer = Arc::new(Pacer::per_second(p.connects_per_second));
        let shared = SharedImages::new();
        let trust = Arc::new(TrustStore::new(p.trusted.iter().copied()));
        let directors = Arc::new(DirectorKeys::new(p.directors.iter().copied()));
        let mut tasks = Vec::with_capacity(specs.len());
        let ids: Vec<DeviceId> = specs.iter().map(|s| s.id.clone()).collect();
        for (slot, s) in specs.into_iter().enumerate() {
            let agent = Arc::new(AgentConfig {
                id: s.id.clone(),
                arch: s.arch.clone(),
                labels: s.labels.clone(),
                trust: device::trust(&s, &trust),
                directors: directors.clone(),
                deltas: s.deltas,
                room_bytes: p.room_bytes,
                timing: cfg.timing,
            });
            let policy: Box<dyn DeferPolicy> = if s.busy {
                Box::new(BusyFor::new(1, p.faults.busy_deferral_secs * 1000))
            } else {
                Box::new(NeverDefer)
            };
            let io = DeviceIoConfig {
                agent,
                host: cfg.host.clone(),
                port: cfg.port,
                topics: topics.clone(),
                keep_alive: Duration::from_secs(p.keep_alive_secs),
                backoff: Backoff::default(),
                factory_versions: s.versions.clone(),
                policy,
                seed: s.seed,
                pacer: Some(pacer.clone()),
                login: cfg.logins.get(&s.id).cloned(),
                tls: cfg.tls.as_ref().map(|t| t.config_for(&s.id)),
            };
            let installer = MemoryInstaller {
                fail_install: s.fail_install,
                fail_boot: s.fail_boot,
                fail_versions: p
                    .faults
                    .bad_build
                    .iter()
                    .filter(|_| s.fail_bad_build)
                    .cloned()
                    .collect(),
                installed: Vec::new(),
                // The factory images of its versions, shared.
                images: s
                    .versions
                    .iter()
                    .filter_map(|(c, v)| {
                        let img = p.images.get(&(c.clone(), v.clone()))?;
                        Some((c.clone(), img.clone()))
                    })
                    .collect(),
                staged: None,
            };
            let hooks = device::SimHooks {
                slot,
                tracker: tracker.clone(),
                block_loss: p.faults.block_loss,
                disconnect_at: s.disconnect_at,
                power_loss_at: s.power_loss_at,
                rng: rand::rngs::StdRng::seed_from_u64(s.seed ^ 0xb10c),
            };
            let store = MemoryStore::new(shared.clone());
            let token = cancel.clone();
            let t = tracker.clone();
            tasks.push(tokio::spawn(async move {
                let r = run_device(io, installer, store, hooks, token.cancelled_owned()).await;
                if let Err(e) = &r {
                    warn!(device = %s.id, error = %e, "simulated device stopped");
                }
                t.ended(slot, r.is_err());
            }));
        }
        Ok(FleetHandle {
            tracker,
            cancel,
            tasks,
            ids,
            shared,
        })
    }
}

/// A running fleet.
pub struct FleetHandle {
    tracker: Arc<Tracker>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    ids: Vec<DeviceId>,
    shared: Arc<SharedImages>,
}

impl FleetHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> FleetStats {
        self.tracker.stats()
    }

    /// The tracker, to share with a display.
    pub fn tracker(&self) -> Arc<Tracker> {
        self.tracker.clone()
    }

    /// Waits until `pred` holds (`Ok`) or `timeout` passes (`Err` with the
    /// last snapshot).
    pub async fn wait_until(
        &self,
        pred: impl Fn(&FleetStats) -> bool,
        timeout: Duration,
    ) -> Result<FleetStats, FleetStats> {
        self.tracker.wait_until(timeout, pred).await
    }

    /// Per device, the seqs it saw acknowledged.
    pub fn acks(&self) -> BTreeMap<DeviceId, BTreeSet<u64>> {
        self.tracker
            .seqs()
            .into_iter()
            .map(|(id, (_, a))| (id, a))
            .collect()
    }

    /// Per device, the seqs of every Status it made.
    pub fn sent(&self) -> BTreeMap<DeviceId, BTreeSet<u64>> {
        self.tracker
            .seqs()
            .into_iter()
            .map(|(id, (q, _))| (id, q))
            .collect()
    }

    /// The device ids, in order.
    pub fn ids(&self) -> &[DeviceId] {
        &self.ids
    }

    /// Images held in memory now: (count, bytes).
    pub fn image_memory(&self) -> (usize, u64) {
        self.shared.usage()
    }

    /// Stops every device (offline presence, DISCONNECT) and waits for them.
    pub async fn shutdown(self) -> FleetStats {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.tracker.stats()
    }
}
