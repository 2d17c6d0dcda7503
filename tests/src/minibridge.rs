//! A minimal stand-in for the bridge, over a real MQTT connection: retained
//! Membership and announcements, blocks served for BlockRequests (merged for
//! a short window; broadcast when several devices want a block, unicast
//! otherwise), and StatusAcks as the protocol defines them. It keeps every
//! Status, Hello and requested block index it saw, for tests to assert on.
//!
//! It is not the bridge: nothing is durable, there is no gating and no
//! operator API. It exists so the device agent and the simulator can be
//! tested and measured against a real broker on their own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS};
use schemas::msg::{Announcement, BlockRequest, Hello, Membership, Status, StatusAck, WireMessage};
use schemas::topic::{Filter, Topic, Topics};
use schemas::{ArtifactId, DeviceId, GroupName};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tracing::warn;

use device_sim::testkit::TestImage;

/// Which block indices the stand-in serves (all when unset).
pub type ServeFilter = Arc<dyn Fn(&DeviceId, u32) -> bool + Send + Sync>;

/// Everything seen, for assertions.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Statuses in arrival order (resends included).
    pub statuses: Vec<(DeviceId, Status)>,
    /// Hellos in arrival order.
    pub hellos: Vec<(DeviceId, Hello)>,
    /// Every block index asked for, per device, in order.
    pub requested: Vec<(DeviceId, u32)>,
    /// Blocks published.
    pub blocks_sent: u64,
}

#[derive(Default)]
struct AckBook {
    epoch: Option<schemas::Epoch>,
    outbox: Option<u64>,
    stored: BTreeSet<u64>,
    acked: Option<u64>,
}

#[derive(Default)]
struct Inner {
    seen: Seen,
    images: HashMap<ArtifactId, Arc<TestImage>>,
    acks: HashMap<DeviceId, AckBook>,
    filter: Option<ServeFilter>,
}

