//! A minimal device download loop speaking PROTOCOL.md step 6 over raw
//! rumqttc: subscribe to the device's and the artifact's block topics,
//! request every missing block, verify each Block against the Merkle root,
//! re-request what is still missing after each quiet spell, and check the
//! whole image's sha256 at the end. For the block benchmark and the tests;
//! the full device agent is `device_sim`.
//!
//! It counts which topic carried each block, so a test can show which path
//! (broadcast or unicast) the bridge took, and it can drop a share of the
//! incoming blocks on purpose to exercise re-requests.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use schemas::bitmap::{requests_for_missing, BlockSet};
use schemas::merkle::{block_range, verify_block};
use schemas::msg::{Block, BlockRequest, Manifest, WireMessage};
use schemas::topic::{Topic, Topics};
use schemas::DeviceId;
use sha2::{Digest, Sha256};

/// rumqttc's request queue per device: every request of a 64 MiB image
/// (at most 64 of 1024 blocks) fits.
const REQUEST_QUEUE: usize = 128;

/// Why a download did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("device {device}: connection failed: {source}")]
    Connection {
        device: DeviceId,
        #[source]
        source: Box<rumqttc::ConnectionError>,
    },
    #[error("device {device}: no {what} within {waited:?}")]
    Timeout {
        device: DeviceId,
        what: String,
        waited: Duration,
    },
    #[error("device {device}: the image's sha256 does not match the manifest")]
    HashMismatch { device: DeviceId },
}

/// How the device behaves.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// Quiet spell before re-requesting, plus up to `jitter` at random.
    /// The protocol asks 2 s + up to 2 s of real devices; tests use less.
    pub quiet: Duration,
    pub jitter: Duration,
    /// Share of incoming blocks dropped on purpose, 0.0..1.0.
    pub drop_rate: f64,
    /// Keep the image and check its sha256 (the benchmark's thousand
    /// devices only verify proofs, to save memory).
    pub keep_image: bool,
    /// Give up after this long.
    pub deadline: Duration,
    /// Seeds the jitter and the drops.
    pub seed: u64,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            quiet: Duration::from_secs(2),
            jitter: Duration::from_secs(2),
            drop_rate: 0.0,
            keep_image: true,
            deadline: Duration::from_secs(120),
            seed: 1,
        }
    }
}

/// What one download saw.
#[derive(Debug, Clone, Default)]
pub struct DownloadReport {
    /// The image, when kept.
    pub image: Option<Vec<u8>>,
    /// Blocks that arrived on the artifact's topic (duplicates included).
    pub via_broadcast: u64,
    /// Blocks that arrived on the device's own topic.
    pub via_unicast: u64,
    /// Blocks dropped on purpose.
    pub dropped: u64,
    /// Blocks already held.
    pub duplicates: u64,
    /// Blocks whose proof or length did not verify.
    pub rejected: u64,
    /// BlockRequests sent.
    pub requests: u64,
    /// From the first request to the last block.
    pub elapsed: Duration,
    /// When the last block was verified.
    pub finished: Option<Instant>,
}

/// A connected, subscribed device.
pub struct Device {
    id: DeviceId,
    client: AsyncClient,
    events: EventLoop,
    topics: Topics,
}

impl Device {
    /// Connects and subscribes to `P/devices/{id}/blocks` and the
    /// artifact's block topic; returns once both SUBACKs are in.
    pub async fn connect(
        mut options: MqttOptions,
        topics: Topics,
        id: DeviceId,
        manifest: &Manifest,
        wait: Duration,
    ) -> Result<Device, DownloadError> {
        options.set_max_packet_size(128 * 1024, 128 * 1024);
        let (client, mut events) = AsyncClient::new(options, REQUEST_QUEUE);
        for t in [
            Topic::DeviceBlocks(id.clone()),
            Topic::ArtifactBlocks(manifest.artifact.clone()),
        ] {
            // Queued before the first poll: cannot be full.
            let _ = client.try_subscribe(topics.build(&t), QoS::AtLeastOnce);
        }
        let mut subacks = 0;
        let started = Instant::now();
        while subacks < 2 {
            let left = wait.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, events.poll()).await {
                Err(_) => {
                    return Err(DownloadError::Timeout {
                        device: id,
                        what: "SUBACK".into(),
                        waited: wait,
                    })
                }
                Ok(Err(source)) => {
                    return Err(DownloadError::Connection {
                        device: id,
                        source: Box::new(source),
                    })
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subacks += 1,
                Ok(Ok(_)) => {}
            }
        }
        Ok(Device {
            id,
            client,
            events,
            topics,
        })
    }

    /// The device's id.
    pub fn id(&self) -> &DeviceId {
        &self.id
    }

