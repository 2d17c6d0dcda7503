//! The topology past one broker (issue 19, docs/scaling.md), small: a core
//! Mosquitto and 3 edge Mosquittos bridged to it, PROTOCOL.md E1 on each
//! (the files `ota serve` keeps current, SIGHUP to the core and every
//! edge), `ota serve` on the core, 300 devices in three `ota sim`
//! processes, one per edge. A config campaign in three waves (1 % → 10 %
//! → 100 %) reaches every device through the edges, every Status is
//! acknowledged; the attacker's side: an unknown login, a device's login
//! with another's password, and the edges' own bridge account on an
//! edge's devices' listener are refused on every edge.

use std::time::Duration;

use harness::raw::RawClient;
use harness::topology::campaign::{self, CampaignRun};
use harness::topology::{Topology, TopologyOptions};

const DEVICES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_in_waves_reaches_every_device_through_three_edges() {
    assert!(
        harness::mosquitto::binary().is_some(),
        "mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)"
    );
    let opts = TopologyOptions::new(env!("CARGO_BIN_EXE_ota"), 3);
    let mut t = Topology::start(opts).await.expect("the topology starts");
    let mut run = CampaignRun::config(DEVICES);
    // No faults here: every device succeeds, so the campaign completes
    // only when all have (at 95 % it may complete with a few on their way).
    run.success_bar_bp = 10_000;
    run.register_within = Duration::from_secs(120);
    run.campaign_within = Duration::from_secs(180);
    let f = campaign::run(&mut t, &run, &|s| eprintln!("{s}"))
        .await
        .expect("the campaign runs");
    eprintln!("{}", serde_json::to_string(&f).unwrap());
    assert_eq!(f.ended, "completed", "{f:?}");
    assert_eq!(
        f.waves_passed_secs.len(),
        3,
        "each wave's gate passed: {f:?}"
    );
    assert_eq!(f.succeeded, DEVICES as u64, "{f:?}");
    assert_eq!(f.sims.devices, DEVICES, "{f:?}");
    assert_eq!(f.sims.by_state.get("success"), Some(&DEVICES), "{f:?}");
    assert!(f.all_acked(), "every Status acknowledged: {f:?}");
    assert_eq!(f.sims.logins_refused, 0, "{f:?}");

    // The attacker's side, on every edge: the devices' password file is
    // ota's, judged there as on the core.
    let mut known = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(t.dir.join("mosquitto/devices.passwd"))
        .unwrap()
        .lines()
    {
        let (id, _) = line.split_once(':').unwrap();
        known.insert(id.to_string(), ());
    }
    assert_eq!(known.len(), DEVICES, "every device provisioned once");
    for &port in &t.edge_ports {
        let refused = [
            ("ghost-1", "not-a-password-0123456789", "an unknown id"),
            ("topo-00001", "not-its-password-0123456", "a wrong password"),
            (
                "ota-edge-1",
                "not-its-password-0123456",
                "the edges' account",
            ),
        ];
        for (id, pw, what) in refused {
            assert!(
                RawClient::login(port, id, pw).await.is_err(),
                "{what} logged in on the edge at {port}"
            );
        }
    }
    t.stop().await.expect("the topology stops");
}
