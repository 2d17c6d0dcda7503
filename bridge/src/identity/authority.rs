//! [`Identity`]: the bridge's answer to the broker's questions (the
//! [`broker::Authority`] trait, PROTOCOL.md E1), from memory.
//!
//! Who a client is follows from its client id, because [`Identity::connect`]
//! lets a login take only the client ids that are its own:
//!
//! | client id | login that may take it | role |
//! |---|---|---|
//! | `[bridge] client_id`, and it + `-out` | the bridge's account | the bridge |
//! | `ota-cli-…` | an operator account (or the bridge's) | an operator |
//! | anything else | username = that id, its own password (or a client certificate with CN = that id) | the device of that id |
//!
//! Over mutual TLS a device's certificate is its login (CN = client id; a
//! username, if sent, must be the CN too), unless its fingerprint is in the
//! registry's revocation list (its earlier certificates, from rotate and
//! revoke); a revoked device is refused whatever it presents. A username
//! other than the CN is a password login, for the bridge's and operators'
//! accounts only.
//!
//! What each role may publish and subscribe is E1's table; a device's
//! group and artifact topics come from [`Grants`], which follow the
//! retained Memberships and announcements the bridge publishes.
//!
//! Every answer takes a read lock on a `std::sync::RwLock` (writers are
//! the core actor's provision/revoke commands and the publisher's
//! `observe`, both brief) and at most one SHA-512: microseconds, fine on
//! the broker's listener thread.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use broker::{Authority, ConnectVerdict, Login};
use schemas::keys::Kid;
use schemas::provisioning::PasswordHash;
use schemas::topic::{Filter, Topic, Topics};
use schemas::{ArtifactId, DeviceId};

use super::grants::Grants;
use super::refusals::{Refusals, Refused};
use super::store::{CredentialRecord, Standing};

mod connect;
mod enroll;

/// Client ids starting with this are operators' (the `ota` CLI's).
pub const OPERATOR_CLIENT_PREFIX: &str = "ota-cli-";

/// `[devices] admission`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Admission {
    /// Only provisioned devices log in and register (the default).
    #[default]
    Provisioned,
    /// Also devices unknown to the registry that log in with the fleet
    /// enrollment token (its `$6$` hash here, never the token); they are
    /// pending until accepted (`enroll`, docs/protocol.md "Enrollment").
    Enroll { token: PasswordHash },
    /// Version 1 behaviour: any Hello registers its device, and a client id
    /// the registry does not know is treated as a device of that id. For
    /// an anonymous development broker and for code that builds its
    /// config in memory (tests); never the default of a config file.
    Open,
}

/// What [`Identity`] needs from the configuration.
#[derive(Clone)]
pub struct IdentityConfig {
    pub topics: Topics,
    /// `[bridge] client_id`; the bridge also connects as it + `-out`.
    pub bridge_client_id: String,
    /// The bridge's own account (username, password), if it logs in.
    pub bridge_login: Option<(String, String)>,
    /// Operator accounts: username → password.
    pub operators: BTreeMap<String, String>,
    pub admission: Admission,
    /// Enrollments the whole fleet may make a minute (0: no bound).
    pub registrations_per_minute: u32,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("prefix", &self.topics.prefix())
            .field("bridge_client_id", &self.bridge_client_id)
            .field("operators", &self.operators.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role<'a> {
    Bridge,
    Operator,
    Device(&'a str),
}

struct Entry {
    hash: Option<PasswordHash>,
    standing: Standing,
    /// The release kids its provisioning trusts, when known.
    trusts: Option<Box<[Kid]>>,
}

#[derive(Default)]
struct State {
    devices: HashMap<DeviceId, Entry>,
    /// Fingerprints of client certificates refused at login (every
    /// record's `revoked_certs`; a fingerprint never leaves it).
    revoked_certs: HashSet<String>,
    grants: Grants,
}

/// The registry's credentials and the grants, in memory.
pub struct Identity {
    config: IdentityConfig,
    bridge_out: String,
    state: RwLock<State>,
    refusals: Refusals,
    disconnector: RwLock<Option<Disconnector>>,
    /// An external broker's copy (Mosquitto's files, kept by the `mosquitto` module):
    /// `changes` counts every change it must be given, `applied` the last
    /// it was given.
    external: External,
    /// Enrollments made at login, for the core actor to store.
    enrolled: enroll::Enrolled,
}

/// How far an external broker's copy of the registry is.
struct External {
    on: AtomicBool,
    /// False while its rewrites fail: then nothing waits for them.
    healthy: AtomicBool,
    changes: watch::Sender<u64>,
    applied: watch::Sender<u64>,
    /// The sync's last cycle (its window and its rewrite), in ms: how long
    /// a change may take to be applied when nothing is wrong.
    cycle_ms: AtomicU64,
}

/// How long [`Identity::applied`] waits for an external broker's copy
/// beyond the sync's own cycle ([`Identity::set_sync_cycle`]).
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Closes a client's connection by client id (the embedded broker's).
pub type Disconnector = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

impl Identity {
    /// From the stored credential records (read at start).
    pub fn new(config: IdentityConfig, records: &[CredentialRecord]) -> Identity {
        let bridge_out = format!("{}-out", config.bridge_client_id);
        let enrolled = enroll::Enrolled::new(config.registrations_per_minute);
        let id = Identity {
            enrolled,
            config,
            bridge_out,
            state: RwLock::new(State::default()),
            refusals: Refusals::default(),
            disconnector: RwLock::new(None),
            external: External {
                on: AtomicBool::new(false),
                healthy: AtomicBool::new(true),
                changes: watch::Sender::new(0),
                applied: watch::Sender::new(0),
                cycle_ms: AtomicU64::new(0),
            },
        };
        for r in records {
            id.upsert(r);
        }
        id
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Every write is a single insert or replace: a poisoned lock still
        // holds a consistent state.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// How [`Identity::disconnect`] reaches the broker.
    pub fn set_disconnector(&self, d: Disconnector) {
        *self
            .disconnector
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(d);
    }

    /// Closes the connection of `client_id`, if the broker lets us (the
    /// embedded one does; an external broker refuses the device at its
    /// next login, see docs/operations.md "Security model"). Returns
    /// whether a disconnect was asked for.
    pub fn disconnect(&self, client_id: &str) -> bool {
        let d = self
            .disconnector
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match d {
            Some(d) => {
                d(client_id);
                true
            }
            None => false,
        }
    }

    /// The refusal counters.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    pub fn admission(&self) -> &Admission {
        &self.config.admission
    }

