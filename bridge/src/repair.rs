//! The bridge repairs what it owns. It subscribes to its own retained
//! topics (every Membership, StatusAck and announcement topic) and compares
//! what the broker holds with what its store says it published. A payload
//! it did not publish (a forgery, an empty one where it holds an
//! announcement) is counted (`foreign_retained`), logged once per
//! interval, and overwritten with the bridge's own within about two
//! [`TICK`]s. An older message the director key signed (a replay, or the
//! broker's copy from before a restart) is overwritten too, without the
//! count. A topic the bridge never published on gets the empty payload,
//! which withdraws the foreign one.
//!
//! Its own publishes come back too: a payload is judged only after a tick
//! in which nothing newer arrived on its topic, so the echo of an older
//! publish that the store has already moved past is not taken for a
//! forgery (the next echo settles it). Devices with the director key never
//! believed the forgery (E2); this heals devices without it, and brokers
//! without ACLs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::mqtt::{Incoming, PublishError, Publisher};
use crate::store::{Store, StoreError};

/// How often what was seen is compared with the store.
pub const TICK: Duration = Duration::from_millis(500);
/// The inbox: one message per publish on the bridge's retained topics
/// (its own echoes included); when it is full the event loop holds the
/// rest back, as for every actor.
pub const INBOX: usize = 4096;
/// How often, at most, foreign payloads are logged (with their count).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why the repair actor stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the repair task failed: {0}")]
    Task(String),
}

/// What was seen on one topic, and for how many ticks it stood.
struct Seen {
    payload: Bytes,
    ticks: u8,
}

/// The actor.
pub struct Repair {
    pub(crate) rx: mpsc::Receiver<Incoming>,
    pub(crate) store: Store,
    pub(crate) publisher: Publisher,
    pub(crate) metrics: Arc<Metrics>,
    seen: HashMap<String, Seen>,
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Repair {
    pub fn new(
        rx: mpsc::Receiver<Incoming>,
        store: Store,
        publisher: Publisher,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            rx,
            store,
            publisher,
            metrics,
            seen: HashMap::new(),
            unlogged: 0,
            last_log: None,
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), RepairError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                m = self.rx.recv() => match m {
                    Some(m) => self.saw(m),
                    None => break,
                },
                _ = tick.tick() => self.check().await?,
            }
        }
        debug!("repair stopped");
        Ok(())
    }

    fn saw(&mut self, m: Incoming) {
        // QoS 0: no PUBACK is owed (see the event loop's filters).
        let topic = self.publisher.topics().build(&m.topic);
        self.seen.insert(
            topic,
            Seen {
                payload: m.payload,
                ticks: 0,
            },
        );
    }

    /// Compares what stood for a whole tick with the store; repairs.
    async fn check(&mut self) -> Result<(), RepairError> {
        let due: Vec<(String, Bytes)> = self
            .seen
            .iter_mut()
            .filter_map(|(t, s)| {
                s.ticks = s.ticks.saturating_add(1);
                (s.ticks >= 2).then(|| (t.clone(), s.payload.clone()))
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for (t, _) in &due {
            self.seen.remove(t);
        }
        let store = self.store.clone();
        let director = self.publisher.director().cloned();
        let topics = self.publisher.topics().clone();
        let judged = crate::rt::blocking(move || {
            let mut wrong = Vec::new();
            for (topic, payload) in due {
                let ours = store.retained.get(&topic)?.unwrap_or_default();
                if ours == payload.as_ref() {
                    continue;
                }
                // An older message of our own (a replay, or the broker's
                // copy from before a restart) is stale, not forged.
                let stale = match (&director, topics.parse(&topic)) {
                    (Some(d), Ok(t)) => d.signed_it(&t, &topic, &payload),
                    _ => false,
                };
                wrong.push((topic, Bytes::from(ours), stale));
            }
            Ok::<_, StoreError>(wrong)
        })
        .await
        .map_err(|e| RepairError::Task(e.to_string()))??;
        for (topic, ours, stale) in judged {
            if stale {
                debug!(topic = %topic, "an older message of ours stood on its topic: republished the current one");
            } else {
                Metrics::add(&self.metrics.foreign_retained, 1);
                self.log(&topic);
            }
            self.publisher.publish_str(topic, ours, true).await?;
        }
        Ok(())
    }

    /// Logs once per [`LOG_INTERVAL`], with the count since the last line.
    fn log(&mut self, topic: &str) {
        self.unlogged += 1;
        let due = self.last_log.is_none_or(|at| at.elapsed() >= LOG_INTERVAL);
        if due {
            warn!(
                topic,
                overwritten = self.unlogged,
                "a retained payload the bridge did not publish stood on its topic: overwritten with the bridge's own (someone can publish on the bridge's topics: check the broker's ACLs)"
            );
            self.unlogged = 0;
            self.last_log = Some(Instant::now());
        }
    }
}
