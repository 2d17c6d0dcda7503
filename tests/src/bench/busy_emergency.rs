//! An emergency under a download (issue 15): the emergency latency of
//! [`super::emergency`] (command to every agent's `accepted`, p50 and
//! p99) to its reference agents, sent while a normal 1 MiB download of
//! [`super::download_run`] to N other devices runs through the same
//! broker and the same bridge. The broker is the embedded one in its own
//! process (as in the download rows), the bridge and every device in this
//! one.
//!
//! The emergency is sent once a quarter of the image's blocks have gone
//! out (the pacer at its rate, the broker's queues full), and the row
//! says whether the download was still running when the last agent
//! accepted: how long it went on after, and how many of its deliveries
//! the broker made meanwhile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::child::{peak_rss, ChildCmd, ChildProc};
use super::download_run::{self, BenchOptions, BenchResult};
use super::emergency::{self, EmergencyOptions, EmergencyReport};
use super::run_error::{setup, RunError};
use super::table::Row;
use crate::stack::{BrokerChoice, Stack, StackOptions};

/// One run.
#[derive(Debug, Clone)]
pub struct BusyOptions {
    /// Devices of the background download.
    pub download_devices: usize,
    pub image_bytes: usize,
    pub block_size: u32,
    /// The emergency's agents, its artifact and its deadline.
    pub emergency: EmergencyOptions,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BusyReport {
    pub emergency: EmergencyReport,
    pub download_devices: usize,
    pub download_completed: usize,
    /// The download's wall time, from its start to its last device done.
    pub download_secs: f64,
    pub download_egress_ratio: f64,
    /// Download start → emergency sent, and → its last `accepted`.
    pub sent_at_secs: f64,
    pub done_at_secs: f64,
    /// Broadcast blocks published before the emergency was sent.
    pub blocks_before: u64,
    /// Deliveries of broadcast blocks the probe saw between the command
    /// and the last `accepted`: the broker busy with the download.
    pub deliveries_during: u64,
    /// Broadcast blocks published after the last `accepted`.
    pub blocks_after: u64,
    /// The download still had devices to finish when the emergency did.
    pub download_running: bool,
    /// The bridge's publishing connection over the whole run: its PUBACK
    /// latency (mean, largest) and the probe's largest delivery delay,
    /// the queue its announcement and replies wait in behind blocks.
    pub puback_mean_ms: f64,
    pub puback_peak_ms: u64,
    pub probe_peak_delay_ms: u64,
    pub broker_peak_rss: Option<u64>,
}

/// What the emergency, sent beside the download, saw.
struct Fired {
    report: EmergencyReport,
    sent_at: Duration,
    done_at: Duration,
    blocks_before: u64,
    blocks_at_done: u64,
    deliveries_during: u64,
}

/// The bridge's blocks: room for every device's unicast wants (as the
/// download rows give theirs twice their fleet), the rest by default.
fn tune(c: &mut bridge::Config) {
    c.blocks.max_devices = 100_000;
}

/// Runs the row once on a fresh broker process, bridge and fleets.
pub async fn run(
    cmd: &ChildCmd,
    opts: &BusyOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<BusyReport, RunError> {
    let (proc, port) = ChildProc::broker(cmd).await.map_err(setup)?;
    let pid = proc.pid();
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    let result = match Stack::start(StackOptions {
        broker: BrokerChoice::External(at),
        tune,
        ..StackOptions::default()
    })
    .await
    {
        Ok(stack) => {
            let r = on_stack(&stack, at, pid, opts, progress).await;
            let _ = stack.shutdown().await;
            r
        }
        Err(e) => Err(e.into()),
    };
    let peak = pid.and_then(peak_rss);
    proc.stop().await;
    let mut report = result?;
    report.broker_peak_rss = peak;
    Ok(report)
}

async fn on_stack(
    stack: &Stack,
    at: SocketAddr,
    broker_pid: Option<u32>,
    opts: &BusyOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<BusyReport, RunError> {
    let bridge = stack
        .bridge()
        .ok_or_else(|| RunError::Setup("the stack's bridge is not running".into()))?;
    let fleet = emergency::spawn_agents(stack, opts.emergency.devices)?;
    let result = async {
        let armed = emergency::arm(stack, &opts.emergency, progress).await?;
        progress(format!(
            "{} agents registered; {} devices connect for the download",
            opts.emergency.devices, opts.download_devices
        ));
        let bench = BenchOptions {
            devices: opts.download_devices,
            image_bytes: opts.image_bytes,
            block_size: opts.block_size,
            blocks: stack.config().blocks.clone(),
            connect_rate: 500,
            broker: at,
            deadline: Duration::from_secs(900),
            watched: false,
            device_tls: None,
            broker_pid,
        };
        let blocks = opts.image_bytes.div_ceil(opts.block_size as usize) as u64;
        let during = |start: Instant| async move {
            let metrics = bridge.blocks().metrics().clone();
            let flight = bridge.blocks().flight().clone();
            // A quarter of the image out: the download is at its rate.
            let want = (blocks / 4).max(1);
            let waited = tokio::time::timeout(Duration::from_secs(120), async {
                while metrics.snapshot().blocks_broadcast < want {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            if waited.is_err() {
                return Err(RunError::Stalled(format!(
                    "the download published {} of {want} blocks within 120 s",
                    metrics.snapshot().blocks_broadcast
                )));
            }
            let blocks_before = metrics.snapshot().blocks_broadcast;
            let delivered_before = flight.totals().delivered;
            let sent_at = start.elapsed();
            progress(format!(
                "emergency sent {:.1} s into the download, {blocks_before} blocks out",
                sent_at.as_secs_f64()
            ));
            let report = armed.fire(stack).await?;
            Ok(Fired {
                report,
                sent_at,
                done_at: start.elapsed(),
                blocks_before,
                blocks_at_done: metrics.snapshot().blocks_broadcast,
                deliveries_during: flight.totals().delivered - delivered_before,
            })
        };
        let work = download_run::run_on(bridge, &stack.keys.release, &bench, during);
        let (download, fired) = super::downloads::saying_rss(work, broker_pid, progress)
            .await
            .map_err(setup)?;
        Ok(report(&download, fired?, bridge))
    }
    .await;
    fleet.shutdown().await;
    result
}

fn report(d: &BenchResult, f: Fired, bridge: &bridge::Bridge) -> BusyReport {
    let blocks_end = bridge.blocks().metrics().snapshot().blocks_broadcast;
    BusyReport {
        emergency: f.report,
        download_devices: d.devices,
        download_completed: d.completed,
        download_secs: d.wall.as_secs_f64(),
        download_egress_ratio: d.egress_ratio,
        sent_at_secs: f.sent_at.as_secs_f64(),
        done_at_secs: f.done_at.as_secs_f64(),
        blocks_before: f.blocks_before,
        deliveries_during: f.deliveries_during,
        blocks_after: blocks_end.saturating_sub(f.blocks_at_done),
        // Both from the download's start: devices still at it.
        download_running: d.wall > f.done_at,
        puback_mean_ms: d.flight.mean_ack_ms,
        puback_peak_ms: d.flight.peak_ack_ms,
        probe_peak_delay_ms: d.flight.peak_delay_ms,
        broker_peak_rss: None,
    }
}

/// The emergency's fleet: the goal's 1,000 devices.
pub const EMERGENCY_DEVICES: usize = 1000;

/// The goal is judged at this background fleet or larger.
const GOAL_DOWNLOAD_DEVICES: usize = 10_000;

fn label(download_devices: usize) -> String {
    format!(
        "emergency while a 1 MiB download to {download_devices} other devices runs: command to every device `accepted`"
    )
}

/// The suite's step: the row, or a row saying why it failed.
pub async fn step(
    cmd: &ChildCmd,
    download_devices: usize,
    progress: &(dyn Fn(String) + Sync),
) -> Row {
    let opts = BusyOptions {
        download_devices,
        image_bytes: super::suite::IMAGE_BYTES,
        block_size: super::suite::BLOCK_SIZE,
        emergency: EmergencyOptions {
            devices: EMERGENCY_DEVICES,
            artifact_bytes: 4096,
            deadline: Duration::from_secs(60),
        },
    };
    match run(cmd, &opts, progress).await {
        Ok(r) => row(&r),
        Err(e) => Row::failed(&label(download_devices), "embedded", EMERGENCY_DEVICES, &e),
    }
}

fn row(r: &BusyReport) -> Row {
    let e = &r.emergency;
    let announced = match e.announce_secs {
        Some(a) => format!(" (replied at {:.2} s, announced at {a:.2} s)", e.reply_secs),
        None => format!(" (replied at {:.2} s)", e.reply_secs),
    };
    let download = if r.download_running {
        format!(
            "download running from {:.1} s to {:.1} s and on to {:.1} s",
            r.sent_at_secs, r.done_at_secs, r.download_secs
        )
    } else {
        format!(
            "download NOT running throughout: sent at {:.1} s, done at {:.1} s, download done at {:.1} s",
            r.sent_at_secs, r.done_at_secs, r.download_secs
        )
    };
    let goal = if r.download_devices >= GOAL_DOWNLOAD_DEVICES {
        super::suite::goal(
            "p99 ≤ 0.5 s while a 10,000-device download runs",
            e.p99_secs <= 0.5 && r.download_running,
        )
    } else {
        String::new()
    };
    Row {
        bench: label(r.download_devices),
        broker: "embedded".into(),
        devices: e.devices,
        time: Some(format!("{:.2} s max", e.max_secs)),
        result: format!(
            "p50 {:.2} s, p99 {:.2} s{announced}; {download}, {}/{} complete",
            e.p50_secs, e.p99_secs, r.download_completed, r.download_devices
        ),
        broker_rss: r.broker_peak_rss.map(|b| format!("{} MiB", b >> 20)),
        egress: Some(format!("{:.2}x", r.download_egress_ratio)),
        goal,
        detail: serde_json::to_value(r).unwrap_or_default(),
    }
}
