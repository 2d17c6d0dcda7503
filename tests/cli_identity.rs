//! Every device its own identity (issue 12), against the real `ota serve`
//! with its embedded broker and accounts:
//!
//! - `ota devices provision` writes provisioning files (the director key
//!   and the `director_keys_next` ones); a device logs in with its file and
//!   registers;
//! - a device's secret does not log in under another device's id, as the
//!   bridge, or as an operator; wrong and unknown passwords are refused;
//! - a Hello for an unprovisioned id registers nothing;
//! - a device subscribes to nothing outside PROTOCOL.md E1 (SUBACK 0x80);
//! - `ota devices revoke` closes the device's open connection at once and
//!   refuses it from then on;
//! - `ota devices rotate` closes the connection on the old password,
//!   refuses that password and takes the new one;
//!
//! while the legitimate device's Status is stored and acknowledged.

mod cli_support;
mod serve_support;

use std::path::Path;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use schemas::msg::{Hello, WireMessage};
use schemas::provisioning::Provisioning;
use schemas::topic::{Topic, Topics};
use schemas::{ComponentName, DeviceId, Epoch};
use serve_support::*;

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let release = schemas::keys::SigningKey::from_bytes(&[5; 32]);
    std::fs::write(
        dir.join("release.pub"),
        schemas::keys::verifying_key_to_text(&release.verifying_key()),
    )
    .unwrap();
    std::fs::write(
        dir.join("director-2.pub"),
        schemas::keys::verifying_key_to_text(&next_director()),
    )
    .unwrap();
    secured_config(dir, port, "director_keys_next = [\"director-2.pub\"]\n", "")
}

/// The next director key of the config (`director_keys_next`): provisioning
/// files carry it beside the current one (rotation).
fn next_director() -> schemas::keys::VerifyingKey {
    schemas::keys::SigningKey::from_bytes(&[9; 32]).verifying_key()
}

/// A logged-in client: its event loop runs until the connection ends,
/// and `events` gets what it receives (SUBACKs), then the end.
struct Session {
    client: AsyncClient,
    events: tokio::sync::mpsc::UnboundedReceiver<Result<Packet, String>>,
}

impl Session {
    /// Waits until the broker closes the connection.
    async fn closed(&mut self) {
        within("the broker to close the connection", async {
            while let Some(Ok(_)) = self.events.recv().await {}
        })
        .await
    }

    async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
        within("a SUBACK", async {
            loop {
                match self.events.recv().await {
                    Some(Ok(Packet::SubAck(s))) => return s.return_codes,
                    Some(Ok(_)) => {}
                    other => panic!("the connection ended before its SUBACK: {other:?}"),
                }
            }
        })
        .await
    }
}

/// Connects once with these credentials: `Ok` on an accepted CONNACK,
/// `Err` with what happened otherwise (rumqttd closes a refused
/// connection without a CONNACK).
async fn try_login(port: u16, client_id: &str, user: &str, pass: &str) -> Result<Session, String> {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_credentials(user, pass);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 64);
    let first = within("a CONNACK or a closed connection", async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return Ok(a.code),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    match first {
        Ok(ConnectReturnCode::Success) => {
            let (tx, events) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(p)) => {
                            let _ = tx.send(Ok(p));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    }
                }
            });
            Ok(Session { client, events })
        }
        Ok(code) => Err(format!("{code:?}")),
        Err(e) => Err(e),
    }
}

async fn login_with(port: u16, p: &Provisioning) -> Result<Session, String> {
    try_login(port, p.device_id.as_str(), &p.username, &p.password).await
}

fn hello(labels: &[(&str, &str)]) -> Vec<u8> {
    Hello {
        proto: 1,
        arch: "armv7".into(),
        versions: [(ComponentName::new("main").unwrap(), "1.0.0".to_string())].into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        boot_id: "boot-1".into(),
        epoch: Epoch::new("ep000001").unwrap(),
        outbox: 0,
        features: Vec::new(),
    }
    .encode()
}

