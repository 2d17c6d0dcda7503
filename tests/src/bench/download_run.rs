//! The block benchmark: N devices download the same image at once through
//! a real broker and a real bridge; it measures the bridge's block egress
//! against the image size, and the wall time until every device holds a
//! verified image. `examples/blocks_bench.rs` runs it against a broker in a
//! child process (for a clean peak RSS) and prints the table in
//! docs/BENCHMARKS.md.
//!
//! Each device is [`crate::downloader::Device`] on its own rumqttc
//! connection, with the protocol's quiet spell (2 s plus up to 2 s), and
//! checks every block's proof (not the whole sha256: a thousand 1 MiB
//! copies are not kept).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::MqttOptions;
use schemas::msg::{Kind, Manifest};
use schemas::release::{build_manifest, ReleaseSpec};
use schemas::topic::Topics;
use schemas::{ArtifactId, ComponentName, DeviceId};

use bridge::blocks::BlocksConfig;
use bridge::{Bridge, BridgeError};

use crate::downloader::{Device, DownloadConfig, DownloadError};

/// One run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Devices downloading at once.
    pub devices: usize,
    /// Image size in bytes.
    pub image_bytes: usize,
    pub block_size: u32,
    /// The bridge's `[blocks]` section (broadcast, egress, window).
    pub blocks: BlocksConfig,
    /// Device connects per second (rumqttd stalls near 2,000/s).
    pub connect_rate: u32,
    /// Where the broker listens.
    pub broker: SocketAddr,
    /// A device gives up after this long.
    pub deadline: Duration,
    /// With `[http]` on and a dashboard and a scraper reading it
    /// ([`super::watcher`]).
    pub watched: bool,
    /// Devices connect over mutual TLS instead (the bridge stays on
    /// `broker`, plain on loopback).
    pub device_tls: Option<DeviceTls>,
    /// The broker's process, whose CPU time is read at each phase's edges.
    pub broker_pid: Option<u32>,
}

/// Where devices connect over mutual TLS, and with what: `configs[i]`
/// presents the certificate of device `bench-{i:05}`.
#[derive(Debug, Clone)]
pub struct DeviceTls {
    pub addr: SocketAddr,
    pub configs: std::sync::Arc<Vec<std::sync::Arc<tls::rustls::ClientConfig>>>,
}

/// CPU seconds (user + system) used in a phase: this process (the bridge
/// and every device: they share one runtime) and the broker's.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PhaseCpu {
    pub this_process: f64,
    pub broker: Option<f64>,
}

/// CPU clocks of this process and the broker's, read together.
#[derive(Clone, Copy)]
struct CpuMark(Option<f64>, Option<f64>);

impl CpuMark {
    fn now(broker: Option<u32>) -> Self {
        CpuMark(
            super::child::cpu_secs(std::process::id()),
            broker.and_then(super::child::cpu_secs),
        )
    }

