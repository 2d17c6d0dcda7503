//! One download row: N devices fetch the same 1 MiB image at once through
//! a broker in its own process, with the real bridge in this one
//! ([`super::download_run`]: minimal protocol-speaking devices that check
//! every block's Merkle proof). Measures the wall time until every device
//! holds every verified block, the bridge's egress against the image, and
//! the broker's peak RSS (`VmHWM` of its process).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::download_run::{BenchOptions, BenchResult, DeviceTls, PhaseCpu};
use bridge::blocks::BlocksConfig;

use super::child::{peak_rss, rss, ChildCmd, ChildError, ChildProc, ChildRole};
use crate::mosquitto::{Mosquitto, MosquittoError};

/// Which broker carries the download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadBroker {
    /// rumqttd (our `broker` crate, default config), in a child process.
    Embedded,
    /// Mosquitto, in a child process.
    Mosquitto,
}

/// One row to run.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub broker: DownloadBroker,
    pub devices: usize,
    pub image_bytes: usize,
    pub block_size: u32,
    /// `false`: unicast only, for comparison.
    pub broadcast: bool,
    /// A device gives up after this long.
    pub deadline: Duration,
    /// Device connects per second.
    pub connect_rate: u32,
    /// The bridge's `[blocks] fanout_per_sec` ceiling; `None`: none (the
    /// default, adaptive pacing alone).
    pub fanout_per_sec: Option<u64>,
    /// The bridge's `[blocks] fanout_bytes_per_sec` ceiling; `None`: none.
    pub fanout_bytes_per_sec: Option<u64>,
    /// An open dashboard and a 1 s scraper beside the bridge.
    pub watched: bool,
    /// Devices connect over mutual TLS, each with its own certificate
    /// (embedded broker only; the bridge stays plain on loopback).
    pub tls: bool,
}

/// What one row measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DownloadRow {
    pub broker: DownloadBroker,
    pub broadcast: bool,
    pub devices: usize,
    pub completed: usize,
    pub image_bytes: usize,
    pub block_size: u32,
    /// From the start signal to the last device complete.
    pub wall_secs: f64,
    /// Connecting and subscribing every device (500/s), before the clock.
    pub connect_secs: f64,
    pub egress_ratio: f64,
    pub blocks_broadcast: u64,
    pub blocks_unicast: u64,
    pub requests: u64,
    /// The broker process's peak RSS.
    pub broker_peak_rss: Option<u64>,
    /// The bridge's `[blocks]` budget and ceilings used.
    pub egress_bytes_per_sec: u64,
    pub fanout_per_sec: Option<u64>,
    pub fanout_bytes_per_sec: Option<u64>,
    /// The candidate pacing signals, as the probe saw them.
    pub flight: bridge::blocks::flight::FlightTotals,
    /// The pacer's last rate (deliveries/s) and its back-offs.
    pub pace_rate: u64,
    pub pace_backoffs: u64,
    /// What the dashboard and the scraper read meanwhile (`--watched`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watched: Option<super::watcher::Watched>,
    /// Devices over mutual TLS.
    pub tls: bool,
    /// CPU seconds while the devices connected, and while they downloaded.
    pub connect_cpu: PhaseCpu,
    pub download_cpu: PhaseCpu,
}

