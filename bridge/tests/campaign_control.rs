//! Operator control, end to end: pause stops new downloads and resume
//! carries on to the end; abort leaves every device that was not yet
//! installing `cancelled`.

mod blocks_common;
mod campaign_common;
mod common;

use std::time::Duration;

use bridge::blocks::BlocksConfig;
use campaign_common::*;
use schemas::msg::{Kind, StatusState};
use schemas::ops::Command;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_new_downloads_and_resume_continues() {
    // A slow egress (80 KiB/s) and a 240 KiB image: downloads take seconds.
    let stack = blocks_common::stack(BlocksConfig {
        merge_window_ms: 20,
        egress_bytes_per_sec: 80 * 1024,
        ..BlocksConfig::default()
    })
    .await;
    let ops = stack.ops().await;
    artifact(
        &stack,
        Release::new("app-1.1.0", Kind::App, "1.1.0").sized(240 * 1024),
    )
    .await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let early = devices.spawn_each(&stack, "acme", 1..=3);
    // These put it off for 1.5 s, so the pause finds them not started.
    let late: Vec<_> = (4..=6)
        .map(|i| {
            devices.spawn(
                &stack,
                DeviceOpts::new(format!("acme-{i}"), "acme").deferring_once(1_500),
            )
        })
        .collect();
    registered(&stack, 6).await;
    launch(
        &ops,
        json!({
            "id": "app-1", "kind": "app", "release": ["app-1.1.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 120}
        }),
    )
    .await;
    wait("a download under way", LONG, || {
        early
            .iter()
            .any(|d| state(&stack, d, "app-1") == Some(StatusState::Downloading))
    })
    .await;
    let paused = call(&ops, Command::CampaignPause { id: cid("app-1") }).await;
    assert_eq!(paused.summary.state, "paused");

    // While paused nobody finishes a download, and the late devices,
    // looking again after their 1.5 s, do not start.
    let not_done = |s: Option<StatusState>| {
        !matches!(
            s,
            Some(StatusState::Downloaded | StatusState::Installing | StatusState::Success)
        )
    };
    holds_for("no progress while paused", Duration::from_secs(3), || {
        early.iter().all(|d| not_done(state(&stack, d, "app-1")))
            && late
                .iter()
                .all(|d| state(&stack, d, "app-1") == Some(StatusState::Deferred))
    })
    .await;
    let s = status(&ops, "app-1").await;
    assert_eq!(s.current.as_ref().map(|c| c.counts.success), Some(0));

    // Resume: everyone finishes, the late devices included.
    let resumed = call(&ops, Command::CampaignResume { id: cid("app-1") }).await;
    assert_eq!(resumed.summary.state, "running");
    wait_state(&ops, "app-1", "completed", LONG).await;
    for d in early.iter().chain(&late) {
        assert_eq!(state(&stack, d, "app-1"), Some(StatusState::Success), "{d}");
    }
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_cancels_every_device_not_yet_installing() {
    let stack = stack().await;
    let ops = stack.ops().await;
    artifact(&stack, Release::config("cfg-2.0.0", "2.0.0").sized(2000)).await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    // One device finishes before the abort; the others keep putting the
    // campaign off, so they are `deferred` (accepted, not installing).
    let done = devices.spawn(&stack, DeviceOpts::new("acme-0", "acme"));
    let waiting: Vec<_> = (1..=5)
        .map(|i| {
            devices.spawn(
                &stack,
                DeviceOpts::new(format!("acme-{i}"), "acme").always_deferring(),
            )
        })
        .collect();
    registered(&stack, 6).await;
    launch(
        &ops,
        json!({
            "id": "cfg-2", "kind": "config", "release": ["cfg-2.0.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 120}
        }),
    )
    .await;
    wait("one success and five deferrals", LONG, || {
        state(&stack, &done, "cfg-2") == Some(StatusState::Success)
            && waiting
                .iter()
                .all(|d| state(&stack, d, "cfg-2") == Some(StatusState::Deferred))
    })
    .await;

    let aborted = call(&ops, Command::CampaignAbort { id: cid("cfg-2") }).await;
    assert_eq!(aborted.summary.state, "aborted");
    wait("every waiting device to cancel", LONG, || {
        waiting
            .iter()
            .all(|d| state(&stack, d, "cfg-2") == Some(StatusState::Cancelled))
    })
    .await;
    // The finished device keeps its success; the tally counts the
    // cancelled ones apart (not applicable), not as failures.
    assert_eq!(state(&stack, &done, "cfg-2"), Some(StatusState::Success));
    wait_status(
        &ops,
        "cfg-2",
        "a tally of 1 success, 5 not applicable",
        |s| {
            s.current.as_ref().is_some_and(|c| {
                (c.counts.success, c.counts.failure, c.counts.not_applicable) == (1, 0, 5)
            })
        },
    )
    .await;
    // Aborted is final.
    let err = ops
        .call_ok::<serde_json::Value>(Command::CampaignResume { id: cid("cfg-2") })
        .await;
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("only a paused or halted campaign"));
    devices.stop_all().await;
}
