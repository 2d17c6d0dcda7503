//! Rotating the director key (E2, `[bridge] director_keys_next`) with the
//! real bridge: devices provisioned with the current key A and the next key
//! B; the bridge runs with A, then restarts with B as its director key (A
//! no longer configured). At start it re-signs and republishes its retained
//! Memberships with B, at a counter above every one A signed (the counter
//! is the bridge's, persisted, and the device keeps it per topic, whichever
//! key signed): the device with both keys takes them, and a campaign
//! started after the switch completes on it. A device provisioned with A
//! only refuses B's messages as `unknown_key` and keeps what it knew: it is
//! still in its group, and a campaign signed by B never starts on it.

mod blocks_common;
mod campaign_common;
mod common;

use std::time::Duration;

use campaign_common::*;
use common::director_key;
use schemas::keys::SigningKey;
use schemas::msg::{Kind, StatusState};
use serde_json::json;

/// The next director key, B.
fn next_key() -> SigningKey {
    SigningKey::from_bytes(&[44; 32])
}

/// Creates and starts campaign `id` of app-1.1.0 on all of `group`.
async fn start_on(ops: &bridge::client::OpsClient, id: &str, group: &str) {
    launch(
        ops,
        json!({
            "id": id, "kind": "app", "release": ["app-1.1.0"],
            "waves": [{"cohorts": {group: 10000}}],
            "gates": {"min_sample": 1, "wave_timeout_secs": 120}
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_with_the_next_key_follow_the_rotated_bridge_and_others_refuse_it() {
    let mut stack = stack().await;
    let ops = stack.ops().await;
    artifact(
        &stack,
        Release::new("app-1.1.0", Kind::App, "1.1.0").sized(8 * 1024),
    )
    .await;
    group(&ops, "acme", "acme").await;
    group(&ops, "legacy", "legacy").await;

    let mut devices = Devices::default();
    let fresh = devices.spawn(
        &stack,
        DeviceOpts::new("acme-1", "acme").trusting_next(next_key().verifying_key()),
    );
    let old = devices.spawn(&stack, DeviceOpts::new("legacy-1", "legacy"));
    registered(&stack, 2).await;

    // Under key A: a campaign on legacy completes on legacy-1 (it believes
    // A's Membership and announcement).
    start_on(&ops, "old-1", "legacy").await;
    let done = wait_state(&ops, "old-1", "completed", LONG).await;
    assert_eq!(done.current.as_ref().map(|c| c.counts.success), Some(1));
    assert_eq!(state(&stack, &old, "old-1"), Some(StatusState::Success));

    // The switch: B is the director key, A is configured nowhere.
    stack.stop_bridge().await;
    stack.config.bridge.director_key = Some(next_key());
    assert!(stack.config.bridge.director_keys_next.is_empty());
    stack.start_bridge().await;
    assert_ne!(
        director_key().verifying_key(),
        next_key().verifying_key(),
        "a real rotation"
    );

    // The republished Memberships, signed by B: legacy-1 refuses its own.
    let drops = devices.drops.clone();
    wait(
        "legacy-1 refuses B's Membership as unknown_key",
        LONG,
        || drops.count(&old, "unknown_key") >= 1,
    )
    .await;

    // A campaign signed by B completes on acme-1.
    let ops = stack.ops().await;
    start_on(&ops, "app-1", "acme").await;
    let done = wait_state(&ops, "app-1", "completed", LONG).await;
    assert_eq!(done.current.as_ref().map(|c| c.counts.success), Some(1));
    assert_eq!(state(&stack, &fresh, "app-1"), Some(StatusState::Success));
    for reason in ["unknown_key", "old_counter", "bad_signature"] {
        assert_eq!(
            drops.count(&fresh, reason),
            0,
            "acme-1 refused a message of the rotated bridge as {reason}"
        );
    }

    // legacy-1 keeps what it knew under A: a campaign on legacy signed by
    // B never starts there (its announcement is refused too), and its
    // refusals are counted.
    let before = drops.count(&old, "unknown_key");
    start_on(&ops, "old-2", "legacy").await;
    wait("legacy-1 refuses B's announcement too", LONG, || {
        drops.count(&old, "unknown_key") > before
    })
    .await;
    holds_for(
        "old-2 never starts on legacy-1",
        Duration::from_secs(1),
        || state(&stack, &old, "old-2").is_none(),
    )
    .await;
    assert_eq!(
        state(&stack, &old, "old-1"),
        Some(StatusState::Success),
        "what legacy-1 knew is kept"
    );
    devices.stop_all().await;
}
