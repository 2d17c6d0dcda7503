//! The durable status ingest benchmark: N devices, each on its own rumqttc
//! connection, say Hello and then publish R Status reports each as fast as
//! their QoS 1 window allows; a real bridge (temp data dir, real sled
//! flushes) stores them and acknowledges them. The clock runs from the
//! first report published to the last StatusAck received: every report
//! counted is durably stored and its ack is at the device.
//!
//! By default the bridge runs as `ota serve` does, with its embedded
//! broker in the same process; [`BenchBroker::External`] measures it
//! against another broker (then PUBACKs wait for the flush too, see
//! [`crate::status::ingest`]). `examples/ingest_bench.rs` runs it;
//! `ota bench` may call [`ingest`] directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::msg::{Hello, Status, StatusAck, StatusState, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::{CampaignId, ComponentName, DeviceId, Epoch};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use bridge::config::StatusConfig;
use bridge::{Bridge, BridgeError, Config};

/// One run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Devices publishing at once.
    pub devices: usize,
    /// Reports each device publishes.
    pub reports_per_device: u64,
    /// Which broker.
    pub broker: BenchBroker,
    /// The bridge's `[status]` section.
    pub status: StatusConfig,
    /// Device connects per second (rumqttd stalls near 2,000/s).
    pub connect_rate: u32,
    /// The bridge's data dir; a temp dir when `None`.
    pub data_dir: Option<PathBuf>,
    /// The run fails when it has not finished by then.
    pub deadline: Duration,
    /// With `[http]` on and a dashboard and a scraper reading it
    /// ([`super::watcher`]).
    pub watched: bool,
}

/// The broker a run uses.
#[derive(Debug, Clone, Copy)]
pub enum BenchBroker {
    /// The bridge's embedded rumqttd (default config) on this port, as
    /// `ota serve` runs it.
    Embedded(u16),
    /// A broker already running there, used as an external broker.
    External(SocketAddr),
}

