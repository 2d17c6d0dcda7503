//! The real `ota serve` process (issue 3, "Done when"):
//!
//! - a Status whose StatusAck the device received survives a `kill -9` of
//!   the bridge right after it;
//! - a Status sent while the bridge was down (Mosquitto holds it in the
//!   bridge's persistent session) is stored and acknowledged once it is
//!   back;
//! - operators use the `ota devices` and `ota group` commands against it;
//! - a bad config file stops `ota serve` with the key named.

mod cli_support;
mod serve_support;

use bridge::store::Store;
use harness::mosquitto::Mosquitto;
use schemas::{DeviceId, Epoch};
use serve_support::*;

fn embedded(port: u16) -> String {
    format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\nsegment_size = 1048576\nsegment_count = 3\n\
         allow_anonymous = true"
    )
}

/// Opens the dead bridge's database and returns the stored bytes of each
/// seq (sled's file lock died with the process).
fn stored(
    data: &std::path::Path,
    id: &str,
    epoch: &str,
    seqs: std::ops::RangeInclusive<u64>,
) -> Vec<Option<Vec<u8>>> {
    let store = Store::open(data).expect("the database opens");
    let (id, epoch) = (DeviceId::new(id).unwrap(), Epoch::new(epoch).unwrap());
    seqs.map(|s| store.status.get(&id, &epoch, s).expect("read"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_status_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let key = operator_key(dir.path());
    let port = free_port();
    let config = write_config(dir.path(), &embedded(port));

    let serve = Serve::start(&config);
    let _ops = wait_ready(port, &key).await;
    let mut dev = Device::connect(port, "dev-k9").await;
    dev.hello("ep000001", 1).await;
    let mut sent = Vec::new();
    for seq in 1..=50 {
        sent.push(dev.status(seq).await);
    }
    dev.wait_ack(50).await;
    // The ack is in: kill the bridge (and its embedded broker) at once.
    serve.kill9();

    let got = stored(&dir.path().join("data"), "dev-k9", "ep000001", 1..=50);
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(
            g.as_ref(),
            Some(s),
            "seq {} was acknowledged but not stored",
            i + 1
        );
    }

    // A new bridge (and broker, which lost every retained message)
    // republishes the ack from its store, and carries on.
    drop(dev);
    let serve = Serve::start(&config);
    let _ops = wait_ready(port, &key).await;
    let mut dev = Device::connect(port, "dev-k9").await;
    dev.wait_ack(50).await;
    dev.status(51).await;
    dev.wait_ack(51).await;
    let status = serve.terminate().await;
    assert!(status.success(), "ota serve exits 0 on SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_sent_while_the_bridge_is_down_is_stored_when_it_is_back() {
    let mosquitto = Mosquitto::start().await.expect("mosquitto starts");
    let dir = tempfile::tempdir().unwrap();
    let key = operator_key(dir.path());
    let config = write_config(
        dir.path(),
        &format!(
            "[broker]\nmode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"",
            mosquitto.port
        ),
    );

    let serve = Serve::start(&config);
    let _ops = wait_ready(mosquitto.port, &key).await;
    let mut dev = Device::connect(mosquitto.port, "dev-down").await;
    dev.hello("ep000001", 1).await;
    dev.status(1).await;
    dev.wait_ack(1).await;
    serve.kill9();

    // The bridge is down; the broker keeps its persistent session.
    let two = dev.status(2).await;
    let three = dev.status(3).await;

    let serve = Serve::start(&config);
    dev.wait_ack(3).await;
    let status = serve.terminate().await;
    assert!(status.success(), "{status:?}");
    let got = stored(&dir.path().join("data"), "dev-down", "ep000001", 2..=3);
    assert_eq!(got, vec![Some(two), Some(three)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_devices_and_put_groups_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let key = operator_key(dir.path());
    let port = free_port();
    let config = write_config(dir.path(), &embedded(port));
    let serve = Serve::start(&config);
    let _ops = wait_ready(port, &key).await;
    let mut dev = Device::connect(port, "dev-cli").await;
    dev.hello("ep000001", 1).await;
    dev.status(1).await;
    dev.wait_ack(1).await;

    let cfg = config.to_str().unwrap().to_string();
    let d = dir.path();

    let out = cli_support::ota_async(d, &["devices", "list", "--config", &cfg])
        .await
        .ok()
        .stdout;
    assert!(
        out.contains("dev-cli") && out.contains("armv7") && out.contains("LAST SEEN"),
        "{out}"
    );

    let out = cli_support::ota_async(
        d,
        &[
            "group",
            "put",
            "canary",
            "--members",
            "dev-cli,dev-other",
            "--config",
            &cfg,
        ],
    )
    .await
    .ok()
    .stdout;
    assert!(out.contains("group canary created"), "{out}");

    let broker = format!("127.0.0.1:{port}");
    let key_path = dir.path().join("operator.key");
    let out = cli_support::ota_async(
        d,
        &[
            "group",
            "list",
            "--json",
            "--broker",
            &broker,
            "--key",
            key_path.to_str().unwrap(),
        ],
    )
    .await
    .ok()
    .stdout;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["groups"][0]["name"], "canary");
    assert_eq!(v["groups"][0]["devices"], 1);

    let out = cli_support::ota_async(d, &["devices", "show", "dev-cli", "--config", &cfg])
        .await
        .ok()
        .stdout;
    assert!(
        out.contains("camp-k9") && out.contains("downloading") && out.contains("canary"),
        "{out}"
    );

    cli_support::ota_async(d, &["devices", "show", "nobody", "--config", &cfg])
        .await
        .fails_with(1, &["not registered"]);
    cli_support::ota_async(d, &["group", "delete", "canary", "--config", &cfg])
        .await
        .ok();
    cli_support::ota_async(d, &["group", "delete", "canary", "--config", &cfg])
        .await
        .fails_with(1, &["does not exist"]);
    cli_support::ota_async(
        d,
        &["group", "put", "x", "--selector", "a=", "--config", &cfg],
    )
    .await
    .fails_with(1, &["selector", "column"]);
    cli_support::ota_async(d, &["group", "list"])
        .await
        .fails_with(1, &["--config", "--broker"]);
    serve.terminate().await;

    // No bridge listening: the error says what to check.
    cli_support::ota_async(d, &["group", "list", "--config", &cfg, "--timeout", "1"])
        .await
        .fails_with(1, &["cannot connect to the broker"]);
}

#[test]
fn serve_refuses_a_bad_config_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ota.toml"),
        "[broker]\nallow_anonymous = true\n[status]\ncommit_window_ms = 99999\n",
    )
    .unwrap();
    cli_support::ota(dir.path(), &["serve", "--config", "ota.toml"])
        .fails_with(1, &["[status] commit_window_ms"]);
    std::fs::write(dir.path().join("ota.toml"), "[bridge]\nprefx = \"x\"\n").unwrap();
    cli_support::ota(dir.path(), &["serve", "--config", "ota.toml"]).fails_with(1, &["prefx"]);
    // The secure default: no anonymous embedded broker unless allowed.
    std::fs::write(dir.path().join("ota.toml"), "").unwrap();
    cli_support::ota(dir.path(), &["serve", "--config", "ota.toml"]).fails_with(
        1,
        &[
            "[broker] allow_anonymous",
            "[broker.users]",
            "allow_anonymous = true",
        ],
    );
    std::fs::write(
        dir.path().join("ota.toml"),
        "[broker]\nallow_anonymous = true\n",
    )
    .unwrap();
    cli_support::ota(dir.path(), &["serve", "--config", "ota.toml"])
        .fails_with(1, &["operator_keys"]);
    cli_support::ota(dir.path(), &["serve", "--config", "missing.toml"])
        .fails_with(1, &["missing.toml"]);
}
