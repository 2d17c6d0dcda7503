//! Waves, end to end: real broker, bridge and reference device agents. The
//! second wave is not announced while the first is below its success bar;
//! it starts once the first passes, and the campaign completes.

mod blocks_common;
mod campaign_common;
mod common;

use std::time::Duration;

use campaign_common::*;
use schemas::msg::{Announcement, CampaignState, Kind, StatusState, WireMessage};
use schemas::topic::Topic;
use schemas::GroupName;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wave_two_waits_until_wave_one_passes_its_bar() {
    let stack = stack().await;
    let ops = stack.ops().await;
    let events = EventLog::start(&ops).await;
    artifact(
        &stack,
        Release::new("fw-2.0.0-esp32", Kind::Firmware, "2.0.0"),
    )
    .await;
    group(&ops, "canary", "canary").await;
    group(&ops, "acme", "acme").await;

    let mut devices = Devices::default();
    // The slow canary puts the campaign off for a while: wave 1 is held
    // below its bar (100 %) meanwhile.
    let slow = devices.spawn(
        &stack,
        DeviceOpts::new("canary-1", "canary").deferring_once(2_000),
    );
    let fast = devices.spawn(&stack, DeviceOpts::new("canary-2", "canary"));
    let acme = devices.spawn_each(&stack, "acme", 1..=6);
    registered(&stack, 8).await;

    let created = create(
        &ops,
        json!({
            "id": "fw-2", "kind": "firmware", "release": ["fw-2.0.0-esp32"],
            "waves": [{"cohorts": {"canary": 10000}}, {"cohorts": {"acme": 10000}}],
            "gates": {"success_bar_bp": 10000, "min_sample": 1, "wave_timeout_secs": 30}
        }),
    )
    .await;
    assert_eq!(created.summary.state, "draft");
    assert_eq!(created.preflight.targeted, 8);
    assert_eq!(created.preflight.uncovered, 0);
    call(
        &ops,
        schemas::ops::Command::CampaignStart {
            id: "fw-2".parse().unwrap(),
        },
    )
    .await;

    // Wave 1: the fast canary succeeds, the slow one defers.
    wait("the fast canary's success", LONG, || {
        state(&stack, &fast, "fw-2") == Some(StatusState::Success)
    })
    .await;
    wait("the slow canary's deferral", LONG, || {
        state(&stack, &slow, "fw-2") == Some(StatusState::Deferred)
    })
    .await;
    // One of two succeeded: under the bar, so acme hears nothing.
    let s = status(&ops, "fw-2").await;
    assert_eq!(
        (s.summary.state.as_str(), s.summary.wave),
        ("running", Some(0))
    );
    let acme_topic = schemas::topic::Topics::default()
        .build(&Topic::GroupCampaign(GroupName::new("acme").unwrap()));
    assert_eq!(
        stack.bridge().store().retained.get(&acme_topic).unwrap(),
        None
    );
    for d in &acme {
        assert_eq!(
            current(&stack, d, "fw-2"),
            None,
            "{d} heard of wave 2 early"
        );
    }

    // The slow canary goes ahead; wave 1 passes; wave 2 runs; done.
    wait_state(&ops, "fw-2", "completed", LONG).await;
    for d in acme.iter().chain([&slow, &fast]) {
        assert_eq!(state(&stack, d, "fw-2"), Some(StatusState::Success), "{d}");
    }
    let kinds = events.kinds("fw-2");
    let at = |k: &str, nth: usize| {
        kinds
            .iter()
            .enumerate()
            .filter(|(_, x)| *x == k)
            .nth(nth)
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no {k} #{nth} in {kinds:?}"))
    };
    assert!(
        at("campaign.wave_passed", 0) < at("campaign.wave_started", 1),
        "{kinds:?}"
    );
    assert!(
        at("campaign.wave_started", 1) < at("campaign.completed", 0),
        "{kinds:?}"
    );

    // The retained announcement devices read: all of acme, active, the
    // release's signed manifest, not an emergency.
    let payload = stack
        .bridge()
        .store()
        .retained
        .get(&acme_topic)
        .unwrap()
        .expect("announced");
    let a = Announcement::decode(&payload).unwrap();
    assert_eq!(
        (a.cohort, a.emergency, a.state),
        (10000, false, CampaignState::Active)
    );
    let stored = stack
        .bridge()
        .artifacts()
        .get(&"fw-2.0.0-esp32".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(a.release, vec![stored.manifest_bytes().unwrap()]);
    devices.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_above_the_halt_bar_halts_the_campaign_by_itself() {
    let stack = stack().await;
    let ops = stack.ops().await;
    let events = EventLog::start(&ops).await;
    artifact(
        &stack,
        Release::new("fw-3.0.0-esp32", Kind::Firmware, "3.0.0").sized(2000),
    )
    .await;
    group(&ops, "acme", "acme").await;
    group(&ops, "globex", "globex").await;

    let mut devices = Devices::default();
    let mut failing = Vec::new();
    let mut late = Vec::new();
    for i in 1..=4 {
        failing.push(devices.spawn(
            &stack,
            DeviceOpts::new(format!("acme-f{i}"), "acme").failing(),
        ));
    }
    for i in 1..=3 {
        devices.spawn(&stack, DeviceOpts::new(format!("acme-ok{i}"), "acme"));
    }
    // These put the campaign off for 2 s: by then it has halted.
    for i in 1..=3 {
        late.push(devices.spawn(
            &stack,
            DeviceOpts::new(format!("acme-late{i}"), "acme").deferring_once(2_000),
        ));
    }
    let globex = devices.spawn_each(&stack, "globex", 1..=3);
    registered(&stack, 13).await;

    launch(
        &ops,
        json!({
            "id": "fw-3", "kind": "firmware", "release": ["fw-3.0.0-esp32"],
            "waves": [{"cohorts": {"acme": 10000}}, {"cohorts": {"globex": 10000}}],
            "gates": {"success_bar_bp": 9000, "failure_halt_bp": 2000, "min_sample": 3,
                      "wave_timeout_secs": 60}
        }),
    )
    .await;

    // Nobody pauses it: the gate does.
    let halted = events.wait("fw-3", "campaign.halted", LONG).await;
    assert_eq!(halted.data["reason"]["rule"], "failure_rate", "{halted:?}");
    let s = status(&ops, "fw-3").await;
    assert_eq!(
        (s.summary.state.as_str(), s.summary.wave),
        ("halted", Some(0))
    );

    // Devices are told `paused`; the next wave's group is told nothing.
    let topics = schemas::topic::Topics::default();
    let acme_topic = topics.build(&Topic::GroupCampaign(GroupName::new("acme").unwrap()));
    let payload = stack
        .bridge()
        .store()
        .retained
        .get(&acme_topic)
        .unwrap()
        .expect("announced");
    assert_eq!(
        Announcement::decode(&payload).unwrap().state,
        CampaignState::Paused
    );
    let globex_topic = topics.build(&Topic::GroupCampaign(GroupName::new("globex").unwrap()));
    assert_eq!(
        stack.bridge().store().retained.get(&globex_topic).unwrap(),
        None
    );

    // No further device starts: the late ones look again after their 2 s
    // and find the campaign paused.
    for d in &late {
        assert_eq!(state(&stack, d, "fw-3"), Some(StatusState::Deferred), "{d}");
    }
    holds_for(
        "late devices staying deferred, globex hearing nothing",
        Duration::from_secs(4),
        || {
            late.iter()
                .all(|d| state(&stack, d, "fw-3") == Some(StatusState::Deferred))
                && globex.iter().all(|d| current(&stack, d, "fw-3").is_none())
        },
    )
    .await;
    for d in &failing {
        let c = current(&stack, d, "fw-3").expect("a report");
        assert_eq!(c.state, StatusState::Failed, "{d}");
    }
    // Still halted: only an operator moves it on.
    assert_eq!(status(&ops, "fw-3").await.summary.state, "halted");

    // The operator judges the bars too strict for this batch: relaxes
    // them, then resumes. The wave is judged again, the late devices now
    // take part, and the campaign goes on to globex and completes.
    call(
        &ops,
        schemas::ops::Command::CampaignSetGates {
            id: "fw-3".parse().unwrap(),
            gates: json!({"failure_halt_bp": 6000, "success_bar_bp": 5000}),
        },
    )
    .await;
    assert_eq!(status(&ops, "fw-3").await.gates.failure_halt_bp, 6000);
    call(
        &ops,
        schemas::ops::Command::CampaignResume {
            id: "fw-3".parse().unwrap(),
        },
    )
    .await;
    events.wait("fw-3", "campaign.completed", LONG).await;
    // The last wave passed its (relaxed) bar; its devices all finish.
    wait("late and globex devices to succeed", LONG, || {
        late.iter()
            .chain(&globex)
            .all(|d| state(&stack, d, "fw-3") == Some(StatusState::Success))
    })
    .await;
    devices.stop_all().await;
}
