//! One campaign through a [`Topology`]: the fleet spread over the edges,
//! registered, a signed release pushed, a campaign in waves started, and
//! its events followed to the end; then the simulators stopped (each
//! settling its StatusAcks) and the figures read: times, StatusAcks, the
//! bridge's and every broker's peak RSS, the bridge's CPU.

use std::time::{Duration, Instant};

use bridge::campaign::view::CampaignStatus;
use schemas::msg::Kind;
use schemas::ops::Command;
use schemas::release::{build_manifest, ReleaseSpec};
use schemas::{CampaignId, ComponentName, GroupName};
use serde_json::json;

use super::sim::SimReport;
use super::{cpu_seconds, load_average, Topology, TopologyError};
use crate::procfs::peak_rss;

/// The group every simulated device is in (label `fleet = topo`).
pub const GROUP: &str = "topo";

/// What to run.
#[derive(Debug, Clone)]
pub struct CampaignRun {
    pub devices: usize,
    /// Config (one block) or firmware.
    pub kind: Kind,
    pub image_bytes: usize,
    pub block_size: u32,
    /// Cohorts of the one group, in basis points, wave by wave.
    pub waves: Vec<u16>,
    /// Each wave's success bar (basis points of its members): the default
    /// 95 % lets the last wave, and so the campaign, complete while a few
    /// devices are still on their way; 10,000 waits for every one.
    pub success_bar_bp: u16,
    /// Decided devices a wave needs before its gate judges it (either
    /// way): 1 lets the tiny first wave of a small fleet pass; a firmware
    /// wave needs more, because its first decided devices are the ones
    /// whose install failed (a success comes only after the reboot, and
    /// behind the blocks at the edges): with 1 % (104 decided, 31 failed)
    /// a 10,000-device firmware halted, so the bench waits for 10 %.
    pub min_sample: u32,
    /// The fleet profile's `[faults]` section (TOML text, may be empty).
    pub faults: String,
    /// Connect attempts per second of each simulator.
    pub connects_per_second: u32,
    /// How long the devices may take to register, and the campaign to end.
    pub register_within: Duration,
    pub campaign_within: Duration,
}

impl CampaignRun {
    /// A config release (one 4 KiB block) in three waves, 1 % → 10 % →
    /// 100 %, no faults.
    pub fn config(devices: usize) -> Self {
        CampaignRun {
            devices,
            kind: Kind::Config,
            image_bytes: 4096,
            block_size: 4096,
            waves: vec![100, 1000, 10_000],
            success_bar_bp: 9500,
            min_sample: 1,
            faults: String::new(),
            connects_per_second: 500,
            register_within: Duration::from_secs(60 + devices as u64 / 200),
            campaign_within: Duration::from_secs(120 + devices as u64 / 200),
        }
    }
}

/// The usual injected faults of `ota sim` (config/fleet.toml's), as far
/// as they apply to a campaign whose release every device trusts.
pub const USUAL_FAULTS: &str = "[faults]\n\
    block_loss = 0.01\n\
    disconnect_mid_download = 0.02\n\
    power_loss = 0.01\n\
    install_failure = 0.005\n\
    boot_failure = 0.005\n\
    busy_deferral = 0.05\n\
    busy_deferral_secs = 10\n";

/// What one run measured. Times are seconds since the simulators started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CampaignFigures {
    pub devices: usize,
    pub edges: usize,
    pub kind: String,
    pub image_bytes: usize,
    /// Every device registered (connected, Hello ingested).
    pub registered_secs: f64,
    /// The campaign started (after the push and the create).
    pub started_secs: f64,
    /// Each wave's gate passing (`campaign.wave_passed`).
    pub waves_passed_secs: Vec<f64>,
    /// `campaign.completed` (or how it ended otherwise, in `ended`).
    pub end_secs: f64,
    pub ended: String,
    /// The campaign's own view at the end.
    pub succeeded: u64,
    pub failed: u64,
    /// The simulators' summaries added up.
    pub sims: SimReport,
    pub bridge_peak_rss: u64,
    pub bridge_cpu_secs: f64,
    pub core_peak_rss: u64,
    pub edge_peak_rss: Vec<u64>,
    /// The 1-minute load average at the start and at the end.
    pub load_start: f64,
    pub load_end: f64,
}

impl CampaignFigures {
    /// Every Status a device sent was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.sims.unacked_devices == 0 && self.sims.acked >= self.sims.statuses
    }
}

