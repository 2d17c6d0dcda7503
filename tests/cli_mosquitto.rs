//! `ota broker mosquitto` as a user runs it (issue 12, E1 on Mosquitto):
//! the files it writes for a registry in a real sled data_dir, loaded by a
//! real /usr/sbin/mosquitto. The provisioned device logs in; forged,
//! revoked and unknown logins and the bridge's account on the devices'
//! listener are refused; the bridge and the operator log in on the
//! service listener. A config without `[broker.mosquitto]` is refused in
//! one line that says what to add. And `ota serve` keeps the files
//! current: a device provisioned with the CLI logs in, is granted its
//! group's topics before its Membership names the group, and revoked it is
//! disconnected and refused. `ota sim` whose devices Mosquitto refuses
//! stops at once with one line that names the device and what to do.

mod cli_support;
mod serve_support;

use std::collections::BTreeMap;
use std::path::Path;

use bridge::identity::{CredentialRecord, CredentialStore, Standing};
use harness::mosquitto::Mosquitto;
use harness::raw::RawClient;
use schemas::msg::{Membership, WireMessage};
use schemas::provisioning::Provisioning;
use schemas::topic::{Topic, Topics};
use schemas::{DeviceId, GroupName};
use serve_support::{free_port, operator_key, release_key, wait_ready_as, write_config, Serve};

pub use serve_support::{MOSQUITTO_ALICE as ALICE, MOSQUITTO_BRIDGE as BRIDGE};

/// `ota.toml` for an external Mosquitto (plain MQTT): see
/// [`serve_support::mosquitto_config`].
pub fn mosquitto_config(dir: &Path, service: u16, devices: u16) -> std::path::PathBuf {
    serve_support::mosquitto_config(dir, service, devices, false)
}

pub use serve_support::set_mode;

