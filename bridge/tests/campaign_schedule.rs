//! Scheduled starts, end to end (`--start-at`): a draft starts by itself
//! at its time, with nobody running `start`, also when the bridge was
//! down when that time came; a time in the past is refused.

mod blocks_common;
mod campaign_common;
mod common;

use campaign_common::*;
use schemas::msg::{Kind, StatusState};
use schemas::ops::Command;
use serde_json::json;

fn spec(id: &str, start_at: u64) -> serde_json::Value {
    json!({
        "id": id, "kind": "app", "release": ["app-1.1.0"],
        "waves": [{"cohorts": {"acme": 10000}}],
        "gates": {"min_sample": 1, "wave_timeout_secs": 60},
        "start_at": start_at
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_draft_starts_by_itself_across_a_restart() {
    let mut stack = stack().await;
    let ops = stack.ops().await;
    artifact(
        &stack,
        Release::new("app-1.1.0", Kind::App, "1.1.0").sized(2000),
    )
    .await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let acme = devices.spawn_each(&stack, "acme", 1..=3);
    registered(&stack, 3).await;

    let now = bridge::unix_now();
    let e = ops
        .call_ok::<serde_json::Value>(Command::CampaignCreate {
            spec: spec("late", now - 10),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not in the future"), "{e}");

    let at = now + 4;
    let created = create(&ops, spec("app-1", at)).await;
    assert_eq!(created.summary.state, "draft");
    assert_eq!(created.summary.start_at, Some(at));

    for d in &acme {
        assert_eq!(state(&stack, d, "app-1"), None, "nothing before the start");
    }
    // The bridge is down when the time comes.
    stack.stop_bridge().await;
    wait("the start time to pass", LONG, || bridge::unix_now() > at).await;
    stack.start_bridge().await;

    let done = wait_state(&ops, "app-1", "completed", LONG).await;
    assert_eq!(done.summary.start_at, None, "shown only while a draft");
    for d in &acme {
        assert_eq!(state(&stack, d, "app-1"), Some(StatusState::Success), "{d}");
    }
    devices.stop_all().await;
}
