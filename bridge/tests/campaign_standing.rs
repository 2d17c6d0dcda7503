//! Standing campaigns (a factory line's), end to end: batches of fresh
//! devices that power up together all reach the line's release, also
//! after a bridge restart; a retarget moves later batches to a newer
//! release; a batch that fails halts the line by itself.

mod blocks_common;
mod campaign_common;
mod common;

use campaign_common::*;
use schemas::msg::{Kind, StatusState};
use schemas::ops::Command;
use schemas::{ArtifactId, DeviceId};
use serde_json::json;

fn batch(stack: &common::Stack, devices: &mut Devices, name: &str, n: usize) -> Vec<DeviceId> {
    (1..=n)
        .map(|i| devices.spawn(stack, DeviceOpts::new(format!("{name}-{i}"), "line-3")))
        .collect()
}

async fn all_succeed(stack: &common::Stack, campaign: &str, devices: &[DeviceId]) {
    wait(
        &format!("{} devices to install {campaign}", devices.len()),
        LONG,
        || {
            devices
                .iter()
                .all(|d| state(stack, d, campaign) == Some(StatusState::Success))
        },
    )
    .await;
}

/// `campaign retarget` of `id` to the one release `release`.
fn retarget(id: &str, release: &str) -> Command {
    Command::CampaignRetarget {
        id: cid(id),
        release: vec![ArtifactId::new(release).unwrap()],
        new_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_brings_every_batch_to_its_release_and_halts_on_a_bad_batch() {
    let mut stack = stack().await;
    let ops = stack.ops().await;
    artifact(&stack, Release::new("app-1.1.0", Kind::App, "1.1.0")).await;
    artifact(&stack, Release::new("app-1.2.0", Kind::App, "1.2.0")).await;
    group(&ops, "line-3", "line-3").await;
    let created = create(
        &ops,
        json!({
            "id": "line-3", "kind": "app", "release": ["app-1.1.0"],
            "waves": [{"cohorts": {"line-3": 10000}}],
            "gates": {"min_sample": 2, "failure_halt_bp": 1000, "wave_timeout_secs": 600},
            "standing": {"halt_window": 10}
        }),
    )
    .await;
    assert!(created.summary.standing);
    call(&ops, Command::CampaignStart { id: cid("line-3") }).await;

    // The first batch powers up together.
    let mut devices = Devices::default();
    let first = batch(&stack, &mut devices, "b1", 6);
    all_succeed(&stack, "line-3", &first).await;
    let s = wait_state(&ops, "line-3", "standing", LONG).await;
    assert!(
        s.history
            .iter()
            .any(|d| d.text.contains("the campaign stands")),
        "{:?}",
        s.history
    );

    // The bridge restarts between batches; the line still stands.
    stack.stop_bridge().await;
    stack.start_bridge().await;
    let ops = stack.ops().await;
    assert_eq!(status(&ops, "line-3").await.summary.state, "standing");
    let second = batch(&stack, &mut devices, "b2", 5);
    all_succeed(&stack, "line-3", &second).await;
    let s = status(&ops, "line-3").await;
    assert_eq!(s.summary.state, "standing", "never completes");
    assert_eq!(s.summary.counts.expect("counts").success, 11);

    // Retargeted: a new standing campaign with the newer release takes
    // over the line; the old one is aborted.
    let r = call(&ops, retarget("line-3", "app-1.2.0")).await;
    assert_eq!(r.summary.id.as_str(), "line-3-r2");
    assert_eq!(
        r.summary.parent.as_ref().map(|p| p.as_str()),
        Some("line-3")
    );
    assert!(r.summary.standing);
    assert_eq!(status(&ops, "line-3").await.summary.state, "aborted");
    let third = batch(&stack, &mut devices, "b3", 4);
    all_succeed(&stack, "line-3-r2", &third).await;
    for d in &third {
        assert_eq!(
            state(&stack, d, "line-3"),
            None,
            "{d}: never saw the old release"
        );
    }
    wait_state(&ops, "line-3-r2", "standing", LONG).await;
    // Retargeting a campaign that is not standing, or has ended, is refused.
    let e = refusal(&ops, retarget("line-3", "app-1.2.0")).await;
    assert!(e.contains("has ended"), "{e}");

    // A batch whose installs fail: over the latest 10 results the failure
    // rate passes 10% with confidence, and the line halts by itself.
    let bad: Vec<DeviceId> = (1..=5)
        .map(|i| {
            devices.spawn(
                &stack,
                DeviceOpts::new(format!("bad-{i}"), "line-3").failing(),
            )
        })
        .collect();
    let halted = wait_state(&ops, "line-3-r2", "halted", LONG).await;
    let failed = bad
        .iter()
        .filter(|d| state(&stack, d, "line-3-r2") == Some(StatusState::Failed))
        .count();
    assert!(
        failed >= 3,
        "halted after {failed} failures: {:?}",
        halted.phase
    );
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_spec_is_checked() {
    let stack = stack().await;
    let ops = stack.ops().await;
    artifact(&stack, Release::new("app-1.1.0", Kind::App, "1.1.0")).await;
    group(&ops, "line-3", "line-3").await;
    for (spec, says) in [
        (
            json!({"id": "l1", "kind": "app", "release": ["app-1.1.0"],
                   "waves": [{"cohorts": {"line-3": 10000}}], "standing": {"halt_window": 0}}),
            "halt_window is 0",
        ),
        (
            json!({"id": "l2", "kind": "app", "release": ["app-1.1.0"], "emergency": true,
                   "waves": [{"cohorts": {"line-3": 10000}}], "standing": {}}),
            "cannot be standing",
        ),
    ] {
        let e = refusal(&ops, Command::CampaignCreate { spec }).await;
        assert!(e.contains(says), "{e}");
    }
    // A campaign no device would take is refused unless allowed; a
    // standing one may start empty (a line before production).
    let one_off = json!({"id": "one-off", "kind": "app", "release": ["app-1.1.0"],
                         "waves": [{"cohorts": {"line-3": 10000}}]});
    let e = refusal(
        &ops,
        Command::CampaignCreate {
            spec: one_off.clone(),
        },
    )
    .await;
    assert!(e.contains("would reach no device"), "{e}");
    assert!(e.contains("--allow-empty"), "{e}");
    let mut allowed = one_off;
    allowed["allow_empty"] = json!(true);
    launch(&ops, allowed).await;
    let e = refusal(&ops, retarget("one-off", "app-1.1.0")).await;
    assert!(e.contains("is not standing"), "{e}");
}
