//! Helpers for the campaign tests: a real broker and bridge (trusting the
//! test release key), signed artifacts in its store, groups made with
//! operator commands, reference device agents (`device_sim::agent`) with
//! chosen deferral and install behaviour, the operator event log, and
//! waits that fail loudly.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::blocks::BlocksConfig;
use bridge::campaign::view::CampaignStatus;
use bridge::client::OpsClient;
use bridge::store::CurrentState;
use device_sim::agent::{
    AgentConfig, BusyFor, DeferPolicy, DeviceIoConfig, MemoryInstaller, MemoryStore, NeverDefer,
    SharedImages, Timing,
};
use schemas::control::DirectorKeys;
use schemas::cose::TrustStore;
use schemas::msg::{Kind, StatusState};
use schemas::ops::{Command, Event};
use schemas::release::{build_manifest, ReleaseSpec};
use schemas::topic::Topics;
use schemas::{ArtifactId, CampaignId, ComponentName, DeviceId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::blocks_common;
pub use crate::blocks_common::upload;

mod installed;
use crate::common::{self, Stack};
use installed::Recording;
pub use installed::Running;

/// The longest a campaign test waits for anything.
pub const LONG: Duration = Duration::from_secs(30);

/// A broker and a bridge trusting the release key, serving blocks fast.
pub async fn stack() -> Stack {
    stack_with(|_| {}).await
}

/// [`stack`], its config adjusted by `tune` (e.g. `[http]`).
pub async fn stack_with(tune: impl FnOnce(&mut bridge::Config)) -> Stack {
    blocks_common::stack_with(
        BlocksConfig {
            merge_window_ms: 20,
            ..BlocksConfig::default()
        },
        tune,
    )
    .await
}

/// A release to store: `Release::new(id, kind, version)` is component
/// `main` for `esp32`, 3,000 bytes; set the other fields to change them.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    pub id: &'a str,
    pub kind: Kind,
    pub component: &'a str,
    pub version: &'a str,
    pub arch: &'a str,
    pub size: usize,
}

impl<'a> Release<'a> {
    pub fn new(id: &'a str, kind: Kind, version: &'a str) -> Self {
        Release {
            id,
            kind,
            component: "main",
            version,
            arch: "esp32",
            size: 3000,
        }
    }

    /// A configuration: component `cfg`, for any arch, 1,500 bytes.
    pub fn config(id: &'a str, version: &'a str) -> Self {
        Release {
            component: "cfg",
            arch: "any",
            size: 1500,
            ..Release::new(id, Kind::Config, version)
        }
    }

    /// This release, as an image of `size` bytes.
    pub fn sized(self, size: usize) -> Self {
        Release { size, ..self }
    }
}

/// Stores `r` signed, as an image of `r.size` bytes (block size 1024).
pub async fn artifact(stack: &Stack, r: Release<'_>) {
    artifact_with(stack, r, |_| {}).await
}

/// [`artifact`], its manifest changed by `tweak` before signing (e.g.
/// `allow_downgrade`).
pub async fn artifact_with(stack: &Stack, r: Release<'_>, tweak: impl FnOnce(&mut ReleaseSpec)) {
    let image = blocks_common::image(r.size, r.id.len() as u64 + r.size as u64);
    let mut spec = ReleaseSpec::new(
        r.kind,
        ComponentName::new(r.component).expect("a component"),
        r.version,
        r.arch,
        1_790_000_000,
    );
    spec.artifact = Some(ArtifactId::new(r.id).expect("an artifact id"));
    spec.block_size = 1024;
    tweak(&mut spec);
    let m = build_manifest(&image, &spec).expect("a manifest");
    let env = schemas::msg::manifest::sign(&m, &blocks_common::release_key());
    upload(stack, image, env).await
}

/// A group of the devices whose `customer` label is `customer`.
pub async fn group(ops: &OpsClient, name: &str, customer: &str) {
    let _: serde_json::Value = ops
        .call_ok(Command::GroupPut {
            name: schemas::GroupName::new(name).expect("a group name"),
            selector: Some(format!("customer={customer}")),
            members: None,
        })
        .await
        .expect("group put");
}

