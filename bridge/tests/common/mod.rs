//! Test helpers: a real broker on a free loopback port (rumqttd in-process,
//! or a Mosquitto child process), a real bridge on a temp data dir, raw
//! rumqttc clients acting as devices, and an operator client.
//!
//! The bridge always runs in `external` mode against the test's broker, so
//! a test can restart the bridge (rumqttd cannot be stopped, and keeps its
//! port) and, with Mosquitto, stop it while the broker keeps its session.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use bridge::client::{ClientOptions, OpsClient};
use bridge::{Bridge, Config};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use schemas::keys::SigningKey;
use schemas::msg::{Hello, Membership, Status, StatusAck, StatusState, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::{ComponentName, DeviceId, Epoch, GroupName};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long any wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Fails loudly when `f` does not complete within [`WAIT`].
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(harness::test_logs);
}

pub fn free_port() -> u16 {
    harness::free_port().expect("a free loopback port")
}

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Rumqttd,
    Mosquitto,
}

/// A broker for one test. Mosquitto is killed on drop; rumqttd runs until
/// the test process ends (it has no shutdown).
pub struct TestBroker {
    pub kind: BrokerKind,
    pub port: u16,
    mosquitto: Option<harness::mosquitto::Mosquitto>,
    _embedded: Option<broker::EmbeddedBroker>,
}

impl TestBroker {
    pub async fn start(kind: BrokerKind) -> TestBroker {
        match kind {
            BrokerKind::Rumqttd => Self::rumqttd().await,
            BrokerKind::Mosquitto => Self::mosquitto().await,
        }
    }

    async fn rumqttd() -> TestBroker {
        let port = free_port();
        let cfg = broker::EmbeddedConfig {
            listen: format!("127.0.0.1:{port}").parse().expect("an address"),
            // Small logs: tests move little data.
            segment_size: 1024 * 1024,
            segment_count: 3,
            ..broker::EmbeddedConfig::default()
        };
        let b = tokio::task::spawn_blocking(move || broker::start(&cfg))
            .await
            .expect("the broker thread")
            .expect("rumqttd starts");
        TestBroker {
            kind: BrokerKind::Rumqttd,
            port,
            mosquitto: None,
            _embedded: Some(b),
        }
    }

    async fn mosquitto() -> TestBroker {
        let m = harness::mosquitto::Mosquitto::start()
            .await
            .unwrap_or_else(|e| panic!("these tests run against Mosquitto too: {e}"));
        TestBroker {
            kind: BrokerKind::Mosquitto,
            port: m.port,
            mosquitto: Some(m),
            _embedded: None,
        }
    }

    /// The bridge's own embedded broker on `port`: nothing runs here (the
    /// bridge starts it).
    pub fn in_bridge(port: u16) -> TestBroker {
        TestBroker {
            kind: BrokerKind::Rumqttd,
            port,
            mosquitto: None,
            _embedded: None,
        }
    }

    /// The `[broker]` config for a bridge using this broker.
    pub fn bridge_broker_config(&self) -> broker::BrokerConfig {
        broker::BrokerConfig::External(broker::ExternalConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            tls: false,
            client_tls: Default::default(),
            credentials: None,
            mosquitto: None,
        })
    }
}