fn read_file(dir: &Path, id: &str) -> Provisioning {
    let bytes = std::fs::read(dir.join(format!("{id}.json"))).unwrap();
    Provisioning::from_json(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_log_in_as_themselves_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let _key = operator_key(dir.path());
    let port = free_port();
    let cfg_path = config(dir.path(), port);
    let cfg = cfg_path.to_str().unwrap().to_string();
    let serve = Serve::start(&cfg_path);
    let d = dir.path();
    within("the bridge to answer", async {
        while cli_support::ota_async(d, &["group", "list", "--config", &cfg, "--timeout", "1"])
            .await
            .code
            != 0
        {}
    })
    .await;

    let out_dir = dir.path().join("factory");
    let out = out_dir.to_str().unwrap().to_string();
    let provisioned = cli_support::ota_async(
        d,
        &[
            "devices",
            "provision",
            "dev-1",
            "dev-2",
            "--labels",
            "customer=acme",
            "--out",
            &out,
            "--config",
            &cfg,
            "--json",
        ],
    )
    .await
    .ok();
    let v: serde_json::Value = serde_json::from_str(&provisioned.stdout).expect("--json");
    assert_eq!(v["devices"][1]["id"], "dev-2", "{v}");
    assert!(v["devices"][1]["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("dev-2.json")));
    let (p1, p2) = (read_file(&out_dir, "dev-1"), read_file(&out_dir, "dev-2"));
    assert_eq!(p1.broker_url, format!("mqtt://127.0.0.1:{port}"));
    assert_eq!(p1.labels["customer"], "acme");
    assert_eq!(p1.release_keys.len(), 1);
    assert_eq!(
        p1.director_keys,
        [director().verifying_key(), next_director()],
        "devices get the bridge's director key, then the next one"
    );
    assert_ne!(p1.password, p2.password);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("dev-1.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Provisioning twice is refused: rotate is the way.
    cli_support::ota_async(
        d,
        &[
            "devices",
            "provision",
            "dev-1",
            "--out",
            &out,
            "--config",
            &cfg,
        ],
    )
    .await
    .fails_with(1, &["rotate"]);
    // Ids of the bridge and operators are reserved.
    let other = dir.path().join("other");
    cli_support::ota_async(
        d,
        &[
            "devices",
            "provision",
            "ota-bridge",
            "--out",
            other.to_str().unwrap(),
            "--config",
            &cfg,
        ],
    )
    .await
    .fails_with(1, &["reserved"]);

    // The real device logs in and registers.
    let mut session1 = login_with(port, &p1)
        .await
        .expect("dev-1 logs in with its file");
    let dev1 = session1.client.clone();
    let t = Topics::default();
    let id1 = DeviceId::new("dev-1").unwrap();
    dev1.publish(
        t.build(&Topic::Hello(id1.clone())),
        QoS::AtLeastOnce,
        false,
        hello(&[("customer", "acme")]),
    )
    .await
    .unwrap();

    // The attacker holds dev-1's secret.
    for (client_id, user) in [
        ("dev-2", "dev-1"),      // another device's id
        ("dev-2", "dev-2"),      // another device's name, the wrong password
        ("ota-bridge", "dev-1"), // the bridge's session
        ("ota-bridge-out", "dev-1"),
        ("ota-bridge", "bridge"), // the bridge's account, the wrong password
        ("ota-cli-x", "alice"),   // an operator's account, the wrong password
        ("ota-cli-x", "dev-1"),
        ("dev-9", "dev-9"), // not provisioned
    ] {
        let r = try_login(port, client_id, user, &p1.password).await;
        assert!(r.is_err(), "{client_id} as {user} was let in");
    }

    // A Hello for an unprovisioned id, published with dev-1's session,
    // registers nothing; dev-1's own second Hello (new labels) is the
    // barrier that shows the first was handled.
    dev1.publish(
        t.build(&Topic::Hello(DeviceId::new("dev-9").unwrap())),
        QoS::AtLeastOnce,
        false,
        hello(&[]),
    )
    .await
    .unwrap();
    dev1.publish(
        t.build(&Topic::Hello(id1.clone())),
        QoS::AtLeastOnce,
        false,
        hello(&[("customer", "globex")]),
    )
    .await
    .unwrap();
    let listed = within("dev-1's new labels to show", async {
        loop {
            let r = cli_support::ota_async(d, &["devices", "list", "--json", "--config", &cfg])
                .await
                .ok();
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            let devices = v["devices"].as_array().cloned().unwrap_or_default();
            if devices
                .iter()
                .any(|d| d["id"] == "dev-1" && d["labels"]["customer"] == "globex")
            {
                return devices;
            }
        }
    })
    .await;
    assert!(listed.iter().all(|d| d["id"] != "dev-9"), "{listed:?}");

    // Its own Membership only: another's, everything, the operators'.
    dev1.subscribe_many(
        [
            t.build(&Topic::Groups(id1.clone())),
            "#".to_string(),
            t.build(&Topic::Groups(DeviceId::new("dev-2").unwrap())),
            "ota/v1/ops/#".to_string(),
        ]
        .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce)),
    )
    .await
    .unwrap();
    assert_eq!(
        session1.suback().await,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
        ]
    );

    // Revoked: its open connection closed at once, refused from then on.
    cli_support::ota_async(d, &["devices", "revoke", "dev-1", "--config", &cfg])
        .await
        .ok();
    session1.closed().await;
    assert!(
        login_with(port, &p1).await.is_err(),
        "a revoked device logged in"
    );

    // Rotated: the connection on the old password closed, that password
    // refused, the new one logs in.
    let mut session2 = login_with(port, &p2).await.expect("dev-2 logs in");
    let rotated = cli_support::ota_async(
        d,
        &[
            "devices", "rotate", "dev-2", "--out", &out, "--config", &cfg, "--json",
        ],
    )
    .await
    .ok();
    let v: serde_json::Value = serde_json::from_str(&rotated.stdout).expect("--json");
    assert_eq!(v["id"], "dev-2", "{v}");
    session2.closed().await;
    assert!(
        login_with(port, &p2).await.is_err(),
        "the old password still logs in"
    );
    let p2b = read_file(&out_dir, "dev-2");
    assert_ne!(p2b.password, p2.password);
    assert_eq!(
        p2b.director_keys,
        [director().verifying_key(), next_director()],
        "a rotated file carries the current and the next director key"
    );
    assert!(
        login_with(port, &p2b).await.is_ok(),
        "the new password is refused"
    );
    // And a revoked device comes back only through rotate.
    cli_support::ota_async(
        d,
        &[
            "devices", "rotate", "dev-1", "--out", &out, "--config", &cfg,
        ],
    )
    .await
    .ok();
    assert!(login_with(port, &read_file(&out_dir, "dev-1"))
        .await
        .is_ok());

    serve.terminate().await;
}