impl BenchBroker {
    fn addr(self) -> SocketAddr {
        match self {
            BenchBroker::Embedded(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            BenchBroker::External(a) => a,
        }
    }
}

impl IngestOptions {
    /// 1,000 devices x 50 reports on `broker`, default `[status]`.
    pub fn new(broker: BenchBroker) -> Self {
        Self {
            devices: 1000,
            reports_per_device: 50,
            broker,
            status: StatusConfig::default(),
            connect_rate: 500,
            data_dir: None,
            deadline: Duration::from_secs(300),
            watched: false,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestReport {
    pub devices: usize,
    /// Reports stored and acknowledged.
    pub reports: u64,
    /// From the first report published to the last ack received.
    pub elapsed: Duration,
    /// `reports / elapsed`.
    pub reports_per_sec: f64,
    /// Flushes (group commits) the bridge made during the run.
    pub commits: u64,
    /// Average reports per commit.
    pub reports_per_commit: f64,
    /// StatusAcks the bridge published during the run.
    pub acks_published: u64,
    /// What the dashboard and the scraper read meanwhile (`watched`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watched: Option<super::watcher::Watched>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error("{0}")]
    Setup(String),
    #[error("not finished within {0:?}: {1} of {2} devices got their last ack")]
    Deadline(Duration, usize, usize),
}

struct BenchDevice {
    id: DeviceId,
    client: AsyncClient,
    ack: watch::Receiver<Option<u64>>,
}

/// Runs the benchmark once: a fresh bridge on `opts.broker`.
pub async fn ingest(opts: &IngestOptions) -> Result<IngestReport, BenchError> {
    let (data_dir, temp) = match &opts.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempdir()?;
            (t.join("data"), Some(t))
        }
    };
    let broker_config = match opts.broker {
        BenchBroker::Embedded(port) => broker::BrokerConfig::Embedded(broker::EmbeddedConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            max_connections: opts.devices + 1000,
            ..broker::EmbeddedConfig::default()
        }),
        BenchBroker::External(a) => broker::BrokerConfig::External(broker::ExternalConfig {
            host: a.ip().to_string(),
            port: a.port(),
            tls: false,
            client_tls: Default::default(),
            credentials: None,
            mosquitto: None,
        }),
    };
    let mut config = Config::with_defaults(data_dir, broker_config);
    // The bench sends no command, but the bridge wants an operator key.
    let vk = schemas::keys::generate().verifying_key();
    config.bridge.operator_keys = [(schemas::keys::kid(&vk), vk)].into();
    // Signing on, as in production: every StatusAck is signed (E2).
    config.bridge.director_key = Some(schemas::keys::generate());
    config.status = opts.status;
    config.bridge.metrics_interval = Duration::from_secs(3600);
    if opts.watched {
        config.http = Some(bridge::config::http::HttpConfig::anonymous_loopback(
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ));
    }
    let bridge = Bridge::start(config).await?;
    let watcher = bridge.http_addr().map(super::watcher::Watcher::start);
    let mut result = match tokio::time::timeout(Duration::from_secs(30), bridge.ready()).await {
        Ok(()) => run(opts, &bridge).await,
        Err(_) => Err(BenchError::Setup(
            "the bridge did not subscribe within 30 s".into(),
        )),
    };
    if let Some(w) = watcher {
        let watched = w.stop().await;
        if let Ok(r) = &mut result {
            r.watched = Some(watched);
        }
    }
    let stopped = bridge.shutdown().await;
    if let Some(t) = temp {
        // Best effort: a leftover temp dir is only disk space.
        let _ = tokio::fs::remove_dir_all(t).await;
    }
    stopped?;
    result
}

async fn run(opts: &IngestOptions, bridge: &Bridge) -> Result<IngestReport, BenchError> {
    let topics = Topics::default();
    let done = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let mut devices = Vec::with_capacity(opts.devices);
    let pace = Duration::from_secs_f64(1.0 / f64::from(opts.connect_rate.max(1)));
    for i in 0..opts.devices {
        let id =
            DeviceId::new(format!("bench-{i:05}")).map_err(|e| BenchError::Setup(e.to_string()))?;
        devices.push(connect(opts, &topics, id, &mut tasks).await?);
        tokio::time::sleep(pace).await;
    }
    // Hello from everyone; the ack of outbox - 1 says it is stored.
    for d in &devices {
        let hello = Hello {
            proto: 1,
            arch: "esp32".into(),
            versions: [(
                ComponentName::new("main").map_err(|e| BenchError::Setup(e.to_string()))?,
                "1.0.0".into(),
            )]
            .into(),
            labels: Default::default(),
            boot_id: "b1".into(),
            epoch: Epoch::new("bench0001").map_err(|e| BenchError::Setup(e.to_string()))?,
            outbox: 1,
            features: Vec::new(),
        };
        publish(d, &topics, Topic::Hello(d.id.clone()), hello.encode()).await?;
    }
    for d in &mut devices {
        wait_ack(d, 0, Duration::from_secs(60)).await?;
    }

    let before = bridge.metrics().snapshot();
    let started = Instant::now();
    let r = opts.reports_per_device;
    for d in &devices {
        let client = d.client.clone();
        let topic = topics.build(&Topic::Status(d.id.clone()));
        let mut ack = d.ack.clone();
        let (done, notify) = (done.clone(), notify.clone());
        tasks.spawn(async move {
            for seq in 1..=r {
                let s = Status {
                    seq,
                    campaign: CampaignId::new("bench").ok(),
                    artifact: None,
                    state: StatusState::Downloading,
                    progress: Some(seq),
                    error: None,
                    detail: None,
                    versions: Default::default(),
                };
                if client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, s.encode())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if ack.wait_for(|a| *a == Some(r)).await.is_ok() {
                done.fetch_add(1, Ordering::AcqRel);
                notify.notify_one();
            }
        });
    }
    let all = devices.len();
    let waited = tokio::time::timeout(opts.deadline, async {
        while done.load(Ordering::Acquire) < all {
            notify.notified().await;
        }
    })
    .await;
    let elapsed = started.elapsed();
    let after = bridge.metrics().snapshot();
    for d in &devices {
        let _ = d.client.try_disconnect();
    }
    tasks.abort_all();
    if waited.is_err() {
        return Err(BenchError::Deadline(
            opts.deadline,
            done.load(Ordering::Acquire),
            all,
        ));
    }
    let reports = all as u64 * r;
    let commits = after.commits - before.commits;
    Ok(IngestReport {
        devices: all,
        reports,
        elapsed,
        reports_per_sec: reports as f64 / elapsed.as_secs_f64(),
        commits,
        reports_per_commit: reports as f64 / commits.max(1) as f64,
        watched: None,
        acks_published: after.acks_published - before.acks_published,
    })
}

async fn connect(
    opts: &IngestOptions,
    topics: &Topics,
    id: DeviceId,
    tasks: &mut JoinSet<()>,
) -> Result<BenchDevice, BenchError> {
    let addr = opts.broker.addr();
    let mut o = MqttOptions::new(id.as_str(), addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    let (ack_tx, ack) = watch::channel(None);
    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel();
    let ack_topic = topics.build(&Topic::Ack(id.clone()));
    let sub_client = client.clone();
    let t = ack_topic.clone();
    tasks.spawn(async move {
        let mut sub_tx = Some(sub_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub_client.try_subscribe(t.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = sub_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == t => {
                    if let Ok(a) = StatusAck::decode(&p.payload) {
                        ack_tx.send_replace(Some(a.seq));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), sub_rx)
        .await
        .map_err(|_| BenchError::Setup(format!("{id} did not connect and subscribe within 30 s")))?
        .map_err(|_| BenchError::Setup(format!("{id}: its connection task ended")))?;
    Ok(BenchDevice { id, client, ack })
}

async fn publish(
    d: &BenchDevice,
    topics: &Topics,
    t: Topic,
    payload: Vec<u8>,
) -> Result<(), BenchError> {
    d.client
        .publish(topics.build(&t), QoS::AtLeastOnce, false, payload)
        .await
        .map_err(|e| BenchError::Setup(format!("{}: {e}", d.id)))
}

async fn wait_ack(d: &mut BenchDevice, seq: u64, within: Duration) -> Result<(), BenchError> {
    let id = d.id.clone();
    match tokio::time::timeout(within, d.ack.wait_for(|a| *a == Some(seq))).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(BenchError::Setup(format!(
            "{id}: no StatusAck {seq} within {within:?}"
        ))),
    }
}

fn tempdir() -> Result<PathBuf, BenchError> {
    let p = std::env::temp_dir().join(bridge::client::random_name("ota-ingest-bench-", 10));
    std::fs::create_dir_all(&p).map_err(|e| BenchError::Setup(format!("{}: {e}", p.display())))?;
    Ok(p)
}
