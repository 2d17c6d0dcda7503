//! The task that owns the rumqttc `EventLoop`. It awaits nothing but
//! `poll()` (and, rarely, room in an actor's inbox): every incoming publish
//! is parsed to a [`schemas::topic::Topic`] and handed to its owner with `try_send`.
//!
//! - **Back-pressure.** Each actor's inbox normally takes a message at
//!   once (`try_send`). When one is full the message waits in a local
//!   overflow queue, drained in order with `reserve()`. Only while that
//!   queue is non-empty does the loop `select!` between `poll()` and
//!   `reserve()`: rumqttc's `poll()` is cancel-safe except inside a write
//!   that waits on a full socket buffer, so it is not raced against
//!   anything in the common case. At [`MAX_OVERFLOW`] queued messages the
//!   loop stops polling until the queue drains: the socket fills and TCP
//!   holds the broker back. Nothing is dropped for load. This is safe
//!   because no actor waits on this loop: PUBACKs are queued without
//!   waiting, and publishes go out on the egress connection. (The
//!   broker's own in-flight window is no bound: Mosquitto 2 delivers far
//!   past `max_inflight_messages` to a 3.1.1 client.)
//! - **Bad input** (a topic outside the protocol or the alphabet, a topic
//!   nobody handles) is counted, logged and acknowledged here.
//! - **Reconnects.** rumqttc reconnects at once on the next `poll()`; the
//!   loop waits with exponential backoff first. On a ConnAck without a
//!   session it subscribes again; with one, the broker kept the
//!   subscriptions and redelivers what was not acknowledged.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Event, EventLoop, Packet, Publish, QoS, SubscribeFilter};
use schemas::topic::{Filter, Topics};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::inbound::{AckToken, HandOff, Incoming, Routes, Target};
use super::publisher::Publisher;
use crate::metrics::{DropReason, Metrics};

/// Queued messages at which the loop stops reading from the broker until
/// the actors catch up.
pub const MAX_OVERFLOW: usize = 4096;
/// First and longest wait before reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One turn of the loop.
enum Step {
    Event(Result<Event, rumqttc::ConnectionError>),
    /// A queued message went to its owner.
    Sent,
    /// The head of the queue has no owner any more.
    OwnerGone,
}

/// The link as the rest of the bridge sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkState {
    /// The ingress connection is up.
    pub connected: bool,
    /// Our subscriptions are in place (SubAck received, or the broker kept
    /// the session): devices' messages reach the bridge.
    pub subscribed: bool,
    /// The egress (publishing) connection is up.
    pub egress_connected: bool,
    /// ConnAcks so far.
    pub connects: u64,
}

/// The event loop task's state.
pub struct MqttLoop {
    pub(crate) eventloop: EventLoop,
    pub(crate) publisher: Publisher,
    pub(crate) topics: Topics,
    pub(crate) routes: Routes,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) generation: Arc<AtomicU64>,
    pub(crate) state: watch::Sender<LinkState>,
    overflow: VecDeque<(Target, Incoming)>,
    need_subscribe: bool,
    backoff: Duration,
    tls_failures: super::tls_log::TlsFailures,
}

impl MqttLoop {
    pub(crate) fn new(
        eventloop: EventLoop,
        publisher: Publisher,
        routes: Routes,
        metrics: Arc<Metrics>,
        generation: Arc<AtomicU64>,
        state: watch::Sender<LinkState>,
    ) -> Self {
        Self {
            topics: publisher.topics().clone(),
            eventloop,
            publisher,
            routes,
            metrics,
            generation,
            state,
            overflow: VecDeque::new(),
            need_subscribe: false,
            backoff: BACKOFF_MIN,
            tls_failures: Default::default(),
        }
    }

