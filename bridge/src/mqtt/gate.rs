//! Retained publishes that wait for an external broker's grants
//! (PROTOCOL.md E1 on Mosquitto, `[broker.mosquitto]`): a Membership or
//! announcement that grants topics reaches the broker only once
//! Mosquitto's files hold those grants ([`Identity::applied_to`]), so a
//! device that subscribes when it arrives is served. It waits here, in
//! order, not in the actor that published it: a storm of registrations
//! does not wait one rewrite each. A later retained publish on a topic
//! with one waiting queues up behind it, so each topic's messages reach
//! the broker in the order they were made; everything else (StatusAcks,
//! re-signed copies) goes straight out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::identity::Identity;

/// Retained publishes that may wait at once (then publishers wait).
pub const CAPACITY: usize = 4096;

/// One retained publish held back.
pub(crate) struct Held {
    pub topic: String,
    pub payload: Bytes,
    /// The grant change it needs applied first, if it made one.
    pub change: Option<u64>,
}

/// The queue and which topics have a publish in it.
pub(crate) struct Gate {
    tx: mpsc::Sender<Held>,
    rx: Mutex<Option<mpsc::Receiver<Held>>>,
    waiting: Mutex<HashMap<String, usize>>,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        let (tx, rx) = mpsc::channel(CAPACITY);
        Gate {
            tx,
            rx: Mutex::new(Some(rx)),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Counts only: a poisoned lock still holds usable ones.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Must a retained publish on `topic` go through the gate?
    pub(crate) fn holds(&self, topic: &str, change: Option<u64>) -> bool {
        change.is_some() || self.waiting().contains_key(topic)
    }

    /// Queues it; `Err` when the gate's task has stopped.
    pub(crate) async fn hold(&self, h: Held) -> Result<(), ()> {
        *self.waiting().entry(h.topic.clone()).or_default() += 1;
        let topic = h.topic.clone();
        if self.tx.send(h).await.is_err() {
            self.release(&topic);
            return Err(());
        }
        Ok(())
    }

    fn release(&self, topic: &str) {
        let mut w = self.waiting();
        if let Some(n) = w.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                w.remove(topic);
            }
        }
    }

    /// The queue's receiver, once (for [`run`]).
    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<Held>> {
        self.rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Publishes what the gate holds, in order, each once its grants are
/// applied (at most [`crate::identity::authority::APPLY_WAIT`] each, and
/// not at all while the sync fails). Ends at `token`: what is left is in
/// the retained store and goes out at the next start.
pub(crate) async fn run(
    gate: Arc<Gate>,
    mut rx: mpsc::Receiver<Held>,
    identity: Arc<Identity>,
    client: AsyncClient,
    token: CancellationToken,
) {
    loop {
        let h = tokio::select! {
            _ = token.cancelled() => return,
            h = rx.recv() => match h { Some(h) => h, None => return },
        };
        if let Some(change) = h.change {
            identity.applied_to(change).await;
        }
        let sent = client
            .publish_bytes(h.topic.clone(), QoS::AtLeastOnce, true, h.payload)
            .await;
        gate.release(&h.topic);
        if sent.is_err() {
            return; // the connection task stopped: the bridge is stopping
        }
    }
}
