//! Automatic rollback, end to end (`--rollback-release`): a campaign halts
//! on its failure rate, and a linked rollback campaign sends the earlier
//! version (signed with `allow_downgrade`) to exactly the devices that
//! installed the bad release; the others are untouched. The pre-flight
//! refuses a rollback that is not a signed downgrade.

mod blocks_common;
mod campaign_common;
mod common;

use std::time::Duration;

use campaign_common::*;
use schemas::msg::{Kind, StatusState};
use schemas::ops::Command;
use serde_json::json;

/// The release `app-2.0.0` and its rollback `app-1.0.0-rb`, signed as a
/// downgrade.
async fn releases(stack: &common::Stack) {
    artifact(stack, Release::new("app-2.0.0", Kind::App, "2.0.0")).await;
    artifact_with(
        stack,
        Release::new("app-1.0.0-rb", Kind::App, "1.0.0"),
        |s| s.allow_downgrade = true,
    )
    .await;
}

fn spec(id: &str, rollback: &str) -> serde_json::Value {
    json!({
        "id": id, "kind": "app", "release": ["app-2.0.0"],
        "waves": [{"cohorts": {"acme": 10000}}],
        "gates": {"success_bar_bp": 10000, "failure_halt_bp": 1000,
                  "min_sample": 3, "wave_timeout_secs": 120},
        "rollback": {"release": [rollback]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_rolls_back_exactly_the_devices_that_installed() {
    let stack = stack().await;
    let ops = stack.ops().await;
    let events = EventLog::start(&ops).await;
    releases(&stack).await;
    // Attackers' and mistakes' releases: not signed as a downgrade, not
    // earlier, another component.
    artifact(&stack, Release::new("app-1.0.0", Kind::App, "1.0.0")).await;
    artifact_with(
        &stack,
        Release::new("app-2.0.0-dg", Kind::App, "2.0.0"),
        |s| s.allow_downgrade = true,
    )
    .await;
    artifact_with(
        &stack,
        Release {
            component: "cfg",
            ..Release::new("cfg-0.9-dg", Kind::App, "0.9.0")
        },
        |s| s.allow_downgrade = true,
    )
    .await;
    group(&ops, "acme", "acme").await;

    for (rollback, want) in [
        ("app-1.0.0", "allow_downgrade"),
        ("app-2.0.0-dg", "not below"),
        ("cfg-0.9-dg", "same component"),
        ("app-0.1-missing", "not stored"),
    ] {
        let e = ops
            .call_ok::<serde_json::Value>(Command::CampaignCreate {
                spec: spec("refused", rollback),
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{rollback}: {e}");
    }

    let mut devices = Devices::default();
    let good = devices.spawn_each(&stack, "acme", 1..=4);
    // The failures come after the successes (put off 1.5 s), so the halt
    // finds four devices on 2.0.0.
    let bad: Vec<_> = (5..=6)
        .map(|i| {
            devices.spawn(
                &stack,
                DeviceOpts::new(format!("acme-{i}"), "acme")
                    .deferring_once(1_500)
                    .failing(),
            )
        })
        .collect();
    let busy = devices.spawn(&stack, DeviceOpts::new("acme-7", "acme").always_deferring());
    registered(&stack, 7).await;

    launch(&ops, spec("app-2", "app-1.0.0-rb")).await;
    wait("the good devices install 2.0.0", LONG, || {
        good.iter()
            .all(|d| state(&stack, d, "app-2") == Some(StatusState::Success))
    })
    .await;

    // 2 failures of 6 decided: the lower bound (11.7 %) is above 10 %.
    let halted = wait_state(&ops, "app-2", "halted", LONG).await;
    assert_eq!(halted.summary.version, "2.0.0");
    events
        .wait("app-2-rollback", "campaign.wave_started", LONG)
        .await;
    let parent = wait_status(&ops, "app-2", "its rollback is named", |s| {
        s.summary.rollback.is_some()
    })
    .await;
    assert_eq!(parent.summary.rollback, Some(cid("app-2-rollback")));

    let child = status(&ops, "app-2-rollback").await;
    assert_eq!(child.summary.parent, Some(cid("app-2")));
    assert_eq!(child.summary.version, "1.0.0");
    assert_eq!(child.preflight.targeted, 4);
    wait("the four roll back to 1.0.0", LONG, || {
        good.iter()
            .all(|d| state(&stack, d, "app-2-rollback") == Some(StatusState::Success))
    })
    .await;
    wait_state(&ops, "app-2-rollback", "completed", LONG).await;
    holds_for(
        "the others are untouched",
        Duration::from_millis(800),
        || {
            bad.iter()
                .chain([&busy])
                .all(|d| state(&stack, d, "app-2-rollback").is_none())
        },
    )
    .await;

    // Once only: by hand too.
    let e = ops
        .call_ok::<serde_json::Value>(Command::CampaignRollback { id: cid("app-2") })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already rolled back by app-2-rollback"), "{e}");
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rolls_back_a_running_campaign() {
    let stack = stack().await;
    let ops = stack.ops().await;
    releases(&stack).await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let done = devices.spawn(&stack, DeviceOpts::new("acme-1", "acme"));
    let later = devices.spawn(&stack, DeviceOpts::new("acme-2", "acme").always_deferring());
    registered(&stack, 2).await;

    // Without a rollback release there is nothing to roll back to.
    let mut plain = spec("plain", "x");
    plain.as_object_mut().unwrap().remove("rollback");
    create(&ops, plain).await;
    let e = ops
        .call_ok::<serde_json::Value>(Command::CampaignRollback { id: cid("plain") })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("--rollback-release"), "{e}");

    launch(&ops, spec("app-2", "app-1.0.0-rb")).await;
    wait("acme-1 installs 2.0.0", LONG, || {
        state(&stack, &done, "app-2") == Some(StatusState::Success)
    })
    .await;
    let child = call(&ops, Command::CampaignRollback { id: cid("app-2") }).await;
    assert_eq!(child.summary.id.as_str(), "app-2-rollback");
    assert_eq!(child.preflight.targeted, 1);
    assert_eq!(status(&ops, "app-2").await.summary.state, "aborted");
    wait("acme-1 rolls back", LONG, || {
        state(&stack, &done, "app-2-rollback") == Some(StatusState::Success)
    })
    .await;
    assert_eq!(state(&stack, &later, "app-2-rollback"), None);
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_before_any_install_makes_no_rollback_campaign() {
    let stack = stack().await;
    let ops = stack.ops().await;
    let events = EventLog::start(&ops).await;
    releases(&stack).await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    for i in 1..=3 {
        devices.spawn(
            &stack,
            DeviceOpts::new(format!("acme-{i}"), "acme").failing(),
        );
    }
    registered(&stack, 3).await;

    launch(&ops, spec("app-3", "app-1.0.0-rb")).await;
    wait_state(&ops, "app-3", "halted", LONG).await;
    events.wait("app-3", "campaign.halted", LONG).await;

    // The halt's rollback is due at the campaigns' next tick (once a
    // second): for two ticks and more, no rollback campaign appears, none
    // is named, and no group is made for it.
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        let list: bridge::campaign::view::CampaignList =
            ops.call_ok(Command::CampaignList).await.unwrap();
        assert!(
            list.campaigns
                .iter()
                .all(|c| c.id.as_str() != "app-3-rollback"),
            "a rollback of nothing was made"
        );
        assert_eq!(status(&ops, "app-3").await.summary.rollback, None);
        let groups: bridge::ops::fleet_cmds::GroupList =
            ops.call_ok(Command::GroupList).await.unwrap();
        assert!(
            groups
                .groups
                .iter()
                .all(|g| g.record.name.as_str() != "app-3-rollback"),
            "no empty rollback group is left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // By hand, the operator is told why.
    let e = ops
        .call_ok::<serde_json::Value>(Command::CampaignRollback { id: cid("app-3") })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to roll back"), "{e}");
    devices.stop_all().await;
}