/// A temp dir with the keys and [`mosquitto_config`] on two free ports
/// (service, devices).
fn setup() -> (tempfile::TempDir, schemas::keys::SigningKey, u16, u16) {
    assert!(
        harness::mosquitto::binary().is_some(),
        "mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let key = operator_key(tmp.path());
    release_key(tmp.path(), 1);
    let (service, devices) = (free_port(), free_port());
    mosquitto_config(tmp.path(), service, devices);
    (tmp, key, service, devices)
}

/// `ota broker mosquitto` in `dir`, then Mosquitto on its conf.
async fn exported_mosquitto(dir: &Path, devices: u16) -> Mosquitto {
    cli_support::ota(dir, &["broker", "mosquitto", "--config", "ota.toml"]).ok();
    let conf = dir.join("mosquitto/mosquitto.conf");
    Mosquitto::start_conf(&conf, devices)
        .await
        .expect("mosquitto runs the conf")
}

fn record(id: &DeviceId, password: &str, standing: Standing) -> CredentialRecord {
    CredentialRecord::new(id.clone(), password, standing, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_mosquitto_writes_files_a_real_mosquitto_enforces() {
    let (tmp, _, service, devices) = setup();
    let dir = tmp.path();

    // The registry of a stopped bridge: dev-1 active and in group acme,
    // dev-2 revoked.
    let (d1, d2) = (
        DeviceId::new("dev-1").unwrap(),
        DeviceId::new("dev-2").unwrap(),
    );
    let (p1, p2) = ("dev-1-secret-0123456789", "dev-2-secret-0123456789");
    {
        let store = bridge::store::Store::open(&dir.join("data")).unwrap();
        let creds = CredentialStore::open(store.db()).unwrap();
        creds.put(&record(&d1, p1, Standing::Active)).unwrap();
        creds.put(&record(&d2, p2, Standing::Revoked)).unwrap();
        let t = Topics::default();
        let member = Membership {
            groups: vec![GroupName::new("acme").unwrap()],
        };
        store
            .retained
            .put(&t.build(&Topic::Groups(d1.clone())), &member.encode())
            .unwrap();
        store.db().flush().unwrap();
    }

    let run = cli_support::ota(
        dir,
        &["broker", "mosquitto", "--config", "ota.toml", "--json"],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("--json prints JSON");
    assert_eq!(v["devices"], 1, "{v}");
    assert_eq!(v["devices_with_grants"], 1, "{v}");
    assert_eq!(v["bridge"], BRIDGE.0, "{v}");
    assert_eq!(v["operators"], serde_json::json!([ALICE.0]), "{v}");
    let conf = std::path::PathBuf::from(v["conf"].as_str().unwrap());
    assert_eq!(
        conf,
        dir.canonicalize().unwrap().join("mosquitto/mosquitto.conf")
    );
    for f in v["files"].as_array().unwrap() {
        let meta = std::fs::metadata(f.as_str().unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{f}");
    }
    let passwd = std::fs::read_to_string(dir.join("mosquitto/devices.passwd")).unwrap();
    assert!(!passwd.contains(p1), "a password in clear");
    let service_passwd = std::fs::read_to_string(dir.join("mosquitto/service.passwd")).unwrap();
    assert!(!service_passwd.contains(BRIDGE.1) && !service_passwd.contains(ALICE.1));

    let m = Mosquitto::start_conf(&conf, devices)
        .await
        .expect("mosquitto runs the conf");
    let pid = std::fs::read_to_string(dir.join("run/mosquitto.pid")).unwrap();
    assert_eq!(pid.trim(), m.pid().to_string(), "the conf's pid_file");

    let refused = [
        (devices, "dev-1", p2, "dev-1 with dev-2's password"),
        (devices, "dev-2", p2, "revoked dev-2"),
        (devices, "ghost", p1, "an unknown id"),
        (
            devices,
            BRIDGE.0,
            BRIDGE.1,
            "the bridge on the devices' listener",
        ),
        (
            devices,
            ALICE.0,
            ALICE.1,
            "an operator on the devices' listener",
        ),
        (service, "dev-1", p1, "a device on the service listener"),
        (
            service,
            BRIDGE.0,
            "wrong",
            "the bridge with a wrong password",
        ),
    ];
    for (port, id, pw, what) in refused {
        assert!(
            RawClient::login(port, id, pw).await.is_err(),
            "{what}: logged in"
        );
    }
    RawClient::login(devices, "dev-1", p1)
        .await
        .expect("dev-1 logs in with its own password");
    RawClient::login(service, BRIDGE.0, BRIDGE.1)
        .await
        .expect("the bridge logs in on the service listener");
    RawClient::login(service, ALICE.0, ALICE.1)
        .await
        .expect("alice logs in on the service listener");
    let acl = std::fs::read_to_string(dir.join("mosquitto/devices.acl")).unwrap();
    assert!(
        section(&acl, "dev-1").contains("topic read ota/v1/groups/acme/campaign\n"),
        "{acl}"
    );
}

#[test]
fn broker_mosquitto_without_its_section_says_what_to_add() {
    let tmp = tempfile::tempdir().unwrap();
    operator_key(tmp.path());
    write_config(tmp.path(), "[broker]\nallow_anonymous = true\n");
    cli_support::ota(tmp.path(), &["broker", "mosquitto", "--config", "ota.toml"])
        .fails_with(1, &["[broker.mosquitto]", "mode = \"external\"", "--help"]);
    let help = cli_support::ota(tmp.path(), &["broker", "mosquitto", "--help"]).ok();
    for w in [
        "[broker.mosquitto]",
        "pid_file",
        "devices_listen",
        "mosquitto -c",
        "SIGHUP",
    ] {
        assert!(
            help.stdout.contains(w),
            "--help lacks {w}:\n{}",
            help.stdout
        );
    }
}

/// Logs in once Mosquitto's files let it: tried now and again after each
/// of Mosquitto's reloads, for at most 10 s.
async fn login_once_reloaded(m: &Mosquitto, port: u16, id: &str, pw: &str) -> RawClient {
    let mut reloads = m.reloads();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        reloads.borrow_and_update();
        match RawClient::login(port, id, pw).await {
            Ok(c) => return c,
            Err(e) => {
                let next = tokio::time::timeout_at(deadline, reloads.changed()).await;
                assert!(
                    next.is_ok(),
                    "{id} is still refused ({e:?}) and Mosquitto did not reload"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_mosquitto_current_as_devices_are_provisioned_and_revoked() {
    let (tmp, key, service, devices) = setup();
    let dir = tmp.path();
    // The files of the empty registry: the bridge's and alice's logins.
    let m = exported_mosquitto(dir, devices).await;
    let _serve = Serve::start(&dir.join("ota.toml"));
    let ops = wait_ready_as(service, &key, Some(ALICE)).await;
    // The running bridge holds the registry: the export says so.
    cli_support::ota_async(dir, &["broker", "mosquitto", "--config", "ota.toml"])
        .await
        .fails_with(
            1,
            &[
                "another `ota serve`",
                "keeps [broker.mosquitto] dir current itself",
            ],
        );

    let out = cli_support::ota(
        dir,
        &[
            "devices",
            "provision",
            "dev-9",
            "--out",
            "factory",
            "--config",
            "ota.toml",
        ],
    )
    .ok();
    let file = std::fs::read(dir.join("factory/dev-9.json")).expect(&out.stdout);
    let p = Provisioning::from_json(&file).unwrap();
    assert_eq!(
        p.broker_url,
        format!("mqtt://127.0.0.1:{devices}"),
        "the devices' listener"
    );
    let passwd = std::fs::read_to_string(dir.join("mosquitto/devices.passwd")).unwrap();
    assert!(
        passwd.starts_with("dev-9:$6$"),
        "the bridge rewrote the file: {passwd}"
    );
    let mut dev = login_once_reloaded(&m, devices, "dev-9", &p.password).await;
    assert!(
        RawClient::login(devices, "dev-9", "not-its-password")
            .await
            .is_err(),
        "dev-9 with a wrong password"
    );

    // Joining a group: the grant is in Mosquitto's ACL file before the
    // Membership that names the group reaches the device.
    let (t, d9) = (Topics::default(), DeviceId::new("dev-9").unwrap());
    let own = t.build(&Topic::Groups(d9.clone()));
    dev.subscribe(std::slice::from_ref(&own)).await.unwrap();
    dev.hello(&t, &d9, "acme").await.unwrap();
    cli_support::ota(
        dir,
        &[
            "group",
            "put",
            "acme",
            "--members",
            "dev-9",
            "--config",
            "ota.toml",
        ],
    )
    .ok();
    let acme = GroupName::new("acme").unwrap();
    dev.until(|g| match g {
        harness::raw::Got::Publish { topic, payload } if *topic == own => {
            Membership::decode_retained(payload)
                .ok()
                .filter(|m| m.groups.contains(&acme))
        }
        _ => None,
    })
    .await
    .expect("dev-9's Membership naming acme");
    let acl = std::fs::read_to_string(dir.join("mosquitto/devices.acl")).unwrap();
    assert!(
        section(&acl, "dev-9").contains("topic read ota/v1/groups/acme/campaign\n"),
        "the Membership came before the grant:\n{acl}"
    );

    cli_support::ota(dir, &["devices", "revoke", "dev-9", "--config", "ota.toml"]).ok();
    // Mosquitto's reload of the rewritten files closes its connection...
    dev.closed()
        .await
        .expect("the revoked device's connection stays open");
    // ... and judges every later login by them.
    assert!(
        RawClient::login(devices, "dev-9", &p.password)
            .await
            .is_err(),
        "revoked dev-9 logged in"
    );
    let passwd = std::fs::read_to_string(dir.join("mosquitto/devices.passwd")).unwrap();
    assert!(!passwd.contains("dev-9"), "{passwd}");
    ops.close().await;
}

/// `ota sim` against Mosquitto that refuses its devices: without
/// credentials, and with a provisioning file whose password is not the
/// registry's. Each run stops long before its --duration, exit code 1,
/// one line naming the device and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_stops_with_the_refused_device_named() {
    let (tmp, _, _, devices) = setup();
    let dir = tmp.path();
    let _m = exported_mosquitto(dir, devices).await;
    let release = release_key(dir, 1).verifying_key();
    std::fs::write(
        dir.join("fleet.toml"),
        "[keys]\ntrusted = [\"release.pub\"]\n",
    )
    .unwrap();
    let broker = format!("127.0.0.1:{devices}");
    let sim = |extra: &[&str]| {
        let mut args = vec![
            "sim",
            "--broker",
            broker.as_str(),
            "--factory-line",
            "line7",
        ];
        args.extend_from_slice(&["--profile", "fleet.toml"]);
        args.extend_from_slice(&["--devices", "1", "--duration", "120"]);
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = cli_support::ota_async(dir, &args);
            tokio::time::timeout(std::time::Duration::from_secs(30), run)
                .await
                .expect("ota sim still retries a refused login after 30 s")
        }
    };
    sim(&[]).await.fails_with(
        1,
        &[
            "refused line7-00001's login (not authorised)",
            "without credentials",
            "--provisioning DIR",
        ],
    );

    // A provisioning file whose password the bridge never issued.
    let factory = dir.join("factory");
    std::fs::create_dir_all(&factory).unwrap();
    let file = Provisioning {
        version: schemas::provisioning::PROVISIONING_VERSION,
        device_id: DeviceId::new("line7-00001").unwrap(),
        broker_url: format!("mqtt://{broker}"),
        prefix: "ota/v1".into(),
        username: "line7-00001".into(),
        password: schemas::provisioning::generate_password(),
        labels: BTreeMap::new(),
        release_keys: vec![release],
        director_keys: Vec::new(),
        tls: None,
    };
    std::fs::write(factory.join("line7-00001.json"), file.to_json()).unwrap();
    sim(&["--provisioning", factory.to_str().unwrap()])
        .await
        .fails_with(
            1,
            &[
                "refused line7-00001's login",
                "with its provisioning credentials",
                "ota devices rotate",
            ],
        );
}

/// Device `id`'s `user` section of a devices' ACL file (empty if none).
fn section<'a>(acl: &'a str, id: &str) -> &'a str {
    let head = format!("\nuser {id}\n");
    let Some(at) = acl.find(&head) else {
        return "";
    };
    let rest = &acl[at + head.len()..];
    &rest[..rest.find("\nuser ").unwrap_or(rest.len())]
}