/// How one test device behaves.
pub struct DeviceOpts {
    pub id: String,
    pub arch: String,
    pub customer: String,
    /// Installed at first boot.
    pub versions: Vec<(String, String)>,
    pub policy: Box<dyn DeferPolicy>,
    pub installer: MemoryInstaller,
    /// Username and password; `None`: no login (an anonymous broker).
    pub login: Option<(String, String)>,
    /// Provisioned with the bridge's director key (E2): the default.
    pub directors: bool,
    /// Director keys trusted beside the bridge's (a provisioning file's
    /// `director_keys_next`, for rotation).
    pub next_directors: Vec<schemas::keys::VerifyingKey>,
    /// Applies E3 deltas (once its installer holds an image): the default.
    pub deltas: bool,
    /// Connects over TLS to this port with this config (its certificate
    /// in it); `None`: plain MQTT to the stack's port.
    pub tls: Option<(u16, std::sync::Arc<tls::rustls::ClientConfig>)>,
}

impl DeviceOpts {
    /// An esp32 of `customer` with main 1.0.0 and cfg 1.0.0, never
    /// deferring, installing fine.
    pub fn new(id: impl Into<String>, customer: &str) -> Self {
        Self {
            id: id.into(),
            arch: "esp32".into(),
            customer: customer.into(),
            versions: vec![
                ("main".into(), "1.0.0".into()),
                ("cfg".into(), "1.0.0".into()),
            ],
            policy: Box::new(NeverDefer),
            installer: MemoryInstaller::default(),
            login: None,
            directors: true,
            next_directors: Vec::new(),
            deltas: true,
            tls: None,
        }
    }

    /// Connects over TLS on `port` with `config` (a device logging in by
    /// its certificate needs no [`DeviceOpts::login`]).
    pub fn tls(mut self, port: u16, config: std::sync::Arc<tls::rustls::ClientConfig>) -> Self {
        self.tls = Some((port, config));
        self
    }

    /// Logs in with these credentials (a provisioned device).
    pub fn login(mut self, login: (String, String)) -> Self {
        self.login = Some(login);
        self
    }

    /// Also trusts this director key (the next one, for rotation).
    pub fn trusting_next(mut self, key: schemas::keys::VerifyingKey) -> Self {
        self.next_directors.push(key);
        self
    }

    /// Without director keys: reads control messages as in v1.
    pub fn unsigned(mut self) -> Self {
        self.directors = false;
        self
    }

    /// Puts off every non-emergency campaign, looking again every 300 ms.
    pub fn always_deferring(mut self) -> Self {
        self.policy = Box::new(BusyFor::new(u32::MAX, 300));
        self
    }

    /// Puts each campaign off once, for `ms`.
    pub fn deferring_once(mut self, ms: u64) -> Self {
        self.policy = Box::new(BusyFor::new(1, ms));
        self
    }

    /// Every install fails (`failed` / `install_failed`).
    pub fn failing(mut self) -> Self {
        self.installer.fail_install = true;
        self
    }

    pub fn arch(mut self, arch: &str) -> Self {
        self.arch = arch.into();
        self
    }
}

/// Protocol timings shortened for tests (quiet spells of 0.3 to 0.5 s).
pub fn quick_timing() -> Timing {
    Timing {
        quiet_ms: 300,
        quiet_jitter_ms: 200,
        timeout_ms: 60_000,
        progress_every_ms: 2_000,
        resend_wait_ms: 500,
        resend_every_ms: 5_000,
        requests_in_flight: 4,
        ..Timing::default()
    }
}

/// Running reference devices.
#[derive(Default)]
pub struct Devices {
    running: BTreeMap<DeviceId, (CancellationToken, JoinHandle<()>)>,
    images: Option<Arc<SharedImages>>,
    /// The sha256 of each device's running images.
    pub installed: Running,
    /// Every payload a device refused, with the reason, in order.
    pub drops: Drops,
}

/// What devices refused: (device, reason); and the Block bytes each
/// received.
#[derive(Clone, Default)]
pub struct Drops(
    Arc<Mutex<Vec<(DeviceId, &'static str)>>>,
    Arc<Mutex<BTreeMap<DeviceId, u64>>>,
    Arc<Mutex<BTreeMap<DeviceId, u64>>>,
);

impl Drops {
    /// Bytes of Block payloads `device` received.
    pub fn block_bytes(&self, device: &DeviceId) -> u64 {
        self.1.lock().unwrap().get(device).copied().unwrap_or(0)
    }

    /// How many blocks `device` rejected (bad proof, wrong length...).
    pub fn blocks_rejected(&self, device: &DeviceId) -> u64 {
        self.2.lock().unwrap().get(device).copied().unwrap_or(0)
    }

    /// How many payloads `device` refused for `reason`.
    pub fn count(&self, device: &DeviceId, reason: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, r)| d == device && *r == reason)
            .count()
    }
}

