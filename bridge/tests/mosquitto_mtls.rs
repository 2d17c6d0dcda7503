//! Revocation on Mosquitto over mutual TLS (issue 14), the attacker's
//! test. With `[broker.mosquitto.tls]` Mosquitto takes a device's username
//! from its certificate's CN (`use_identity_as_username`) and reads no
//! password file on the devices' listener, so a revoked device's
//! certificate, which the fleet CA still signs, still completes its
//! handshake and logs in. What must hold is that it can then do nothing:
//! the devices' ACL has a section for each active device only (no
//! `pattern` rules, which would give any CN its own topics), so its
//! subscriptions are refused and its publishes reach no one; a device
//! revoked while connected loses its rights at the reload; an active
//! device over the same listener keeps its own.

use std::collections::BTreeMap;

use bridge::identity::{
    mosquitto, Admission, CredentialRecord, Identity, IdentityConfig, Standing,
};
use broker::mosquitto::{MosquittoConfig, MosquittoTls};
use harness::mosquitto::Mosquitto;
use harness::pki::TestPki;
use harness::raw::{Got, RawClient};
use rumqttc::SubscribeReasonCode;
use schemas::provisioning::generate_password;
use schemas::topic::{Filter, Topic, Topics};
use schemas::DeviceId;

fn record(id: &DeviceId, standing: Standing) -> CredentialRecord {
    CredentialRecord::new(id.clone(), &generate_password(), standing, 1)
}

async fn write(m: &Mosquitto, files: &mosquitto::Files) {
    for (name, text) in files.each() {
        std::fs::write(m.dir().join(name), text).unwrap();
    }
    m.reload().await.unwrap();
}

/// The device's own topics: what a `%c` pattern would have given it.
fn own(t: &Topics, id: &DeviceId) -> Vec<String> {
    [
        Topic::Groups(id.clone()),
        Topic::Ack(id.clone()),
        Topic::DeviceBlocks(id.clone()),
    ]
    .iter()
    .map(|x| t.build(x))
    .collect()
}

/// The bridge's marker topic: one it may write and reads.
fn marker(t: &Topics) -> String {
    t.build(&Topic::Groups(DeviceId::new("marker").unwrap()))
}

/// The bridge's connection, counting its publishes so that each waits
/// for its own PUBACK (not an earlier one's, which may come after the
/// echo of its message).
struct Service {
    raw: RawClient,
    sent: usize,
}

impl Service {
    /// Publishes and waits for its PUBACK (Mosquitto has routed it);
    /// returns what came meanwhile.
    async fn publish(&mut self, topic: &str, payload: &[u8]) -> Vec<Got> {
        self.raw
            .publish(topic, false, payload.to_vec())
            .await
            .unwrap();
        self.sent += 1;
        self.raw.pubacks(self.sent).await.unwrap()
    }
}