/// Why a row could not run.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Child(#[from] ChildError),
    #[error("{0}")]
    Mosquitto(#[from] MosquittoError),
    #[error("{0}")]
    Bench(#[from] super::download_run::BenchError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("devices over TLS: the embedded broker only")]
    TlsBroker,
}

enum BrokerProc {
    // One per row: its size does not matter.
    Embedded(Box<ChildProc>),
    Mosquitto(Mosquitto),
}

impl BrokerProc {
    fn pid(&self) -> Option<u32> {
        match self {
            BrokerProc::Embedded(c) => c.pid(),
            BrokerProc::Mosquitto(m) => Some(m.pid()),
        }
    }
}

/// Runs one row against a fresh broker process; `progress` gets a line
/// every few seconds.
pub async fn run(
    cmd: &ChildCmd,
    opts: &DownloadOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<DownloadRow, DownloadError> {
    // Certificates first: making them is not what the row measures.
    let pki = match opts.tls {
        true if opts.broker != DownloadBroker::Embedded => return Err(DownloadError::TlsBroker),
        true => Some(crate::pki::TestPki::new()),
        false => None,
    };
    let mut device_tls = None;
    let (proc, port) = match (opts.broker, &pki) {
        (DownloadBroker::Embedded, Some(pki)) => {
            let (port, tls_port) = (crate::free_port()?, crate::free_port()?);
            let role = ChildRole::TlsBroker {
                port,
                tls_port,
                pki: pki.dir().to_path_buf(),
            };
            let mut c = ChildProc::spawn(cmd, &role)?;
            c.expect("ready", Duration::from_secs(20)).await?;
            let configs = (0..opts.devices)
                .map(|i| pki.client(Some(&pki.device(&format!("bench-{i:05}")))))
                .collect();
            device_tls = Some(DeviceTls {
                addr: SocketAddr::from(([127, 0, 0, 1], tls_port)),
                configs: std::sync::Arc::new(configs),
            });
            (BrokerProc::Embedded(Box::new(c)), port)
        }
        (DownloadBroker::Embedded, None) => {
            let (c, port) = ChildProc::broker(cmd).await?;
            (BrokerProc::Embedded(Box::new(c)), port)
        }
        (DownloadBroker::Mosquitto, _) => {
            let m = Mosquitto::start().await?;
            let port = m.port;
            (BrokerProc::Mosquitto(m), port)
        }
    };
    let blocks = blocks_config(opts);
    let bench = BenchOptions {
        devices: opts.devices,
        image_bytes: opts.image_bytes,
        block_size: opts.block_size,
        blocks: blocks.clone(),
        connect_rate: opts.connect_rate,
        broker: SocketAddr::from(([127, 0, 0, 1], port)),
        deadline: opts.deadline,
        watched: opts.watched,
        device_tls,
        broker_pid: proc.pid(),
    };
    let pid = proc.pid();
    let result = saying_rss(super::download_run::run(&bench), pid, progress).await;
    let peak = pid.and_then(peak_rss);
    match proc {
        BrokerProc::Embedded(c) => c.stop().await,
        BrokerProc::Mosquitto(m) => drop(m),
    }
    Ok(DownloadRow::new(opts, &blocks, result?, peak))
}

/// Runs `work`, telling `progress` the broker process's RSS every 5 s.
pub async fn saying_rss<T>(
    work: impl std::future::Future<Output = T>,
    broker_pid: Option<u32>,
    progress: &(dyn Fn(String) + Sync),
) -> T {
    let started = Instant::now();
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => {
                let mib = broker_pid.and_then(rss).map_or("?".into(), |b| format!("{}", b >> 20));
                progress(format!(
                    "{:.0} s, broker RSS {mib} MiB",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
    }
}

/// The bridge's `[blocks]` section for a row: the defaults, room for
/// twice its devices' unicast wants, and the row's ceilings.
pub fn blocks_config(opts: &DownloadOptions) -> BlocksConfig {
    BlocksConfig {
        broadcast: opts.broadcast,
        // Unicast sends the image once per device: at the default 2 MiB/s,
        // 1,000 devices would take 500 s. Its row is about the broker's
        // cost, so its budget is raised (docs/BENCHMARKS.md says so).
        egress_bytes_per_sec: if opts.broadcast {
            BlocksConfig::default().egress_bytes_per_sec
        } else {
            64 * 1024 * 1024
        },
        max_devices: opts.devices.max(1) * 2,
        fanout_per_sec: opts.fanout_per_sec,
        fanout_bytes_per_sec: opts.fanout_bytes_per_sec,
        ..BlocksConfig::default()
    }
}

impl DownloadRow {
    /// The row of `opts`, run by a bridge with `blocks`: what `r`
    /// measured and the broker's peak RSS.
    pub fn new(
        opts: &DownloadOptions,
        blocks: &BlocksConfig,
        r: BenchResult,
        broker_peak_rss: Option<u64>,
    ) -> Self {
        DownloadRow {
            broker: opts.broker,
            broadcast: opts.broadcast,
            devices: r.devices,
            completed: r.completed,
            image_bytes: r.image_bytes,
            block_size: opts.block_size,
            wall_secs: r.wall.as_secs_f64(),
            connect_secs: r.connect.as_secs_f64(),
            egress_ratio: r.egress_ratio,
            blocks_broadcast: r.blocks_broadcast,
            blocks_unicast: r.blocks_unicast,
            requests: r.requests,
            broker_peak_rss,
            egress_bytes_per_sec: blocks.egress_bytes_per_sec,
            fanout_per_sec: blocks.fanout_per_sec,
            fanout_bytes_per_sec: blocks.fanout_bytes_per_sec,
            flight: r.flight,
            pace_rate: r.pace_rate,
            pace_backoffs: r.pace_backoffs,
            watched: r.watched,
            tls: opts.tls,
            connect_cpu: r.connect_cpu,
            download_cpu: r.download_cpu,
        }
    }
}
