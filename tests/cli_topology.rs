//! The topology past one broker (issue 19, docs/scaling.md), small: a core
//! Mosquitto and 3 edge Mosquittos bridged to it, PROTOCOL.md E1 on each
//! (the files `ota serve` keeps current, SIGHUP to the core and every
//! edge), `ota serve` on the core, 300 devices in three `ota sim`
//! processes, one per edge. A config campaign in three waves (1 % → 10 %
//! → 100 %) reaches every device through the edges, every Status is
//! acknowledged. Each edge holds only its own devices' logins. The
//! attacker's side: an unknown login, a device's login with another's
//! password, and the edges' own bridge account on an edge's devices'
//! listener are refused on every edge, and a device's own login works on
//! its edge only: not on another edge, not on the core.

use std::time::Duration;

use harness::raw::RawClient;
use harness::topology::campaign::{self, CampaignRun};
use harness::topology::{self, Topology, TopologyOptions};
use schemas::ops::{Command, ProvisionEntry};
use schemas::DeviceId;

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

    // Each edge's password file holds its own devices, the core's none.
    let ids = |path: &str| -> Vec<String> {
        std::fs::read_to_string(t.dir.join(path))
            .unwrap()
            .lines()
            .map(|l| l.split_once(':').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(ids("mosquitto/devices.passwd"), Vec::<String>::new());
    let mut known = std::collections::BTreeSet::new();
    for i in 0..t.edge_ports.len() {
        let name = topology::edge_name(i);
        let on_edge = ids(&format!("mosquitto/edges/{name}/devices.passwd"));
        let prefix = format!("{}-", topology::edge_id_prefix(i));
        assert_eq!(on_edge.len(), DEVICES / 3, "{name}: {on_edge:?}");
        assert!(
            on_edge.iter().all(|id| id.starts_with(&prefix)),
            "{on_edge:?}"
        );
        known.extend(on_edge);
    }
    assert_eq!(known.len(), DEVICES, "every device provisioned once");

    // A device's own login: on its edge, and nowhere else.
    let ops = t.ops(Duration::from_secs(30)).await.unwrap();
    let password = "e1-probe-password-0123456789";
    let _: serde_json::Value = ops
        .call_ok(Command::DeviceProvision {
            devices: vec![ProvisionEntry {
                id: DeviceId::new("e1-probe").unwrap(),
                hash: schemas::provisioning::hash_password(password),
                labels: Default::default(),
                trusts: None,
                cert_sha256: None,
            }],
            replace: false,
            upsert: false,
            more_batches: false,
        })
        .await
        .expect("provisioned (the reply waits for the files)");
    ops.close().await;
    let on = |port| RawClient::login(port, "e1-probe", password);
    assert!(on(t.edge_ports[0]).await.is_ok(), "on its own edge");
    assert!(on(t.edge_ports[1]).await.is_err(), "on another edge");
    assert!(on(t.core_devices_port).await.is_err(), "on the core");

    // The attacker's side, on every edge: the devices' password file is
    // ota's, judged there as on the core.
    for &port in &t.edge_ports {
        let refused = [
            ("ghost-1", "not-a-password-0123456789", "an unknown id"),
            ("e1-00001", "not-its-password-0123456", "a wrong password"),
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