pub fn which(bin: &str) -> Option<PathBuf> {
    let out = Command::new("which").arg(bin).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let p = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

/// A broker, a bridge on a temp data dir, and the operator key it trusts.
pub struct Stack {
    pub broker: TestBroker,
    pub bridge: Option<Bridge>,
    pub dir: tempfile::TempDir,
    pub operator: SigningKey,
    pub config: Config,
}

pub fn operator_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// The director key every test bridge signs control messages with (E2).
pub fn director_key() -> SigningKey {
    SigningKey::from_bytes(&[43; 32])
}

impl Stack {
    pub async fn start(kind: BrokerKind) -> Stack {
        Self::start_with(kind, |_| {}).await
    }

    /// Starts a stack whose bridge config `tune` adjusts first.
    pub async fn start_with(kind: BrokerKind, tune: impl FnOnce(&mut Config)) -> Stack {
        init_tracing();
        let broker = TestBroker::start(kind).await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let operator = operator_key();
        let mut config = stack_config(dir.path(), &broker, &operator);
        tune(&mut config);
        let bridge = Bridge::start(config.clone())
            .await
            .expect("the bridge starts");
        within("the bridge to subscribe", bridge.ready()).await;
        Stack {
            broker,
            bridge: Some(bridge),
            dir,
            operator,
            config,
        }
    }

    pub fn bridge(&self) -> &Bridge {
        self.bridge.as_ref().expect("the bridge is running")
    }

    pub fn metrics(&self) -> bridge::metrics::Snapshot {
        self.bridge().metrics().snapshot()
    }

    pub fn port(&self) -> u16 {
        self.broker.port
    }

    /// Stops the bridge cleanly.
    pub async fn stop_bridge(&mut self) {
        if let Some(b) = self.bridge.take() {
            within("the bridge to stop", b.shutdown())
                .await
                .expect("a clean shutdown");
        }
    }

    /// Stops the bridge and starts a new one on the same data dir.
    pub async fn restart_bridge(&mut self) {
        self.stop_bridge().await;
        self.start_bridge().await;
    }

    pub async fn start_bridge(&mut self) {
        let b = Bridge::start(self.config.clone())
            .await
            .expect("the bridge starts");
        within("the bridge to subscribe", b.ready()).await;
        self.bridge = Some(b);
    }

    pub async fn ops(&self) -> OpsClient {
        ops_client(self.port(), self.operator.clone()).await
    }

    pub async fn device(&self, id: &str) -> TestDevice {
        TestDevice::connect(self.port(), id).await
    }
}

pub fn stack_config(dir: &Path, broker: &TestBroker, operator: &SigningKey) -> Config {
    let mut config = Config::with_defaults(dir.join("data"), broker.bridge_broker_config());
    let vk = operator.verifying_key();
    config.bridge.operator_keys = [(schemas::keys::kid(&vk), vk)].into();
    config.bridge.metrics_interval = Duration::from_secs(3600);
    config.bridge.director_key = Some(director_key());
    config
}

/// A raw MQTT client that records every publish on `filters`, as
/// (topic, payload), in arrival order. Stops when the receiver is dropped.
pub async fn watch_topics(
    port: u16,
    name: &str,
    filters: &[String],
) -> tokio::sync::mpsc::Receiver<(String, Vec<u8>)> {
    let mut o = MqttOptions::new(name, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let (sub_tx, mut sub_rx) = tokio::sync::mpsc::channel(16);
    for f in filters {
        client
            .subscribe(f.clone(), QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    tokio::spawn(async move {
        // Keeps the client (and its connection) alive with the loop.
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = sub_tx.try_send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx
                        .send((p.topic.clone(), p.payload.to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    for _ in filters {
        within("the watcher's subscription", sub_rx.recv()).await;
    }
    rx
}

pub async fn ops_client(port: u16, key: SigningKey) -> OpsClient {
    within(
        "the operator client to connect",
        OpsClient::connect(ClientOptions::new("127.0.0.1", port, key)),
    )
    .await
    .expect("the operator client connects")
}

/// Waits until `f` holds, checking after each change of the bridge's
/// counters (polled: they are plain atomics).
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    within(what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A device made of a raw rumqttc client: it publishes what the test says
/// and records what the bridge retains for it.
pub struct TestDevice {
    pub id: DeviceId,
    pub client: AsyncClient,
    pub topics: Topics,
    /// The latest StatusAck seq (`None`: none, or withdrawn).
    pub ack: watch::Receiver<Option<u64>>,
    /// The latest Membership.
    pub groups: watch::Receiver<Option<Vec<GroupName>>>,
    /// Aborted on drop, so a dropped device never reconnects (and takes
    /// its client id back from a newer connection).
    task: Option<JoinHandle<()>>,
}

impl Drop for TestDevice {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl TestDevice {
    pub async fn connect(port: u16, id: &str) -> TestDevice {
        let id = DeviceId::new(id).expect("a valid device id");
        let topics = Topics::default();
        let mut o = MqttOptions::new(id.as_str(), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, eventloop) = AsyncClient::new(o, 64);
        let (ack_tx, ack) = watch::channel(None);
        let (groups_tx, groups) = watch::channel(None);
        let (sub_tx, mut sub_rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(device_loop(
            eventloop,
            topics.clone(),
            id.clone(),
            ack_tx,
            groups_tx,
            sub_tx,
        ));
        client
            .subscribe_many([
                rumqttc::SubscribeFilter::new(
                    topics.build(&Topic::Groups(id.clone())),
                    QoS::AtLeastOnce,
                ),
                rumqttc::SubscribeFilter::new(
                    topics.build(&Topic::Ack(id.clone())),
                    QoS::AtLeastOnce,
                ),
            ])
            .await
            .expect("subscribe");
        within("the device's subscription", sub_rx.recv()).await;
        TestDevice {
            id,
            client,
            topics,
            ack,
            groups,
            task: Some(task),
        }
    }

    pub async fn publish(&self, topic: &Topic, payload: Vec<u8>) {
        self.client
            .publish(self.topics.build(topic), QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }

    /// Publishes on a raw topic string (for bad topics).
    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }

    pub async fn hello(&self, epoch: &str, outbox: u64, labels: &[(&str, &str)]) {
        self.publish(
            &Topic::Hello(self.id.clone()),
            hello(epoch, outbox, labels).encode(),
        )
        .await;
    }

    /// Publishes a Status; returns its exact bytes.
    pub async fn status(&self, seq: u64, state: StatusState) -> Vec<u8> {
        let b = status(seq, state).encode();
        self.publish(&Topic::Status(self.id.clone()), b.clone())
            .await;
        b
    }

    /// Waits until the retained StatusAck is `seq`.
    pub async fn wait_ack(&mut self, seq: Option<u64>) {
        let id = self.id.clone();
        within(
            &format!("{id}: StatusAck {seq:?}"),
            self.ack.wait_for(|a| *a == seq),
        )
        .await
        .expect("the device loop runs");
    }

    /// Waits until the retained Membership is `groups`.
    pub async fn wait_groups(&mut self, groups: &[&str]) {
        let want: Vec<GroupName> = groups
            .iter()
            .map(|g| GroupName::new(*g).expect("a group name"))
            .collect();
        let id = self.id.clone();
        within(
            &format!("{id}: membership {groups:?}"),
            self.groups.wait_for(|g| g.as_ref() == Some(&want)),
        )
        .await
        .expect("the device loop runs");
    }

    /// Disconnects cleanly (waits until the DISCONNECT is sent).
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
    }
}

async fn device_loop(
    mut eventloop: EventLoop,
    topics: Topics,
    id: DeviceId,
    ack: watch::Sender<Option<u64>>,
    groups: watch::Sender<Option<Vec<GroupName>>>,
    subacks: tokio::sync::mpsc::Sender<()>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subacks.try_send(());
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match topics.parse(&p.topic) {
                Ok(Topic::Ack(d)) if d == id => {
                    let v = if p.payload.is_empty() {
                        None
                    } else {
                        StatusAck::decode(&p.payload).ok().map(|a| a.seq)
                    };
                    ack.send_replace(v);
                }
                Ok(Topic::Groups(d)) if d == id => {
                    if let Ok(m) = Membership::decode_retained(&p.payload) {
                        groups.send_replace(Some(m.groups));
                    }
                }
                _ => {}
            },
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub fn hello(epoch: &str, outbox: u64, labels: &[(&str, &str)]) -> Hello {
    Hello {
        proto: 1,
        arch: "esp32".into(),
        versions: [(
            ComponentName::new("main").expect("a name"),
            "1.0.0".to_string(),
        )]
        .into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        boot_id: "boot-1".into(),
        epoch: Epoch::new(epoch).expect("an epoch"),
        outbox,
        features: Vec::new(),
    }
}

pub fn status(seq: u64, state: StatusState) -> Status {
    Status {
        seq,
        campaign: Some(schemas::CampaignId::new("camp-1").expect("a campaign id")),
        artifact: None,
        state,
        progress: None,
        error: None,
        detail: None,
        versions: [(
            ComponentName::new("main").expect("a name"),
            "1.0.0".to_string(),
        )]
        .into(),
    }
}

/// Generates one `#[tokio::test]` per broker for an `async fn(BrokerKind)`.
#[macro_export]
macro_rules! on_both_brokers {
    ($($name:ident),+ $(,)?) => {
        mod rumqttd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::BrokerKind::Rumqttd).await
                }
            )+
        }
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::BrokerKind::Mosquitto).await
                }
            )+
        }
    };
}
