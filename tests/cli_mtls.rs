//! `ota serve` with the embedded broker's mutual-TLS listener (issue 14),
//! through the real binary: `ota pki init` makes the CA and the broker's
//! certificate, `[broker] tls_listen` and `[broker.tls]` (with
//! `client_ca_file`) open the TLS listener beside the plain one the bridge
//! uses, `ota devices provision --mtls` gives a device its certificate
//! (and tells the registry its fingerprint), the device logs in by it with
//! no password, and `ota devices rotate --mtls` refuses the old
//! certificate from then on while the new one logs in.

mod cli_support;
mod serve_support;

use std::path::Path;

use cli_support::ota_async;
use harness::raw::RawClient;
use schemas::provisioning::Provisioning;
use serve_support::{
    free_port, operator_key, release_key, secured_config, wait_ready_as, Serve, ALICE_LOGIN,
};

fn read(dir: &Path, id: &str) -> (Provisioning, std::path::PathBuf) {
    let path = dir.join(format!("factory/{id}.json"));
    let text = std::fs::read_to_string(&path).expect("a provisioning file");
    (
        Provisioning::from_json(text.as_bytes()).expect("a provisioning file"),
        path,
    )
}

async fn by_cert(port: u16, dir: &Path, id: &str) -> Result<RawClient, harness::raw::RawError> {
    let (file, path) = read(dir, id);
    let tls = device_sim::agent::tls_config::client_config(file.tls.as_ref(), None, &path)
        .expect("the file's TLS");
    RawClient::tls_login(port, id, None, tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ota_serve_takes_devices_by_certificate_and_rotate_refuses_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = operator_key(dir);
    release_key(dir, 3);
    ota_async(dir, &["pki", "init", "--out", "pki", "--ip", "127.0.0.1"])
        .await
        .ok();
    let (port, tls_port) = (free_port(), free_port());
    let tail = "[broker.tls]\ncert_file = \"pki/server.crt\"\nkey_file = \"pki/server.key\"\n\
                client_ca_file = \"pki/ca.crt\"\n";
    let config = secured_config(dir, port, "", tail);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &format!("listen = \"127.0.0.1:{port}\"\ntls_listen = \"127.0.0.1:{tls_port}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let _serve = Serve::start(&config);
    let ops = wait_ready_as(port, &key, Some(ALICE_LOGIN)).await;

    let url = format!("mqtts://127.0.0.1:{tls_port}");
    #[rustfmt::skip]
    ota_async(dir, &[
        "devices", "provision", "dev-1", "--mtls", "--ca", "pki", "--out", "factory",
        "--broker-url", &url, "--config", "ota.toml",
    ]).await.ok();
    let (first, _) = read(dir, "dev-1");
    let mut session = by_cert(tls_port, dir, "dev-1")
        .await
        .expect("dev-1 logs in by its certificate, no password");

    // Keep the old file aside, rotate, and try both certificates.
    std::fs::copy(
        dir.join("factory/dev-1.json"),
        dir.join("factory/old-dev-1.json"),
    )
    .unwrap();
    #[rustfmt::skip]
    ota_async(dir, &[
        "devices", "rotate", "dev-1", "--mtls", "--ca", "pki", "--out", "factory",
        "--broker-url", &url, "--config", "ota.toml",
    ]).await.ok();
    session.closed().await.expect("the old session is closed");
    let (second, _) = read(dir, "dev-1");
    let cert = |p: &Provisioning| p.tls.as_ref().and_then(|t| t.client_cert_pem.clone());
    assert_ne!(cert(&first), cert(&second), "a new certificate");
    by_cert(tls_port, dir, "dev-1")
        .await
        .expect("the new certificate logs in");
    let (old, path) = read(dir, "old-dev-1");
    let tls = device_sim::agent::tls_config::client_config(old.tls.as_ref(), None, &path).unwrap();
    assert!(
        RawClient::tls_login(tls_port, "dev-1", None, tls)
            .await
            .is_err(),
        "the rotated certificate is refused"
    );
    drop(ops);
}