/// Publishes on `id`'s status topic and reports whether the bridge
/// (subscribed to every status) got it: the device's PUBACK says
/// Mosquitto routed or dropped it, and the bridge's marker, published
/// after that, comes after it.
async fn status_arrives(
    dev: &mut RawClient,
    bridge: &mut Service,
    t: &Topics,
    id: &DeviceId,
) -> bool {
    let topic = t.build(&Topic::Status(id.clone()));
    let acked = dev.pubacks_seen() + 1;
    dev.publish(&topic, false, b"forged?".to_vec())
        .await
        .unwrap();
    dev.pubacks(acked).await.unwrap();
    let marker = marker(t);
    let mut seen = bridge.publish(&marker, b"marker").await;
    let mut got = false;
    loop {
        for g in seen.drain(..) {
            match g {
                Got::Publish { topic: tp, .. } if tp == topic => got = true,
                Got::Publish { topic: tp, .. } if tp == marker => return got,
                _ => {}
            }
        }
        seen.push(bridge.raw.next().await.expect("the marker comes back"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_devices_certificate_gets_no_rights_on_mosquitto() {
    if harness::mosquitto::binary().is_none() {
        panic!("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)");
    }
    let t = Topics::default();
    let pki = TestPki::new();
    let (d1, d2, d3) = (
        DeviceId::new("dev-1").unwrap(),
        DeviceId::new("dev-2").unwrap(),
        DeviceId::new("dev-3").unwrap(),
    );
    let pb = generate_password();
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
            record(&d1, Standing::Active),
            record(&d2, Standing::Active),
            record(&d3, Standing::Revoked),
        ],
    );
    // Mosquitto reads its certificate and key as its own user: its
    // group's, as docs/operations.md says.
    harness::mosquitto::share_with_mosquitto(pki.dir()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let key = pki.dir().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(
        &key,
        None,
        std::fs::metadata(pki.dir()).ok().map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.gid()
        }),
    )
    .unwrap();
    let tls = MosquittoTls {
        ca_file: pki.ca_file(),
        cert_file: pki.dir().join("server.crt"),
        key_file: pki.dir().join("server.key"),
    };
    let files = identity.mosquitto_files();
    let (m, service) = Mosquitto::start_secured(&files.each(), |dir, dp, sp| {
        let cfg = MosquittoConfig {
            dir: dir.to_path_buf(),
            pid_file: None,
            edge_pid_files: Vec::new(),
            devices_listen: format!("127.0.0.1:{dp}").parse().unwrap(),
            operators: BTreeMap::new(),
            tls: Some(tls),
            edges: Vec::new(),
        };
        bridge::mosquitto::dir::conf(&cfg, dir, ("127.0.0.1", sp))
    })
    .await
    .unwrap();
    let port = m.port;
    let bridge_cert = pki.device("ota-bridge");
    let raw = RawClient::tls_login(
        service,
        "ota-bridge",
        Some(("ota-bridge", &pb)),
        pki.client(Some(&bridge_cert)),
    )
    .await
    .expect("the bridge over TLS");
    let mut bridge = Service { raw, sent: 0 };
    let (codes, _) = bridge
        .raw
        .subscribe(&[t.filter(Filter::AllStatus), marker(&t)])
        .await
        .unwrap();
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
        "{codes:?}"
    );

    // No certificate, and another CA's certificate: refused in the handshake.
    assert!(RawClient::tls_login(port, "dev-1", None, pki.client(None))
        .await
        .is_err());
    let stranger = TestPki::new().device("dev-1");
    assert!(
        RawClient::tls_login(port, "dev-1", None, pki.client(Some(&stranger)))
            .await
            .is_err()
    );

    // Revoked dev-3: its certificate verifies, so Mosquitto lets it in,
    // and then nothing reaches it and nothing it sends arrives
    // (Mosquitto 2.0 grants a v3.1.1 SUBSCRIBE its ACL refuses, and then
    // delivers nothing on it).
    let mut three =
        RawClient::tls_login(port, "dev-3", None, pki.client(Some(&pki.device("dev-3"))))
            .await
            .expect("Mosquitto reads no password file with use_identity_as_username");
    three.subscribe(&own(&t, &d3)).await.unwrap();
    assert!(
        !membership_arrives(&mut bridge, &mut three, &t, &d3).await,
        "revoked dev-3 reads its Membership"
    );
    assert!(
        !status_arrives(&mut three, &mut bridge, &t, &d3).await,
        "revoked dev-3's status reached the bridge"
    );

    // Active dev-1 over the same listener: its own topics both ways; it
    // cannot be dev-2 (its client id is its CN).
    let mut one = RawClient::tls_login(port, "dev-1", None, pki.client(Some(&pki.device("dev-1"))))
        .await
        .expect("dev-1 by its certificate");
    one.subscribe(&own(&t, &d1)).await.unwrap();
    assert!(
        membership_arrives(&mut bridge, &mut one, &t, &d1).await,
        "dev-1's Membership"
    );
    assert!(
        status_arrives(&mut one, &mut bridge, &t, &d1).await,
        "dev-1's status"
    );
    one.subscribe(&own(&t, &d2)).await.unwrap();
    assert!(
        !membership_arrives(&mut bridge, &mut one, &t, &d2).await,
        "dev-1 read dev-2's Membership"
    );
    assert!(
        !status_arrives(&mut one, &mut bridge, &t, &d2).await,
        "dev-1 wrote as dev-2"
    );

    // dev-1 revoked while connected: from the reload on, nothing it sends
    // arrives and nothing for it is delivered (or Mosquitto closes it).
    identity.upsert(&record(&d1, Standing::Revoked));
    write(&m, &identity.mosquitto_files()).await;
    assert!(
        !status_arrives(&mut one, &mut bridge, &t, &d1).await,
        "revoked dev-1's status reached the bridge"
    );
    assert!(
        !membership_arrives(&mut bridge, &mut one, &t, &d1).await,
        "revoked dev-1 still reads its Membership"
    );
}

/// The bridge publishes on `id`'s Membership topic and waits for its
/// PUBACK (Mosquitto has routed it, and queued it to every subscriber
/// that may read it); the device then makes a round trip, before whose
/// SUBACK anything Mosquitto queued to it arrives.
async fn membership_arrives(
    bridge: &mut Service,
    dev: &mut RawClient,
    t: &Topics,
    id: &DeviceId,
) -> bool {
    let topic = t.build(&Topic::Groups(id.clone()));
    bridge.publish(&topic, b"groups").await;
    let (_, before) = dev.subscribe(&[marker(t)]).await.unwrap();
    before
        .iter()
        .any(|g| matches!(g, Got::Publish { topic: tp, .. } if *tp == topic))
}
