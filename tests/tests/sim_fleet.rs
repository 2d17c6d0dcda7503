//! The simulator against the real embedded broker: a fleet with every kind
//! of fault updates its firmware; each device ends in the terminal state
//! its faults call for, and no Status is lost.

mod sim_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use device_sim::fleet::device::spec;
use device_sim::fleet::{Fleet, FleetConfig, Profile};
use device_sim::testkit::{announcement, pattern_image, TestImage};
use harness::minibridge::MiniBridge;
use schemas::keys::{verifying_key_to_text, SigningKey};
use schemas::msg::{ErrorCode, Kind, StatusState};
use schemas::topic::{Topic, Topics};
use schemas::GroupName;
use sim_support::broker;

const N: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_fleet_updates_and_loses_no_status() {
    let addr = broker();
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let profile = Profile::parse(
        &format!(
            r#"
            [fleet]
            id_prefix = "fleet-t"
            seed = 3
            [[arch]]
            name = "esp32"
            [versions]
            main = "1.0.0"
            [keys]
            trusted = ["{}"]
            [faults]
            block_loss = 0.05
            disconnect_mid_download = 0.15
            power_loss = 0.15
            boot_failure = 0.1
            busy_deferral = 0.15
            busy_deferral_secs = 1
            wrong_key = 0.1
            "#,
            verifying_key_to_text(&key.verifying_key()).trim()
        ),
        Path::new("test.toml"),
    )
    .unwrap();
    let specs: Vec<_> = (1..=N).map(|i| spec(&profile, i, None).unwrap()).collect();
    // The draw gives every kind of fault at least once.
    assert!(specs.iter().any(|s| s.wrong_key));
    assert!(specs.iter().any(|s| s.fail_boot && !s.wrong_key));
    assert!(specs.iter().any(|s| s.busy && !s.wrong_key));
    assert!(specs
        .iter()
        .any(|s| s.power_loss_at.is_some() && !s.wrong_key));

    let img = TestImage::new(
        "fw-2.0.0-esp32",
        Kind::Firmware,
        "main",
        "2.0.0",
        "esp32",
        pattern_image(64 * 1024, 9),
        1024,
    )
    .unwrap();
    let bridge = MiniBridge::start("127.0.0.1", addr.port(), Topics::default())
        .await
        .unwrap();
    bridge.add_image(img.clone());
    let g = GroupName::new("fleet-t").unwrap();
    for s in &specs {
        bridge
            .set_groups(&s.id, std::slice::from_ref(&g))
            .await
            .unwrap();
    }
    let ann = announcement("camp-fleet", Kind::Firmware, vec![img.envelope(&key)]).unwrap();
    bridge
        .announce(Topic::GroupCampaign(g), Some(&ann))
        .await
        .unwrap();

    let fleet = Fleet::spawn(FleetConfig::new("127.0.0.1", addr.port(), N, profile)).unwrap();
    let stats = fleet
        .wait_until(
            |s| s.terminal() == N && s.acked == s.statuses,
            Duration::from_secs(90),
        )
        .await
        .unwrap_or_else(|s| panic!("fleet did not finish: {}", s.line()));

    let wrong = specs.iter().filter(|s| s.wrong_key).count();
    let rolled = specs.iter().filter(|s| !s.wrong_key && s.fail_boot).count();
    assert_eq!(
        stats.failed(ErrorCode::UnknownKey),
        wrong,
        "{}",
        stats.line()
    );
    assert_eq!(
        stats.failed(ErrorCode::BootFailed),
        rolled,
        "{}",
        stats.line()
    );
    assert_eq!(
        stats.count(StatusState::Success),
        N - wrong - rolled,
        "{}",
        stats.line()
    );
    assert!(
        stats.injected.power_losses > 0
            && stats.injected.disconnects > 0
            && stats.injected.blocks_lost > 0
    );

    // Nothing lost: every Status a device made reached the bridge, and every
    // ack a device applied covers only Statuses the bridge holds.
    let seen = bridge.seen();
    let stored: BTreeSet<(String, u64)> = seen
        .statuses
        .iter()
        .map(|(d, s)| (d.to_string(), s.seq))
        .collect();
    let sent = fleet.sent();
    let acks = fleet.acks();
    for (id, seqs) in &sent {
        for seq in seqs {
            assert!(
                stored.contains(&(id.to_string(), *seq)),
                "{id} seq {seq} never arrived"
            );
        }
        assert_eq!(&acks[id], seqs, "{id}: every Status acknowledged");
    }
    // Deferring devices said so once, then went on.
    let deferred: BTreeSet<String> = seen
        .statuses
        .iter()
        .filter(|(_, s)| s.state == StatusState::Deferred)
        .map(|(d, _)| d.to_string())
        .collect();
    let busy: BTreeSet<String> = specs
        .iter()
        .filter(|s| s.busy && !s.wrong_key)
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(deferred, busy);
    let end = fleet.shutdown().await;
    assert_eq!(end.running, 0);
    assert_eq!(end.errors, 0);
}