    fn since(self, then: CpuMark) -> PhaseCpu {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        PhaseCpu {
            this_process: d(self.0, then.0).unwrap_or_default(),
            broker: d(self.1, then.1),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub devices: usize,
    pub completed: usize,
    pub image_bytes: usize,
    pub broadcast: bool,
    /// Block payload bytes the bridge published.
    pub egress_bytes: u64,
    /// `egress_bytes / image_bytes`.
    pub egress_ratio: f64,
    pub blocks_broadcast: u64,
    pub blocks_unicast: u64,
    /// BlockRequests the devices sent (re-requests included).
    pub requests: u64,
    /// From the start signal until the last device completed.
    pub wall: Duration,
    /// Time to connect and subscribe every device.
    pub connect: Duration,
    /// What the delivery probe saw: the candidate pacing signals.
    pub flight: bridge::blocks::flight::FlightTotals,
    /// The pacer's rate at the end (deliveries/s) and its back-offs.
    pub pace_rate: u64,
    pub pace_backoffs: u64,
    /// What the dashboard and the scraper read meanwhile (`watched`).
    pub watched: Option<super::watcher::Watched>,
    /// CPU used while every device connected and subscribed, and while
    /// they downloaded.
    pub connect_cpu: PhaseCpu,
    pub download_cpu: PhaseCpu,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error("device: {0}")]
    Device(#[from] DownloadError),
    #[error("{0}")]
    Setup(String),
}

/// Runs the benchmark once: a fresh bridge (temp data dir) on `broker`.
pub async fn run(opts: &BenchOptions) -> Result<BenchResult, BenchError> {
    let dir = tempfile_dir()?;
    let release = schemas::keys::generate();
    let operator = schemas::keys::generate();
    let mut config = crate::stack::bridge_config(dir.join("data"), opts.broker);
    let (ovk, rvk) = (operator.verifying_key(), release.verifying_key());
    config.bridge.operator_keys = [(schemas::keys::kid(&ovk), ovk)].into();
    config.bridge.release_keys = [(schemas::keys::kid(&rvk), rvk)].into();
    config.bridge.director_key = Some(schemas::keys::generate());
    config.bridge.client_id = format!("ota-bridge-bench-{}", std::process::id());
    config.blocks = opts.blocks.clone();
    if opts.watched {
        config.http = Some(bridge::config::http::HttpConfig::anonymous_loopback(
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ));
    }

    let bridge = Bridge::start(config).await?;
    bridge.ready().await;
    let watcher = bridge.http_addr().map(super::watcher::Watcher::start);
    let (mut result, ()) = run_on(&bridge, &release, opts, |_| async {}).await?;
    result.watched = match watcher {
        Some(w) => Some(w.stop().await),
        None => None,
    };
    bridge.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}

/// The download on a running `bridge` that trusts `release`: stores the
/// image, connects every device, starts them together and waits for each
/// to finish. `during` is given the download's start (the instant its
/// wall time counts from, once every device is connected) and runs beside
/// it, awaited to its end, the download's or not; `opts.blocks` and `opts.watched` are
/// not applied here (the bridge's own config holds them). The result's
/// `watched` is `None`, and its egress counts every block the bridge
/// served, the download's and any `during` caused.
pub async fn run_on<T, F: std::future::Future<Output = T>>(
    bridge: &Bridge,
    release: &schemas::keys::SigningKey,
    opts: &BenchOptions,
    during: impl FnOnce(Instant) -> F,
) -> Result<(BenchResult, T), BenchError> {
    let manifest = store_image(bridge, release, opts).await?;

    let started = Instant::now();
    let mark0 = CpuMark::now(opts.broker_pid);
    let devices = connect_all(opts, &manifest).await?;
    let connect = started.elapsed();
    let mark1 = CpuMark::now(opts.broker_pid);

    let cfg = DownloadConfig {
        keep_image: false,
        deadline: opts.deadline,
        ..DownloadConfig::default()
    };
    let go = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for d in devices {
        let (m, c) = (manifest.clone(), cfg.clone());
        runs.spawn(async move { d.download(&m, &c).await });
    }
    let during = during(go);
    tokio::pin!(during);
    let mut beside = None;
    let (mut completed, mut requests, mut last) = (0, 0, Duration::ZERO);
    let metrics = bridge.blocks().metrics().clone();
    let mut progress = tokio::time::interval(Duration::from_secs(2));
    progress.tick().await;
    loop {
        let r = tokio::select! {
            r = runs.join_next() => match r {
                Some(r) => r,
                None => break,
            },
            t = &mut during, if beside.is_none() => {
                beside = Some(t);
                continue;
            }
            _ = progress.tick() => {
                let s = metrics.snapshot();
                tracing::info!(
                    completed,
                    requests = s.requests,
                    blocks_broadcast = s.blocks_broadcast,
                    blocks_unicast = s.blocks_unicast,
                    pace_rate = s.pace_rate,
                    pace_backoffs = s.pace_backoffs,
                    "benchmark progress"
                );
                continue;
            }
        };
        match r {
            Ok(Ok(report)) => {
                completed += 1;
                requests += report.requests;
                if let Some(at) = report.finished {
                    last = last.max(at.duration_since(go));
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "device did not complete"),
            Err(e) => tracing::warn!(error = %e, "device task failed"),
        }
    }
    let mark2 = CpuMark::now(opts.broker_pid);
    let s = bridge.blocks().metrics().snapshot();
    let flight = bridge.blocks().flight().totals();
    let beside = match beside {
        Some(t) => t,
        None => during.await,
    };
    let result = BenchResult {
        devices: opts.devices,
        completed,
        image_bytes: opts.image_bytes,
        broadcast: opts.blocks.broadcast,
        egress_bytes: s.egress_bytes(),
        egress_ratio: s.egress_bytes() as f64 / opts.image_bytes as f64,
        blocks_broadcast: s.blocks_broadcast,
        blocks_unicast: s.blocks_unicast,
        requests,
        wall: last,
        connect,
        flight,
        pace_rate: s.pace_rate,
        pace_backoffs: s.pace_backoffs,
        watched: None,
        connect_cpu: mark1.since(mark0),
        download_cpu: mark2.since(mark1),
    };
    Ok((result, beside))
}

/// Signs and stores a reproducible image.
async fn store_image(
    bridge: &Bridge,
    release: &schemas::keys::SigningKey,
    opts: &BenchOptions,
) -> Result<Manifest, BenchError> {
    use base64::Engine as _;
    let image = image_bytes(opts.image_bytes);
    let mut spec = ReleaseSpec::new(
        Kind::Firmware,
        ComponentName::new("main").map_err(|e| BenchError::Setup(e.to_string()))?,
        "1.0.0",
        "any",
        bridge::unix_now(),
    );
    spec.block_size = opts.block_size;
    spec.artifact =
        Some(ArtifactId::new("bench-image").map_err(|e| BenchError::Setup(e.to_string()))?);
    let manifest = build_manifest(&image, &spec).map_err(|e| BenchError::Setup(e.to_string()))?;
    let env = base64::engine::general_purpose::STANDARD
        .encode(schemas::msg::manifest::sign(&manifest, release));
    let trust = schemas::cose::TrustStore::new([release.verifying_key()]);
    let store = bridge.artifacts().clone();
    tokio::task::spawn_blocking(move || {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut at = 0usize;
        loop {
            let end = (at + schemas::ops::UPLOAD_CHUNK).min(image.len());
            let p = store.accept_chunk(&trust, &env, at as u64, &b64.encode(&image[at..end]), 0)?;
            if p.complete {
                return Ok(());
            }
            at = p.received as usize;
        }
    })
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))?
    .map_err(|e: bridge::artifacts::ArtifactError| BenchError::Setup(e.to_string()))?;
    Ok(manifest)
}

/// Connects every device at `connect_rate`, a few at a time.
async fn connect_all(opts: &BenchOptions, manifest: &Manifest) -> Result<Vec<Device>, BenchError> {
    let mut pending = tokio::task::JoinSet::new();
    let gap = Duration::from_secs(1) / opts.connect_rate.max(1);
    let mut next = tokio::time::Instant::now();
    for i in 0..opts.devices {
        tokio::time::sleep_until(next).await;
        next += gap;
        let id =
            DeviceId::new(format!("bench-{i:05}")).map_err(|e| BenchError::Setup(e.to_string()))?;
        let at = opts.device_tls.as_ref().map_or(opts.broker, |t| t.addr);
        let mut o = MqttOptions::new(id.as_str(), at.ip().to_string(), at.port());
        o.set_keep_alive(Duration::from_secs(60));
        if let Some(t) = &opts.device_tls {
            let c =
                t.configs.get(i).cloned().ok_or_else(|| {
                    BenchError::Setup(format!("no TLS client config for device {i}"))
                })?;
            o.set_transport(tls::transport(c));
        }
        let m = manifest.clone();
        pending.spawn(async move {
            Device::connect(o, Topics::default(), id, &m, Duration::from_secs(30)).await
        });
    }
    let mut devices = Vec::with_capacity(opts.devices);
    while let Some(r) = pending.join_next().await {
        devices.push(r.map_err(|e| BenchError::Setup(e.to_string()))??);
    }
    Ok(devices)
}

fn tempfile_dir() -> Result<std::path::PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!(
        "ota-blocks-bench-{}-{}",
        std::process::id(),
        bridge::unix_now()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// The image of every benchmark: `len` reproducible, incompressible bytes.
pub fn image_bytes(len: usize) -> Vec<u8> {
    xorshift_bytes(len, 0x9E37_79B9_7F4A_7C15)
}

/// Pushes the firmware the campaign rows send (component `main` 1.1.0,
/// any arch, [`image_bytes`] of `len` in blocks of `block_size`) through
/// `stack`'s bridge.
pub async fn push_firmware(
    stack: &crate::stack::Stack,
    len: usize,
    block_size: u32,
) -> Result<ArtifactId, crate::stack::StackError> {
    let main = ComponentName::new("main").expect("a valid component name");
    let mut spec = ReleaseSpec::new(Kind::Firmware, main, "1.1.0", "any", bridge::unix_now());
    spec.block_size = block_size;
    stack.push(&image_bytes(len), &spec).await
}

/// `len` reproducible, incompressible bytes from `seed` (xorshift; the
/// seed's lowest bit is set, a zero state would stay zero).
pub fn xorshift_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
