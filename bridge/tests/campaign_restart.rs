//! A bridge stopped mid-campaign and started again on the same data dir
//! carries the campaign to the end it would have reached: the gate, its
//! timer (which fell due while the bridge was down) and the wave's counts
//! come back from the store. The process-level version, `kill -9` of `ota
//! serve`, is `tests/cli_campaign.rs` at the root.

mod blocks_common;
mod campaign_common;
mod common;

use bridge::campaign::gate::PassRule;
use bridge::campaign::record::WaveEnd;
use campaign_common::*;
use schemas::msg::{Kind, StatusState};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bridge_finishes_the_campaign_with_its_timers() {
    let mut stack = stack().await;
    let ops = stack.ops().await;
    let events = EventLog::start(&ops).await;
    artifact(
        &stack,
        Release::new("fw-4.0.0-esp32", Kind::Firmware, "4.0.0").sized(2000),
    )
    .await;
    group(&ops, "canary", "canary").await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    let canaries = devices.spawn_each(&stack, "canary", 1..=2);
    // Registered, then offline for good: wave 1 can only pass at its timeout.
    let gone = devices.spawn(&stack, DeviceOpts::new("canary-3", "canary"));
    let acme = devices.spawn_each(&stack, "acme", 1..=4);
    registered(&stack, 7).await;
    devices.stop(&gone).await;

    launch(
        &ops,
        json!({
            "id": "fw-4", "kind": "firmware", "release": ["fw-4.0.0-esp32"],
            "waves": [{"cohorts": {"canary": 10000}}, {"cohorts": {"acme": 10000}}],
            "gates": {"success_bar_bp": 9500, "min_sample": 2, "wave_timeout_secs": 5}
        }),
    )
    .await;
    wait("the canaries' success", LONG, || {
        canaries
            .iter()
            .all(|d| state(&stack, d, "fw-4") == Some(StatusState::Success))
    })
    .await;
    let before = status(&ops, "fw-4").await;
    assert_eq!(
        (before.summary.state.as_str(), before.summary.wave),
        ("running", Some(0))
    );

    // Stop the bridge while wave 1 waits for its timeout, and start it
    // again only once that timeout has passed: the restarted gate finds
    // its timer overdue and must judge on the stored reports.
    let deadline = before.next_timer.expect("wave 1's timeout");
    stack.stop_bridge().await;
    wait("wave 1's timeout to pass", LONG, || {
        bridge::unix_now() > deadline
    })
    .await;
    stack.start_bridge().await;

    let after = wait_state(&ops, "fw-4", "completed", LONG).await;
    for d in canaries.iter().chain(&acme) {
        assert_eq!(state(&stack, d, "fw-4"), Some(StatusState::Success), "{d}");
    }
    assert_eq!(state(&stack, &gone, "fw-4"), None);
    // Both waves passed at their timeout: wave 2's members include wave
    // 1's, so the offline canary keeps 6 of 7 under the 95 % bar until
    // then (6 of 6 terminal reports pass). The end a straight run reaches.
    match &after.plan[0].end {
        Some(WaveEnd::Passed { rule, counts, .. }) => {
            assert_eq!(*rule, PassRule::AtTimeout);
            assert_eq!((counts.members, counts.success, counts.pending), (3, 2, 1));
        }
        other => panic!("wave 1 ended {other:?}"),
    }
    match &after.plan[1].end {
        Some(WaveEnd::Passed { rule, counts, .. }) => {
            assert_eq!(*rule, PassRule::AtTimeout);
            assert_eq!((counts.members, counts.success, counts.pending), (7, 6, 1));
        }
        other => panic!("wave 2 ended {other:?}"),
    }
    let kinds = events.kinds("fw-4");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "campaign.wave_started")
            .count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "campaign.completed").count(),
        1,
        "{kinds:?}"
    );
    devices.stop_all().await;
}
