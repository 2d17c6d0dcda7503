//! PROTOCOL.md E1 on a real Mosquitto (issue 12): the files
//! `Identity::mosquitto_files` renders, loaded by /usr/sbin/mosquitto, and
//! an attacker holding one device's login. Impersonation, forged Status,
//! retained forgeries, `#` and another group's topics are refused or
//! deliver nothing; a member gets its group's announcement and loses it
//! when it leaves the group; a revoked device is disconnected by the reload
//! and refused at its next login. Each change waits for Mosquitto's own
//! "Reloading config." line, not for a fixed time.

use std::collections::BTreeMap;
use std::time::Duration;

use bridge::identity::{
    mosquitto, Admission, CredentialRecord, Identity, IdentityConfig, Standing,
};
use harness::mosquitto::Mosquitto;
use harness::raw::{Got, RawClient};
use schemas::msg::{Membership, WireMessage};
use schemas::provisioning::generate_password;
use schemas::topic::{Topic, Topics};
use schemas::{DeviceId, GroupName};

fn record(id: &DeviceId, password: &str, standing: Standing) -> CredentialRecord {
    CredentialRecord::new(id.clone(), password, standing, 1)
}

/// Writes the files and waits until Mosquitto has reloaded them.
async fn write(m: &Mosquitto, files: &mosquitto::Files) {
    for (name, text) in files.each() {
        std::fs::write(m.dir().join(name), text).unwrap();
    }
    m.reload().await.unwrap();
}

/// Publishes `marker` on the receiver's own Membership topic (as the
/// bridge) and returns everything the receiver got before it.
async fn before_marker(
    bridge: &RawClient,
    rx: &mut RawClient,
    t: &Topics,
    me: &DeviceId,
) -> Vec<Got> {
    let topic = t.build(&Topic::Groups(me.clone()));
    bridge
        .publish(&topic, false, b"marker".to_vec())
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Ok(Ok(Got::Publish { topic: tp, payload })) if tp == topic && payload == b"marker" => {
                return seen
            }
            Ok(Ok(g)) => seen.push(g),
            other => panic!("no marker: {other:?} after {seen:?}"),
        }
    }
}

