//! [`Publisher`]: how actors publish and acknowledge. Cloneable; every
//! method only queues a request for an event loop, which keeps draining
//! its queue, so awaiting here is safe in any task but the event loops.
//! Publishes go out on the egress connection, PUBACKs on the ingress one
//! (see [`super::options`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::{AsyncClient, QoS};
use schemas::control::ControlBody;
use schemas::topic::{Topic, Topics};

use tokio_util::sync::CancellationToken;

use super::ack_order::AckOrder;
use super::gate::{Gate, Held};
use super::inbound::AckToken;
use crate::director::Director;
use crate::store::{RetainedStore, StoreError};

/// Why a publish could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the MQTT connection task has stopped (the bridge is shutting down)")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Publishes on the bridge's connection.
#[derive(Clone)]
pub struct Publisher {
    /// Egress: publishes.
    client: AsyncClient,
    /// Ingress: subscribe and PUBACKs.
    ingress: AsyncClient,
    topics: Arc<Topics>,
    retained: RetainedStore,
    generation: Arc<AtomicU64>,
    /// PUBACKs go out in delivery order (see [`super::ack_order`]).
    acks: Arc<AckOrder>,
    /// Told of every retained message before it goes out: Memberships and
    /// announcements grant topics (PROTOCOL.md E1).
    identity: Option<Arc<crate::identity::Identity>>,
    /// Given a copy of every operator event published (the HTTP listener's
    /// `/api/v1/events`); a full channel drops its oldest for slow readers.
    events: Option<tokio::sync::broadcast::Sender<Bytes>>,
    /// Signs Memberships, Announcements and StatusAcks (E2); `None`: they
    /// go out as in v1.
    director: Option<Arc<Director>>,
    /// With an external Mosquitto: retained publishes that wait for their
    /// grants ([`super::gate`]).
    gate: Option<Arc<Gate>>,
}

impl Publisher {
    pub(crate) fn new(
        egress: AsyncClient,
        ingress: AsyncClient,
        topics: Topics,
        retained: RetainedStore,
        generation: Arc<AtomicU64>,
    ) -> Self {
        Self {
            client: egress,
            ingress,
            topics: Arc::new(topics),
            retained,
            generation,
            acks: Arc::new(AckOrder::default()),
            identity: None,
            events: None,
            director: None,
            gate: None,
        }
    }

    /// The same publisher, holding retained publishes that grant topics
    /// until an external broker has the grants (`on`: there is one to
    /// keep current, `[broker.mosquitto]`). [`Publisher::gate_task`]
    /// runs the queue.
    pub(crate) fn with_gate(mut self, on: bool) -> Self {
        self.gate = on.then(|| Arc::new(Gate::new()));
        self
    }

    /// The task that publishes what the gate holds, once; `None` without
    /// a gate.
    pub fn gate_task(&self, token: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let (gate, identity) = (self.gate.clone()?, self.identity.clone()?);
        let rx = gate.take_receiver()?;
        let client = self.client.clone();
        Some(tokio::spawn(super::gate::run(
            gate, rx, identity, client, token,
        )))
    }

    /// The same publisher, signing control messages with `director`.
    pub(crate) fn with_director(mut self, director: Option<Arc<Director>>) -> Self {
        self.director = director;
        self
    }

    /// The director, when control messages are signed.
    pub fn director(&self) -> Option<&Arc<Director>> {
        self.director.as_ref()
    }

