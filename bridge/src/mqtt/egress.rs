//! The egress connection's event loop: it only publishes, so the loop only
//! drives rumqttc (writes, PUBACKs from the broker, pings) and reconnects
//! with backoff. See [`super::options`] for why publishing has its own
//! connection.
//!
//! It is also the block server's delivery probe: on every connect it
//! subscribes to `P/artifacts/+/blocks` (QoS 1, as devices do), and each
//! broadcast block that comes back is told to the [`DeliveryProbe`] (the
//! block server's `Flight`); so is the PUBACK latency of each publish.
//!
//! And it takes the devices' BlockRequests (`P/devices/+/requests`, QoS 0)
//! for the block server, not the ingress connection: there they would
//! queue behind a wave's Status reports, and a broker drops QoS 0
//! messages for a client that is behind (Mosquitto does once its in-flight
//! window is full). At 100,000 devices the third wave's requests were
//! lost so while the bridge stored its Statuses, and 6,934 devices timed
//! out waiting for a block (docs/BENCHMARKS.md, "The topology past one
//! broker"). This connection reads everything at once, so a request waits
//! only for the block server's own inbox; when that is full it is dropped
//! (counted, `overloaded`) and the device asks again after its quiet spell.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use schemas::topic::{Filter, Topic, Topics};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::event_loop::LinkState;
use super::inbound::{AckToken, Incoming};
use crate::metrics::{DropReason, Metrics};

/// Who hears what the probe subscription sees.
pub trait DeliveryProbe: Send + Sync {
    /// A message came back on `P/artifacts/+/blocks` (untrusted bytes).
    fn block(&self, payload: &[u8], at: Instant);
    /// The broker acknowledged one of our publishes after `latency`.
    fn acked(&self, latency: Duration);
    /// The connection was lost: what was out will not come back.
    fn reset(&self);
}

/// PUBACK latencies tracked at once (rumqttc's in-flight window is smaller).
const MAX_PENDING_ACKS: usize = 1024;

/// The probe: the subscription and where its findings go.
pub struct Probe {
    /// The egress connection's client, to subscribe on each connect.
    pub client: AsyncClient,
    pub topics: Topics,
    pub sink: Arc<dyn DeliveryProbe>,
    /// The block server's inbox, for the devices' BlockRequests (`None`:
    /// not subscribed here).
    pub requests: Option<Requests>,
}

/// Where BlockRequests go, and where a dropped one is counted.
pub struct Requests {
    pub to: mpsc::Sender<Incoming>,
    pub metrics: Arc<Metrics>,
}

impl Requests {
    pub fn new(to: mpsc::Sender<Incoming>, metrics: &Arc<Metrics>) -> Requests {
        Requests {
            to,
            metrics: metrics.clone(),
        }
    }
}

impl Probe {
    fn subscribe(&self) {
        let f = self.topics.filter(Filter::AllArtifactBlocks);
        if let Err(e) = self.client.try_subscribe(f, QoS::AtLeastOnce) {
            warn!(error = %e, "block delivery probe not subscribed; blocks are paced blind");
        }
        if self.requests.is_some() {
            // QoS 0: a request needs no durability (a device asks again
            // after each quiet spell; one queued while the bridge was away
            // is stale anyway) and no PUBACK round trip under a storm.
            let f = self.topics.filter(Filter::AllRequests);
            if let Err(e) = self.client.try_subscribe(f, QoS::AtMostOnce) {
                warn!(error = %e, "block requests not subscribed; devices will not be served");
            }
        }
    }

    /// A publish that came in: a block back (the probe) or a request.
    fn incoming(&self, topic: &str, payload: bytes::Bytes) {
        let Some(r) = &self.requests else {
            return self.sink.block(&payload, Instant::now());
        };
        match self.topics.parse(topic) {
            Ok(Topic::ArtifactBlocks(_)) => self.sink.block(&payload, Instant::now()),
            Ok(t @ Topic::Request(_)) => {
                let m = Incoming {
                    topic: t,
                    payload,
                    retain: false,
                    ack: AckToken::none(),
                    arrived: Instant::now(),
                };
                if r.to.try_send(m).is_err() {
                    r.metrics.count_drop(DropReason::Overloaded);
                }
            }
            _ => {
                r.metrics.count_drop(DropReason::BadTopic);
                debug!(
                    topic,
                    "egress: dropped a publish on a topic it does not take"
                );
            }
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until `shutdown` completes or our own DISCONNECT has been sent.
pub async fn run(
    mut eventloop: EventLoop,
    state: watch::Sender<LinkState>,
    probe: Option<Probe>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = BACKOFF_MIN;
    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
    let mut tls_failures = super::tls_log::TlsFailures::default();
    loop {
        let ev = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF_MIN;
                tls_failures.connected();
                info!("egress connected to the broker");
                state.send_modify(|s| s.egress_connected = true);
                if let Some(p) = &probe {
                    p.subscribe();
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if probe.is_some() => {
                if sent_at.len() >= MAX_PENDING_ACKS {
                    sent_at.clear();
                }
                sent_at.insert(pkid, Instant::now());
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let (Some(p), Some(at)) = (&probe, sent_at.remove(&ack.pkid)) {
                    p.sink.acked(at.elapsed());
                }
            }
            Ok(Event::Incoming(Packet::Publish(msg))) => {
                if let Some(p) = &probe {
                    p.incoming(&msg.topic, msg.payload);
                }
            }
            Ok(_) => {}
            Err(e) => {
                sent_at.clear();
                if let Some(p) = &probe {
                    p.sink.reset();
                }
                let was = state.borrow().egress_connected;
                state.send_modify(|s| s.egress_connected = false);
                let address = eventloop.mqtt_options.broker_address();
                if tls_failures.observe("egress", address, &e) {
                    // Logged as one line naming the host and the reason.
                } else if was {
                    warn!(error = %e, "egress lost the broker connection; reconnecting");
                } else {
                    debug!(error = %e, "egress cannot reach the broker");
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    state.send_modify(|s| s.egress_connected = false);
}
