//! A connect storm against the embedded broker: every device of the fleet
//! connects at once (2,000 a second), with no pacing left to the broker.
//! No panic in any thread, every device connected in the end, and the
//! bridge registered each one.

use std::time::Duration;

use device_sim::fleet::Fleet;
use harness::faults;
use harness::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_storm_ends_with_every_device_connected() {
    let _one = faults::serial().await;
    let panics = faults::panics();
    let devices = faults::sized(2_000, 10_000);
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    let started = std::time::Instant::now();
    let fleet =
        Fleet::spawn(stack.fleet(devices, faults::profile("storm", 2_000))).expect("a fleet");
    let limit = Duration::from_secs(faults::sized(120, 300));
    let stats = fleet
        .wait_until(|s| s.connected == devices, limit)
        .await
        .unwrap_or_else(|s| panic!("not every device connected: {}", s.line()));
    let connected = started.elapsed();
    faults::registered(stack.ops(), devices, limit)
        .await
        .unwrap();
    let registered = started.elapsed();
    assert_eq!(
        faults::panics(),
        panics,
        "a thread panicked during the storm (see the output above)"
    );
    let hellos = stack
        .bridge()
        .map(|b| b.metrics().snapshot().hellos)
        .unwrap_or_default();
    assert!(hellos >= devices as u64, "{hellos} hellos");
    println!(
        "connect storm: {devices} devices, all connected in {:.1} s, registered in {:.1} s ({} errors)",
        connected.as_secs_f64(),
        registered.as_secs_f64(),
        stats.errors
    );
    fleet.shutdown().await;
    let _ = stack.shutdown().await;
}
