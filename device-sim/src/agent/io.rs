//! The I/O loop of one device: a rumqttc connection, timers, the store and
//! the installer around the pure [`Agent`]. It selects on the MQTT event
//! loop, the next timer, finished background work and shutdown, turns what
//! it sees into [`Event`]s and performs the [`Action`]s the agent returns,
//! in order.
//!
//! Long file: one loop with one arm per kind of I/O the agent needs (MQTT,
//! timers, store, installer); every decision is in the pure `machine/`.
//!
//! - Connect: client id = device id, clean session, keep-alive (never 0:
//!   rumqttd refuses it), last will = retained `Presence{online: false}`.
//!   Each attempt waits at the shared [`Pacer`]; a lost connection backs off
//!   with jitter.
//! - A SUBACK is matched to the topic subscribed (`suback`) and handed to
//!   the agent, which retries a refused one; refusals are logged once per
//!   interval.
//! - Publishes never await inside the loop that polls the event loop
//!   (NOTES.md: that deadlocks): requests go through `try_*`, and those the
//!   client's bounded channel cannot take yet wait in a local queue.
//! - Blocking work (files, hashing, installing) runs on the blocking pool;
//!   image checks and installs report back through a bounded channel so the
//!   connection keeps being served meanwhile.
//! - A reboot (firmware, or a simulated power loss) drops the connection and
//!   the agent, and boots a new agent from the store.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use rumqttc::{
    AsyncClient, ClientError, Event as MqttEvent, EventLoop, Incoming, LastWill, MqttOptions,
    Outgoing as Written, QoS,
};
use schemas::msg::{Presence, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::ComponentName;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::classify::classify;
use super::event::{Action, BootOutcome, Event, Notice, TimerId};
pub use super::hooks::{Disruption, Hooks, NoHooks};
use super::installer::Installer;
use super::machine::control::is_control;
use super::pace::{Backoff, ConnectPermit, Pacer};
use super::policy::DeferPolicy;
use super::state::DeviceState;
use super::store::{DeviceStore, StoreError};
use super::suback::{RefusalLog, Subacks};
use super::{Agent, AgentConfig};

/// Everything one device needs to run, besides its store and installer.
pub struct DeviceIoConfig {
    /// Identity, provisioning, trusted keys, timings.
    pub agent: Arc<AgentConfig>,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic prefix.
    pub topics: Topics,
    /// MQTT keep-alive (at least 5 s).
    pub keep_alive: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Versions installed at the first boot.
    pub factory_versions: BTreeMap<ComponentName, String>,
    /// The deferral policy (step 4).
    pub policy: Box<dyn DeferPolicy>,
    /// Seeds jitter, boot ids and a fresh epoch.
    pub seed: u64,
    /// Shared connect pacing, if any.
    pub pacer: Option<Arc<Pacer>>,
    /// MQTT username and password (from the device's provisioning file);
    /// `None`: log in without (an anonymous broker).
    pub login: Option<(String, String)>,
    /// TLS (`mqtts://`), built once from the provisioning file
    /// ([`super::tls_config`]); `None`: plain MQTT.
    pub tls: Option<Arc<tls::rustls::ClientConfig>>,
}

/// Why a device stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The store failed: the device cannot keep its promises (seq, blocks).
    #[error("device {device}: {source}")]
    Store {
        /// The device.
        device: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// A blocking task panicked.
    #[error("device {device}: a background task failed: {detail}")]
    Task {
        /// The device.
        device: String,
        /// The join error.
        detail: String,
    },
}

/// Results of background work.
enum Done {
    Checked(Event),
    Installed(Event),
}

/// How a connection ended.
enum Exit {
    Shutdown,
    Reconnect,
    Reboot,
}

/// One connection attempt and its life.
struct Conn {
    client: AsyncClient,
    eventloop: EventLoop,
    /// Held until the CONNACK: see [`Pacer`].
    permit: Option<ConnectPermit>,
}

/// One queued MQTT request.
enum Outgoing {
    Subscribe {
        filter: String,
        topic: Topic,
    },
    Unsubscribe(String),
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
}

/// The device's clock: Unix milliseconds, monotonic within a run (tokio's
/// clock, so paused-time tests work).
#[derive(Clone, Copy)]
struct Clock {
    base: Instant,
    base_ms: u64,
}

impl Clock {
    fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            base: Instant::now(),
            base_ms,
        }
    }

    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    fn instant(&self, at_ms: u64) -> Instant {
        self.base + Duration::from_millis(at_ms.saturating_sub(self.base_ms))
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock was already reported by its task; the
    // store's own invariants hold between calls.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one device until `shutdown` completes or its store fails.
pub async fn run_device<S, I, H>(
    cfg: DeviceIoConfig,
    installer: I,
    store: S,
    hooks: H,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DeviceError>
where
    S: DeviceStore,
    I: Installer,
    H: Hooks,
{
    let mut dev = Device {
        store: Arc::new(Mutex::new(store)),
        installer: Arc::new(Mutex::new(installer)),
        hooks,
        clock: Clock::new(),
        rng: StdRng::seed_from_u64(cfg.seed ^ 0x5eed),
        timers: BTreeMap::new(),
        outgoing: VecDeque::new(),
        boots: 0,
        attempt: 0,
        subacks: Subacks::default(),
        refusals: RefusalLog::default(),
        cfg,
    };
    tokio::pin!(shutdown);
    let mut policy = Some(std::mem::replace(
        &mut dev.cfg.policy,
        Box::new(super::NeverDefer),
    ));
    loop {
        let Some(p) = policy.take() else {
            return Ok(());
        };
        let (mut agent, reboot_now) = dev.boot(p).await?;
        if reboot_now {
            // An install cut short by the last power loss finished during
            // this boot and asks for a reboot already.
            policy = Some(agent.into_policy());
            continue;
        }
        let exit = dev.run_boot(&mut agent, &mut shutdown).await?;
        policy = Some(agent.into_policy());
        match exit {
            Exit::Shutdown => return Ok(()),
            Exit::Reboot | Exit::Reconnect => continue,
        }
    }
}

struct Device<S, I, H> {
    cfg: DeviceIoConfig,
    store: Arc<Mutex<S>>,
    installer: Arc<Mutex<I>>,
    hooks: H,
    clock: Clock,
    rng: StdRng,
    timers: BTreeMap<TimerId, u64>,
    outgoing: VecDeque<Outgoing>,
    boots: u32,
    attempt: u32,
    /// This connection's subscriptions awaiting their SUBACK.
    subacks: Subacks,
    refusals: RefusalLog,
}

impl<S: DeviceStore, I: Installer, H: Hooks> Device<S, I, H> {
    fn id(&self) -> String {
        self.cfg.agent.id.to_string()
    }

    fn store_err(&self, source: StoreError) -> DeviceError {
        DeviceError::Store {
            device: self.id(),
            source,
        }
    }

    /// Runs `f` on the store: inline for memory, on the blocking pool for
    /// files.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T, DeviceError> {
        if S::BLOCKING {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || f(&mut lock(&store)))
                .await
                .map_err(|e| DeviceError::Task {
                    device: self.id(),
                    detail: e.to_string(),
                })
        } else {
            Ok(f(&mut lock(&self.store)))
        }
    }

    /// Boots an agent from the store (or fresh), feeding Start and, after a
    /// firmware reboot, the boot outcome.
    async fn boot(&mut self, policy: Box<dyn DeferPolicy>) -> Result<(Agent, bool), DeviceError> {
        self.boots += 1;
        self.timers.clear();
        self.outgoing.clear();
        let saved = self
            .with_store(|s| s.load_state())
            .await?
            .map_err(|e| self.store_err(e))?;
        let now = self.clock.now_ms();
        // The clock enters the seed: a boot id must be new at every boot,
        // also when the same device (same seed) starts again.
        let seed = self
            .cfg
            .seed
            .wrapping_add(u64::from(self.boots).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            ^ now.rotate_left(17);
        let fresh = saved.is_none();
        let state = match saved {
            Some(s) => s,
            None => {
                let mut rng = StdRng::seed_from_u64(seed ^ now);
                DeviceState::fresh(self.cfg.factory_versions.clone(), now, &mut rng)
            }
        };
        let mut agent = Agent::new(self.cfg.agent.clone(), state, policy, seed);
        for (artifact, geometry) in agent.partial_downloads() {
            let a = artifact.clone();
            if let Some(have) = self
                .with_store(move |s| s.load_blocks(&a, &geometry))
                .await?
            {
                agent.restore_blocks(&artifact, have);
            }
        }
        if self.cfg.agent.deltas {
            // E3: the running images' hashes pick deltas.
            let installer = self.installer.clone();
            let components: Vec<ComponentName> = agent.state().versions.keys().cloned().collect();
            let found = tokio::task::spawn_blocking(move || {
                super::rebuild::installed_images(&installer, &components)
            })
            .await
            .unwrap_or_default();
            for (c, sha256) in found {
                agent.set_installed_image(c, sha256);
            }
        }
        if fresh {
            let st = agent.state().clone();
            self.with_store(move |s| s.save_state(&st))
                .await?
                .map_err(|e| self.store_err(e))?;
        }
        self.hooks.booted(self.boots);
        debug!(device = %self.cfg.agent.id, boot = self.boots, fresh, "device booted");
        let out = agent.handle(now, Event::Start);
        if self.perform(&mut agent, None, out).await? {
            return Ok((agent, true));
        }
        if let Some(req) = agent.pending_boot() {
            let installer = self.installer.clone();
            let outcome = tokio::task::spawn_blocking(move || lock(&installer).boot(&req))
                .await
                .unwrap_or_else(|e| BootOutcome::RolledBack {
                    detail: format!("boot check failed: {e}"),
                });
            let out = agent.handle(self.clock.now_ms(), Event::Booted(outcome));
            if self.perform(&mut agent, None, out).await? {
                return Ok((agent, true));
            }
        }
        Ok((agent, false))
    }

    /// Serves one boot: connects, reconnects, until shutdown or a reboot.
    async fn run_boot(
        &mut self,
        agent: &mut Agent,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Exit, DeviceError> {
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(4);
        loop {
            let mut permit = None;
            if let Some(p) = &self.cfg.pacer {
                tokio::select! {
                    p = p.wait() => permit = Some(p),
                    _ = &mut *shutdown => return Ok(Exit::Shutdown),
                }
            }
            let (client, eventloop) = self.connect_options();
            self.subacks.reset();
            let mut conn = Conn {
                client,
                eventloop,
                permit,
            };
            let exit = self
                .serve(agent, &mut conn, &done_tx, &mut done_rx, shutdown)
                .await?;
            drop(conn);
            if agent.is_connected() {
                let out = agent.handle(self.clock.now_ms(), Event::Disconnected);
                self.perform(agent, None, out).await?;
                self.hooks.link(false);
            }
            match exit {
                Exit::Reconnect => {
                    let delay = self.cfg.backoff.delay(self.attempt, &mut self.rng);
                    self.attempt = self.attempt.saturating_add(1);
                    debug!(device = %self.cfg.agent.id, ?delay, "reconnecting after backoff");
                    tokio::select! {
                        _ = self.sleep_with_timers(agent, delay) => {}
                        _ = &mut *shutdown => return Ok(Exit::Shutdown),
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// Sleeps through a backoff while still firing the agent's timers
    /// (deferral looks, for instance).
    async fn sleep_with_timers(&mut self, agent: &mut Agent, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            let next = self.next_timer();
            let wake = next
                .as_ref()
                .map_or(until, |(_, at)| self.clock.instant(*at).min(until));
            tokio::time::sleep_until(wake).await;
            if Instant::now() >= until {
                return;
            }
            if let Some((id, _)) = next {
                self.timers.remove(&id);
                let out = agent.handle(self.clock.now_ms(), Event::Timer(id));
                // Offline: the agent asks for nothing that needs a link.
                let _ = self.perform(agent, None, out).await;
            }
        }
    }

    fn connect_options(&mut self) -> (AsyncClient, EventLoop) {
        let id = self.cfg.agent.id.clone();
        let mut opts = MqttOptions::new(id.as_str(), self.cfg.host.clone(), self.cfg.port);
        opts.set_keep_alive(self.cfg.keep_alive.max(Duration::from_secs(5)));
        opts.set_clean_session(true);
        if let Some((user, pass)) = &self.cfg.login {
            opts.set_credentials(user.clone(), pass.clone());
        }
        if let Some(t) = &self.cfg.tls {
            opts.set_transport(tls::transport(t.clone()));
        }
        opts.set_last_will(LastWill::new(
            self.cfg.topics.build(&Topic::Presence(id)),
            Presence { online: false }.encode(),
            QoS::AtLeastOnce,
            true,
        ));
        opts.set_max_packet_size(schemas::msg::limits::MAX_BLOCK_BYTES + 4096, 64 * 1024);
        opts.set_inflight(16);
        let (client, mut eventloop) = AsyncClient::new(opts, 32);
        // A busy broker may take a while to accept; the pacer already keeps
        // the attempts few, so give each one time rather than retry it.
        eventloop.network_options.set_connection_timeout(30);
        (client, eventloop)
    }

    fn next_timer(&self) -> Option<(TimerId, u64)> {
        self.timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(id, at)| (id.clone(), *at))
    }

    /// One connection's life.
    async fn serve(
        &mut self,
        agent: &mut Agent,
        conn: &mut Conn,
        done_tx: &mpsc::Sender<Done>,
        done_rx: &mut mpsc::Receiver<Done>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Exit, DeviceError> {
        let Conn {
            client,
            eventloop,
            permit,
        } = conn;
        loop {
            self.drain_outgoing(client);
            let next = self.next_timer();
            let wake = next.as_ref().map(|(_, at)| self.clock.instant(*at));
            let timer = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut *shutdown => {
                    self.goodbye(client, eventloop).await;
                    return Ok(Exit::Shutdown);
                }
                polled = eventloop.poll() => {
                    match polled {
                        Ok(MqttEvent::Incoming(Incoming::ConnAck(ack))) => {
                            // The attempt is over: let the next one go.
                            *permit = None;
                            self.attempt = 0;
                            self.hooks.link(true);
                            debug!(device = %self.cfg.agent.id, "connected");
                            let out = agent.handle(self.clock.now_ms(), Event::Connected { session_present: ack.session_present });
                            self.perform(agent, Some(done_tx), out).await?;
                        }
                        Ok(MqttEvent::Incoming(Incoming::Publish(p))) => {
                            if let Some(exit) = self.incoming(agent, done_tx, &p.topic, &p.payload).await? {
                                return Ok(exit);
                            }
                        }
                        Ok(MqttEvent::Outgoing(Written::Subscribe(pkid))) => self.subacks.sent(pkid),
                        Ok(MqttEvent::Incoming(Incoming::SubAck(ack))) => {
                            if let Some(ev) = self.subacks.acked(&ack) {
                                let out = agent.handle(self.clock.now_ms(), ev);
                                if self.perform(agent, Some(done_tx), out).await? {
                                    return Ok(Exit::Reboot);
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            debug!(device = %self.cfg.agent.id, error = %e, "connection lost");
                            if !agent.is_connected() {
                                self.hooks.connect_failed(&e.to_string());
                                if let Some(reason) = refused_login(&e) {
                                    self.hooks.login_refused(reason);
                                }
                                if let Some(f) = tls::explain(&self.cfg.host, self.cfg.port, &e) {
                                    // Reported through the hook (ota sim stops
                                    // with it), like the other connect errors.
                                    debug!(device = %self.cfg.agent.id, "{f}");
                                    self.hooks.tls_failed(&f.to_string());
                                }
                            }
                            return Ok(Exit::Reconnect);
                        }
                    }
                }
                _ = timer => {
                    if let Some((id, _)) = next {
                        self.timers.remove(&id);
                        let out = agent.handle(self.clock.now_ms(), Event::Timer(id));
                        if self.perform(agent, Some(done_tx), out).await? {
                            return Ok(Exit::Reboot);
                        }
                    }
                }
                Some(done) = done_rx.recv() => {
                    let ev = match done { Done::Checked(e) | Done::Installed(e) => e };
                    let out = agent.handle(self.clock.now_ms(), ev);
                    if self.perform(agent, Some(done_tx), out).await? {
                        return Ok(Exit::Reboot);
                    }
                }
            }
        }
    }

    /// A publish from the broker: parse, hand to the agent, maybe disrupt.
    async fn incoming(
        &mut self,
        agent: &mut Agent,
        done_tx: &mpsc::Sender<Done>,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<Exit>, DeviceError> {
        // E2: with director keys, control messages pass its checks first.
        let signed = match self.cfg.topics.parse(topic) {
            Ok(t) if agent.checks_control() && is_control(&t) => Some(t),
            _ => None,
        };
        let ev = match signed {
            Some(t) => match agent.admit(self.clock.now_ms(), t, topic, payload) {
                Ok(ev) => ev,
                Err(e) => {
                    warn!(device = %self.cfg.agent.id, topic, reason = e.code(), error = %e, "control message refused; keeping what the topic said before");
                    self.hooks.dropped(e.code());
                    return Ok(None);
                }
            },
            None => match classify(&self.cfg.topics, topic, payload) {
                Ok(ev) => ev,
                Err(what) => {
                    warn!(device = %self.cfg.agent.id, topic, what, "payload refused");
                    self.hooks.dropped(what);
                    return Ok(None);
                }
            },
        };
        let is_block = matches!(ev, Event::Block(_));
        if is_block {
            self.hooks.block_bytes(payload.len());
        }
        if is_block && !self.hooks.keep_block() {
            return Ok(None);
        }
        let out = agent.handle(self.clock.now_ms(), ev);
        if self.perform(agent, Some(done_tx), out).await? {
            return Ok(Some(Exit::Reboot));
        }
        if is_block {
            if let Some((have, blocks)) = agent.download_progress() {
                match self.hooks.disrupt(have, blocks) {
                    Some(Disruption::Disconnect) => {
                        debug!(device = %self.cfg.agent.id, have, blocks, "simulated disconnect");
                        return Ok(Some(Exit::Reconnect));
                    }
                    Some(Disruption::PowerLoss) => {
                        debug!(device = %self.cfg.agent.id, have, blocks, "simulated power loss");
                        return Ok(Some(Exit::Reboot));
                    }
                    None => {}
                }
            }
        }
        Ok(None)
    }

    /// Performs actions in order. Returns true when the agent asked for a
    /// reboot.
    async fn perform(
        &mut self,
        agent: &mut Agent,
        done_tx: Option<&mpsc::Sender<Done>>,
        actions: Vec<Action>,
    ) -> Result<bool, DeviceError> {
        let mut reboot = false;
        let mut follow = Vec::new();
        for action in actions {
            match action {
                Action::Subscribe(topic) => self.outgoing.push_back(Outgoing::Subscribe {
                    filter: self.cfg.topics.build(&topic),
                    topic,
                }),
                Action::Unsubscribe(t) => self
                    .outgoing
                    .push_back(Outgoing::Unsubscribe(self.cfg.topics.build(&t))),
                Action::Publish {
                    topic,
                    payload,
                    retain,
                } => {
                    self.outgoing.push_back(Outgoing::Publish {
                        topic: self.cfg.topics.build(&topic),
                        payload,
                        retain,
                    });
                }
                Action::SetTimer { id, at_ms } => {
                    self.timers.insert(id, at_ms);
                }
                Action::Persist => {
                    let st = agent.state().clone();
                    self.with_store(move |s| s.save_state(&st))
                        .await?
                        .map_err(|e| self.store_err(e))?;
                }
                Action::StoreBlock {
                    artifact,
                    geometry,
                    index,
                    data,
                } => {
                    let a = artifact.clone();
                    let r = self
                        .with_store(move |s| s.put_block(&a, &geometry, index, &data))
                        .await?;
                    if let Err(e) = r {
                        warn!(device = %self.cfg.agent.id, artifact = %artifact, index, error = %e, "block not kept");
                        let lost = Event::BlockLost { artifact, index };
                        follow.extend(agent.handle(self.clock.now_ms(), lost));
                    }
                }
                Action::DropBlocks { artifact } => {
                    self.with_store(move |s| s.drop_blocks(&artifact)).await?;
                }
                Action::CheckImage { artifact, geometry } => {
                    let store = self.store.clone();
                    let tx = done_tx.cloned();
                    let ev = move || {
                        let result = lock(&store)
                            .digest(&artifact, &geometry)
                            .map_err(|e| e.to_string());
                        Event::ImageChecked { artifact, result }
                    };
                    self.background(tx, agent, ev, Done::Checked).await?;
                }
                Action::Rebuild(req) => {
                    let (store, installer) = (self.store.clone(), self.installer.clone());
                    let ev = move || super::rebuild::rebuild(&store, &installer, req);
                    self.background(done_tx.cloned(), agent, ev, Done::Checked)
                        .await?;
                }
                Action::Install(req) => {
                    let (store, installer) = (self.store.clone(), self.installer.clone());
                    let tx = done_tx.cloned();
                    let ev = move || {
                        let image = super::rebuild::image_source(&store, &req.artifact);
                        let result = lock(&installer).install(&req, &image);
                        Event::InstallDone {
                            campaign: req.campaign,
                            result,
                        }
                    };
                    self.background(tx, agent, ev, Done::Installed).await?;
                }
                Action::Reboot(req) => {
                    debug!(device = %self.cfg.agent.id, version = %req.version, "rebooting into new firmware");
                    reboot = true;
                }
                Action::Notice(n) => {
                    self.log_notice(&n);
                    self.hooks.notice(&n);
                }
            }
        }
        if !follow.is_empty() {
            reboot |= Box::pin(self.perform(agent, done_tx, follow)).await?;
        }
        Ok(reboot)
    }

    fn log_notice(&mut self, n: &Notice) {
        let id = &self.cfg.agent.id;
        match n {
            Notice::SubscribeRefused { .. } | Notice::SubscribeGranted { .. } => self
                .refusals
                .note(id.as_str(), &self.cfg.topics, self.clock.now_ms(), n),
            Notice::BlockRejected {
                artifact,
                index,
                reason,
            } => warn!(device = %id, artifact = %artifact, index, reason, "block rejected"),
            Notice::StatusQueued { seq, state, .. } => {
                debug!(device = %id, seq, state = %state, "status queued")
            }
            Notice::Acked { seqs } => debug!(device = %id, ?seqs, "statuses acknowledged"),
            Notice::AckIgnored { seq } => {
                debug!(device = %id, seq, "ack above the last seq ignored")
            }
            _ => {}
        }
    }

    /// Runs blocking work off the runtime. Connected: in the background,
    /// its result comes back through `tx`. At boot (no connection to
    /// serve): awaited here, and its result handled at once.
    async fn background(
        &mut self,
        tx: Option<mpsc::Sender<Done>>,
        agent: &mut Agent,
        work: impl FnOnce() -> Event + Send + 'static,
        wrap: fn(Event) -> Done,
    ) -> Result<(), DeviceError> {
        match tx {
            Some(tx) => {
                tokio::task::spawn_blocking(move || {
                    // The receiver lives as long as this boot; if it is
                    // gone, the result is moot (the device rebooted).
                    let _ = tx.blocking_send(wrap(work()));
                });
                Ok(())
            }
            None => {
                let ev =
                    tokio::task::spawn_blocking(work)
                        .await
                        .map_err(|e| DeviceError::Task {
                            device: self.id(),
                            detail: e.to_string(),
                        })?;
                let out = agent.handle(self.clock.now_ms(), ev);
                // A reboot asked for here is seen by `boot` through the
                // agent's pending boot.
                Box::pin(self.perform(agent, None, out)).await?;
                Ok(())
            }
        }
    }

    /// Hands queued requests to the client while its channel has room.
    fn drain_outgoing(&mut self, client: &AsyncClient) {
        while let Some(req) = self.outgoing.front() {
            let r = match req {
                Outgoing::Subscribe { filter, .. } => {
                    client.try_subscribe(filter.clone(), QoS::AtLeastOnce)
                }
                Outgoing::Unsubscribe(t) => client.try_unsubscribe(t.clone()),
                Outgoing::Publish {
                    topic,
                    payload,
                    retain,
                } => client.try_publish(topic.clone(), QoS::AtLeastOnce, *retain, payload.clone()),
            };
            match r {
                Ok(()) => {
                    if let Some(Outgoing::Subscribe { topic, .. }) = self.outgoing.pop_front() {
                        self.subacks.handed(topic);
                    }
                }
                Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => break,
            }
        }
    }

    /// Graceful shutdown: offline presence, DISCONNECT, a moment to send them.
    async fn goodbye(&mut self, client: &AsyncClient, eventloop: &mut EventLoop) {
        let topic = self
            .cfg
            .topics
            .build(&Topic::Presence(self.cfg.agent.id.clone()));
        let _ = client.try_publish(
            topic,
            QoS::AtLeastOnce,
            true,
            Presence { online: false }.encode(),
        );
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
}

/// The CONNACK refusal of a login the broker does not accept: its
/// credentials, not the network, are wrong.
fn refused_login(e: &rumqttc::ConnectionError) -> Option<&'static str> {
    use rumqttc::{ConnectReturnCode as C, ConnectionError as E};
    match e {
        E::ConnectionRefused(C::BadUserNamePassword) => Some("bad username or password"),
        E::ConnectionRefused(C::NotAuthorized) => Some("not authorised"),
        _ => None,
    }
}
