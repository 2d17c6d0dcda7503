//! Block bytes by artifact, as the broker carries them: an observer
//! subscribed to every broadcast stream (`P/artifacts/+/blocks`) and every
//! device's unicast blocks (`P/devices/+/blocks`) adds each Block message
//! once per publish (its bytes, proof and framing included, as the
//! bridge's egress counts them). The bridge counts its egress in total
//! only; this says which artifact (a delta, the full image) it went to.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::msg::{Block, WireMessage};
use schemas::topic::{Filter, Topics};
use schemas::ArtifactId;

type Counts = Arc<Mutex<BTreeMap<ArtifactId, u64>>>;

/// A running observer; stops when dropped.
pub struct BlockTally {
    counts: Counts,
    task: tokio::task::JoinHandle<()>,
}

impl BlockTally {
    /// Connects to the broker at `host:port` and returns once both
    /// subscriptions are acknowledged.
    pub async fn start(host: &str, port: u16) -> Result<BlockTally, String> {
        let topics = Topics::default();
        let filters = [
            topics.filter(Filter::AllArtifactBlocks),
            format!("{}/devices/+/blocks", topics.prefix()),
        ];
        let id = format!("bench-block-tally-{}", std::process::id());
        let mut o = MqttOptions::new(id, host, port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(schemas::msg::limits::MAX_BLOCK_BYTES + 4096, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(o, 16);
        let counts: Counts = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let tally = counts.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut subacks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        subacks = 0;
                        for f in &filters {
                            if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                                tracing::warn!(error = %e, "block tally cannot subscribe");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == filters.len() {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(b) = Block::decode(&p.payload) {
                            let mut c = tally.lock().unwrap_or_else(|e| e.into_inner());
                            *c.entry(b.artifact).or_default() += p.payload.len() as u64;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "block tally connection failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(())) => Ok(BlockTally { counts, task }),
            _ => {
                task.abort();
                Err("the block tally had no SUBACK within 10 s".into())
            }
        }
    }

    /// Bytes of Block messages seen so far, by artifact.
    pub fn counts(&self) -> BTreeMap<ArtifactId, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for BlockTally {
    fn drop(&mut self) {
        self.task.abort();
    }
}
