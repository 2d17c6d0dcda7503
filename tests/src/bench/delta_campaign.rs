//! A campaign to a fleet on two installed versions (issue 18), with E3
//! deltas and without: the real stack (embedded broker, bridge, signed
//! manifests) and the reference device agents (`device_sim`), half of them
//! running firmware 1.0.0 and half 1.1.0 (firmware-like images of 1 MiB,
//! [`super::firmware`]), all listing `delta-zstd`. The release is 1.2.0;
//! with deltas, its deltas from 1.0.0 and from 1.1.0 are pushed beside it
//! (made by [`schemas::release::build_delta`], as `ota artifact sign
//! --delta-from` makes them), without, the full image only.
//!
//! Measured: the bridge's block egress (bytes it published), the bytes
//! that reached the devices of each version (through the broker), and the
//! time from the campaign's start to every device `success`, acknowledged.

use std::time::{Duration, Instant};

use bridge::campaign::plan::Plan as CampaignPlan;
use bridge::campaign::view::CampaignStatus;
use device_sim::agent::ImageBytes;
use device_sim::fleet::stats::FleetStats;
use device_sim::fleet::{Fleet, FleetHandle, Profile};
use schemas::msg::{Kind, Manifest, StatusState};
use schemas::ops::Command;
use schemas::release::{build_delta, build_manifest, ReleaseSpec};
use schemas::{CampaignId, ComponentName, GroupName};
use serde_json::json;

use super::block_tally::BlockTally;
use super::firmware::{firmware_like, realistic_change};
use super::run_error::{setup, RunError};
use super::table::{thousands, Row};
use crate::stack::{Stack, StackOptions};

/// One run.
#[derive(Debug, Clone)]
pub struct CampaignOptions {
    /// Devices in all, half on each installed version.
    pub devices: usize,
    /// Size of the 1.0.0 image (each release adds 16 KiB).
    pub image_bytes: usize,
    pub block_size: u32,
    /// Push the deltas beside the full image.
    pub deltas: bool,
    /// The run fails when not every device succeeded by then.
    pub deadline: Duration,
}

/// The devices on one installed version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionFigures {
    pub from_version: String,
    pub devices: usize,
    /// The delta from this version, when pushed.
    pub delta_bytes: Option<u64>,
    /// Block messages' bytes the bridge sent of the artifact these devices take (the
    /// delta from this version, or the full image, whose stream the other
    /// version's devices share), as the broker carried them.
    pub stream_bytes: u64,
    /// `stream_bytes / full_bytes`.
    pub stream_share: f64,
    /// Block messages' bytes that reached these devices, per device
    /// (proofs and duplicates included).
    pub bytes_per_device: f64,
    /// `bytes_per_device / full_bytes`.
    pub share_of_full: f64,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CampaignReport {
    pub deltas: bool,
    pub devices: usize,
    pub succeeded: usize,
    /// The 1.2.0 image.
    pub full_bytes: u64,
    /// Campaign start to the last device's `success`, acknowledged.
    pub wall_secs: f64,
    /// Block messages' bytes the bridge published (proofs included), and
    /// over the full image.
    pub bridge_egress_bytes: u64,
    pub bridge_egress_ratio: f64,
    /// Block messages' bytes that reached every device (the broker's
    /// egress).
    pub device_bytes: u64,
    /// Block messages' bytes an observer saw published, by artifact (their sum
    /// checks `bridge_egress_bytes`).
    pub by_artifact: std::collections::BTreeMap<String, u64>,
    pub versions: Vec<VersionFigures>,
    /// The bridge's plan before the start: devices taking a delta, and the
    /// bytes of one broadcast pass of each artifact.
    pub planned_delta_downloads: u32,
    pub planned_broadcast_bytes: u64,
}

/// The installed versions, and the release.
const FROM: [&str; 2] = ["1.0.0", "1.1.0"];
const TARGET: &str = "1.2.0";
const GROUP: &str = "bench-deltas";

/// The three images: 1.0.0, 1.1.0 (a realistic change of it), 1.2.0 (a
/// realistic change of 1.1.0).
pub fn images(len: usize) -> [Vec<u8>; 3] {
    let v100 = firmware_like(len, 1);
    let (v110, _) = realistic_change(&v100, 2);
    let (v120, _) = realistic_change(&v110, 3);
    [v100, v110, v120]
}