    /// Downloads the artifact of `manifest` to the end.
    pub async fn download(
        mut self,
        manifest: &Manifest,
        cfg: &DownloadConfig,
    ) -> Result<DownloadReport, DownloadError> {
        let mut rng = XorShift::new(cfg.seed ^ fnv(self.id.as_str()));
        let mut have = BlockSet::new(manifest.blocks);
        let mut image = cfg
            .keep_image
            .then(|| vec![0u8; usize::try_from(manifest.size).unwrap_or(0)]);
        let mut report = DownloadReport::default();
        let started = Instant::now();
        let own = self.topics.build(&Topic::DeviceBlocks(self.id.clone()));
        let shared = self
            .topics
            .build(&Topic::ArtifactBlocks(manifest.artifact.clone()));
        let request_topic = self.topics.build(&Topic::Request(self.id.clone()));
        self.request_missing(&have, manifest, &request_topic, &mut report);
        let mut quiet_until = Instant::now() + quiet(cfg, &mut rng);
        while !have.is_complete() {
            if started.elapsed() > cfg.deadline {
                let _ = self.client.try_disconnect();
                return Err(DownloadError::Timeout {
                    device: self.id.clone(),
                    what: format!(
                        "complete image ({} of {} blocks)",
                        have.count(),
                        manifest.blocks
                    ),
                    waited: cfg.deadline,
                });
            }
            let left = quiet_until.saturating_duration_since(Instant::now());
            let event = match tokio::time::timeout(left, self.events.poll()).await {
                Err(_) => {
                    // A quiet spell: ask again for what is still missing.
                    self.request_missing(&have, manifest, &request_topic, &mut report);
                    quiet_until = Instant::now() + quiet(cfg, &mut rng);
                    continue;
                }
                Ok(Err(source)) => {
                    return Err(DownloadError::Connection {
                        device: self.id.clone(),
                        source: Box::new(source),
                    })
                }
                Ok(Ok(e)) => e,
            };
            let Event::Incoming(Packet::Publish(p)) = event else {
                continue;
            };
            if p.topic == own {
                report.via_unicast += 1;
            } else if p.topic == shared {
                report.via_broadcast += 1;
            } else {
                continue;
            }
            if cfg.drop_rate > 0.0 && rng.unit() < cfg.drop_rate {
                report.dropped += 1;
                continue;
            }
            let Ok(block) = Block::decode(&p.payload) else {
                report.rejected += 1;
                continue;
            };
            if block.artifact != manifest.artifact {
                continue;
            }
            if have.contains(block.index) {
                report.duplicates += 1;
                continue;
            }
            let range = block_range(manifest.size, manifest.block_size, block.index);
            let fits = range.as_ref().is_some_and(|r| r.len() == block.data.len());
            if !fits
                || !verify_block(
                    &manifest.merkle_root,
                    block.index,
                    manifest.blocks,
                    &block.data,
                    &block.proof,
                )
            {
                report.rejected += 1;
                continue;
            }
            if let (Some(img), Some(r)) = (image.as_mut(), range) {
                img[r].copy_from_slice(&block.data);
            }
            have.insert(block.index);
            quiet_until = Instant::now() + quiet(cfg, &mut rng);
        }
        report.elapsed = started.elapsed();
        report.finished = Some(Instant::now());
        if let Some(img) = &image {
            if <[u8; 32]>::from(Sha256::digest(img)) != manifest.sha256 {
                return Err(DownloadError::HashMismatch {
                    device: self.id.clone(),
                });
            }
        }
        report.image = image;
        // Let the DISCONNECT go out; the connection is closed either way.
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while self.events.poll().await.is_ok() {}
        })
        .await;
        Ok(report)
    }

    /// Publishes BlockRequests for every missing block (at most 1024 each).
    /// `try_publish`: this task polls the event loop, so it must never wait
    /// on the request queue; a full queue waits for the next quiet spell.
    fn request_missing(
        &self,
        have: &BlockSet,
        manifest: &Manifest,
        topic: &str,
        report: &mut DownloadReport,
    ) {
        for (offset, bitmap) in requests_for_missing(have, manifest.blocks) {
            let req = BlockRequest {
                artifact: manifest.artifact.clone(),
                offset,
                bitmap,
            };
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, req.encode())
                .is_ok()
            {
                report.requests += 1;
            }
        }
    }
}

fn quiet(cfg: &DownloadConfig, rng: &mut XorShift) -> Duration {
    cfg.quiet + cfg.jitter.mul_f64(rng.unit())
}

/// Small, seedable, good enough for jitter and drops.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Uniform in 0.0..1.0.
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
