//! `ota bench --only scale` (issue 19): the topology past one broker
//! ([`crate::topology`]) at fleet size. A config release (one 4 KiB block)
//! in three waves (1 % → 10 % → 100 %) with the usual injected faults, and
//! a 1 MiB firmware in one wave, each on a fresh topology: a core
//! Mosquitto, one edge per [`DEVICES_PER_EDGE`] devices (at least 3), one
//! `ota sim` process per edge (each under this machine's 20,000 open
//! files), `ota serve` on the core.

use std::path::PathBuf;
use std::time::Duration;

use schemas::msg::Kind;

use super::table::{thousands, Machine};
use crate::topology::campaign::{self, CampaignFigures, CampaignRun, USUAL_FAULTS};
use crate::topology::{Topology, TopologyError, TopologyOptions};

/// Devices per edge broker (and per `ota sim` process): room under the
/// 20,000 open files one process may hold here, and an ACL file each edge
/// Mosquitto reparses in about a second (its reparse grows with the
/// square of its users: 15,000 would take about 5 s, docs/scaling.md).
pub const DEVICES_PER_EDGE: usize = 10_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// The `ota` binary.
    pub ota: PathBuf,
    /// Devices of the config campaign (0: not run).
    pub devices: usize,
    /// Devices of the 1 MiB firmware campaign (0: not run).
    pub firmware_devices: usize,
    /// Block size of the firmware.
    pub firmware_block_size: u32,
    /// Connect attempts per second of each `ota sim`.
    pub connects_per_second: u32,
}

/// Both runs' figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleReport {
    pub machine: Machine,
    pub command: Option<String>,
    pub config: Option<Result<CampaignFigures, String>>,
    pub firmware: Option<Result<CampaignFigures, String>>,
}

/// Edge brokers for `devices`.
pub fn edges_for(devices: usize) -> usize {
    devices.div_ceil(DEVICES_PER_EDGE).max(3)
}

/// Runs what `opts` asks for, one topology per run.
pub async fn run(
    opts: &ScaleOptions,
    command: Option<String>,
    progress: &(dyn Fn(String) + Sync),
) -> ScaleReport {
    let mut report = ScaleReport {
        machine: Machine::this(),
        command,
        config: None,
        firmware: None,
    };
    if opts.devices > 0 {
        let mut r = CampaignRun::config(opts.devices);
        r.faults = USUAL_FAULTS.to_string();
        r.connects_per_second = opts.connects_per_second;
        progress(format!(
            "scale: a config campaign to {} devices through {} edges",
            thousands(opts.devices),
            edges_for(opts.devices)
        ));
        report.config = Some(one(opts, &r, progress).await.map_err(|e| e.to_string()));
    }
    if opts.firmware_devices > 0 {
        let n = opts.firmware_devices;
        let r = CampaignRun {
            devices: n,
            kind: Kind::Firmware,
            image_bytes: 1 << 20,
            block_size: opts.firmware_block_size,
            waves: vec![10_000],
            success_bar_bp: 9500,
            min_sample: (n as u32 / 10).max(20),
            faults: USUAL_FAULTS.to_string(),
            connects_per_second: opts.connects_per_second,
            register_within: Duration::from_secs(60 + n as u64 / 200),
            campaign_within: Duration::from_secs(600),
        };
        progress(format!(
            "scale: a 1 MiB firmware to {} devices through {} edges",
            thousands(n),
            edges_for(n)
        ));
        report.firmware = Some(one(opts, &r, progress).await.map_err(|e| e.to_string()));
    }
    report
}

async fn one(
    opts: &ScaleOptions,
    r: &CampaignRun,
    progress: &(dyn Fn(String) + Sync),
) -> Result<CampaignFigures, TopologyError> {
    let mut t = Topology::start(TopologyOptions::new(&opts.ota, edges_for(r.devices))).await?;
    let f = campaign::run(&mut t, r, progress).await;
    t.stop().await?;
    f
}

impl ScaleReport {
    /// The report as Markdown: one table per run.
    pub fn markdown(&self) -> String {
        let mut out = format!("{}\n\n", self.machine.line());
        if let Some(c) = &self.command {
            out.push_str(&format!("`{c}`\n\n"));
        }
        for (what, r) in [
            ("config, 3 waves", &self.config),
            ("1 MiB firmware", &self.firmware),
        ] {
            match r {
                None => {}
                Some(Err(e)) => out.push_str(&format!("**{what}**: failed: {e}\n\n")),
                Some(Ok(f)) => out.push_str(&table(what, f)),
            }
        }
        out
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
}

fn table(what: &str, f: &CampaignFigures) -> String {
    let waves: Vec<String> = f
        .waves_passed_secs
        .iter()
        .map(|s| format!("{s:.1} s"))
        .collect();
    let edges: Vec<String> = f.edge_peak_rss.iter().map(|b| mib(*b)).collect();
    let rows = [
        (
            "devices / edges",
            format!("{} / {}", thousands(f.devices), f.edges),
        ),
        ("all registered", format!("{:.1} s", f.registered_secs)),
        ("campaign started", format!("{:.1} s", f.started_secs)),
        ("each wave's gate passed", waves.join(", ")),
        (
            "end",
            format!(
                "{:.1} s ({}, {} success, {} failed)",
                f.end_secs, f.ended, f.succeeded, f.failed
            ),
        ),
        (
            "StatusAcks",
            format!(
                "{} of {} Statuses acknowledged, {} devices with one unacknowledged",
                f.sims.acked, f.sims.statuses, f.sims.unacked_devices
            ),
        ),
        ("bridge peak RSS", mib(f.bridge_peak_rss)),
        ("bridge CPU", format!("{:.1} s", f.bridge_cpu_secs)),
        ("core broker peak RSS", mib(f.core_peak_rss)),
        ("edge brokers' peak RSS", edges.join(", ")),
        (
            "load average (1 min), start → end",
            format!("{:.1} → {:.1}", f.load_start, f.load_end),
        ),
    ];
    let mut out = format!("**{what}**\n\n| figure | value |\n|---|---|\n");
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn edges_keep_each_process_under_the_open_file_limit() {
        use super::*;
        assert_eq!(edges_for(300), 3);
        assert_eq!(edges_for(100_000), 10);
        assert!(100_000 / edges_for(100_000) < 20_000);
    }
}
