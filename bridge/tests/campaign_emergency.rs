//! The emergency lane, end to end: an emergency reaches devices that keep
//! deferring a normal campaign, and completes while that campaign is
//! paused; an emergency for every device goes out on `P/emergency` and
//! reaches devices in no group.

mod blocks_common;
mod campaign_common;
mod common;

use campaign_common::*;
use schemas::msg::{CampaignState, Kind, StatusState};
use schemas::ops::Command;
use schemas::topic::Topic;
use schemas::{ArtifactId, GroupName};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_reaches_deferring_devices_while_a_campaign_is_paused() {
    let stack = stack().await;
    let ops = stack.ops().await;
    let events = EventLog::start(&ops).await;
    artifact(
        &stack,
        Release::new("fw-2.0.0-esp32", Kind::Firmware, "2.0.0"),
    )
    .await;
    artifact(&stack, Release::config("cfg-1.0.1", "1.0.1")).await;
    artifact(&stack, Release::config("cfg-1.0.2", "1.0.2")).await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let acme: Vec<_> = (1..=5)
        .map(|i| {
            devices.spawn(
                &stack,
                DeviceOpts::new(format!("acme-{i}"), "acme").always_deferring(),
            )
        })
        .collect();
    // In no group at all.
    let loner = devices.spawn(&stack, DeviceOpts::new("loner-1", "nobody"));
    registered(&stack, 6).await;

    // A normal campaign every acme device keeps putting off; then paused.
    launch(
        &ops,
        json!({
            "id": "fw-2", "kind": "firmware", "release": ["fw-2.0.0-esp32"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 300}
        }),
    )
    .await;
    wait("acme to defer fw-2", LONG, || {
        acme.iter()
            .all(|d| state(&stack, d, "fw-2") == Some(StatusState::Deferred))
    })
    .await;
    call(&ops, Command::CampaignPause { id: cid("fw-2") }).await;

    // The emergency: no waves, no deferral.
    let e = call(
        &ops,
        Command::Emergency {
            id: cid("fix-1"),
            release: vec![ArtifactId::new("cfg-1.0.1").unwrap()],
            groups: vec![GroupName::new("acme").unwrap()],
            all: false,
        },
    )
    .await;
    assert!(e.summary.emergency);
    assert_eq!(e.summary.state, "running");
    assert_eq!(e.preflight.targeted, 5);
    let done = wait_state(&ops, "fix-1", "completed", LONG).await;
    for d in &acme {
        assert_eq!(state(&stack, d, "fix-1"), Some(StatusState::Success), "{d}");
        // Deferred all along for the paused campaign.
        assert_eq!(state(&stack, d, "fw-2"), Some(StatusState::Deferred), "{d}");
    }
    assert_eq!(done.current.expect("a tally").counts.success, 5);
    assert_eq!(status(&ops, "fw-2").await.summary.state, "paused");
    assert!(current(&stack, &loner, "fix-1").is_none());
    let kinds = events.kinds("fix-1");
    assert!(
        kinds.contains(&"campaign.completed".to_string()),
        "{kinds:?}"
    );

    // On the emergency topic: emergency true. On the campaign topic: the
    // paused campaign, emergency false.
    let acme_g = GroupName::new("acme").unwrap();
    let em = retained(&stack, Topic::GroupEmergency(acme_g.clone())).expect("announced");
    assert_eq!(
        (em.emergency, em.state, em.cohort),
        (true, CampaignState::Active, 10000)
    );
    let normal = retained(&stack, Topic::GroupCampaign(acme_g)).expect("announced");
    assert_eq!(
        (normal.emergency, normal.state),
        (false, CampaignState::Paused)
    );

    // An emergency for every device: P/emergency, the loner included.
    call(
        &ops,
        Command::Emergency {
            id: cid("fix-2"),
            release: vec![ArtifactId::new("cfg-1.0.2").unwrap()],
            groups: vec![],
            all: true,
        },
    )
    .await;
    wait_state(&ops, "fix-2", "completed", LONG).await;
    for d in acme.iter().chain([&loner]) {
        assert_eq!(state(&stack, d, "fix-2"), Some(StatusState::Success), "{d}");
    }
    let all = retained(&stack, Topic::Emergency).expect("announced");
    assert!(all.emergency);
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_commands_are_checked() {
    let stack = stack().await;
    let ops = stack.ops().await;
    artifact(&stack, Release::config("cfg-1.0.1", "1.0.1")).await;
    // A registered device that went offline keeps an emergency waiting.
    let mut devices = Devices::default();
    let gone = devices.spawn(&stack, DeviceOpts::new("gone-1", "nobody"));
    registered(&stack, 1).await;
    devices.stop(&gone).await;
    let refused = |cmd: Command| {
        let ops = &ops;
        async move {
            ops.call_ok::<serde_json::Value>(cmd)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    // (release, groups, all): why it is refused.
    let cases = [
        ("cfg-1.0.1", &[][..], false, "needs a target"),
        ("nope", &[], true, "artifact nope is not stored"),
        (
            "cfg-1.0.1",
            &["ghosts"],
            false,
            "group ghosts does not exist",
        ),
    ];
    for (release, groups, all, want) in cases {
        let e = refused(Command::Emergency {
            id: cid("x"),
            release: vec![ArtifactId::new(release).unwrap()],
            groups: groups.iter().map(|g| GroupName::new(*g).unwrap()).collect(),
            all,
        })
        .await;
        assert!(e.contains(want), "{e}");
    }
    // Two live emergencies for every device would share P/emergency.
    call(
        &ops,
        Command::Emergency {
            id: cid("fix-a"),
            release: vec![ArtifactId::new("cfg-1.0.1").unwrap()],
            groups: vec![],
            all: true,
        },
    )
    .await;
    let e = refused(Command::Emergency {
        id: cid("fix-b"),
        release: vec![ArtifactId::new("cfg-1.0.1").unwrap()],
        groups: vec![],
        all: true,
    })
    .await;
    assert!(e.contains("is held by campaign fix-a"), "{e}");
    // The artifact is in use: deleting it is refused.
    let e = refused(Command::ArtifactDelete {
        id: ArtifactId::new("cfg-1.0.1").unwrap(),
    })
    .await;
    assert!(e.contains("used by campaign fix-a"), "{e}");
}
