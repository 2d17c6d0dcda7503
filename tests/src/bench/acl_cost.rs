//! What the identity checks cost (issue 12, PROTOCOL.md E1): the same
//! fleet of reference device agents connects in a storm and then takes the
//! same 1 MiB firmware campaign twice in one run, once through an
//! anonymous embedded broker (no login, no topic checked: version 1) and
//! once through a secured one, as `ota serve` runs it: every device logs in
//! with its own provisioned password, and every CONNECT, SUBSCRIBE and
//! PUBLISH is decided by the bridge's authority (E1's table and the
//! grants), and the block server serves only devices the campaign admits.
//!
//! The broker, the bridge and the devices share this process here, so the
//! CPU seconds are the whole stack's, per phase.

use std::time::{Duration, Instant};

use bridge::campaign::spec::{CampaignSpec, Kind as CampaignKind, WaveSpec, FULL_COHORT};
use device_sim::fleet::{Fleet, Profile};
use schemas::msg::StatusState;
use schemas::ops::Command;
use schemas::{CampaignId, ComponentName, GroupName};

use super::run_error::{setup, RunError};
use super::suite::{BLOCK_SIZE, IMAGE_BYTES};
use super::table::Row;
use crate::procfs;
use crate::stack::{Stack, StackOptions};

/// Connects per second of the storm: as in the TLS rows.
pub const STORM_RATE: u32 = super::tls_cost::STORM_RATE;

const STORM: &str = "connect storm at 2,000/s: CONNECT to registered (Hello stored)";
const CAMPAIGN: &str = "1 MiB firmware campaign, 4 KiB blocks, one wave";

/// What one pass measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AclRun {
    pub secured: bool,
    pub devices: usize,
    /// Fleet spawned to every device registered by the bridge.
    pub connect_secs: f64,
    pub connect_cpu_secs: f64,
    /// Campaign start to every device `success`, every Status acked.
    pub campaign_secs: f64,
    pub campaign_cpu_secs: f64,
    pub succeeded: usize,
    /// The bridge's block bytes sent over the image's size.
    pub egress_ratio: f64,
}

/// Runs both passes at `devices` devices: four rows, or a failed row per
/// pass that failed.
pub async fn run(devices: usize, say: &(dyn Fn(String) + Sync)) -> Vec<Row> {
    let mut rows = Vec::new();
    for secured in [false, true] {
        match pass(secured, devices, say).await {
            Ok(r) => {
                say(format!(
                    "{}: registered in {:.2} s, {}/{} succeeded in {:.1} s",
                    checks(secured),
                    r.connect_secs,
                    r.succeeded,
                    r.devices,
                    r.campaign_secs
                ));
                rows.extend(rows_of(&r));
            }
            Err(e) => rows.push(Row::failed(STORM, broker(secured), devices, &e)),
        }
    }
    rows
}

fn checks(secured: bool) -> &'static str {
    if secured {
        "per-device logins and E1 ACLs"
    } else {
        "anonymous, no checks"
    }
}

fn broker(secured: bool) -> &'static str {
    if secured {
        "embedded, E1 ACLs"
    } else {
        "embedded, anonymous"
    }
}

/// One pass on a fresh stack.
pub async fn pass(
    secured: bool,
    devices: usize,
    say: &(dyn Fn(String) + Sync),
) -> Result<AclRun, RunError> {
    let stack = Stack::start(StackOptions {
        secured,
        ..StackOptions::default()
    })
    .await?;
    let result = measure(&stack, secured, devices, say).await;
    stack.shutdown().await?;
    result
}

