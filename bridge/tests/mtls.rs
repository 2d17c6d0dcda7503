//! Devices that log in by certificate (issue 14): the bridge's embedded
//! broker with a TLS listener and `client_ca_file` beside its plain one,
//! its `Identity` deciding, as `ota serve` runs it. A provisioned device's
//! certificate (CN = its id) is its login, and PROTOCOL.md E1 applies to
//! it as to a password login; another device's client id, a device that is
//! not provisioned, no certificate and another CA's certificate are
//! refused; rotating a device refuses its old certificate from then on
//! (the registry's revocation list), revoking it refuses every one, and
//! both close its open connection. And a small campaign completes on
//! reference devices that log in by certificate.

mod blocks_common;
mod campaign_common;
mod common;
mod secured_common;

use std::net::SocketAddr;

use bridge::client::OpsClient;
use bridge::identity::Refused;
use campaign_common::{
    artifact, call, create, group, registered, wait_state, DeviceOpts, Devices, Release, LONG,
};
use harness::pki::TestPki;
use harness::raw::{Got, RawClient};
use rumqttc::{QoS, SubscribeReasonCode};
use schemas::msg::Kind;
use schemas::ops::{Command, ProvisionEntry};
use schemas::topic::{Topic, Topics};
use schemas::CampaignId;
use secured_common::*;
use serde_json::json;
use tls::pki::Issued;

/// The secured stack with a mutual-TLS listener; its port.
async fn mtls_stack(pki: &TestPki) -> (common::Stack, u16) {
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .expect("an address");
    let stack = secured_stack_with(Some(pki.listener(addr, true))).await;
    (stack, addr.port())
}