    /// Takes a stored record into memory (after the core actor wrote it).
    /// A hash that does not parse lets the device in with nothing.
    pub fn upsert(&self, r: &CredentialRecord) {
        let entry = Entry {
            hash: PasswordHash::parse(&r.hash),
            standing: r.standing,
            trusts: r.trusts.as_ref().map(|t| t.clone().into_boxed_slice()),
        };
        let mut state = self.write();
        state.devices.insert(r.id.clone(), entry);
        state.revoked_certs.extend(r.revoked_certs.iter().cloned());
        drop(state);
        self.changed();
    }

    fn changed(&self) {
        self.external.changes.send_modify(|n| *n += 1);
    }

    /// An external broker keeps a copy from now on: [`Identity::applied`]
    /// waits for it. Returns the change counter to follow.
    pub fn follow_changes(&self) -> watch::Receiver<u64> {
        self.external.on.store(true, Ordering::Release);
        self.external.changes.subscribe()
    }

    /// The external broker's copy holds every change up to `change`.
    pub fn mark_applied(&self, change: u64) {
        self.external.healthy.store(true, Ordering::Release);
        self.external.applied.send_modify(|a| *a = (*a).max(change));
    }

    /// How long the sync's last cycle took (its debounce window and its
    /// rewrite): large files take longer, and [`Identity::applied`] waits
    /// that much more before it says the files are late.
    pub fn set_sync_cycle(&self, cycle: Duration) {
        let ms = u64::try_from(cycle.as_millis()).unwrap_or(u64::MAX);
        self.external.cycle_ms.store(ms, Ordering::Release);
    }

    /// How long [`Identity::applied_to`] waits: [`APPLY_WAIT`] beyond two
    /// of the sync's cycles (a change can just miss one).
    pub fn apply_wait(&self) -> Duration {
        let cycle = Duration::from_millis(self.external.cycle_ms.load(Ordering::Acquire));
        APPLY_WAIT + cycle * 2
    }

    /// The external broker's copy cannot be updated now (its sync logs
    /// why): until it can, [`Identity::applied`] does not wait, so that a
    /// broken sync does not hold up every Membership and reply.
    pub fn mark_failing(&self) {
        self.external.healthy.store(false, Ordering::Release);
    }

    /// Waits until the external broker's copy holds every change made so
    /// far (at most [`Identity::apply_wait`]; then it says so and goes on), so that
    /// a device is granted a group's topics before its Membership names
    /// the group, and a provisioned device can log in once `ota devices
    /// provision` returns. At once when there is no external copy, or
    /// while its updates fail.
    pub async fn applied(&self) {
        self.applied_to(self.change()).await
    }

    /// The latest change's number (what [`Identity::observe`] and
    /// [`Identity::upsert`] count).
    pub fn change(&self) -> u64 {
        *self.external.changes.borrow()
    }

    /// Does an external broker keep a copy, and is it being updated?
    pub fn external_copy(&self) -> bool {
        let e = &self.external;
        e.on.load(Ordering::Acquire) && e.healthy.load(Ordering::Acquire)
    }

