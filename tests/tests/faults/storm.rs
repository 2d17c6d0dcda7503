//! A connect storm against the embedded broker: every device of the fleet
//! connects at once (2,000 a second), with no pacing left to the broker,
//! each with its own password (provisioned first, as `ota sim` does), so
//! every CONNECT, PUBLISH and SUBSCRIBE is checked (PROTOCOL.md E1).
//! No panic in any thread, every device connected in the end, and the
//! bridge registered each one.
//!
//! The broker and the bridge are a real `ota serve` process with its
//! embedded rumqttd, the fleet is this process: at 10,000 devices each side
//! holds 10,000 sockets, and both in one process would pass this machine's
//! open-file limit (20,000).

use std::time::Duration;

use device_sim::fleet::{Fleet, FleetConfig};
use harness::faults;
use harness::faults::serve::{wait_ready_as, write_config, Serve, ServeBroker, SUITE_OPERATOR};
use harness::Keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_storm_ends_with_every_device_connected() {
    let _one = faults::serial().await;
    let panics = faults::panics();
    let devices = faults::sized(2_000, 10_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    let keys = Keys::generate();
    let broker = ServeBroker::Embedded(harness::free_port().expect("a free port"));
    let config = write_config(dir.path(), broker, &keys, 2 * 1024 * 1024).expect("the config");
    let serve = Serve::start(&config).expect("ota serve starts");
    let ops = wait_ready_as(
        broker.port(),
        &keys.operator,
        Some(SUITE_OPERATOR),
        Duration::from_secs(30),
    )
    .await
    .expect("the bridge answers");

    let mut profile = faults::profile("storm", 2_000);
    profile.trusted = vec![keys.release.verifying_key()];
    let mut cfg = FleetConfig::new("127.0.0.1", broker.port(), devices, profile);
    let ids = cfg.ids().expect("the fleet's ids");
    let logins =
        bridge::client::provision::logins(&ops, &ids, Some(&[keys.release.verifying_key()]))
            .await
            .expect("the fleet is provisioned");
    cfg.logins = std::sync::Arc::new(logins);
    let started = std::time::Instant::now();
    let fleet = Fleet::spawn(cfg).expect("a fleet");
    let limit = Duration::from_secs(faults::sized(120, 300));
    let stats = fleet
        .wait_until(|s| s.connected == devices, limit)
        .await
        .unwrap_or_else(|s| panic!("not every device connected: {}", s.line()));
    let connected = started.elapsed();
    faults::registered(&ops, devices, limit).await.unwrap();
    let registered = started.elapsed();
    assert_eq!(
        faults::panics(),
        panics,
        "a thread of the fleet panicked during the storm (see the output above)"
    );
    assert_eq!(
        serve.panics(),
        0,
        "a thread of ota serve panicked during the storm (see its output above)"
    );
    // Still serving: a command answered after the storm.
    ops.call(schemas::ops::Command::GroupList)
        .await
        .expect("the bridge answers after the storm");
    assert_eq!(stats.logins_refused, 0, "a provisioned device was refused");
    println!(
        "connect storm: {devices} devices, all connected in {:.1} s, registered in {:.1} s ({} errors)",
        connected.as_secs_f64(),
        registered.as_secs_f64(),
        stats.errors
    );
    fleet.shutdown().await;
    ops.close().await;
    serve.terminate().await.expect("ota serve stops");
}
