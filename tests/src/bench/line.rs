//! A factory line: N fresh devices of one line power up together, and the
//! line's standing campaign brings them to a 1 MiB firmware. Measured on
//! the real stack (embedded broker, bridge, signed commands, reference
//! device agents): from power-up to every device `success` (the line's
//! `success_total`), and the bridge's block egress per device.

use std::time::{Duration, Instant};

use bridge::campaign::spec::{CampaignSpec, Gates, StandingSpec, WaveSpec, FULL_COHORT};
use bridge::campaign::view::CampaignStatus;
use device_sim::fleet::{Fleet, Profile};
use schemas::msg::StatusState;
use schemas::ops::Command;
use schemas::{CampaignId, ComponentName, GroupName};

use super::run_error::{setup, RunError};
use crate::stack::{Stack, StackOptions};

/// One run.
#[derive(Debug, Clone)]
pub struct LineOptions {
    /// Devices coming off the line together.
    pub devices: usize,
    pub image_bytes: usize,
    pub block_size: u32,
    /// The run fails when not every device succeeded by then.
    pub deadline: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LineReport {
    pub devices: usize,
    /// Devices the line counts as brought up (the bridge's count, read
    /// once every device reported `success`).
    pub succeeded: u32,
    /// Power-up of the batch to the last device's `success`, acknowledged.
    pub wall_secs: f64,
    /// Block bytes the bridge sent, in all and per device.
    pub egress_bytes: u64,
    pub egress_per_device: f64,
    /// `egress_bytes / image_bytes`: 1.0 is one broadcast pass for the
    /// whole batch.
    pub egress_ratio: f64,
    /// The line's first Hello to `success`, p50 and p99 (whole seconds).
    pub to_success_p50: Option<u64>,
    pub to_success_p99: Option<u64>,
}

const LINE: &str = "line-1";

/// Runs the measurement once on a fresh stack and batch.
pub async fn run(
    opts: &LineOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<LineReport, RunError> {
    let stack = Stack::start(StackOptions {
        secured: true,
        ..StackOptions::default()
    })
    .await?;
    let result = measure(&stack, opts, progress).await;
    stack.shutdown().await?;
    result
}

async fn measure(
    stack: &Stack,
    opts: &LineOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<LineReport, RunError> {
    let main = ComponentName::new("main").map_err(setup)?;
    let artifact =
        super::download_run::push_firmware(stack, opts.image_bytes, opts.block_size).await?;
    let id = CampaignId::new(LINE).map_err(setup)?;
    line_put(stack, &id, artifact).await?;

    let profile = Profile {
        id_prefix: "fresh".into(),
        connects_per_second: 500,
        versions: [(main, vec!["1.0.0".to_string()])].into(),
        ..Profile::default()
    };
    let mut cfg = stack.fleet(opts.devices, profile);
    cfg.factory_line = Some(LINE.into());
    stack.provision(&mut cfg).await?;
    let egress0 = stack.block_egress();
    let powered_up = Instant::now();
    let fleet = Fleet::spawn(cfg)?;
    progress(format!("{} devices powered up on {LINE}", opts.devices));
    // Woken by each device's report and ack (the fleet's tracker), not
    // polled: every device on `success`, and every Status acknowledged,
    // so stored and counted by the bridge.
    let n = opts.devices;
    let waited = fleet
        .wait_until(
            |s| s.count(StatusState::Success) >= n && s.acked >= s.statuses,
            opts.deadline,
        )
        .await;
    let wall = powered_up.elapsed();
    fleet.shutdown().await;
    if let Err(s) = waited {
        return Err(RunError::Stalled(format!(
            "{} of {n} devices reported success within {:?}",
            s.count(StatusState::Success),
            opts.deadline
        )));
    }
    let status: CampaignStatus = stack
        .ops()
        .call_ok(Command::CampaignStatus { id: id.clone() })
        .await?;
    if status.summary.state != "standing" {
        return Err(RunError::Stalled(format!(
            "the line's campaign is {}, not standing",
            status.summary.state
        )));
    }
    let egress_bytes = stack.block_egress().saturating_sub(egress0);
    let line = status.line.as_ref();
    Ok(LineReport {
        devices: opts.devices,
        succeeded: line.map_or(0, |l| l.success_total),
        wall_secs: wall.as_secs_f64(),
        egress_bytes,
        egress_per_device: egress_bytes as f64 / opts.devices.max(1) as f64,
        egress_ratio: egress_bytes as f64 / opts.image_bytes.max(1) as f64,
        to_success_p50: line.and_then(|l| l.to_success_p50),
        to_success_p99: line.and_then(|l| l.to_success_p99),
    })
}

/// The line's group and standing campaign, as `ota line put` makes them.
async fn line_put(
    stack: &Stack,
    id: &CampaignId,
    artifact: schemas::ArtifactId,
) -> Result<(), RunError> {
    let group = GroupName::new(LINE).map_err(setup)?;
    let _: serde_json::Value = stack
        .ops()
        .call_ok(Command::GroupPut {
            name: group.clone(),
            selector: Some(format!("line={LINE}")),
            members: None,
        })
        .await?;
    let spec = CampaignSpec {
        gates: Gates {
            failure_halt_bp: 500,
            min_sample: 10,
            ..Gates::default()
        },
        standing: Some(StandingSpec { halt_window: 50 }),
        ..CampaignSpec::new(
            id.clone(),
            bridge::campaign::spec::Kind::Firmware,
            vec![artifact],
            vec![WaveSpec {
                cohorts: [(group, FULL_COHORT)].into(),
            }],
        )
    };
    let spec = serde_json::to_value(&spec).map_err(setup)?;
    crate::campaigns::start_campaign(stack.ops(), spec).await?;
    Ok(())
}
