//! [`Publisher`]: how actors publish and acknowledge. Cloneable; every
//! method only queues a request for the event loop, which keeps draining
//! the queue, so awaiting here is safe in any task but the event loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::{AsyncClient, QoS};
use schemas::topic::{Topic, Topics};

use super::inbound::AckToken;
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
    client: AsyncClient,
    topics: Arc<Topics>,
    retained: RetainedStore,
    generation: Arc<AtomicU64>,
}

impl Publisher {
    pub(crate) fn new(
        client: AsyncClient,
        topics: Topics,
        retained: RetainedStore,
        generation: Arc<AtomicU64>,
    ) -> Self {
        Self {
            client,
            topics: Arc::new(topics),
            retained,
            generation,
        }
    }

    /// The topic set (prefix) in use.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Publishes at QoS 1.
    pub async fn publish(&self, topic: &Topic, payload: impl Into<Bytes>, retain: bool) -> Result<(), PublishError> {
        self.publish_str(self.topics.build(topic), payload.into(), retain).await
    }

    /// Records `payload` as the retained message of `topic` in the store
    /// (durable at the next flush), then publishes it retained. An empty
    /// payload withdraws the retained message.
    pub async fn retain(&self, topic: &Topic, payload: impl Into<Bytes>) -> Result<(), PublishError> {
        let payload = payload.into();
        let t = self.topics.build(topic);
        self.retained.put(&t, &payload)?;
        self.publish_str(t, payload, true).await
    }

    /// Publishes on a topic string taken from the retained tree.
    pub(crate) async fn publish_str(&self, topic: String, payload: Bytes, retain: bool) -> Result<(), PublishError> {
        self.client
            .publish_bytes(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|_| PublishError::Closed)
    }

    /// Sends the PUBACK a message owes, unless it came on an earlier
    /// connection (the broker redelivers it on this one, and the store
    /// deduplicates).
    pub async fn ack(&self, token: AckToken) -> Result<(), PublishError> {
        if token.qos == QoS::AtMostOnce || token.generation != self.generation.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut p = rumqttc::Publish::new("", token.qos, Vec::new());
        p.pkid = token.pkid;
        self.client.ack(&p).await.map_err(|_| PublishError::Closed)
    }

    /// The same, without waiting: for the event loop itself. Gives the token
    /// back when the request queue is full.
    pub(crate) fn try_ack(&self, token: AckToken) -> Result<(), AckToken> {
        if token.qos == QoS::AtMostOnce || token.generation != self.generation.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut p = rumqttc::Publish::new("", token.qos, Vec::new());
        p.pkid = token.pkid;
        self.client.try_ack(&p).map_err(|_| token)
    }

    /// Queues a SUBSCRIBE without waiting; `Err` when the queue is full.
    pub(crate) fn try_subscribe_many(&self, filters: Vec<rumqttc::SubscribeFilter>) -> Result<(), ()> {
        self.client.try_subscribe_many(filters).map_err(|_| ())
    }

    /// Asks the event loop to disconnect cleanly.
    pub(crate) async fn disconnect(&self) {
        // Fails only if the loop is gone already, which is what we want.
        let _ = self.client.disconnect().await;
    }
}