    /// [`Identity::applied`] for change `target`.
    pub async fn applied_to(&self, target: u64) {
        if !self.external_copy() {
            return;
        }
        let mut rx = self.external.applied.subscribe();
        let wait = rx.wait_for(|a| *a >= target);
        let limit = self.apply_wait();
        if tokio::time::timeout(limit, wait).await.is_err() {
            warn!(
                change = target,
                wait_secs = limit.as_secs(),
                "the external broker's password and ACL files are not current yet (see the \
                 mosquitto sync's error above): going on without them"
            );
        }
    }

    /// Was the device provisioned trusting the release key `kid`? `None`
    /// when what it trusts is not known (enrolled, not provisioned, or by
    /// an older CLI).
    pub fn trusts(&self, id: &DeviceId, kid: &Kid) -> Option<bool> {
        let state = self.read();
        let trusts = state.devices.get(id)?.trusts.as_ref()?;
        Some(trusts.contains(kid))
    }

    /// The device's standing; `None` when it was never provisioned.
    pub fn standing(&self, id: &DeviceId) -> Option<Standing> {
        self.read().devices.get(id).map(|e| e.standing)
    }

    /// Provisioned devices by standing (active, pending, revoked): one
    /// pass under the read lock, for `/metrics`.
    pub fn standings(&self) -> [(Standing, usize); 3] {
        let mut out = [
            (Standing::Active, 0),
            (Standing::Pending, 0),
            (Standing::Revoked, 0),
        ];
        for e in self.read().devices.values() {
            if let Some(slot) = out.iter_mut().find(|(s, _)| *s == e.standing) {
                slot.1 += 1;
            }
        }
        out
    }

    /// Devices in the registry.
    pub fn len(&self) -> usize {
        self.read().devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// May this device register and take part (count in gates, get groups)?
    /// Active devices, and with `Open` admission any device not revoked.
    pub fn takes_part(&self, id: &DeviceId) -> bool {
        match self.standing(id) {
            Some(Standing::Active) => true,
            Some(Standing::Pending | Standing::Revoked) => false,
            None => self.config.admission == Admission::Open,
        }
    }

    /// May this device's Hello be heard (registered or shown pending)?
    pub fn may_say_hello(&self, id: &DeviceId) -> bool {
        match self.standing(id) {
            Some(Standing::Active | Standing::Pending) => true,
            Some(Standing::Revoked) => false,
            None => self.config.admission == Admission::Open,
        }
    }

    /// Is `name` taken by the bridge, operators or their client ids, so
    /// that no device may be provisioned with it?
    pub fn is_reserved(&self, name: &str) -> bool {
        self.is_bridge_id(name) || name.starts_with(OPERATOR_CLIENT_PREFIX) || self.is_account(name)
    }

    fn is_bridge_id(&self, id: &str) -> bool {
        id == self.config.bridge_client_id || id == self.bridge_out
    }

    fn role<'a>(&self, client_id: &'a str) -> Role<'a> {
        if self.is_bridge_id(client_id) {
            Role::Bridge
        } else if client_id.starts_with(OPERATOR_CLIENT_PREFIX) {
            Role::Operator
        } else {
            Role::Device(client_id)
        }
    }

    /// Takes note of a retained message the bridge is about to publish
    /// (Memberships and announcements grant topics). Returns whether a
    /// grant changed.
    pub fn observe(&self, topic: &Topic, payload: &[u8]) -> bool {
        let grants = matches!(
            topic,
            Topic::Groups(_)
                | Topic::GroupCampaign(_)
                | Topic::GroupEmergency(_)
                | Topic::Emergency
        );
        let changed = grants && self.write().grants.observe(topic, payload);
        if changed {
            self.changed();
        }
        changed
    }

    /// Is artifact `a` announced to the device (on its groups' topics or
    /// `P/emergency`)? The block server asks before serving it.
    pub fn may_fetch(&self, id: &DeviceId, a: &ArtifactId) -> bool {
        self.takes_part(id) && self.read().grants.may_fetch(id, a)
    }

    /// E1 as Mosquitto files ([`super::mosquitto`]): the active devices,
    /// the bridge's and operators' accounts (hashed here, with a new salt),
    /// and the grants as they stand.
    pub fn mosquitto_files(&self) -> super::mosquitto::Files {
        let hash =
            |(u, p): (&String, &String)| (u.clone(), schemas::provisioning::hash_password(p));
        let state = self.read();
        let devices = state
            .devices
            .iter()
            .filter(|(_, e)| e.standing == Standing::Active)
            .filter_map(|(id, e)| e.hash.as_ref().map(|h| (id.clone(), h.to_text())))
            .collect();
        super::mosquitto::render(&super::mosquitto::Input {
            topics: &self.config.topics,
            devices,
            bridge: self.config.bridge_login.as_ref().map(|(u, p)| hash((u, p))),
            operators: self.config.operators.iter().map(hash).collect(),
            grants: &state.grants,
        })
    }