async fn measure(
    stack: &Stack,
    secured: bool,
    n: usize,
    say: &(dyn Fn(String) + Sync),
) -> Result<AclRun, RunError> {
    let main = ComponentName::new("main").map_err(setup)?;
    let artifact = super::download_run::push_firmware(stack, IMAGE_BYTES, BLOCK_SIZE).await?;

    let profile = Profile {
        id_prefix: "acl".into(),
        connects_per_second: STORM_RATE,
        labels: [("bench".to_string(), vec!["acl".to_string()])].into(),
        versions: [(main, vec!["1.0.0".to_string()])].into(),
        ..Profile::default()
    };
    let mut cfg = stack.fleet(n, profile);
    stack.provision(&mut cfg).await?;
    let me = std::process::id();
    let cpu0 = procfs::cpu_seconds(me).unwrap_or(0.0);
    let spawned = Instant::now();
    let fleet = Fleet::spawn(cfg)?;
    let registered = stack
        .wait_registered(n, Duration::from_secs(120), |_| {})
        .await;
    let connect = spawned.elapsed();
    let cpu1 = procfs::cpu_seconds(me).unwrap_or(0.0);
    if let Err(e) = registered {
        fleet.shutdown().await;
        return Err(e.into());
    }
    say(format!("{}: {n} registered", checks(secured)));

    let egress0 = stack.block_egress();
    let started = Instant::now();
    let id = campaign(stack, artifact).await?;
    let waited = fleet
        .wait_until(
            |s| s.count(StatusState::Success) >= n && s.acked >= s.statuses,
            Duration::from_secs(300),
        )
        .await;
    let wall = started.elapsed();
    let cpu2 = procfs::cpu_seconds(me).unwrap_or(0.0);
    fleet.shutdown().await;
    let succeeded = match waited {
        Ok(s) => s.count(StatusState::Success),
        Err(s) => {
            return Err(RunError::Stalled(format!(
                "{} of {n} devices reported success within 300 s (campaign {id})",
                s.count(StatusState::Success)
            )))
        }
    };
    let egress_bytes = stack.block_egress().saturating_sub(egress0);
    Ok(AclRun {
        secured,
        devices: n,
        connect_secs: connect.as_secs_f64(),
        connect_cpu_secs: cpu1 - cpu0,
        campaign_secs: wall.as_secs_f64(),
        campaign_cpu_secs: cpu2 - cpu1,
        succeeded,
        egress_ratio: egress_bytes as f64 / IMAGE_BYTES as f64,
    })
}

/// A group of the whole fleet and a one-wave campaign to it, started.
async fn campaign(stack: &Stack, artifact: schemas::ArtifactId) -> Result<CampaignId, RunError> {
    let group = GroupName::new("acl-bench").map_err(setup)?;
    let _: serde_json::Value = stack
        .ops()
        .call_ok(Command::GroupPut {
            name: group.clone(),
            selector: Some("bench=acl".into()),
            members: None,
        })
        .await?;
    let id = CampaignId::new("acl-bench").map_err(setup)?;
    let spec = CampaignSpec::new(
        id.clone(),
        CampaignKind::Firmware,
        vec![artifact],
        vec![WaveSpec {
            cohorts: [(group, FULL_COHORT)].into(),
        }],
    );
    let spec = serde_json::to_value(&spec).map_err(setup)?;
    crate::campaigns::start_campaign(stack.ops(), spec).await?;
    Ok(id)
}

fn rows_of(r: &AclRun) -> [Row; 2] {
    let detail = serde_json::to_value(r).unwrap_or_default();
    let storm = Row {
        bench: format!("{STORM}, {}", checks(r.secured)),
        broker: broker(r.secured).into(),
        devices: r.devices,
        time: Some(format!("{:.2} s", r.connect_secs)),
        result: format!(
            "CPU {:.2} s (broker, bridge and devices)",
            r.connect_cpu_secs
        ),
        broker_rss: None,
        egress: None,
        goal: String::new(),
        detail: detail.clone(),
    };
    let campaign = Row {
        bench: format!("{CAMPAIGN}, {}", checks(r.secured)),
        broker: broker(r.secured).into(),
        devices: r.devices,
        time: Some(format!("{:.1} s", r.campaign_secs)),
        result: format!(
            "{}/{} succeeded; CPU {:.2} s",
            r.succeeded, r.devices, r.campaign_cpu_secs
        ),
        broker_rss: None,
        egress: Some(format!("{:.2}x", r.egress_ratio)),
        goal: String::new(),
        detail,
    };
    [storm, campaign]
}