    /// The payload of an operator reply or event: signed by the director
    /// key in the envelope of commands when there is one, else plain JSON.
    pub fn ops_payload<T: serde::Serialize>(&self, value: &T) -> Vec<u8> {
        match &self.director {
            Some(d) => d.envelope(value).to_bytes(),
            // Invariant: replies and events are plain JSON data.
            None => serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// The payload of a control message for `topic`: signed by the
    /// director key (E2) when there is one, else the v1 encoding. Blocks
    /// for one fsync about once an hour (see [`crate::director`]).
    pub fn control<M: ControlBody>(&self, topic: &Topic, msg: &M) -> Result<Vec<u8>, StoreError> {
        match &self.director {
            Some(d) => d.sign(msg, &self.topics.build(topic)),
            None => Ok(msg.encode()),
        }
    }

    /// The same publisher, copying every `P/ops/events` message to `tx`.
    pub(crate) fn with_events(mut self, tx: tokio::sync::broadcast::Sender<Bytes>) -> Self {
        self.events = Some(tx);
        self
    }

    /// The same publisher, telling `identity` of every retained message.
    pub(crate) fn with_identity(mut self, identity: Arc<crate::identity::Identity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Records a delivery that will owe a PUBACK (the event loop calls it
    /// as each QoS 1 publish arrives, before handing it on).
    pub(crate) fn register_delivery(&self, token: &AckToken) {
        if token.qos != QoS::AtMostOnce {
            self.acks.register(token.generation, token.pkid);
        }
    }

    /// Sends every PUBACK that is due, in delivery order, as far as the
    /// client's request queue takes them. True when none is left waiting.
    pub(crate) fn drain_acks(&self) -> bool {
        let mut full = false;
        self.acks.drain(|pkid| {
            let mut p = rumqttc::Publish::new("", QoS::AtLeastOnce, Vec::new());
            p.pkid = pkid;
            let ok = self.ingress.try_ack(&p).is_ok();
            full |= !ok;
            ok
        });
        !full
    }

    /// The topic set (prefix) in use.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Publishes at QoS 1. A retained message is shown to the identity
    /// first (grants follow Memberships and announcements, E1), as in
    /// [`Publisher::retain`].
    pub async fn publish(
        &self,
        topic: &Topic,
        payload: impl Into<Bytes>,
        retain: bool,
    ) -> Result<(), PublishError> {
        let payload = payload.into();
        let change = match (retain, &self.identity) {
            (true, Some(id)) => self.observe(id, topic, &payload),
            _ => None,
        };
        self.send(self.topics.build(topic), payload, retain, change)
            .await
    }

    /// Shows a retained message to the identity: the change it made to
    /// the grants, if any.
    fn observe(
        &self,
        id: &crate::identity::Identity,
        topic: &Topic,
        payload: &[u8],
    ) -> Option<u64> {
        id.observe(topic, payload).then(|| id.change())
    }

    /// Publishes an operator event on `P/ops/events` ([`Self::ops_payload`]:
    /// signed when there is a director key) and copies its plain JSON to
    /// the HTTP listener's `/api/v1/events`, whose readers hold a read token
    /// and are not MQTT clients that could verify an envelope.
    pub async fn event<T: serde::Serialize>(&self, value: &T) -> Result<(), PublishError> {
        if let Some(tx) = &self.events {
            // No reader is no error; a send never waits.
            let _ = tx.send(Bytes::from(serde_json::to_vec(value).unwrap_or_default()));
        }
        let payload = self.ops_payload(value);
        self.publish(&Topic::OpsEvents, payload, false).await
    }

    /// Publishes events for operators, in order; many are signed together
    /// on the blocking pool ([`Director::envelopes`]).
    pub async fn events(&self, values: Vec<schemas::ops::Event>) -> Result<(), PublishError> {
        if let Some(tx) = &self.events {
            for v in &values {
                let _ = tx.send(Bytes::from(serde_json::to_vec(v).unwrap_or_default()));
            }
        }
        let payloads = match &self.director {
            Some(d) if values.len() >= crate::director::PARALLEL_FROM => {
                let d = d.clone();
                crate::rt::blocking(move || d.envelopes(&values))
                    .await
                    .map_err(|_| PublishError::Closed)?
            }
            _ => values.iter().map(|v| self.ops_payload(v)).collect(),
        };
        for p in payloads {
            self.publish(&Topic::OpsEvents, p, false).await?;
        }
        Ok(())
    }

    /// The payloads of control messages, in order, as [`Publisher::control`]
    /// makes them; many are signed together on the blocking pool.
    pub async fn controls<M: ControlBody + Send + Sync + 'static>(
        &self,
        msgs: Vec<(Topic, M)>,
    ) -> Result<Vec<Vec<u8>>, PublishError> {
        match &self.director {
            Some(d) if msgs.len() >= crate::director::PARALLEL_FROM => {
                let d = d.clone();
                let items: Vec<(M, String)> = msgs
                    .into_iter()
                    .map(|(t, m)| (m, self.topics.build(&t)))
                    .collect();
                Ok(crate::rt::blocking(move || d.sign_many(&items))
                    .await
                    .map_err(|_| PublishError::Closed)??)
            }
            _ => Ok(msgs
                .iter()
                .map(|(t, m)| self.control(t, m))
                .collect::<Result<_, _>>()?),
        }
    }

    /// Records `payload` as the retained message of `topic` in the store
    /// (durable at the next flush), then publishes it retained. An empty
    /// payload withdraws the retained message.
    pub async fn retain(
        &self,
        topic: &Topic,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        let payload = payload.into();
        let change = match &self.identity {
            Some(id) => self.observe(id, topic, &payload),
            None => None,
        };
        let t = self.topics.build(topic);
        self.retained.put(&t, &payload)?;
        self.send(t, payload, true, change).await
    }

    /// Publishes on a topic string taken from the retained tree.
    pub(crate) async fn publish_str(
        &self,
        topic: String,
        payload: Bytes,
        retain: bool,
    ) -> Result<(), PublishError> {
        self.send(topic, payload, retain, None).await
    }

    /// Publishes, or hands a retained message to the gate when it made
    /// grant `change` or its topic has one waiting there.
    async fn send(
        &self,
        topic: String,
        payload: Bytes,
        retain: bool,
        change: Option<u64>,
    ) -> Result<(), PublishError> {
        if let (true, Some(gate)) = (retain, &self.gate) {
            if gate.holds(&topic, change) {
                let held = Held {
                    topic,
                    payload,
                    change,
                };
                return gate.hold(held).await.map_err(|()| PublishError::Closed);
            }
        }
        self.client
            .publish_bytes(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|_| PublishError::Closed)
    }

    /// Marks a message's work done; its PUBACK goes out once every message
    /// delivered before it is done too (rumqttd drops a connection that
    /// acknowledges out of order). A message from an earlier connection
    /// owes nothing: the broker redelivers it on this one, and the store
    /// deduplicates.
    ///
    /// Never waits and cannot fail: what the client's request queue cannot
    /// take now stays due in the ack order and goes out on the event
    /// loop's next turn ([`Publisher::drain_acks`]).
    pub fn ack(&self, token: AckToken) {
        if token.qos == QoS::AtMostOnce
            || token.generation != self.generation.load(Ordering::Acquire)
        {
            return;
        }
        if self.acks.complete(token.generation, token.pkid) {
            self.drain_acks();
        }
    }

    /// Queues a SUBSCRIBE without waiting; `Err` when the queue is full.
    pub(crate) fn try_subscribe_many(
        &self,
        filters: Vec<rumqttc::SubscribeFilter>,
    ) -> Result<(), ()> {
        self.ingress.try_subscribe_many(filters).map_err(|_| ())
    }

    /// Asks both event loops to disconnect cleanly.
    pub(crate) async fn disconnect(&self) {
        // Fails only if a loop is gone already, which is what we want.
        let _ = self.client.disconnect().await;
        let _ = self.ingress.disconnect().await;
    }
}
