//! The demo's last step: a factory line. A standing campaign (`ota line
//! put`'s) brings every fresh device coming off line `press-1` onto the
//! firmware the fleet now runs, and keeps standing for the next batch.

use std::time::{Duration, Instant};

use bridge::campaign::view::CampaignStatus;
use device_sim::fleet::{Fleet, FleetHandle, Profile};
use schemas::ops::Command;
use schemas::{ArtifactId, CampaignId};

use super::{bar, first_versions, put_group, say, CampaignLine, DemoError, DemoOptions};
use crate::stack::Stack;

/// The line's name: its group, its label value and its campaign's id.
const LINE: &str = "press-1";

/// How long the batch may take to come off the line.
const LIMIT: Duration = Duration::from_secs(120);

/// Puts line `press-1` on `release`, powers up `devices` fresh devices on
/// it together, and waits until every one runs the release.
pub(super) async fn run(
    stack: &Stack,
    opts: &DemoOptions,
    release: &[ArtifactId],
    devices: usize,
) -> Result<(CampaignLine, FleetHandle), DemoError> {
    let started = Instant::now();
    put_group(stack, LINE, Some(format!("line={LINE}")), None).await?;
    let id = CampaignId::new(LINE).expect("a valid id");
    let spec = serde_json::json!({
        "id": LINE, "kind": "firmware", "release": release,
        "waves": [{"cohorts": {LINE: 10000}}],
        "gates": {"failure_halt_bp": 1000, "min_sample": 5, "wave_timeout_secs": 60},
        "standing": {"halt_window": 50},
    });
    crate::campaigns::start_campaign(stack.ops(), spec).await?;
    say(
        opts,
        format!("8. a factory line: line {LINE} stands on firmware main 1.1.0 (a standing campaign); {devices} fresh devices power up on it together"),
    );
    let profile = Profile {
        connects_per_second: 500,
        arches: vec![("esp32".into(), 1), ("armv7".into(), 1)],
        versions: first_versions(),
        ..Profile::default()
    };
    let mut cfg = stack.fleet(devices, profile);
    cfg.factory_line = Some(LINE.to_string());
    stack.provision(&mut cfg).await?;
    let mut events = stack.ops().events().await?;
    let fleet = Fleet::spawn(cfg)?;
    let pb = bar(opts, devices as u64, "off the line");
    let end = Instant::now() + LIMIT;
    let last = loop {
        let s: CampaignStatus = stack
            .ops()
            .call_ok(Command::CampaignStatus { id: id.clone() })
            .await?;
        let done = s.line.as_ref().map_or(0, |l| l.success_total);
        pb.set_position(u64::from(done));
        if done as usize >= devices {
            break s;
        }
        // The line's progress events say when to look again.
        let left = end.saturating_duration_since(Instant::now());
        if !matches!(tokio::time::timeout(left, events.next()).await, Ok(Some(_))) {
            break s;
        }
    };
    pb.finish_and_clear();
    let l = last.line.clone().unwrap_or_default();
    let secs = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |s| format!("{s} s"));
    say(
        opts,
        format!(
            "   {} of {devices} came off the line on 1.1.0 in {:.1} s (first Hello to success: p50 {}, p99 {}); the line keeps standing for the next batch",
            l.success_total,
            started.elapsed().as_secs_f64(),
            secs(l.to_success_p50),
            secs(l.to_success_p99)
        ),
    );
    let counts = last.current.as_ref().map(|b| b.counts).unwrap_or_default();
    let line = CampaignLine {
        campaign: id,
        kind: "firmware".into(),
        emergency: false,
        state: last.summary.state.clone(),
        targeted: counts.members,
        success: counts.success,
        failure: counts.failure,
        not_applicable: counts.not_applicable,
        no_report: counts.pending,
        seconds: started.elapsed().as_secs_f64(),
        errors: last
            .current
            .as_ref()
            .map(|b| b.by_error.clone())
            .unwrap_or_default(),
    };
    Ok((line, fleet))
}
