//! `campaign plan`, end to end: the dry run changes nothing, and its
//! numbers are those `create` and the run then show: members per wave,
//! the devices not covered, the devices already on the version, and the
//! bytes (the plan's one broadcast pass a wave is a lower bound of what
//! the block server sends).

mod blocks_common;
mod campaign_common;
mod common;

use std::sync::atomic::Ordering;

use bridge::campaign::plan::Plan;
use bridge::campaign::record::WaveEnd;
use campaign_common::*;
use schemas::msg::{Kind, StatusState};
use schemas::ops::Command;
use schemas::CampaignId;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_matches_the_create_and_the_run() {
    let stack = stack().await;
    let ops = stack.ops().await;
    artifact(
        &stack,
        Release::new("app-1.1.0", Kind::App, "1.1.0").sized(4096),
    )
    .await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let mut esp = devices.spawn_each(&stack, "acme", 1..=8);
    let other = devices.spawn(&stack, DeviceOpts::new("acme-arm", "acme").arch("armv7"));
    let mut current = DeviceOpts::new("acme-new", "acme");
    current.versions = vec![("main".into(), "1.1.0".into())];
    esp.push(devices.spawn(&stack, current));
    registered(&stack, 10).await;

    let spec = json!({
        "id": "app-1", "kind": "app", "release": ["app-1.1.0"],
        "waves": [{"cohorts": {"acme": 5000}}, {"cohorts": {"acme": 10000}}],
        "gates": {"success_bar_bp": 9000, "min_sample": 1, "wave_timeout_secs": 60}
    });
    let plan: Plan = ops
        .call_ok(Command::CampaignPlan { spec: spec.clone() })
        .await
        .expect("plan");
    // Nothing was created.
    let e = ops
        .call_ok::<serde_json::Value>(Command::CampaignStatus {
            id: CampaignId::new("app-1").unwrap(),
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no campaign app-1"), "{e}");
    assert_eq!(plan.waves.len(), 2);
    assert_eq!(plan.targeted, 10);
    assert_eq!(plan.skipped.uncovered, 1);
    assert_eq!(plan.skipped.on_target, 1);
    assert_eq!(plan.downloads, 8);
    assert_eq!(plan.delivered_bytes, 8 * 4096);
    assert_eq!(plan.waves[1].members, 10);
    assert_eq!(plan.waves[0].new + plan.waves[1].new, 10);

    let created = create(&ops, spec).await;
    assert_eq!(created.preflight.targeted, plan.targeted);
    assert_eq!(created.preflight.uncovered, plan.skipped.uncovered);
    call(
        &ops,
        Command::CampaignStart {
            id: CampaignId::new("app-1").unwrap(),
        },
    )
    .await;
    let done = wait_state(&ops, "app-1", "completed", LONG).await;
    for (w, end) in done.plan.iter().map(|w| w.end.clone()).enumerate() {
        match end {
            Some(WaveEnd::Passed { counts, .. }) => {
                assert_eq!(counts.members, plan.waves[w].members, "wave {}", w + 1)
            }
            other => panic!("wave {} ended {other:?}", w + 1),
        }
    }
    for d in &esp {
        assert_eq!(state(&stack, d, "app-1"), Some(StatusState::Success), "{d}");
    }
    assert_eq!(state(&stack, &other, "app-1"), Some(StatusState::Failed));
    let sent = stack
        .bridge()
        .blocks()
        .metrics()
        .bytes_broadcast
        .load(Ordering::Relaxed);
    assert!(
        sent >= plan.broadcast_bytes,
        "sent {sent}, planned at least {}",
        plan.broadcast_bytes
    );
    devices.stop_all().await;
}

/// A campaign whose devices all have an arch the release does not cover is
/// refused. A release no targeted device could verify (each was provisioned
/// trusting another release key) is refused at create, with the kid that
/// signed it and what to do. Devices whose trust is not known (never
/// provisioned) do not count against it: with one of them the campaign is
/// created, and the pre-flight counts the others as unverifiable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_no_targeted_device_trusts_is_refused() {
    use bridge::client::provision;
    let stack = stack().await;
    let ops = stack.ops().await;
    artifact(
        &stack,
        Release::new("app-1.1.0", Kind::App, "1.1.0").sized(2048),
    )
    .await;
    group(&ops, "acme", "acme").await;
    let ids: Vec<schemas::DeviceId> = ["acme-1", "acme-2"]
        .into_iter()
        .map(|s| schemas::DeviceId::new(s).unwrap())
        .collect();
    let other_key = schemas::keys::generate().verifying_key();
    let logins = provision::logins(&ops, &ids, Some(&[other_key]))
        .await
        .expect("provisioned");
    let mut devices = Devices::default();
    for id in &ids {
        let login = logins[id].clone();
        devices.spawn(&stack, DeviceOpts::new(id.as_str(), "acme").login(login));
    }
    // And a group whose one device has an arch the release does not cover.
    group(&ops, "arms", "arms").await;
    devices.spawn(&stack, DeviceOpts::new("arms-1", "arms").arch("armv7"));
    registered(&stack, 3).await;
    let arms = json!({"id": "arms-1", "kind": "app", "release": ["app-1.1.0"],
                      "waves": [{"cohorts": {"arms": 10000}}]});
    let e = refusal(&ops, Command::CampaignCreate { spec: arms }).await;
    assert!(
        e.contains("none of its 1 devices has an arch the release covers (esp32)"),
        "{e}"
    );

    let spec = |id: &str| {
        json!({"id": id, "kind": "app", "release": ["app-1.1.0"],
               "waves": [{"cohorts": {"acme": 10000}}]})
    };
    let release_kid = schemas::keys::kid_to_hex(&schemas::keys::kid(
        &blocks_common::release_key().verifying_key(),
    ));
    let e = refusal(
        &ops,
        Command::CampaignCreate {
            spec: spec("app-1"),
        },
    )
    .await;
    assert!(
        e.contains("none of its 2 devices trusts the key that signed the release"),
        "{e}"
    );
    assert!(e.contains(&release_kid), "{e}");
    assert!(e.contains("ota devices rotate"), "{e}");
    assert!(e.contains("--allow-empty"), "{e}");

    // One device that was never provisioned: what it trusts is not known.
    devices.spawn(&stack, DeviceOpts::new("acme-3", "acme"));
    registered(&stack, 4).await;
    let st = create(&ops, spec("app-2")).await;
    assert_eq!(st.preflight.targeted, 3);
    assert_eq!(st.preflight.unverifiable, 2);
    assert_eq!(st.preflight.release_kids, vec![release_kid]);
    devices.stop_all().await;
}
