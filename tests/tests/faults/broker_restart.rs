//! Mosquitto restarted mid-download (it loses every session, subscription
//! and retained message): the bridge and the devices reconnect, and every
//! device completes the campaign.

use std::time::Duration;

use bridge::client::{ClientOptions, OpsClient};
use device_sim::fleet::Fleet;
use harness::faults;
use harness::{BrokerChoice, Stack, StackOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::msg::StatusState;

// Found a real bug when first written: the restarted broker had lost the
// retained announcements and memberships, so devices stopped their
// download; the bridge now republishes its retained messages whenever its
// publishing connection comes back (docs/FAULTS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_download_every_device_completes() {
    let _one = faults::serial().await;
    let devices = faults::sized(100, 1_000);
    let image = faults::sized(384 * 1024, 1024 * 1024);
    let restarts = faults::sized(1, 3);
    let mut rng = StdRng::seed_from_u64(faults::seed());
    let mut stack = Stack::start(StackOptions {
        broker: BrokerChoice::Mosquitto,
        // A slow block server: the download lasts seconds.
        tune: |c| c.blocks.egress_bytes_per_sec = 128 * 1024,
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts (mosquitto installed?)");
    let mut profile = faults::profile("br", 500);
    profile.connects_per_second = 500;
    let fleet = Fleet::spawn(faults::quick(stack.fleet(devices, profile))).expect("a fleet");
    let ops = stack.ops();
    faults::registered(ops, devices, Duration::from_secs(60))
        .await
        .unwrap();
    faults::group(ops, faults::GROUP, "suite=faults")
        .await
        .unwrap();
    let artifact = faults::push_firmware(ops, &stack.keys.release, "4.0.0", image)
        .await
        .unwrap();
    let id = faults::start_campaign(ops, faults::one_wave("fw-broker", &artifact))
        .await
        .unwrap();

    for r in 0..restarts {
        // Mid-download: some devices downloading, none installed yet.
        let at = fleet
            .wait_until(
                |s| s.count(StatusState::Downloading) > 0,
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|s| panic!("restart {r}: no download started: {}", s.line()));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1_000))).await;
        let now = fleet.stats();
        assert!(
            now.count(StatusState::Success) < devices,
            "restart {r} came after the download: {}",
            now.line()
        );
        eprintln!("broker restart {r}: {}", at.line());
        assert!(stack.restart_broker().await.expect("mosquitto restarts"));
    }

    // The stack's operator client lived on the old broker: use a new one.
    let ops = OpsClient::connect(ClientOptions::new(
        "127.0.0.1",
        stack.port,
        stack.keys.operator.clone(),
    ))
    .await
    .expect("an operator client");
    let end = faults::campaign_end(&ops, &id, Duration::from_secs(faults::sized(90, 300)))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", fleet.stats().line()));
    let stats = fleet
        .wait_until(
            |s| s.count(StatusState::Success) == devices,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|s| panic!("not every device completed: {}", s.line()));
    assert_eq!(end.summary.state, "completed");
    let c = end.current.expect("a tally").counts;
    assert_eq!((c.members as usize, c.success as usize), (devices, devices));
    println!(
        "broker restart: {devices} devices, {restarts} restarts mid-download, all succeeded ({})",
        stats.line()
    );
    ops.close().await;
    fleet.shutdown().await;
    let _ = stack.shutdown().await;
}
