//! The bridge with a large registry (issue 19 part 3): a few MQTT
//! connections publish Hellos on behalf of N device ids (1,000,000 by
//! default) with realistic labels, in 50 selector groups; then a group put,
//! a campaign (create with its pre-flight, start, the widening of its first
//! wave) and a Status from every device.
//!
//! The grant that lets 4 connections speak for a million ids is the
//! bench's own broker: a plain Mosquitto of the harness
//! ([`crate::stack::BrokerChoice::Mosquitto`], anonymous, no ACL) that the
//! bridge uses as an external broker. Nothing in the bridge's identity
//! authority changes: an `ota serve` config cannot reach it, and Mosquitto
//! runs in its own process, so the bench process's RSS is the bridge's (and
//! the generator's, which keeps no per-device state).
//!
//! Measured: Hello ingest rate (to every device's membership published),
//! membership publish rate, group put, campaign create, start and wave
//! widening latency, status ingest rate, the process's peak RSS, the sled
//! directory's size, and the core actor's longest wait (a message's
//! arrival to its handling) and longest handling time.

use std::path::Path;
use std::time::{Duration, Instant};

use bridge::campaign::view::CampaignStatus;
use bridge::metrics::LatencySnapshot;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use schemas::msg::{Hello, Kind, Status, StatusState, WireMessage};
use schemas::ops::Command;
use schemas::release::ReleaseSpec;
use schemas::topic::{Topic, Topics};
use schemas::{CampaignId, ComponentName, DeviceId, Epoch, GroupName};
use serde_json::json;

use super::table::{thousands, Row};
use crate::stack::{BrokerChoice, Stack, StackOptions};

/// One run.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Device ids registered.
    pub devices: usize,
    /// Connections the generator publishes on.
    pub connections: usize,
    /// Each phase fails when it has not finished by then.
    pub deadline: Duration,
}