/// The stand-in. Dropping it stops its tasks.
pub struct MiniBridge {
    client: AsyncClient,
    topics: Topics,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MiniBridge {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MiniBridge {
    /// Connects to the broker at `host:port` and starts serving.
    pub async fn start(
        host: &str,
        port: u16,
        topics: Topics,
    ) -> Result<Self, rumqttc::ConnectionError> {
        let mut opts = MqttOptions::new("ota-minibridge", host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        // A broker busy with a large fleet may take a while to accept.
        eventloop.network_options.set_connection_timeout(60);
        // Wait for the CONNACK so that later publishes are not lost.
        let mut failures = 0;
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Incoming::ConnAck(_))) => break,
                Ok(_) => continue,
                Err(e) if failures < 3 => {
                    failures += 1;
                    warn!(error = %e, failures, "minibridge cannot connect yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        subscribe(&client, &topics);
        let inner = Arc::new(Mutex::new(Inner::default()));
        let changed = Arc::new(Notify::new());
        let (req_tx, req_rx) = mpsc::channel::<(DeviceId, BlockRequest)>(4096);
        let (ack_tx, ack_rx) = mpsc::channel::<(DeviceId, u64)>(4096);
        let poller = {
            let (inner, changed, topics) = (inner.clone(), changed.clone(), topics.clone());
            let client2 = client.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        // A clean session: subscribe again after a reconnect.
                        Ok(MqttEvent::Incoming(Incoming::ConnAck(_))) => {
                            subscribe(&client2, &topics)
                        }
                        Ok(MqttEvent::Incoming(Incoming::Publish(p))) => {
                            on_publish(&topics, &inner, &p.topic, &p.payload, &req_tx, &ack_tx);
                            changed.notify_waiters();
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(error = %e, "minibridge connection lost");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        };
        let server = tokio::spawn(serve_blocks(
            client.clone(),
            topics.clone(),
            inner.clone(),
            req_rx,
        ));
        let acker = tokio::spawn(publish_acks(client.clone(), topics.clone(), ack_rx));
        Ok(Self {
            client,
            topics,
            inner,
            changed,
            tasks: vec![poller, server, acker],
        })
    }

    /// Makes `img` downloadable.
    pub fn add_image(&self, img: TestImage) {
        lock(&self.inner)
            .images
            .insert(img.manifest.artifact.clone(), Arc::new(img));
    }

    /// Serves only blocks `filter` accepts (`None`: all).
    pub fn serve_only(&self, filter: Option<ServeFilter>) {
        lock(&self.inner).filter = filter;
    }

    /// Publishes `device`'s retained Membership.
    pub async fn set_groups(
        &self,
        device: &DeviceId,
        groups: &[GroupName],
    ) -> Result<(), rumqttc::ClientError> {
        let m = Membership {
            groups: groups.to_vec(),
        };
        self.client
            .publish(
                self.topics.build(&Topic::Groups(device.clone())),
                QoS::AtLeastOnce,
                true,
                m.encode(),
            )
            .await
    }

    /// Publishes (or, with `None`, withdraws) a retained announcement.
    pub async fn announce(
        &self,
        topic: Topic,
        ann: Option<&Announcement>,
    ) -> Result<(), rumqttc::ClientError> {
        let payload = ann.map(WireMessage::encode).unwrap_or_default();
        self.client
            .publish(self.topics.build(&topic), QoS::AtLeastOnce, true, payload)
            .await
    }

    /// A copy of everything seen so far.
    pub fn seen(&self) -> Seen {
        lock(&self.inner).seen.clone()
    }

    /// Waits until `pred` holds for what was seen, or `timeout` passes.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&Seen) -> bool,
    ) -> Result<Seen, Seen> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                {
                    let g = lock(&self.inner);
                    if pred(&g.seen) {
                        return g.seen.clone();
                    }
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| self.seen())
    }
}

fn subscribe(client: &AsyncClient, topics: &Topics) {
    for f in [Filter::AllRequests, Filter::AllStatus, Filter::AllHello] {
        // Three requests into a channel with room for 1024.
        let _ = client.try_subscribe(topics.filter(f), QoS::AtLeastOnce);
    }
}

fn on_publish(
    topics: &Topics,
    inner: &Mutex<Inner>,
    topic: &str,
    payload: &[u8],
    req_tx: &mpsc::Sender<(DeviceId, BlockRequest)>,
    ack_tx: &mpsc::Sender<(DeviceId, u64)>,
) {
    let Ok(t) = topics.parse(topic) else { return };
    match t {
        Topic::Request(id) => {
            let Ok(req) = BlockRequest::decode(payload) else {
                return;
            };
            {
                let mut g = lock(inner);
                for i in req.wanted() {
                    g.seen.requested.push((id.clone(), i));
                }
            }
            let _ = req_tx.try_send((id, req));
        }
        Topic::Hello(id) => {
            let Ok(h) = Hello::decode(payload) else {
                return;
            };
            let mut g = lock(inner);
            let book = g.acks.entry(id.clone()).or_default();
            if book.epoch.as_ref() != Some(&h.epoch) {
                // A new counter: what was stored and acked is another's.
                *book = AckBook {
                    epoch: Some(h.epoch.clone()),
                    ..AckBook::default()
                };
            }
            book.outbox = Some(h.outbox);
            book.stored.retain(|s| *s >= h.outbox);
            if let Some(a) = advance(book, None) {
                let _ = ack_tx.try_send((id.clone(), a));
            }
            g.seen.hellos.push((id, h));
        }
        Topic::Status(id) => {
            let Ok(s) = Status::decode(payload) else {
                return;
            };
            let mut g = lock(inner);
            let book = g.acks.entry(id.clone()).or_default();
            // No Hello yet (it came before this stand-in subscribed): no
            // ack, as the protocol wants; the device's next Hello names its
            // outbox. Guessing from the first Status seen acked reports
            // that were lost.
            book.stored.insert(s.seq);
            if let Some(a) = advance(book, Some(s.seq)) {
                let _ = ack_tx.try_send((id.clone(), a));
            }
            g.seen.statuses.push((id, s));
        }
        _ => {}
    }
}

/// The ack: the highest n with every seq from the Hello's outbox to n
/// stored, never below an ack already published (a Hello sent before the
/// device applied that ack names an outbox below it). `Some` when it
/// moved, or when `resent` is a Status it already covers (the device
/// missed that ack: publish it again).
fn advance(book: &mut AckBook, resent: Option<u64>) -> Option<u64> {
    let low = book.outbox?;
    let mut n = low.checked_sub(1)?;
    if let Some(a) = book.acked {
        n = n.max(a);
    }
    while book.stored.contains(&(n + 1)) {
        n += 1;
    }
    if book.acked == Some(n) {
        return resent.filter(|s| *s <= n).map(|_| n);
    }
    if n + 1 == low {
        return None;
    }
    book.acked = Some(n);
    Some(n)
}

async fn publish_acks(
    client: AsyncClient,
    topics: Topics,
    mut rx: mpsc::Receiver<(DeviceId, u64)>,
) {
    while let Some((id, seq)) = rx.recv().await {
        let t = topics.build(&Topic::Ack(id));
        let _ = client
            .publish(t, QoS::AtLeastOnce, true, StatusAck { seq }.encode())
            .await;
    }
}

/// Merges requests for 200 ms, then publishes each wanted block once:
/// on the artifact topic when several devices want it, else unicast.
async fn serve_blocks(
    client: AsyncClient,
    topics: Topics,
    inner: Arc<Mutex<Inner>>,
    mut rx: mpsc::Receiver<(DeviceId, BlockRequest)>,
) {
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut wants: BTreeMap<(ArtifactId, u32), BTreeSet<DeviceId>> = BTreeMap::new();
        let mut add = |(id, req): (DeviceId, BlockRequest)| {
            for i in req.wanted() {
                wants
                    .entry((req.artifact.clone(), i))
                    .or_default()
                    .insert(id.clone());
            }
        };
        add(first);
        let window = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                r = rx.recv() => match r { Some(r) => add(r), None => break },
            }
        }
        for ((artifact, index), devices) in wants {
            let (img, filter) = {
                let g = lock(&inner);
                (g.images.get(&artifact).cloned(), g.filter.clone())
            };
            let Some(img) = img else { continue };
            let devices: Vec<DeviceId> = devices
                .into_iter()
                .filter(|d| filter.as_ref().is_none_or(|f| f(d, index)))
                .collect();
            let Some(block) = img.block(index) else {
                continue;
            };
            let topic = match devices.as_slice() {
                [] => continue,
                [one] => Topic::DeviceBlocks(one.clone()),
                _ => Topic::ArtifactBlocks(artifact.clone()),
            };
            if client
                .publish(
                    topics.build(&topic),
                    QoS::AtLeastOnce,
                    false,
                    block.encode(),
                )
                .await
                .is_ok()
            {
                lock(&inner).seen.blocks_sent += 1;
            }
        }
    }
}
