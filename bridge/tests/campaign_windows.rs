//! Maintenance windows and `stop_at`, end to end, on the real clock with
//! windows a few seconds long (`daily HH:MM:SS-HH:MM:SS UTC`):
//!
//! - a window that closes mid-wave: a device that comes online then does
//!   not start, and does once the window opens again; the wave timeout
//!   stands still while it is closed;
//! - an emergency during a closed window goes out;
//! - `stop_at` ends a campaign `expired`: its next wave never starts.

mod blocks_common;
mod campaign_common;
mod common;

use std::time::Duration;

use campaign_common::*;
use schemas::msg::{CampaignState, Kind, StatusState};
use schemas::ops::Command;
use schemas::topic::Topic;
use schemas::{ArtifactId, GroupName};
use serde_json::json;

/// `HH:MM:SS` of Unix second `t`, UTC.
fn hms(t: u64) -> String {
    let s = t % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

/// A daily UTC span from `a` to `b` (Unix seconds, less than a day apart).
fn span(a: u64, b: u64) -> String {
    format!("daily {}-{} UTC", hms(a), hms(b))
}

async fn app(stack: &common::Stack, id: &str, version: &str) {
    artifact(stack, Release::new(id, Kind::App, version).sized(2000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_closes_mid_wave_holds_devices_and_the_timeout() {
    let stack = stack().await;
    let ops = stack.ops().await;
    app(&stack, "app-1.1.0", "1.1.0").await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let first = devices.spawn(&stack, DeviceOpts::new("acme-1", "acme"));
    let second = devices.spawn(&stack, DeviceOpts::new("acme-2", "acme"));
    registered(&stack, 2).await;
    // The second is a member of the wave, offline when it starts.
    devices.stop(&second).await;

    // Open now until t0+5, closed until t0+10, then open for an hour.
    let t0 = bridge::unix_now();
    let window = format!("{}; {}", span(t0 - 60, t0 + 5), span(t0 + 10, t0 + 3600));
    let created = create(
        &ops,
        json!({
            "id": "app-1", "kind": "app", "release": ["app-1.1.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 120},
            "windows": {"acme": window}
        }),
    )
    .await;
    assert_eq!(created.windows.len(), 1);
    assert!(created.windows[0].open, "{:?}", created.windows);
    call(&ops, Command::CampaignStart { id: cid("app-1") }).await;
    wait("the first device to install", LONG, || {
        state(&stack, &first, "app-1") == Some(StatusState::Success)
    })
    .await;

    // The window closes; a second device comes online in it.
    let closed = wait_status(&ops, "app-1", "held wave", |s| {
        matches!(
            s.phase,
            bridge::campaign::gate::Phase::Running {
                held_since: Some(_),
                ..
            }
        )
    })
    .await;
    assert_eq!(closed.summary.state, "running");
    assert!(!closed.windows[0].open, "{:?}", closed.windows);
    assert_eq!(closed.next_timer, None);
    assert_eq!(closed.windows[0].next_change, Some(t0 + 10));
    let acme = GroupName::new("acme").unwrap();
    let a = retained(&stack, Topic::GroupCampaign(acme.clone())).expect("announced");
    assert_eq!(a.state, CampaignState::Paused);
    devices.spawn(&stack, DeviceOpts::new("acme-2", "acme"));
    if bridge::unix_now() + 2 < t0 + 10 {
        holds_for(
            "the second device to wait for the window",
            Duration::from_secs(1),
            || state(&stack, &second, "app-1").is_none(),
        )
        .await;
    }

    // It opens again: the second device installs, the wave passes, and the
    // timeout moved on by the time it was held.
    let done = wait_state(&ops, "app-1", "completed", LONG).await;
    assert_eq!(state(&stack, &second, "app-1"), Some(StatusState::Success));
    let texts: Vec<&str> = done.history.iter().map(|d| d.text.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.contains("window closed for acme")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("window open for acme") && t.contains("waits until")),
        "{texts:?}"
    );
    // Completed: the announcement stays active, and keeps following the
    // window for devices that come later.
    let a = retained(&stack, Topic::GroupCampaign(acme)).expect("announced");
    assert_eq!(a.state, CampaignState::Active);
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_goes_out_in_a_closed_window() {
    let stack = stack().await;
    let ops = stack.ops().await;
    app(&stack, "app-1.1.0", "1.1.0").await;
    app(&stack, "app-1.1.1", "1.1.1").await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let acme = devices.spawn_each(&stack, "acme", 1..=3);
    registered(&stack, 3).await;

    let t0 = bridge::unix_now();
    launch(
        &ops,
        json!({
            "id": "app-1", "kind": "app", "release": ["app-1.1.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1},
            "windows": {"acme": span(t0 + 3600, t0 + 7200)}
        }),
    )
    .await;
    holds_for(
        "devices to wait for the window",
        Duration::from_secs(2),
        || acme.iter().all(|d| state(&stack, d, "app-1").is_none()),
    )
    .await;

    let e = call(
        &ops,
        Command::Emergency {
            id: cid("fix-1"),
            release: vec![ArtifactId::new("app-1.1.1").unwrap()],
            groups: vec![GroupName::new("acme").unwrap()],
            all: false,
        },
    )
    .await;
    assert!(e.windows.is_empty(), "an emergency has no window");
    wait_state(&ops, "fix-1", "completed", LONG).await;
    for d in &acme {
        assert_eq!(state(&stack, d, "fix-1"), Some(StatusState::Success), "{d}");
        assert_eq!(
            state(&stack, d, "app-1"),
            None,
            "{d}: still waiting for its window"
        );
    }
    // An emergency spec with a window is refused.
    let err = refusal(
        &ops,
        Command::CampaignCreate {
            spec: json!({
                "id": "fix-2", "kind": "app", "release": ["app-1.1.1"], "emergency": true,
                "waves": [{"cohorts": {"acme": 10000}}],
                "windows": {"acme": "daily 01:00-02:00 UTC"}
            }),
        },
    )
    .await;
    assert!(err.contains("ignores every window"), "{err}");
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_at_ends_a_campaign_expired_before_its_next_wave() {
    let mut stack = stack().await;
    let ops = stack.ops().await;
    app(&stack, "app-1.1.0", "1.1.0").await;
    group(&ops, "canary", "canary").await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let canary = devices.spawn(&stack, DeviceOpts::new("canary-1", "canary"));
    let acme = devices.spawn_each(&stack, "acme", 1..=2);
    registered(&stack, 3).await;
    let events = EventLog::start(&ops).await;

    let now = bridge::unix_now();
    let refused = refusal(
        &ops,
        Command::CampaignCreate {
            spec: json!({
                "id": "late", "kind": "app", "release": ["app-1.1.0"],
                "waves": [{"cohorts": {"canary": 10000}}], "stop_at": now - 1
            }),
        },
    )
    .await;
    assert!(refused.contains("not in the future"), "{refused}");

    let stop_at = now + 6;
    let created = create(
        &ops,
        json!({
            "id": "app-1", "kind": "app", "release": ["app-1.1.0"],
            "waves": [{"cohorts": {"canary": 10000}}, {"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "soak_secs": 600},
            "stop_at": stop_at
        }),
    )
    .await;
    assert_eq!(created.summary.stop_at, Some(stop_at));
    call(&ops, Command::CampaignStart { id: cid("app-1") }).await;
    wait("the canary to install", LONG, || {
        state(&stack, &canary, "app-1") == Some(StatusState::Success)
    })
    .await;
    // Soaking when the bridge goes down; the stop time passes meanwhile.
    stack.stop_bridge().await;
    wait("the stop time to pass", LONG, || {
        bridge::unix_now() > stop_at
    })
    .await;
    stack.start_bridge().await;
    let ops = stack.ops().await;
    let done = wait_state(&ops, "app-1", "expired", LONG).await;
    assert_eq!(done.summary.stop_at, None, "shown only until it ends");
    assert_eq!(done.plan[1].state, "pending", "wave 2 never started");
    for d in &acme {
        assert_eq!(state(&stack, d, "app-1"), None, "{d}");
    }
    let counts = done.summary.counts.expect("counts");
    assert_eq!((counts.members, counts.success), (1, 1));
    events.wait("app-1", "campaign.expired", LONG).await;
    let e = refusal(&ops, Command::CampaignResume { id: cid("app-1") }).await;
    assert!(e.contains("expired"), "{e}");
    devices.stop_all().await;
}
