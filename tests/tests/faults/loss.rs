//! Lossy devices: 30% of blocks lost on arrival, or every device losing
//! power once mid-download (booting again from its kept state). Either
//! way every device completes, and the campaign ends completed.

use std::time::Duration;

use device_sim::fleet::{profile::Faults, Fleet};
use harness::faults::{self, FaultError};
use harness::{Stack, StackOptions};
use schemas::msg::StatusState;

/// Rolls a firmware out to `devices` devices with `faults` injected;
/// returns the campaign's final status and the fleet's last stats.
async fn rollout(
    prefix: &str,
    devices: usize,
    image: usize,
    inject: Faults,
) -> Result<
    (
        bridge::campaign::view::CampaignStatus,
        device_sim::fleet::FleetStats,
    ),
    FaultError,
> {
    let stack = Stack::start(StackOptions::default())
        .await
        .map_err(|e| FaultError::Stalled(format!("stack: {e}")))?;
    let ops = stack.ops();
    let mut profile = faults::profile(prefix, 500);
    profile.faults = inject;
    let fleet = Fleet::spawn(faults::quick(stack.fleet(devices, profile)))
        .map_err(|e| FaultError::Stalled(format!("fleet: {e}")))?;
    faults::registered(ops, devices, Duration::from_secs(60)).await?;
    faults::group(ops, faults::GROUP, "suite=faults").await?;
    let artifact = faults::push_firmware(ops, &stack.keys.release, "2.0.0", image).await?;
    let id = faults::start_campaign(ops, faults::one_wave("fw-loss", &artifact)).await?;
    let end = faults::campaign_end(ops, &id, Duration::from_secs(300)).await?;
    let stats = fleet
        .wait_until(
            |s| s.count(StatusState::Success) == devices,
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|s| s);
    fleet.shutdown().await;
    let _ = stack.shutdown().await;
    Ok((end, stats))
}

fn assert_all_succeeded(
    end: &bridge::campaign::view::CampaignStatus,
    stats: &device_sim::fleet::FleetStats,
    devices: usize,
) {
    let counts = end.current.as_ref().map(|b| b.counts);
    assert_eq!(end.summary.state, "completed", "{counts:?}");
    let c = counts.expect("a completed campaign has a tally");
    assert_eq!(
        (c.members as usize, c.success as usize, c.failure),
        (devices, devices, 0),
        "{}",
        stats.line()
    );
    assert_eq!(
        stats.count(StatusState::Success),
        devices,
        "{}",
        stats.line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_block_loss_every_device_completes() {
    let _one = faults::serial().await;
    let devices = faults::sized(200, 1_000);
    let image = faults::sized(256 * 1024, 1024 * 1024);
    let inject = Faults {
        block_loss: 0.3,
        ..Faults::default()
    };
    let (end, stats) = rollout("loss", devices, image, inject).await.unwrap();
    assert_all_succeeded(&end, &stats, devices);
    assert!(stats.injected.blocks_lost > 0, "{:?}", stats.injected);
    println!(
        "block loss: {devices} devices, {image} bytes, {} blocks lost, all succeeded",
        stats.injected.blocks_lost
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_mid_download_every_device_completes() {
    let _one = faults::serial().await;
    let devices = faults::sized(200, 1_000);
    let image = faults::sized(256 * 1024, 1024 * 1024);
    let inject = Faults {
        power_loss: 1.0,
        ..Faults::default()
    };
    let (end, stats) = rollout("power", devices, image, inject).await.unwrap();
    assert_all_succeeded(&end, &stats, devices);
    assert!(
        stats.injected.power_losses as usize >= devices / 2,
        "{:?}",
        stats.injected
    );
    println!(
        "power loss: {devices} devices, {image} bytes, {} power losses, all succeeded",
        stats.injected.power_losses
    );
}