    /// The filters the bridge subscribes to.
    fn filters(&self) -> Vec<SubscribeFilter> {
        let mut f = vec![
            Filter::AllHello,
            Filter::AllStatus,
            Filter::AllPresence,
            Filter::OpsCommands,
        ];
        // No BlockRequests here: the egress connection takes them
        // (mqtt/egress.rs). A persistent session that still has their
        // subscription from an older bridge hands them to the block server
        // through `routes.blocks`.
        if self.routes.repair.is_some() {
            f.extend([
                Filter::AllMemberships,
                Filter::AllAcks,
                Filter::AllGroupCampaigns,
                Filter::AllGroupEmergencies,
                Filter::Emergency,
            ]);
        }
        f.into_iter()
            .map(|f| {
                // The bridge's own retained topics at QoS 0: what counts is
                // the broker's latest, and no PUBACK is owed for each echo
                // of our own acks.
                let qos = if matches!(
                    f,
                    Filter::AllMemberships
                        | Filter::AllAcks
                        | Filter::AllGroupCampaigns
                        | Filter::AllGroupEmergencies
                        | Filter::Emergency
                ) {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                SubscribeFilter::new(self.topics.filter(f), qos)
            })
            .collect()
    }

    /// Runs until `shutdown` completes or the bridge's own DISCONNECT has
    /// been sent.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // PUBACKs the client's queue could not take on the last turn.
            self.publisher.drain_acks();
            if self.need_subscribe {
                self.subscribe();
            }
            let head = self.overflow.front().map(|(t, _)| *t);
            let step = if let Some(target) = head {
                // Full: stop reading until the actors catch up.
                let room = self.overflow.len() < MAX_OVERFLOW;
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    permit = self.routes.reserve(target) => match permit {
                        Some(p) => {
                            if let Some((_, m)) = self.overflow.pop_front() {
                                p.send(m);
                            }
                            Step::Sent
                        }
                        None => Step::OwnerGone,
                    },
                    ev = self.eventloop.poll(), if room => Step::Event(ev),
                }
            } else {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    ev = self.eventloop.poll() => Step::Event(ev),
                }
            };
            let event = match step {
                Step::Event(ev) => ev,
                Step::Sent => continue,
                Step::OwnerGone => {
                    if let Some((t, m)) = self.overflow.pop_front() {
                        self.no_owner(t, m);
                    }
                    continue;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => self.incoming(p),
                Ok(Event::Incoming(Packet::ConnAck(ack))) => self.connected(ack.session_present),
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    let refused = s
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        .count();
                    if refused > 0 {
                        warn!(refused, "broker refused some subscriptions: check its ACLs for the bridge's user");
                    }
                    self.state.send_modify(|s| s.subscribed = true);
                    info!("subscribed: devices and operators reach the bridge");
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                    // Our own clean shutdown: the DISCONNECT is flushed.
                    info!("disconnected from the broker");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    let was = self.state.borrow().connected;
                    self.state.send_modify(|s| {
                        s.connected = false;
                        s.subscribed = false;
                    });
                    let address = self.eventloop.mqtt_options.broker_address();
                    if self.tls_failures.observe("ingress", address, &e) {
                        // Logged as one line naming the host and the reason.
                    } else if was {
                        warn!(error = %e, "lost the broker connection; reconnecting");
                    } else {
                        debug!(error = %e, backoff_ms = self.backoff.as_millis() as u64, "cannot reach the broker");
                    }
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.state.send_modify(|s| {
            s.connected = false;
            s.subscribed = false;
        });
    }

    fn connected(&mut self, session_present: bool) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        Metrics::add(&self.metrics.connects, 1);
        self.backoff = BACKOFF_MIN;
        self.tls_failures.connected();
        info!(session_present, generation, "connected to the broker");
        self.state.send_modify(|s| {
            s.connected = true;
            s.connects += 1;
            s.subscribed = session_present;
        });
        if !session_present {
            self.need_subscribe = true;
        }
    }

    fn subscribe(&mut self) {
        match self.publisher.try_subscribe_many(self.filters()) {
            Ok(()) => self.need_subscribe = false,
            // The request queue is full: try again on the next turn.
            Err(()) => debug!("subscribe deferred: request queue full"),
        }
    }

    fn incoming(&mut self, p: Publish) {
        let ack = AckToken {
            pkid: p.pkid,
            qos: p.qos,
            generation: self.generation.load(Ordering::Acquire),
        };
        // Every delivery takes its place in the PUBACK order now, whoever
        // finishes it and whenever.
        self.publisher.register_delivery(&ack);
        let topic_str = p.topic.as_str();
        let topic = match self.topics.parse(topic_str) {
            Ok(t) => t,
            Err(e) => {
                self.metrics.count_drop(DropReason::BadTopic);
                warn!(error = %e, "dropped a publish on a bad topic");
                return self.ack_now(ack);
            }
        };
        let Some(target) = Target::of(&topic) else {
            self.metrics.count_drop(DropReason::BadTopic);
            warn!(topic = %topic_str, "dropped a publish on a topic the bridge only sends");
            return self.ack_now(ack);
        };
        let m = Incoming {
            topic,
            payload: p.payload,
            retain: p.retain,
            ack,
            arrived: std::time::Instant::now(),
        };
        if !self.overflow.is_empty() {
            // Keep the order: behind what already waits.
            return self.queue(target, m);
        }
        match self.routes.try_send(target, m) {
            Ok(()) => {}
            Err(HandOff::Full(m)) => self.queue(target, m),
            Err(HandOff::NoOwner(m)) => self.no_owner(target, m),
        }
    }

    fn queue(&mut self, target: Target, m: Incoming) {
        if self.overflow.is_empty() {
            debug!(?target, "an actor inbox is full: queueing locally");
        }
        if self.overflow.len() + 1 == MAX_OVERFLOW {
            warn!(
                queued = MAX_OVERFLOW,
                "the bridge is behind: pausing reads from the broker until it catches up"
            );
        }
        self.overflow.push_back((target, m));
    }

    fn no_owner(&mut self, target: Target, m: Incoming) {
        self.metrics.count_drop(DropReason::Unrouted);
        // An owner is gone only while the bridge shuts down: counted, and
        // logged quietly (the broker redelivers unacked QoS 1 messages to
        // the next session).
        debug!(?target, topic = ?m.topic, "dropped a message nobody handles now");
        self.ack_now(m.ack);
    }

    fn ack_now(&mut self, token: AckToken) {
        self.publisher.ack(token);
    }
}