/// Runs the campaign once on a fresh stack and fleet.
pub async fn run(
    opts: &CampaignOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<CampaignReport, RunError> {
    let stack = Stack::start(StackOptions::default()).await?;
    let result = measure(&stack, opts, progress).await;
    stack.shutdown().await?;
    result
}

async fn measure(
    stack: &Stack,
    opts: &CampaignOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<CampaignReport, RunError> {
    let main = ComponentName::new("main").map_err(setup)?;
    let (len, block_size, deltas) = (opts.image_bytes, opts.block_size, opts.deltas);
    let made = tokio::task::spawn_blocking(move || release(len, block_size, deltas))
        .await
        .map_err(setup)??;
    let key = &stack.keys.release;
    push(stack, &made.full, &made.images[2], key).await?;
    for (m, payload) in &made.deltas {
        push(stack, m, payload, key).await?;
    }
    let _: serde_json::Value = stack
        .ops()
        .call_ok(Command::GroupPut {
            name: GroupName::new(GROUP).map_err(setup)?,
            selector: Some(format!("bench={GROUP}")),
            members: None,
        })
        .await?;

    let halves = [opts.devices / 2, opts.devices - opts.devices / 2];
    let spawn = |i: usize| {
        let from = FROM[i].to_string();
        let profile = Profile {
            id_prefix: format!("on{}", from.replace('.', "")),
            connects_per_second: 250,
            labels: [("bench".to_string(), vec![GROUP.to_string()])].into(),
            versions: [(main.clone(), vec![from.clone()])].into(),
            images: [(
                (main.clone(), from),
                ImageBytes::new(made.images[i].clone()),
            )]
            .into(),
            ..Profile::default()
        };
        Fleet::spawn(stack.fleet(halves[i], profile))
    };
    let first = spawn(0)?;
    let fleets = match spawn(1) {
        Ok(second) => [first, second],
        Err(e) => {
            first.shutdown().await;
            return Err(e.into());
        }
    };
    let result = campaign(stack, opts, &made, &fleets, progress).await;
    for f in fleets {
        f.shutdown().await;
    }
    result
}

/// The release: images, the full manifest, and the deltas when asked.
struct Release {
    images: [Vec<u8>; 3],
    full: Manifest,
    deltas: Vec<(Manifest, Vec<u8>)>,
}

fn release(len: usize, block_size: u32, deltas: bool) -> Result<Release, RunError> {
    let images = images(len);
    let main = ComponentName::new("main").map_err(setup)?;
    let mut spec = ReleaseSpec::new(Kind::Firmware, main, TARGET, "any", bridge::unix_now());
    spec.block_size = block_size;
    let full = build_manifest(&images[2], &spec)?;
    let mut made = Vec::new();
    if deltas {
        for (i, from) in FROM.iter().enumerate() {
            let (payload, m) = build_delta(&images[i], &images[2], &full, from)?;
            made.push((m, payload));
        }
    }
    Ok(Release {
        images,
        full,
        deltas: made,
    })
}

async fn push(
    stack: &Stack,
    m: &Manifest,
    bytes: &[u8],
    key: &schemas::keys::SigningKey,
) -> Result<(), RunError> {
    let envelope = schemas::msg::manifest::sign(m, key);
    bridge::client::push::push(stack.ops(), &envelope, bytes, |_, _| {})
        .await
        .map_err(|e| RunError::Setup(format!("push {}: {e}", m.artifact)))?;
    Ok(())
}

async fn campaign(
    stack: &Stack,
    opts: &CampaignOptions,
    made: &Release,
    fleets: &[FleetHandle; 2],
    progress: &(dyn Fn(String) + Sync),
) -> Result<CampaignReport, RunError> {
    // Every device registered first: the campaign's time, not the
    // connect storm's.
    let within = Duration::from_secs(60 + opts.devices as u64 / 250);
    stack
        .wait_registered(opts.devices, within, |_| {})
        .await
        .map_err(|e| RunError::Stalled(e.to_string()))?;
    progress(format!(
        "{} devices registered, on {} and {}",
        opts.devices, FROM[0], FROM[1]
    ));
    let id = CampaignId::new(if opts.deltas {
        "bench-deltas"
    } else {
        "bench-full"
    })
    .map_err(setup)?;
    let spec = json!({
        "id": id.as_str(), "kind": "firmware", "release": [made.full.artifact.as_str()],
        "waves": [{"cohorts": {GROUP: 10000}}],
        "gates": {"min_sample": 10, "wave_timeout_secs": opts.deadline.as_secs()}
    });
    let plan: CampaignPlan = stack
        .ops()
        .call_ok(Command::CampaignPlan { spec: spec.clone() })
        .await?;
    let _: CampaignStatus = stack
        .ops()
        .call_ok(Command::CampaignCreate { spec })
        .await?;
    let tally = BlockTally::start(&stack.host, stack.port)
        .await
        .map_err(RunError::Setup)?;
    let egress0 = stack.block_egress();
    let bytes0: Vec<u64> = fleets.iter().map(|f| f.stats().block_bytes).collect();
    let started = Instant::now();
    let _: CampaignStatus = stack
        .ops()
        .call_ok(Command::CampaignStart { id: id.clone() })
        .await?;
    // Both halves at once, each stamped at its own end; the later one
    // ends the clock.
    let (a, b) = tokio::join!(
        installed(&fleets[0], started, opts.deadline),
        installed(&fleets[1], started, opts.deadline)
    );
    let ends = [a, b];
    let by_artifact = tally.counts();
    drop(tally);
    let mut wall = Duration::ZERO;
    let mut versions = Vec::new();
    let mut succeeded = 0;
    for (i, (r, at)) in ends.into_iter().enumerate() {
        let s = match r {
            Ok(s) => s,
            Err(s) => {
                return Err(RunError::Stalled(format!(
                    "the devices on {}: {} within {:?}",
                    FROM[i],
                    s.line(),
                    opts.deadline
                )))
            }
        };
        wall = wall.max(at);
        succeeded += s.count(StatusState::Success);
        let got = s.block_bytes.saturating_sub(bytes0[i]);
        let per = got as f64 / s.devices.max(1) as f64;
        let delta = made
            .deltas
            .iter()
            .find(|(m, _)| m.delta.as_ref().is_some_and(|d| d.from_version == FROM[i]))
            .map(|(m, _)| m);
        let taken = delta.map_or(&made.full.artifact, |m| &m.artifact);
        let stream_bytes = by_artifact.get(taken).copied().unwrap_or(0);
        versions.push(VersionFigures {
            from_version: FROM[i].into(),
            devices: s.devices,
            delta_bytes: delta.map(|m| m.size),
            stream_bytes,
            stream_share: stream_bytes as f64 / made.full.size.max(1) as f64,
            bytes_per_device: per,
            share_of_full: per / made.full.size.max(1) as f64,
        });
    }
    let bridge_egress = stack.block_egress().saturating_sub(egress0);
    let device_bytes = fleets
        .iter()
        .zip(&bytes0)
        .map(|(f, b0)| f.stats().block_bytes.saturating_sub(*b0))
        .sum();
    Ok(CampaignReport {
        deltas: opts.deltas,
        devices: opts.devices,
        succeeded,
        full_bytes: made.full.size,
        wall_secs: wall.as_secs_f64(),
        bridge_egress_bytes: bridge_egress,
        bridge_egress_ratio: bridge_egress as f64 / made.full.size.max(1) as f64,
        device_bytes,
        by_artifact: by_artifact
            .iter()
            .map(|(a, b)| (a.to_string(), *b))
            .collect(),
        versions,
        planned_delta_downloads: plan.waves.iter().map(|w| w.delta_downloads).sum(),
        planned_broadcast_bytes: plan.broadcast_bytes,
    })
}

/// Waits until every device of `fleet` reported `success` and had it
/// acknowledged; stamps the end since `started`.
async fn installed(
    fleet: &FleetHandle,
    started: Instant,
    deadline: Duration,
) -> (Result<FleetStats, FleetStats>, Duration) {
    let n = fleet.stats().devices;
    let r = fleet
        .wait_until(
            |s| s.count(StatusState::Success) >= n && s.acked >= s.statuses,
            deadline,
        )
        .await;
    (r, started.elapsed())
}

/// The rows' labels.
pub const WITH_DELTAS: &str =
    "delta campaign: 1 MiB firmware to devices on 1.0.0 and 1.1.0 (half each), E3 deltas";
pub const FULL_ONLY: &str =
    "delta campaign: the same fleet and release, full image only (no deltas pushed)";

/// The two rows, the delta one compared with the full one when both ran.
///
/// The goal compares like with like: the bytes sent to the devices of
/// one version with deltas (their delta's stream from the bridge, and what
/// each device received) against the bytes sent with the full image in
/// the same run (its stream, what each device received); without a full
/// run, against the full image's size. The shares of the image's size are
/// in the result either way.
pub fn rows(
    with: Result<CampaignReport, RunError>,
    full: Result<CampaignReport, RunError>,
    devices: usize,
) -> Vec<Row> {
    let mut out = Vec::new();
    out.push(match &with {
        Ok(w) => {
            let mut r = row(WITH_DELTAS, w);
            let (stream, each) = match &full {
                Ok(f) => (
                    f.bridge_egress_bytes as f64,
                    f.device_bytes as f64 / f.devices.max(1) as f64,
                ),
                Err(_) => (w.full_bytes as f64, w.full_bytes as f64),
            };
            let worst = w
                .versions
                .iter()
                .map(|v| (v.stream_bytes as f64 / stream).max(v.bytes_per_device / each))
                .fold(0.0, f64::max);
            let against = if full.is_ok() {
                "the full image's in this run"
            } else {
                "the full image"
            };
            r.goal = super::suite::goal(
                &format!("one version's bytes ≤ 10% of {against}"),
                worst <= super::delta_size::GOAL_SHARE && w.succeeded == w.devices,
            );
            if let Ok(f) = &full {
                r.result = format!(
                    "{}; against the full image: at most {:.1}% of its bytes to one version, \
                     {:.0}x less egress in all, {:.1}x faster",
                    r.result,
                    100.0 * worst,
                    f.bridge_egress_bytes as f64 / w.bridge_egress_bytes.max(1) as f64,
                    f.wall_secs / w.wall_secs.max(1e-6)
                );
            }
            r
        }
        Err(e) => Row::failed(WITH_DELTAS, "embedded", devices, e),
    });
    out.push(match &full {
        Ok(f) => row(FULL_ONLY, f),
        Err(e) => Row::failed(FULL_ONLY, "embedded", devices, e),
    });
    out
}

fn row(label: &str, r: &CampaignReport) -> Row {
    let kib = |b: f64| format!("{} KiB", thousands((b / 1024.0).round() as usize));
    let per: Vec<String> = r
        .versions
        .iter()
        .map(|v| {
            format!(
                "on {}: stream {} ({:.1}%), each device {} ({:.1}%)",
                v.from_version,
                kib(v.stream_bytes as f64),
                100.0 * v.stream_share,
                kib(v.bytes_per_device),
                100.0 * v.share_of_full
            )
        })
        .collect();
    Row {
        bench: label.into(),
        broker: "embedded".into(),
        devices: r.devices,
        time: Some(format!("{:.1} s to all installed", r.wall_secs)),
        result: format!(
            "{}/{} on {TARGET}; bridge sent {} for a {} image; {}",
            r.succeeded,
            r.devices,
            kib(r.bridge_egress_bytes as f64),
            kib(r.full_bytes as f64),
            per.join("; ")
        ),
        broker_rss: None,
        egress: Some(format!("{:.2}x", r.bridge_egress_ratio)),
        goal: String::new(),
        detail: serde_json::to_value(r).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(deltas: bool, stream: [u64; 2], each: [f64; 2], egress: u64) -> CampaignReport {
        let full_bytes = 1_000_000;
        CampaignReport {
            deltas,
            devices: 4,
            succeeded: 4,
            full_bytes,
            wall_secs: if deltas { 2.0 } else { 8.0 },
            bridge_egress_bytes: egress,
            bridge_egress_ratio: egress as f64 / full_bytes as f64,
            device_bytes: (2.0 * (each[0] + each[1])) as u64,
            by_artifact: Default::default(),
            versions: (0..2)
                .map(|i| VersionFigures {
                    from_version: FROM[i].into(),
                    devices: 2,
                    delta_bytes: None,
                    stream_bytes: stream[i],
                    stream_share: stream[i] as f64 / full_bytes as f64,
                    bytes_per_device: each[i],
                    share_of_full: each[i] / full_bytes as f64,
                })
                .collect(),
            planned_delta_downloads: 0,
            planned_broadcast_bytes: 0,
        }
    }

    #[test]
    fn the_goal_compares_each_version_with_the_full_run() {
        let full = || Ok(report(false, [2_000_000; 2], [1_100_000.0; 2], 2_000_000));
        // A stream of 11.5% of the image, 5.8% of the full run's stream.
        let with = report(true, [115_000, 60_000], [35_000.0, 18_000.0], 175_000);
        let r = rows(Ok(with.clone()), full(), 4);
        assert!(r[0].goal.ends_with("met"), "{}", r[0].goal);
        assert!(r[0].result.contains("11x less egress"), "{}", r[0].result);
        // Without a full run, against the image: missed.
        let r = rows(Ok(with), Err(RunError::Stalled("x".into())), 4);
        assert!(r[0].goal.ends_with("MISSED"), "{}", r[0].goal);
        assert!(r[1].result.starts_with("failed: x"), "{}", r[1].result);
        // One version's devices each got 12% of what the full run gave them.
        let with = report(true, [60_000; 2], [132_000.0, 18_000.0], 120_000);
        let r = rows(Ok(with), full(), 4);
        assert!(r[0].goal.ends_with("MISSED"), "{}", r[0].goal);
    }
}