/// The hooks of a test device: its refusals go to [`Drops`].
struct DropHooks {
    id: DeviceId,
    drops: Drops,
}

impl device_sim::agent::Hooks for DropHooks {
    fn dropped(&mut self, what: &'static str) {
        self.drops.0.lock().unwrap().push((self.id.clone(), what));
    }

    fn notice(&mut self, notice: &device_sim::agent::Notice) {
        if let device_sim::agent::Notice::BlockRejected { .. } = notice {
            *self
                .drops
                .2
                .lock()
                .unwrap()
                .entry(self.id.clone())
                .or_default() += 1;
        }
    }

    fn block_bytes(&mut self, bytes: usize) {
        *self
            .drops
            .1
            .lock()
            .unwrap()
            .entry(self.id.clone())
            .or_default() += bytes as u64;
    }
}

impl Devices {
    /// Starts a device on the stack's broker.
    pub fn spawn(&mut self, stack: &Stack, opts: DeviceOpts) -> DeviceId {
        let id = DeviceId::new(opts.id.clone()).expect("a device id");
        let images = self.images.get_or_insert_with(SharedImages::new).clone();
        let cfg = DeviceIoConfig {
            agent: Arc::new(AgentConfig {
                id: id.clone(),
                arch: opts.arch,
                labels: [("customer".to_string(), opts.customer)].into(),
                trust: Arc::new(TrustStore::new([
                    blocks_common::release_key().verifying_key()
                ])),
                directors: Arc::new(if opts.directors {
                    DirectorKeys::new(
                        std::iter::once(common::director_key().verifying_key())
                            .chain(opts.next_directors),
                    )
                } else {
                    DirectorKeys::default()
                }),
                deltas: opts.deltas,
                room_bytes: None,
                timing: quick_timing(),
            }),
            host: "127.0.0.1".into(),
            port: opts.tls.as_ref().map_or(stack.port(), |(p, _)| *p),
            topics: Topics::default(),
            keep_alive: Duration::from_secs(10),
            backoff: Default::default(),
            factory_versions: opts
                .versions
                .into_iter()
                .map(|(c, v)| (ComponentName::new(c).expect("a component"), v))
                .collect(),
            policy: opts.policy,
            seed: self.running.len() as u64 + 1,
            pacer: None,
            login: opts.login,
            tls: opts.tls.map(|(_, c)| c),
        };
        let token = CancellationToken::new();
        let stop = token.clone();
        let name = id.clone();
        let hooks = DropHooks {
            id: id.clone(),
            drops: self.drops.clone(),
        };
        let installer = Recording {
            inner: opts.installer,
            id: id.clone(),
            running: self.installed.clone(),
        };
        installer.record();
        let task = tokio::spawn(async move {
            let r = device_sim::agent::run_device(
                cfg,
                installer,
                MemoryStore::new(images),
                hooks,
                stop.cancelled_owned(),
            )
            .await;
            if let Err(e) = r {
                panic!("device {name} failed: {e}");
            }
        });
        self.running.insert(id.clone(), (token, task));
        id
    }