/// `ota devices provision` (or `rotate`, with `replace`) of `id` with a
/// password and the certificate `cert`.
async fn provision(ops: &OpsClient, id: &str, cert: &Issued, replace: bool) -> Result<(), String> {
    let entry = ProvisionEntry {
        id: dev(id),
        hash: schemas::provisioning::hash_password("unused-password-0123456789"),
        labels: Default::default(),
        trusts: None,
        cert_sha256: Some(cert.fingerprint()),
    };
    let cmd = Command::DeviceProvision {
        devices: vec![entry],
        replace,
        upsert: false,
        more_batches: false,
    };
    ops.call_ok::<serde_json::Value>(cmd)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn by_cert(pki: &TestPki, port: u16, id: &str, cert: &Issued) -> Option<RawClient> {
    RawClient::tls_login(port, id, None, pki.client(Some(cert)))
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_logs_in_by_its_certificate_under_e1_and_strangers_are_refused() {
    let pki = TestPki::new();
    let (stack, port) = mtls_stack(&pki).await;
    let ops = alice(&stack).await;
    let (c1, c2) = (pki.device("cert-1"), pki.device("cert-2"));
    provision(&ops, "cert-1", &c1, false)
        .await
        .expect("provisioned");

    // In by its certificate, no password; E1 as for a password login.
    let mut one = by_cert(&pki, port, "cert-1", &c1)
        .await
        .expect("cert-1 logs in by its certificate");
    let t = Topics::default();
    let (codes, _) = one
        .subscribe(&[
            t.build(&Topic::Groups(dev("cert-1"))),
            t.build(&Topic::Groups(dev("cert-2"))),
            "#".into(),
        ])
        .await
        .unwrap();
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure
        ]
    );
    let pub0 = refused(&stack, Refused::Publish);
    one.publish(
        &t.build(&Topic::Status(dev("cert-2"))),
        false,
        b"forged".to_vec(),
    )
    .await
    .unwrap();
    one.until(|g| (*g == Got::PubAck).then_some(()))
        .await
        .unwrap();
    assert_eq!(refused(&stack, Refused::Publish) - pub0, 1);

    // cert-1's certificate as cert-2, with or without cert-2's name.
    let mismatch0 = refused(&stack, Refused::ClientIdMismatch);
    assert!(by_cert(&pki, port, "cert-2", &c1).await.is_none());
    let as_other =
        RawClient::tls_login(port, "cert-2", Some(("cert-2", "x")), pki.client(Some(&c1)));
    assert!(as_other.await.is_err());
    assert_eq!(refused(&stack, Refused::ClientIdMismatch) - mismatch0, 2);
    // The fleet CA signed cert-2's certificate, but cert-2 is not
    // provisioned.
    let bad0 = refused(&stack, Refused::BadCredentials);
    assert!(by_cert(&pki, port, "cert-2", &c2).await.is_none());
    assert_eq!(refused(&stack, Refused::BadCredentials) - bad0, 1);
    // No certificate; another CA's, with the right CN: refused in the
    // handshake, before the registry is asked.
    let no_cert = RawClient::tls_login(port, "cert-1", Some(("cert-1", "x")), pki.client(None));
    assert!(no_cert.await.is_err());
    let stranger = TestPki::new().device("cert-1");
    assert!(by_cert(&pki, port, "cert-1", &stranger).await.is_none());
    // An operator over mutual TLS: a fleet certificate for the handshake,
    // its own account for the login.
    RawClient::tls_login(port, "ota-cli-alice", Some(ALICE), pki.client(Some(&c2)))
        .await
        .expect("alice over mutual TLS");
    // cert-1 was not disturbed by any of it.
    let (codes, _) = one
        .subscribe(&[t.build(&Topic::Ack(dev("cert-1")))])
        .await
        .unwrap();
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_refuses_the_old_certificate_and_revoking_refuses_every_one() {
    let pki = TestPki::new();
    let (stack, port) = mtls_stack(&pki).await;
    let ops = alice(&stack).await;
    let (old, new) = (pki.device("rot-1"), pki.device("rot-1"));
    provision(&ops, "rot-1", &old, false)
        .await
        .expect("provisioned");
    let mut first = by_cert(&pki, port, "rot-1", &old)
        .await
        .expect("the first certificate logs in");

    // Rotate to a new certificate: the session on the old one is closed,
    // the old one refused from now on, the new one let in.
    provision(&ops, "rot-1", &new, true).await.expect("rotated");
    first.closed().await.expect("the old session is closed");
    let revoked0 = refused(&stack, Refused::CertificateRevoked);
    assert!(by_cert(&pki, port, "rot-1", &old).await.is_none());
    assert_eq!(refused(&stack, Refused::CertificateRevoked) - revoked0, 1);
    assert!(stack.bridge().identity().cert_revoked(&old.fingerprint()));
    let mut second = by_cert(&pki, port, "rot-1", &new)
        .await
        .expect("the new certificate logs in");
    // A rotation back to a revoked certificate is refused.
    let back = provision(&ops, "rot-1", &old, true).await.unwrap_err();
    assert!(back.contains("was revoked"), "{back}");

    // Revoke the device: whatever it presents is refused.
    let _: serde_json::Value = ops
        .call_ok(Command::DeviceRevoke { id: dev("rot-1") })
        .await
        .expect("revoked");
    second.closed().await.expect("its session is closed");
    let device0 = refused(&stack, Refused::Revoked);
    assert!(by_cert(&pki, port, "rot-1", &new).await.is_none());
    assert!(refused(&stack, Refused::Revoked) > device0);
    // And should it be provisioned again, its last certificate stays out.
    assert!(stack.bridge().identity().cert_revoked(&new.fingerprint()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_completes_on_devices_that_log_in_by_certificate() {
    let pki = TestPki::new();
    let (stack, port) = mtls_stack(&pki).await;
    let ops = alice(&stack).await;
    artifact(
        &stack,
        Release::new("fw-2.0.0-esp32", Kind::Firmware, "2.0.0"),
    )
    .await;
    group(&ops, "acme", "acme").await;
    let mut devices = Devices::default();
    for id in ["tls-1", "tls-2"] {
        let cert = pki.device(id);
        provision(&ops, id, &cert, false)
            .await
            .expect("provisioned");
        // No password: the certificate is the login.
        devices.spawn(
            &stack,
            DeviceOpts::new(id, "acme").tls(port, pki.client(Some(&cert))),
        );
    }
    registered(&stack, 2).await;
    create(
        &ops,
        json!({
            "id": "fw-2", "kind": "firmware", "release": ["fw-2.0.0-esp32"],
            "waves": [{"cohorts": {"acme": 10000}}],
            "gates": {"success_bar_bp": 10000, "min_sample": 1, "wave_timeout_secs": 30}
        }),
    )
    .await;
    call(
        &ops,
        Command::CampaignStart {
            id: CampaignId::new("fw-2").unwrap(),
        },
    )
    .await;
    let done = wait_state(&ops, "fw-2", "completed", LONG).await;
    let c = done.current.expect("a tally").counts;
    assert_eq!((c.members, c.success, c.failure), (2, 2, 0));
    devices.stop_all().await;
}
