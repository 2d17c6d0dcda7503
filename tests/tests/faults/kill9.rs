//! `ota serve`, a real process over Mosquitto, killed with SIGKILL at
//! random points of a campaign, several times in one run. After every
//! kill, each (device, seq) a device saw acknowledged is in the dead
//! bridge's store; after the last restart the campaign ends completed
//! with the counts the devices report, and every Status made is
//! acknowledged.

use std::time::Duration;

use device_sim::fleet::{Fleet, FleetConfig, FleetHandle};
use harness::faults;
use harness::faults::serve::{wait_ready, write_config, Serve, ServeBroker};
use harness::mosquitto::Mosquitto;
use harness::Keys;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::msg::StatusState;

const READY: Duration = Duration::from_secs(30);

/// Opens the dead bridge's store and returns how many acknowledged
/// (device, seq) pairs it holds, failing on any it lost.
fn check_store(data: &std::path::Path, fleet: &FleetHandle, when: &str) -> usize {
    // Taken after the process died: every ack a device saw was published
    // by a bridge that had flushed the report before.
    let acked = fleet.acks();
    let store = bridge::store::Store::open(data).expect("the dead bridge's store opens");
    let lost = faults::lost_acks(&store, &acked).expect("the store reads");
    assert!(
        lost.is_empty(),
        "{when}: {} acknowledged reports lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    faults::ack_count(&acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_campaign_loses_no_acknowledged_status() {
    let _one = faults::serial().await;
    let devices = faults::sized(100, 1_000);
    let image = faults::sized(320 * 1024, 1024 * 1024);
    let kills = faults::sized(5, 10);
    // A slow block server: the download lasts several seconds of bridge
    // uptime, so the kills land before, during and after it.
    // The full run's 1 MiB takes 13 s at the slowest budget the bridge
    // accepts (80 KiB/s), so its 10 kills land while blocks still flow.
    let egress = faults::sized(96 * 1024, 80 * 1024);
    let mut rng = StdRng::seed_from_u64(faults::seed());

    let mosquitto = Mosquitto::start().await.expect("mosquitto starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    let keys = Keys::generate();
    let config = write_config(
        dir.path(),
        ServeBroker::External(mosquitto.port),
        &keys,
        egress,
    )
    .expect("the config");
    let mut serve = Serve::start(&config).expect("ota serve starts");
    let mut ops = wait_ready(mosquitto.port, &keys.operator, READY)
        .await
        .expect("the bridge answers");

    let mut profile = faults::profile("k9", 500);
    profile.trusted = vec![keys.release.verifying_key()];
    let fleet = Fleet::spawn(faults::quick(FleetConfig::new(
        "127.0.0.1",
        mosquitto.port,
        devices,
        profile,
    )))
    .expect("the fleet starts");
    faults::registered(&ops, devices, Duration::from_secs(60))
        .await
        .unwrap();
    faults::group(&ops, faults::GROUP, "suite=faults")
        .await
        .unwrap();
    let artifact = faults::push_firmware(&ops, &keys.release, "3.0.0", image)
        .await
        .unwrap();
    let id = faults::start_campaign(&ops, faults::one_wave("fw-kill9", &artifact))
        .await
        .unwrap();

    // Kill points: after each (re)start, a random uptime of 0.3 to 2 s, or
    // sooner once the fleet made a random N/4 to 2N more Statuses (the
    // report storms of install and success); never once every device
    // succeeded.
    let mut landed = 0;
    let mut checked = 0;
    for k in 0..kills {
        let uptime = Duration::from_millis(rng.gen_range(300..2_000));
        let more = rng.gen_range(devices as u64 / 4..=2 * devices as u64);
        let made = fleet.stats().statuses;
        let reached = fleet
            .wait_until(
                |s| s.count(StatusState::Success) == devices || s.statuses >= made + more,
                uptime,
            )
            .await;
        let at = match reached {
            Ok(s) if s.count(StatusState::Success) == devices => break,
            Ok(s) | Err(s) => s,
        };
        eprintln!(
            "kill {k} (uptime {uptime:?} or {more} more statuses): {}",
            at.line()
        );
        ops.close().await;
        serve.kill9().expect("kill -9");
        landed += 1;
        checked = check_store(&data, &fleet, &format!("after kill {k}"));
        serve = Serve::start(&config).expect("ota serve starts again");
        ops = wait_ready(mosquitto.port, &keys.operator, READY)
            .await
            .expect("the restarted bridge answers");
    }
    assert!(
        landed >= kills.min(3),
        "only {landed} of {kills} kills came mid-campaign: make the campaign longer"
    );

    let end = faults::campaign_end(&ops, &id, Duration::from_secs(300))
        .await
        .unwrap();
    let stats = fleet
        .wait_until(
            |s| s.count(StatusState::Success) == devices && s.acked == s.statuses,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|s| panic!("not every Status acknowledged: {}", s.line()));
    assert_eq!(end.summary.state, "completed");
    let c = end.current.expect("a tally").counts;
    assert_eq!(
        (c.members as usize, c.success as usize, c.failure, c.pending),
        (devices, stats.count(StatusState::Success), 0, 0)
    );

    ops.close().await;
    let code = serve.terminate().await.expect("ota serve stops");
    assert!(code.success(), "ota serve exits 0 on SIGTERM: {code:?}");
    let total = check_store(&data, &fleet, "after the last stop");
    println!(
        "kill -9: {devices} devices, {landed} kills mid-campaign, {checked} acks checked at the last kill, \
         {total} at the end, none lost"
    );
    fleet.shutdown().await;
}