    /// Spawns a plain device `{customer}-{i}` of that customer for each
    /// `i` in `range`.
    pub fn spawn_each(
        &mut self,
        stack: &Stack,
        customer: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Vec<DeviceId> {
        range
            .map(|i| self.spawn(stack, DeviceOpts::new(format!("{customer}-{i}"), customer)))
            .collect()
    }

    /// Stops one device (it goes offline; its will says so).
    pub async fn stop(&mut self, id: &DeviceId) {
        if let Some((token, task)) = self.running.remove(id) {
            token.cancel();
            let _ = tokio::time::timeout(common::WAIT, task).await;
        }
    }

    /// Stops every device.
    pub async fn stop_all(&mut self) {
        let ids: Vec<DeviceId> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }
}

/// Waits until `f` holds, checking every 20 ms, for at most `limit`.
pub async fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let done = tokio::time::timeout(limit, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if done.is_err() {
        panic!("timed out after {limit:?} waiting for {what}");
    }
}

/// Fails if `f` stops holding at any check during `window`: for what must
/// not happen (a device starting while a campaign is halted).
pub async fn holds_for(what: &str, window: Duration, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < end {
        assert!(f(), "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` devices are registered.
pub async fn registered(stack: &Stack, n: usize) {
    let store = stack.bridge().store().clone();
    wait(&format!("{n} devices to register"), common::WAIT, || {
        store.devices.all().map(|d| d.len()).unwrap_or(0) >= n
    })
    .await;
}

/// A device's stored state in a campaign.
pub fn current(stack: &Stack, device: &DeviceId, campaign: &str) -> Option<CurrentState> {
    let c = CampaignId::new(campaign).expect("a campaign id");
    stack
        .bridge()
        .store()
        .status
        .current(device, &c)
        .ok()
        .flatten()
}

/// A device's stored state word in a campaign.
pub fn state(stack: &Stack, device: &DeviceId, campaign: &str) -> Option<StatusState> {
    current(stack, device, campaign).map(|c| c.state)
}

/// Sends a campaign command and reads its status reply.
pub async fn call(ops: &OpsClient, cmd: Command) -> CampaignStatus {
    let name = cmd.name();
    ops.call_ok(cmd)
        .await
        .unwrap_or_else(|e| panic!("{name} refused: {e}"))
}

/// `campaign create` from a JSON spec.
pub async fn create(ops: &OpsClient, spec: serde_json::Value) -> CampaignStatus {
    call(ops, Command::CampaignCreate { spec }).await
}

/// `campaign create`, then `campaign start`.
pub async fn launch(ops: &OpsClient, spec: serde_json::Value) -> CampaignStatus {
    let created = create(ops, spec).await;
    call(
        ops,
        Command::CampaignStart {
            id: created.summary.id,
        },
    )
    .await
}

/// `campaign status`.
pub async fn status(ops: &OpsClient, id: &str) -> CampaignStatus {
    call(
        ops,
        Command::CampaignStatus {
            id: CampaignId::new(id).expect("a campaign id"),
        },
    )
    .await
}

/// Waits until the campaign's state word is `want`.
pub async fn wait_state(ops: &OpsClient, id: &str, want: &str, limit: Duration) -> CampaignStatus {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let s = status(ops, id).await;
        if s.summary.state == want {
            return s;
        }
        if tokio::time::Instant::now() >= end {
            panic!(
                "campaign {id} is {} after {limit:?}, not {want}; history: {:#?}",
                s.summary.state, s.history
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the campaign's status satisfies `f` (the bridge's tally
/// follows its store by a moment).
pub async fn wait_status(
    ops: &OpsClient,
    id: &str,
    what: &str,
    f: impl Fn(&CampaignStatus) -> bool,
) -> CampaignStatus {
    let end = tokio::time::Instant::now() + LONG;
    loop {
        let s = status(ops, id).await;
        if f(&s) {
            return s;
        }
        if tokio::time::Instant::now() >= end {
            panic!("campaign {id}: no {what} after {LONG:?}; status: {s:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every operator event, collected in the background.
#[derive(Clone)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
}

impl EventLog {
    /// Subscribes `ops` to `P/ops/events` and collects from now on.
    pub async fn start(ops: &OpsClient) -> EventLog {
        let mut stream = ops.events().await.expect("subscribed to events");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(e) = stream.next().await {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(e);
            }
        });
        EventLog { events }
    }

    /// The events of one campaign, in order.
    pub fn of(&self, campaign: &str) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| e.campaign.as_ref().is_some_and(|c| c.as_str() == campaign))
            .cloned()
            .collect()
    }

    /// The kinds of one campaign's events, in order, progress left out.
    pub fn kinds(&self, campaign: &str) -> Vec<String> {
        self.of(campaign)
            .into_iter()
            .map(|e| e.kind)
            .filter(|k| k != "campaign.progress")
            .collect()
    }

    /// Waits for an event of `kind` about `campaign`.
    pub async fn wait(&self, campaign: &str, kind: &str, limit: Duration) -> Event {
        let mut found = None;
        let log = self.clone();
        wait(&format!("event {kind} of {campaign}"), limit, || {
            found = log.of(campaign).into_iter().find(|e| e.kind == kind);
            found.is_some()
        })
        .await;
        found.expect("found")
    }
}

/// A campaign id.
pub fn cid(s: &str) -> CampaignId {
    CampaignId::new(s).unwrap()
}

/// The announcement the bridge keeps retained on `t`, from its store.
pub fn retained(stack: &Stack, t: schemas::topic::Topic) -> Option<schemas::msg::Announcement> {
    let topic = Topics::default().build(&t);
    let bytes = stack.bridge().store().retained.get(&topic).unwrap()?;
    schemas::msg::Announcement::decode_retained(&bytes).unwrap()
}

/// The error text of a command the bridge must refuse.
pub async fn refusal(ops: &OpsClient, cmd: Command) -> String {
    ops.call_ok::<serde_json::Value>(cmd)
        .await
        .expect_err("the command must be refused")
        .to_string()
}