impl RegistryOptions {
    /// `devices` ids on 4 connections, 30 minutes per phase.
    pub fn new(devices: usize) -> Self {
        Self {
            devices,
            connections: 4,
            deadline: Duration::from_secs(1800),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegistryReport {
    pub devices: usize,
    pub groups: usize,
    /// First Hello published to every device's membership published.
    pub hello_secs: f64,
    pub hellos_per_sec: f64,
    /// Memberships published during registration, per second.
    pub memberships_per_sec: f64,
    /// The 50th group put with every device registered (round trip).
    pub group_put_ms: f64,
    /// Memberships that put changed.
    pub group_put_moved: u64,
    pub create_ms: f64,
    pub start_ms: f64,
    /// The last first-wave report stored to the second wave started
    /// (the gate decides on its one-second tick).
    pub widen_ms: f64,
    /// Devices of the first wave (1 %).
    pub wave1_devices: usize,
    /// Status reports of the other devices, stored and acknowledged.
    pub status_reports: u64,
    pub status_per_sec: f64,
    /// Peak RSS of this process (the bridge and the generator).
    pub peak_rss_bytes: u64,
    pub sled_bytes: u64,
    /// Core's longest wait (arrival to handling) and handling time.
    pub core_max_wait_ms: f64,
    pub core_max_handle_ms: f64,
    /// Waits and handlings over 50 ms.
    pub core_waits_over_50ms: u64,
    pub core_handles_over_50ms: u64,
    /// Core's busy share during the run.
    pub core_busy_share: f64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Stack(#[from] crate::stack::StackError),
    #[error("operator command: {0}")]
    Client(#[from] bridge::client::ClientError),
    #[error("setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Stalled(String),
}

fn setup(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Setup(e.to_string())
}

/// Customers (one group each) and the other label values.
const CUSTOMERS: usize = 40;
const REGIONS: [&str; 3] = ["eu", "us", "apac"];
const HW: [&str; 3] = ["revA", "revB", "revC"];
const ARCHES: [&str; 2] = ["esp32", "armv7"];

/// The 49 groups put before registration (40 customers and 9 others),
/// and the 50th put with every device registered.
fn groups() -> Vec<(String, String)> {
    let mut g: Vec<(String, String)> = (0..CUSTOMERS)
        .map(|c| (format!("cust-{c:02}"), format!("customer=c{c:02}")))
        .collect();
    for r in REGIONS {
        g.push((format!("region-{r}"), format!("region={r}")));
    }
    for h in HW {
        g.push((format!("hw-{}", h.to_lowercase()), format!("hw={h}")));
    }
    g.push(("lines-1-2".into(), "line in (1,2)".into()));
    g.push(("eu-not-reva".into(), "region=eu,hw!=revA".into()));
    g.push(("pilot".into(), "pilot".into()));
    g
}
const LAST_GROUP: (&str, &str) = ("us-revb-line-3", "region=us,hw=revB,line=3");

/// Device `i`'s id and labels: a customer, a region, a site, a hardware
/// revision, a production line, 1 in 50 a pilot.
fn device(i: usize) -> (String, std::collections::BTreeMap<String, String>) {
    let mut l = std::collections::BTreeMap::new();
    l.insert("customer".into(), format!("c{:02}", i % CUSTOMERS));
    l.insert("region".into(), REGIONS[(i / 7) % 3].into());
    l.insert("site".into(), format!("site-{:03}", (i / 13) % 200));
    l.insert("hw".into(), HW[(i / 3) % 3].into());
    l.insert("line".into(), ((i / 11) % 8 + 1).to_string());
    if i.is_multiple_of(50) {
        l.insert("pilot".into(), "yes".into());
    }
    (format!("reg-{i:07}"), l)
}

/// Runs once on a fresh stack (Mosquitto, the bridge in this process).
pub async fn run(
    opts: &RegistryOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<RegistryReport, RegistryError> {
    let stack = Stack::start(StackOptions {
        broker: BrokerChoice::Mosquitto,
        tune: |c| {
            c.bridge.metrics_interval = Duration::from_secs(3600);
        },
        ..StackOptions::default()
    })
    .await?;
    let result = measure(&stack, opts, progress).await;
    stack.shutdown().await?;
    result
}

/// The generator's connections.
struct Generator {
    clients: Vec<AsyncClient>,
    _tasks: tokio::task::JoinSet<()>,
    topics: Topics,
}

impl Generator {
    async fn connect(host: &str, port: u16, n: usize) -> Result<Self, RegistryError> {
        let mut clients = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..n {
            let mut o = MqttOptions::new(format!("reg-gen-{k}"), host, port);
            o.set_keep_alive(Duration::from_secs(60));
            o.set_inflight(500);
            let (client, mut eventloop) = AsyncClient::new(o, 1000);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tasks.spawn(async move {
                let mut tx = Some(tx);
                loop {
                    match eventloop.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .map_err(|_| setup("a generator connection did not connect within 10 s"))?
                .map_err(setup)?;
            clients.push(client);
        }
        Ok(Self {
            clients,
            _tasks: tasks,
            topics: Topics::default(),
        })
    }

    /// Publishes `payload(i)` on `topic(i)` for every `i` in `ids`, spread
    /// over the connections (QoS 1), at most [`WINDOW`] ahead of what the
    /// bridge took (`taken`, a counter it bumps per message, from its value
    /// now): the broker keeps at most 100,000 messages queued for a client
    /// that paused its reads (the harness Mosquitto's `max_queued_messages`),
    /// and drops the rest; and a long queue costs Mosquitto time per
    /// message (`db__message_delete_outgoing` took 30 % of the samples of
    /// an unpaced run at 1,000,000).
    async fn publish_all(
        &self,
        stack: &Stack,
        ids: Vec<usize>,
        make: fn(&Topics, usize) -> (String, Vec<u8>),
        taken: fn(&bridge::metrics::Snapshot) -> u64,
    ) -> Result<(), RegistryError> {
        let b = stack.bridge().ok_or_else(|| setup("no bridge"))?;
        let base = taken(&b.metrics().snapshot());
        let n = self.clients.len();
        let mut sent = 0u64;
        for chunk in ids.chunks(WINDOW as usize / 2) {
            // Wait until the bridge is at most half a window behind.
            let limit = Instant::now() + Duration::from_secs(600);
            while taken(&b.metrics().snapshot()).saturating_sub(base) + WINDOW / 2 < sent {
                if Instant::now() > limit {
                    return Err(RegistryError::Stalled(format!(
                        "the bridge took {} of {sent} messages within 600 s",
                        taken(&b.metrics().snapshot()).saturating_sub(base)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut set = tokio::task::JoinSet::new();
            let chunk = std::sync::Arc::new(chunk.to_vec());
            for (k, c) in self.clients.iter().enumerate() {
                let (c, ids, topics) = (c.clone(), chunk.clone(), self.topics.clone());
                set.spawn(async move {
                    for i in ids.iter().skip(k).step_by(n) {
                        let (t, p) = make(&topics, *i);
                        c.publish(t, QoS::AtLeastOnce, false, p)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok::<(), String>(())
                });
            }
            while let Some(r) = set.join_next().await {
                r.map_err(setup)?.map_err(RegistryError::Setup)?;
            }
            sent += chunk.len() as u64;
        }
        Ok(())
    }
}

/// Messages the generator keeps ahead of the bridge, at most.
const WINDOW: u64 = 10_000;

fn hello(topics: &Topics, i: usize) -> (String, Vec<u8>) {
    let (id, labels) = device(i);
    let id = DeviceId::new(id).expect("generated ids are valid");
    let h = Hello {
        proto: 1,
        arch: ARCHES[i % 2].into(),
        versions: [(ComponentName::new("config").expect("valid"), "1.0.0".into())].into(),
        labels,
        boot_id: "b1".into(),
        epoch: Epoch::new("reg00001").expect("valid"),
        outbox: 1,
        features: Vec::new(),
    };
    (topics.build(&Topic::Hello(id)), h.encode())
}

const CAMPAIGN: &str = "reg-bench";

fn success(topics: &Topics, i: usize) -> (String, Vec<u8>) {
    let id = DeviceId::new(device(i).0).expect("generated ids are valid");
    let s = Status {
        seq: 1,
        campaign: CampaignId::new(CAMPAIGN).ok(),
        artifact: None,
        state: StatusState::Success,
        progress: None,
        error: None,
        detail: None,
        versions: Default::default(),
    };
    (topics.build(&Topic::Status(id)), s.encode())
}

/// Waits until `f(metrics)` reaches `want`, polling every 20 ms.
async fn until(
    stack: &Stack,
    what: &str,
    want: u64,
    within: Duration,
    f: fn(&bridge::metrics::Snapshot) -> u64,
) -> Result<Instant, RegistryError> {
    let b = stack.bridge().ok_or_else(|| setup("no bridge"))?;
    let limit = Instant::now() + within;
    loop {
        let got = f(&b.metrics().snapshot());
        if got >= want {
            return Ok(Instant::now());
        }
        if Instant::now() > limit {
            return Err(RegistryError::Stalled(format!(
                "{what}: {got} of {want} within {within:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn call<T: serde::de::DeserializeOwned>(
    stack: &Stack,
    c: Command,
) -> Result<(T, f64), RegistryError> {
    let t = Instant::now();
    let v: T = stack.ops().call_ok(c).await?;
    Ok((v, t.elapsed().as_secs_f64() * 1e3))
}

async fn measure(
    stack: &Stack,
    opts: &RegistryOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<RegistryReport, RegistryError> {
    let n = opts.devices;
    let b = stack.bridge().ok_or_else(|| setup("no bridge"))?;
    let m0 = b.metrics().snapshot();
    let groups = groups();
    for (name, selector) in &groups {
        let _: (serde_json::Value, f64) = call(
            stack,
            Command::GroupPut {
                name: GroupName::new(name.as_str()).map_err(setup)?,
                selector: Some(selector.clone()),
                members: None,
            },
        )
        .await?;
    }
    let gen = Generator::connect(
        "127.0.0.1",
        stack.config().endpoint().port,
        opts.connections,
    )
    .await?;

    // Registration: every device is in its customer's group, so its
    // membership published says it is registered.
    let t0 = Instant::now();
    gen.publish_all(stack, (0..n).collect(), hello, |s| s.memberships_published)
        .await?;
    let done = until(
        stack,
        "memberships",
        m0.memberships_published + n as u64,
        opts.deadline,
        |s| s.memberships_published,
    )
    .await?;
    let hello_secs = (done - t0).as_secs_f64();
    progress(format!(
        "registry: {} devices registered in {hello_secs:.1} s",
        thousands(n)
    ));
    let m1 = b.metrics().snapshot();

    let (put, group_put_ms): (serde_json::Value, f64) = call(
        stack,
        Command::GroupPut {
            name: GroupName::new(LAST_GROUP.0).map_err(setup)?,
            selector: Some(LAST_GROUP.1.into()),
            members: None,
        },
    )
    .await?;
    let group_put_moved = put
        .get("membership_changed")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);

    // A 4 KiB config release to every customer group, 1 % then 100 %.
    let image = super::firmware::firmware_like(4096, 7);
    let spec = ReleaseSpec::new(
        Kind::Config,
        ComponentName::new("config").map_err(setup)?,
        "2.0.0",
        "any",
        bridge::unix_now(),
    );
    let artifact = stack.push(&image, &spec).await?;
    let customers: Vec<String> = groups.iter().take(CUSTOMERS).map(|g| g.0.clone()).collect();
    let cohorts = |bp: u16| -> serde_json::Value {
        customers.iter().map(|c| (c.clone(), json!(bp))).collect()
    };
    let campaign = CampaignId::new(CAMPAIGN).map_err(setup)?;
    let spec = json!({
        "id": CAMPAIGN, "kind": "config", "release": [artifact.as_str()],
        "waves": [{"cohorts": cohorts(100)}, {"cohorts": cohorts(10000)}],
        "gates": {"min_sample": 10, "wave_timeout_secs": opts.deadline.as_secs()}
    });
    let mut events = stack.ops().events().await?;
    let (_, create_ms): (CampaignStatus, f64) =
        call(stack, Command::CampaignCreate { spec }).await?;
    let (_, start_ms): (CampaignStatus, f64) = call(
        stack,
        Command::CampaignStart {
            id: campaign.clone(),
        },
    )
    .await?;
    progress(format!(
        "registry: group put {group_put_ms:.0} ms, campaign create {create_ms:.0} ms, start {start_ms:.0} ms"
    ));

    // The first wave's devices, by the protocol's bucket.
    let c2 = campaign.clone();
    let (wave1, rest): (Vec<usize>, Vec<usize>) = tokio::task::spawn_blocking(move || {
        (0..n).partition(|i| {
            let id = DeviceId::new(device(*i).0).expect("valid");
            schemas::bucket::bucket(&c2, &id) < 100
        })
    })
    .await
    .map_err(setup)?;
    let stored0 = b.metrics().snapshot().statuses_stored;
    let w1 = wave1.len() as u64;
    gen.publish_all(stack, wave1.clone(), success, |s| s.acks_published)
        .await?;
    let last_stored = until(
        stack,
        "first wave's reports",
        stored0 + w1,
        opts.deadline,
        |s| s.statuses_stored,
    )
    .await?;
    let widened = tokio::time::timeout(opts.deadline, async {
        while let Some(e) = events.next().await {
            let wave = e.data.get("wave").and_then(|w| w.as_u64());
            if e.kind == bridge::campaign::events::kind::WAVE_STARTED
                && e.campaign.as_ref() == Some(&campaign)
                && wave == Some(1)
            {
                return Some(Instant::now());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| RegistryError::Stalled("the second wave did not start".into()))?;
    let widen_ms = widened.saturating_duration_since(last_stored).as_secs_f64() * 1e3;
    progress(format!(
        "registry: second wave {widen_ms:.0} ms after the first's last report"
    ));

    // Every other device reports: stored and acknowledged.
    let before = b.metrics().snapshot();
    let t = Instant::now();
    let r = rest.len() as u64;
    gen.publish_all(stack, rest, success, |s| s.acks_published)
        .await?;
    let acked = until(
        stack,
        "acks",
        before.acks_published + r,
        opts.deadline,
        |s| s.acks_published,
    )
    .await?;
    let status_secs = (acked - t).as_secs_f64();
    let end = b.metrics().snapshot();
    drop(gen);
    let over = |l: &LatencySnapshot| {
        let at = l
            .buckets
            .iter()
            .find(|(le, _)| (*le - 0.05).abs() < 1e-9)
            .map_or(0, |(_, c)| *c);
        l.count - at
    };
    let elapsed = t0.elapsed().as_secs_f64();
    Ok(RegistryReport {
        devices: n,
        groups: groups.len() + 1,
        hello_secs,
        hellos_per_sec: n as f64 / hello_secs,
        memberships_per_sec: (m1.memberships_published - m0.memberships_published) as f64
            / hello_secs,
        group_put_ms,
        group_put_moved,
        create_ms,
        start_ms,
        widen_ms,
        wave1_devices: wave1.len(),
        status_reports: r,
        status_per_sec: r as f64 / status_secs,
        peak_rss_bytes: super::child::peak_rss(std::process::id()).unwrap_or(0),
        sled_bytes: dir_bytes(stack.bridge_dir()),
        core_max_wait_ms: end.core_max_wait_micros as f64 / 1e3,
        core_max_handle_ms: end.core_max_stall_micros as f64 / 1e3,
        core_waits_over_50ms: over(&b.metrics().core_wait.snapshot()),
        core_handles_over_50ms: over(&b.metrics().core_handle.snapshot()),
        core_busy_share: (end.core_busy_micros - m0.core_busy_micros) as f64 / 1e6 / elapsed,
    })
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The goals (issue 19).
pub const GOAL_STALL_MS: f64 = 50.0;
pub const GOAL_CALL_MS: f64 = 1000.0;
pub const GOAL_RSS: u64 = 2 << 30;
pub const GOAL_STATUS_PER_SEC: f64 = 20_000.0;

/// Runs the row at `devices` (`ota bench --only registry`).
pub async fn step(devices: usize, say: &(dyn Fn(String) + Sync)) -> Vec<Row> {
    if crate::mosquitto::binary().is_none() {
        return vec![Row::skipped(
            "registry",
            "mosquitto",
            devices,
            "skipped: mosquitto is not installed (apt-get install -y mosquitto)",
        )];
    }
    rows(&run(&RegistryOptions::new(devices), say).await, devices)
}

fn row(bench: &str, devices: usize, result: String, goal: String, detail: &RegistryReport) -> Row {
    Row {
        bench: format!("registry: {bench}"),
        broker: "mosquitto".into(),
        devices,
        time: None,
        result,
        broker_rss: None,
        egress: None,
        goal,
        detail: serde_json::to_value(detail).unwrap_or(serde_json::Value::Null),
    }
}

/// The rows.
pub fn rows(r: &Result<RegistryReport, RegistryError>, devices: usize) -> Vec<Row> {
    let goal = super::suite::goal;
    let r = match r {
        Err(e) => return vec![Row::failed("registry", "mosquitto", devices, e)],
        Ok(r) => r,
    };
    vec![
        row(
            "Hello ingest, to every membership published",
            devices,
            format!(
                "{:.0} Hellos/s ({:.1} s), {:.0} memberships/s",
                r.hellos_per_sec, r.hello_secs, r.memberships_per_sec
            ),
            String::new(),
            r,
        ),
        row(
            "group put, campaign create (pre-flight), start, wave 2",
            devices,
            format!(
                "put {:.0} ms ({} moved), create {:.0} ms, start {:.0} ms; wave 2 {:.0} ms after wave 1 ({} devices) reported",
                r.group_put_ms,
                thousands(r.group_put_moved as usize),
                r.create_ms,
                r.start_ms,
                r.widen_ms,
                thousands(r.wave1_devices)
            ),
            goal(
                "create and start each ≤ 1 s",
                r.create_ms <= GOAL_CALL_MS && r.start_ms <= GOAL_CALL_MS,
            ),
            r,
        ),
        row(
            "status ingest, one report per distinct device",
            devices,
            format!(
                "{:.0} reports/s ({} reports)",
                r.status_per_sec,
                thousands(r.status_reports as usize)
            ),
            goal("≥ 20,000 reports/s", r.status_per_sec >= GOAL_STATUS_PER_SEC),
            r,
        ),
        row(
            "bridge peak RSS, sled size",
            devices,
            format!(
                "{:.0} MiB, sled {:.0} MiB",
                r.peak_rss_bytes as f64 / 1048576.0,
                r.sled_bytes as f64 / 1048576.0
            ),
            goal("RSS ≤ 2 GB", r.peak_rss_bytes <= GOAL_RSS),
            r,
        ),
        row(
            "core actor: longest wait, longest handling",
            devices,
            format!(
                "wait {:.1} ms, handling {:.1} ms; {} waits, {} handlings over 50 ms; busy {:.0} %",
                r.core_max_wait_ms,
                r.core_max_handle_ms,
                r.core_waits_over_50ms,
                r.core_handles_over_50ms,
                r.core_busy_share * 100.0
            ),
            goal(
                "never stalls > 50 ms",
                r.core_max_wait_ms <= GOAL_STALL_MS && r.core_max_handle_ms <= GOAL_STALL_MS,
            ),
            r,
        ),
    ]
}