    fn decide_publish(&self, client_id: &str, topic: &str) -> bool {
        let Ok(t) = self.config.topics.parse(topic) else {
            return false;
        };
        match self.role(client_id) {
            Role::Bridge => matches!(
                t,
                Topic::Groups(_)
                    | Topic::DeviceBlocks(_)
                    | Topic::Ack(_)
                    | Topic::GroupCampaign(_)
                    | Topic::GroupEmergency(_)
                    | Topic::Emergency
                    | Topic::ArtifactBlocks(_)
                    | Topic::OpsReply(_)
                    | Topic::OpsEvents
            ),
            Role::Operator => t == Topic::OpsCommands,
            Role::Device(me) => {
                let (own, full) = match &t {
                    Topic::Hello(id) | Topic::Presence(id) => (id.as_str() == me, false),
                    Topic::Request(id) | Topic::Status(id) => (id.as_str() == me, true),
                    _ => return false,
                };
                own && self.device_standing_allows(me, full)
            }
        }
    }

    /// `full`: a right only devices that take part have (Status, block
    /// requests, group and emergency topics); pending devices only say
    /// Hello and hear their own Membership and acks.
    fn device_standing_allows(&self, me: &str, full: bool) -> bool {
        let Ok(id) = DeviceId::new(me) else {
            return false;
        };
        match self.standing(&id) {
            Some(Standing::Active) => true,
            Some(Standing::Pending) => !full,
            Some(Standing::Revoked) => false,
            None => self.config.admission == Admission::Open,
        }
    }

    fn decide_subscribe(&self, client_id: &str, filter: &str) -> bool {
        let topics = &self.config.topics;
        match self.role(client_id) {
            Role::Bridge => {
                // And its own block broadcast, which the egress link's
                // delivery probe hears (mqtt/egress.rs): nothing a device sends.
                let wildcard = [
                    Filter::AllHello,
                    Filter::AllPresence,
                    Filter::AllRequests,
                    Filter::AllStatus,
                    Filter::OpsCommands,
                    Filter::AllArtifactBlocks,
                    // And the retained topics it owns, to repair what it
                    // did not publish there (issue 13; the repair watcher).
                    Filter::AllMemberships,
                    Filter::AllAcks,
                    Filter::AllGroupCampaigns,
                    Filter::AllGroupEmergencies,
                    Filter::Emergency,
                ]
                .iter()
                .any(|f| topics.filter(*f) == filter);
                wildcard
                    || matches!(
                        topics.parse(filter),
                        Ok(Topic::Hello(_)
                            | Topic::Presence(_)
                            | Topic::Request(_)
                            | Topic::Status(_)
                            | Topic::OpsCommands)
                    )
            }
            Role::Operator => matches!(
                topics.parse(filter),
                Ok(Topic::OpsReply(_) | Topic::OpsEvents)
            ),
            Role::Device(me) => {
                // A parsed topic has no wildcard: names refuse `+` and `#`.
                let Ok(t) = topics.parse(filter) else {
                    return false;
                };
                let Ok(id) = DeviceId::new(me) else {
                    return false;
                };
                match &t {
                    Topic::Groups(x) | Topic::Ack(x) | Topic::DeviceBlocks(x) => {
                        *x == id && self.device_standing_allows(me, false)
                    }
                    Topic::Emergency => self.device_standing_allows(me, true),
                    Topic::GroupCampaign(g) | Topic::GroupEmergency(g) => {
                        self.device_standing_allows(me, true) && self.read().grants.in_group(&id, g)
                    }
                    Topic::ArtifactBlocks(a) => {
                        self.device_standing_allows(me, true)
                            && self.read().grants.may_fetch(&id, a)
                    }
                    _ => false,
                }
            }
        }
    }
}

impl Authority for Identity {
    fn connect(&self, client_id: &str, login: Login<'_>) -> ConnectVerdict {
        match self.decide_connect(client_id, login) {
            Ok(()) => ConnectVerdict::Accept,
            Err(why) => {
                self.refusals.count(why, client_id, "connect");
                ConnectVerdict::Refuse(why.as_str())
            }
        }
    }

    fn may_publish(&self, client_id: &str, topic: &str) -> bool {
        let ok = self.decide_publish(client_id, topic);
        if !ok {
            self.refusals.count(Refused::Publish, client_id, topic);
        }
        ok
    }

    fn may_subscribe(&self, client_id: &str, filter: &str) -> bool {
        let ok = self.decide_subscribe(client_id, filter);
        if !ok {
            self.refusals.count(Refused::Subscribe, client_id, filter);
        }
        ok
    }
}
