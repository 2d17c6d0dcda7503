//! Follow-ups, end to end (`campaign retry`): after a campaign halted, a
//! new draft targets exactly its leftovers (the devices that failed or
//! never reported), through an explicit group; those that succeeded are
//! left alone, and a device back online takes the follow-up. (A campaign
//! that completed keeps admitting late devices by itself: its
//! announcement stays active.)

mod blocks_common;
mod campaign_common;
mod common;

use std::time::Duration;

use campaign_common::*;
use schemas::msg::{Kind, StatusState};
use schemas::ops::Command;
use schemas::GroupName;
use serde_json::json;

fn retry(id: &str, new_id: Option<&str>, only: &[&str]) -> Command {
    Command::CampaignRetry {
        id: cid(id),
        new_id: new_id.map(cid),
        only: only.iter().map(|s| s.to_string()).collect(),
    }
}

/// The members of an explicit group, by id.
async fn members_of(ops: &bridge::client::OpsClient, group: &str) -> Vec<String> {
    let reply: serde_json::Value = ops
        .call_ok(Command::DeviceList {
            group: Some(GroupName::new(group).unwrap()),
            after: None,
            limit: None,
        })
        .await
        .expect("device list");
    let mut ids: Vec<String> = reply["devices"]
        .as_array()
        .expect("a device list")
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_targets_exactly_the_leftovers() {
    let stack = stack().await;
    let ops = stack.ops().await;
    artifact(&stack, Release::new("app-1.1.0", Kind::App, "1.1.0")).await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let good = devices.spawn_each(&stack, "acme", 1..=3);
    let failing = devices.spawn(&stack, DeviceOpts::new("acme-4", "acme").failing());
    let away = devices.spawn(&stack, DeviceOpts::new("acme-5", "acme"));
    registered(&stack, 5).await;
    // acme-5 goes offline before the campaign: it never reports.
    devices.stop(&away).await;

    launch(
        &ops,
        json!({
            "id": "app-1", "kind": "app", "release": ["app-1.1.0"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"success_bar_bp": 10000, "failure_halt_bp": 10000,
                      "min_sample": 1, "wave_timeout_secs": 4}
        }),
    )
    .await;

    // Not while it runs.
    let e = ops
        .call_ok::<serde_json::Value>(retry("app-1", None, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("still running"), "{e}");

    // At the timeout 3 of 4 reports succeeded, under the 100 % bar: it
    // halts, announced paused, so acme-5 will not take it when it is back.
    let done = wait_state(&ops, "app-1", "halted", LONG).await;
    assert_eq!(done.preflight.targeted, 5);
    for d in &good {
        assert_eq!(state(&stack, d, "app-1"), Some(StatusState::Success));
    }
    assert_eq!(state(&stack, &failing, "app-1"), Some(StatusState::Failed));

    // The default: timed-out and failed.
    let follow = call(&ops, retry("app-1", None, &[])).await;
    assert_eq!(follow.summary.id.as_str(), "app-1-retry");
    assert_eq!(follow.summary.state, "draft");
    assert_eq!(follow.summary.parent, Some(cid("app-1")));
    assert_eq!(follow.preflight.targeted, 2);
    assert_eq!(members_of(&ops, "app-1-retry").await, ["acme-4", "acme-5"]);

    // One class at a time.
    let failed = call(&ops, retry("app-1", Some("app-1-failed"), &["failed"])).await;
    assert_eq!(failed.preflight.targeted, 1);
    assert_eq!(members_of(&ops, "app-1-failed").await, ["acme-4"]);
    let offline = call(&ops, retry("app-1", Some("app-1-off"), &["offline"])).await;
    assert_eq!(members_of(&ops, "app-1-off").await, ["acme-5"]);
    assert_eq!(offline.preflight.targeted, 1);

    // Refusals change nothing.
    for (cmd, want) in [
        (retry("app-1", None, &[]), "already a group or a campaign"),
        (
            retry("app-1", Some("x1"), &["crashed"]),
            "not a leftover class",
        ),
        (
            retry("app-1", Some("x2"), &["failed:gremlins"]),
            "no such error code",
        ),
        (
            retry("app-1", Some("x3"), &["failed:boot_failed"]),
            "no leftovers",
        ),
        (retry("nope", Some("x4"), &[]), "no campaign nope"),
    ] {
        let e = ops
            .call_ok::<serde_json::Value>(cmd)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
    let groups: serde_json::Value = ops.call_ok(Command::GroupList).await.unwrap();
    assert!(!groups.to_string().contains("\"x3\""), "{groups}");

    // acme-5 comes back and takes the follow-up; the devices that
    // succeeded never hear of it.
    devices.spawn(&stack, DeviceOpts::new("acme-5", "acme"));
    call(
        &ops,
        Command::CampaignStart {
            id: cid("app-1-retry"),
        },
    )
    .await;
    wait("acme-5 installs the follow-up", LONG, || {
        state(&stack, &away, "app-1-retry") == Some(StatusState::Success)
    })
    .await;
    wait("acme-4 fails it again", LONG, || {
        state(&stack, &failing, "app-1-retry") == Some(StatusState::Failed)
    })
    .await;
    holds_for(
        "the good devices stay out",
        Duration::from_millis(800),
        || {
            good.iter()
                .all(|d| state(&stack, d, "app-1-retry").is_none())
        },
    )
    .await;
    let list: serde_json::Value = ops.call_ok(Command::CampaignList).await.unwrap();
    let child = list["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "app-1-retry")
        .expect("listed");
    assert_eq!(child["parent"], "app-1");
    devices.stop_all().await;
}