/// Runs `run` on `t` (its simulators are started here and stopped before
/// this returns).
pub async fn run(
    t: &mut Topology,
    run: &CampaignRun,
    progress: &(dyn Fn(String) + Sync),
) -> Result<CampaignFigures, TopologyError> {
    let fail = |e: String| TopologyError::Sim(e);
    let ops = t
        .ops(Duration::from_secs(30))
        .await
        .map_err(|e| fail(format!("operator client: {e}")))?;
    let _: serde_json::Value = ops
        .call_ok(Command::GroupPut {
            name: GroupName::new(GROUP).expect("a group name"),
            selector: Some(format!("fleet={GROUP}")),
            members: None,
        })
        .await
        .map_err(|e| fail(format!("group put: {e}")))?;
    let load_start = load_average().unwrap_or(0.0);
    let cpu0 = t.pids().serve.and_then(cpu_seconds).unwrap_or(0.0);
    let profile = |id_prefix: &str| {
        format!(
            "[fleet]\nid_prefix = \"{id_prefix}\"\nconnects_per_second = {}\nseed = 1\n\
             [labels]\nfleet = [\"{GROUP}\"]\n\
             [versions]\nmain = \"1.0.0\"\nconfig = \"7.0.0\"\n{}",
            run.connects_per_second, run.faults
        )
    };
    let zero = Instant::now();
    t.spawn_sims(run.devices, &profile)?;
    let registered = {
        let wait = crate::stack::wait_registered(&ops, run.devices, run.register_within, |_| {});
        tokio::pin!(wait);
        loop {
            tokio::select! {
                r = &mut wait => break r,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if let Some(log) = t.ended_sim() {
                        return Err(fail(format!("a simulator ended early: see {log}")));
                    }
                }
            }
        }
    };
    registered.map_err(|e| fail(e.to_string()))?;
    let registered_secs = zero.elapsed().as_secs_f64();
    progress(format!(
        "{} devices registered in {registered_secs:.1} s",
        run.devices
    ));

    let (component, version) = match run.kind {
        Kind::Config => ("config", "7.1.0"),
        _ => ("main", "1.1.0"),
    };
    let image: Vec<u8> = (0..run.image_bytes).map(|i| (i * 31 % 251) as u8).collect();
    let mut spec = ReleaseSpec::new(
        run.kind,
        ComponentName::new(component).expect("a component"),
        version,
        "any",
        bridge::unix_now(),
    );
    spec.block_size = run.block_size;
    let manifest = build_manifest(&image, &spec).map_err(|e| fail(e.to_string()))?;
    let envelope = schemas::msg::manifest::sign(&manifest, &t.keys.release);
    bridge::client::push::push(&ops, &envelope, &image, |_, _| {})
        .await
        .map_err(|e| fail(format!("push: {e}")))?;
    let id = CampaignId::new("topo-1").expect("an id");
    let waves: Vec<_> = run
        .waves
        .iter()
        .map(|c| json!({"cohorts": {GROUP: c}}))
        .collect();
    let cspec = json!({
        "id": id.as_str(), "kind": run.kind.to_string(),
        "release": [manifest.artifact.as_str()],
        "waves": waves,
        "gates": {"min_sample": run.min_sample, "wave_timeout_secs": run.campaign_within.as_secs(),
                  "failure_halt_bp": 2000, "success_bar_bp": run.success_bar_bp}
    });
    let _: CampaignStatus = ops
        .call_ok(Command::CampaignCreate { spec: cspec })
        .await
        .map_err(|e| fail(format!("campaign create: {e}")))?;
    let mut events = ops
        .events()
        .await
        .map_err(|e| fail(format!("events: {e}")))?;
    let _: CampaignStatus = ops
        .call_ok(Command::CampaignStart { id: id.clone() })
        .await
        .map_err(|e| fail(format!("campaign start: {e}")))?;
    let started_secs = zero.elapsed().as_secs_f64();
    let mut waves_passed_secs = Vec::new();
    let ended = tokio::time::timeout(run.campaign_within, async {
        while let Some(ev) = events.next().await {
            if ev.campaign.as_ref() != Some(&id) {
                continue;
            }
            match ev.kind.as_str() {
                "campaign.wave_passed" => {
                    waves_passed_secs.push(zero.elapsed().as_secs_f64());
                    progress(ev.message.clone());
                }
                "campaign.completed" | "campaign.halted" | "campaign.expired"
                | "campaign.aborted" => {
                    progress(ev.message.clone());
                    return ev.kind;
                }
                _ => {}
            }
        }
        "events ended".to_string()
    })
    .await
    .unwrap_or_else(|_| format!("not ended within {:?}", run.campaign_within));
    let end_secs = zero.elapsed().as_secs_f64();
    let status: CampaignStatus = ops
        .call_ok(Command::CampaignStatus { id: id.clone() })
        .await
        .map_err(|e| fail(format!("campaign status: {e}")))?;
    let (succeeded, failed) = counts(&status);
    // Peaks before anything stops.
    let pids = t.pids();
    let bridge_peak_rss = pids.serve.and_then(peak_rss).unwrap_or(0);
    let bridge_cpu_secs = pids.serve.and_then(cpu_seconds).unwrap_or(0.0) - cpu0;
    let core_peak_rss = peak_rss(pids.core).unwrap_or(0);
    let edge_peak_rss = pids
        .edges
        .iter()
        .map(|p| peak_rss(*p).unwrap_or(0))
        .collect();
    let load_end = load_average().unwrap_or(0.0);
    let sims = SimReport::sum(&t.stop_sims().await?);
    ops.close().await;
    Ok(CampaignFigures {
        devices: run.devices,
        edges: t.edge_ports.len(),
        kind: run.kind.to_string(),
        image_bytes: run.image_bytes,
        registered_secs,
        started_secs,
        waves_passed_secs,
        end_secs,
        ended: ended.trim_start_matches("campaign.").to_string(),
        succeeded,
        failed,
        sims,
        bridge_peak_rss,
        bridge_cpu_secs,
        core_peak_rss,
        edge_peak_rss,
        load_start,
        load_end,
    })
}

/// Succeeded and failed members of the campaign (its live counts).
fn counts(status: &CampaignStatus) -> (u64, u64) {
    status
        .summary
        .counts
        .map_or((0, 0), |c| (u64::from(c.success), u64::from(c.failure)))
}