fn publishes(got: &[Got]) -> Vec<&Got> {
    got.iter()
        .filter(|g| matches!(g, Got::Publish { .. }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e1_holds_on_mosquitto_with_generated_files() {
    if harness::mosquitto::binary().is_none() {
        panic!("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)");
    }
    let t = Topics::default();
    let (d1, d2, d3) = (
        DeviceId::new("dev-1").unwrap(),
        DeviceId::new("dev-2").unwrap(),
        DeviceId::new("dev-3").unwrap(),
    );
    let (p1, p2, p3, pb) = (
        generate_password(),
        generate_password(),
        generate_password(),
        generate_password(),
    );
    let identity = Identity::new(
        IdentityConfig {
            topics: t.clone(),
            bridge_client_id: "ota-bridge".into(),
            bridge_login: Some(("ota-bridge".into(), pb.clone())),
            operators: BTreeMap::new(),
            admission: Admission::Provisioned,
            registrations_per_minute: 0,
        },
        &[
            record(&d1, &p1, Standing::Active),
            record(&d2, &p2, Standing::Active),
            record(&d3, &p3, Standing::Revoked),
        ],
    );
    let acme = GroupName::new("acme").unwrap();
    let member = Membership {
        groups: vec![acme.clone()],
    }
    .encode();
    identity.observe(&Topic::Groups(d1.clone()), &member);
    let files = identity.mosquitto_files();
    let (m, service) = Mosquitto::start_secured(&files.each(), |dir, dp, sp| {
        mosquitto::conf(dir, ("127.0.0.1", dp), ("127.0.0.1", sp))
    })
    .await
    .unwrap();
    let port = m.port;

    // Logins: a revoked device, a wrong password, the bridge's name on the
    // devices' listener and a device on the service listener are refused.
    assert!(
        RawClient::login(port, "dev-3", &p3).await.is_err(),
        "revoked dev-3 logged in"
    );
    assert!(
        RawClient::login(port, "dev-1", &p2).await.is_err(),
        "dev-1 with dev-2's password"
    );
    assert!(
        RawClient::login(port, "ota-bridge", &pb).await.is_err(),
        "bridge on the devices' listener"
    );
    assert!(
        RawClient::login(service, "dev-2", &p2).await.is_err(),
        "a device on the service listener"
    );

    let mut bridge = RawClient::login(service, "ota-bridge", &pb).await.unwrap();
    bridge
        .subscribe(&[t.filter(schemas::topic::Filter::AllStatus)])
        .await
        .unwrap();
    let campaign = t.build(&Topic::GroupCampaign(acme.clone()));
    bridge
        .publish(&campaign, true, b"announcement".to_vec())
        .await
        .unwrap();
    bridge
        .publish(&t.build(&Topic::Groups(d1.clone())), true, member.clone())
        .await
        .unwrap();

    // The attacker (dev-2, not in acme).
    let mut attacker = RawClient::login(port, "dev-2", &p2).await.unwrap();
    attacker
        .subscribe(&[
            "#".to_string(),
            format!("{}/ops/#", t.prefix()),
            campaign.clone(),
            t.build(&Topic::Groups(d1.clone())),
            t.build(&Topic::Groups(d2.clone())),
        ])
        .await
        .unwrap();
    // Forged Status as dev-1, then its own: the bridge hears its own only.
    attacker
        .publish(
            &t.build(&Topic::Status(d1.clone())),
            false,
            b"forged".to_vec(),
        )
        .await
        .unwrap();
    attacker
        .publish(&t.build(&Topic::Status(d2.clone())), false, b"own".to_vec())
        .await
        .unwrap();
    let (heard, _) = bridge
        .until(|g| match g {
            Got::Publish { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(heard, b"own", "the bridge heard a forged Status first");
    // Retained forgeries on bridge-owned topics.
    for topic in [
        t.build(&Topic::Emergency),
        campaign.clone(),
        t.build(&Topic::Groups(d1.clone())),
        t.build(&Topic::Ack(d1.clone())),
    ] {
        attacker
            .publish(&topic, true, b"forged".to_vec())
            .await
            .unwrap();
    }
    // Nothing of others' reached the attacker through `#` or the group it
    // is not in: before its own marker only its own Membership echo may come.
    let got = before_marker(&bridge, &mut attacker, &t, &d2).await;
    let foreign: Vec<_> = publishes(&got)
        .into_iter()
        .filter(|g| !matches!(g, Got::Publish { topic, .. } if topic.contains("/dev-2/")))
        .collect();
    assert!(foreign.is_empty(), "the attacker read {foreign:?}");

    // The member reads its group's announcement, the bridge's, not a forgery.
    let mut dev1 = RawClient::login(port, "dev-1", &p1).await.unwrap();
    let own = t.build(&Topic::Groups(d1.clone()));
    dev1.subscribe(&[campaign.clone(), t.build(&Topic::Emergency), own.clone()])
        .await
        .unwrap();
    let got = before_marker(&bridge, &mut dev1, &t, &d1).await;
    let ps: Vec<_> = publishes(&got)
        .into_iter()
        .filter(|g| !matches!(g, Got::Publish { topic, .. } if *topic == own))
        .collect();
    assert_eq!(
        ps,
        vec![&Got::Publish {
            topic: campaign.clone(),
            payload: b"announcement".to_vec()
        }],
        "the member's retained view"
    );

    // It leaves the group: what is published there next does not reach it.
    identity.observe(&Topic::Groups(d1.clone()), &[]);
    write(&m, &identity.mosquitto_files()).await;
    bridge
        .publish(&campaign, false, b"after-leave".to_vec())
        .await
        .unwrap();
    let got = before_marker(&bridge, &mut dev1, &t, &d1).await;
    assert!(
        publishes(&got).is_empty(),
        "after leaving the group: {got:?}"
    );

    // dev-2 revoked: refused at its next login.
    identity.upsert(&record(&d2, "ignored", Standing::Revoked));
    write(&m, &identity.mosquitto_files()).await;
    // The reload closes its open connection (Mosquitto checks connected
    // clients against the new password file) ...
    attacker
        .closed()
        .await
        .expect("the reload did not close revoked dev-2's connection");
    drop(attacker);
    // ... and it is refused from then on.
    assert!(
        RawClient::login(port, "dev-2", &p2).await.is_err(),
        "revoked dev-2 logged in"
    );
}
