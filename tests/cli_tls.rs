//! TLS everywhere on an external Mosquitto (issue 14), through the real
//! binaries as an operator runs them: `ota pki init` and `ota pki device`
//! make the fleet CA, the broker's certificate and the bridge's and
//! operator's; `ota broker mosquitto` writes a conf whose two listeners
//! speak TLS only and require client certificates (the devices' takes the
//! certificate's CN as username, `use_identity_as_username`); `ota serve`
//! (mqtts://, its own certificate), the CLI (its own) and `ota sim` devices
//! provisioned with `ota devices provision --mtls` run a campaign end to
//! end through it. And the failures a user meets, each one line naming
//! the host and the reason: a wrong `ca_file` (CLI, sim, the bridge's log),
//! a name the certificate is not for (CLI, sim), no client certificate.

mod cli_support;
mod serve_support;

use std::path::Path;
use std::time::{Duration, Instant};

use cli_support::{ota, ota_async};
use harness::mosquitto::Mosquitto;
use schemas::provisioning::Provisioning;
use serve_support::{
    free_port, mosquitto_config, operator_key, release_key, set_mode, Serve,
    MOSQUITTO_ALICE as ALICE, MOSQUITTO_BRIDGE as BRIDGE,
};
/// How long the campaign may take, devices connecting included.
const CAMPAIGN_DEADLINE: Duration = Duration::from_secs(120);

/// A fleet PKI in `dir/pki` (for 127.0.0.1 only, no DNS name), client
/// certificates for the bridge and alice in `dir/pki/clients`, and a
/// second, unrelated CA in `dir/other`. Mosquitto reads the server's files
/// as its own user after a reload: the directory is its group's and the
/// server key 0640, as docs/operations.md says.
fn pki(dir: &Path) {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    harness::mosquitto::share_with_mosquitto(&pki).unwrap();
    let init = ota(
        dir,
        &["pki", "init", "--out", "pki", "--ip", "127.0.0.1", "--json"],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&init.stdout).expect("--json prints JSON");
    assert_eq!(v["names"], serde_json::json!(["127.0.0.1"]), "{v}");
    assert_eq!(v["ca_sha256"].as_str().map(str::len), Some(64), "{v}");
    for (file, mode) in [("ca.key", 0o600), ("server.key", 0o600), ("ca.crt", 0o644)] {
        use std::os::unix::fs::PermissionsExt as _;
        let m = std::fs::metadata(pki.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, mode, "{file}");
    }
    set_mode(&pki.join("server.key"), 0o640);
    let dev = ota(
        dir,
        &[
            "pki",
            "device",
            BRIDGE.0,
            ALICE.0,
            "--ca",
            "pki",
            "--out",
            "pki/clients",
            "--json",
        ],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&dev.stdout).expect("--json prints JSON");
    assert_eq!(v["certificates"][1]["id"], ALICE.0, "{v}");
    // Nothing is ever overwritten.
    ota(dir, &["pki", "init", "--out", "pki"])
        .fails_with(1, &["ca.crt exists", "never overwritten"]);
    ota(dir, &["pki", "init", "--out", "other", "--ip", "127.0.0.1"]).ok();
}

/// The setup, `ota broker mosquitto`, and Mosquitto running its conf.
async fn setup() -> (tempfile::TempDir, Mosquitto, u16, u16) {
    assert!(
        harness::mosquitto::binary().is_some(),
        "mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    operator_key(dir);
    set_mode(&dir.join("operator.key"), 0o600);
    release_key(dir, 3);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    pki(dir);
    let (service, devices) = (free_port(), free_port());
    mosquitto_config(dir, service, devices, true);
    ota(dir, &["broker", "mosquitto", "--config", "ota.toml"]).ok();
    let conf = std::fs::read_to_string(dir.join("mosquitto/mosquitto.conf")).unwrap();
    assert!(conf.contains("use_identity_as_username true"), "{conf}");
    let m = Mosquitto::start_conf(&dir.join("mosquitto/mosquitto.conf"), devices)
        .await
        .expect("mosquitto runs the TLS conf");
    (tmp, m, service, devices)
}

/// Runs `ota args` until it succeeds (the bridge answers), at most 60 s.
async fn until_ok(dir: &Path, args: &[&str]) -> cli_support::Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = ota_async(dir, args).await;
        if run.code == 0 {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "`ota {}` kept failing:\n{}",
            args.join(" "),
            run.stderr
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Signs a 64 KiB firmware with `release.key` seed 3 and pushes it.
async fn push_firmware(dir: &Path) -> String {
    let key = schemas::keys::SigningKey::from_bytes(&[3; 32]);
    std::fs::write(
        dir.join("keys/release.key"),
        schemas::keys::signing_key_to_text(&key),
    )
    .unwrap();
    std::fs::write(dir.join("fw.bin"), vec![0x5a; 64 * 1024]).unwrap();
    ota_async(dir, &cli_support::sign_firmware("fw.bin", "1.1.0"))
        .await
        .ok();
    ota_async(dir, &["artifact", "push", "fw.bin", "--config", "ota.toml"])
        .await
        .ok();
    "main-1.1.0-esp32".into()
}

#[test]
fn pki_help_teaches_the_flow() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, words) in [
        (
            &["pki", "--help"][..],
            &["ca.key", "HSM", "CN = device id"][..],
        ),
        (
            &["pki", "init", "--help"],
            &["--host", "--ip", "0600", "[broker.mosquitto.tls]", "--mtls"],
        ),
        (
            &["pki", "device", "--help"],
            &["--ca", "CN", "use_identity_as_username"],
        ),
        (
            &["devices", "provision", "--help"],
            &["--mtls", "--ca <PKI_DIR>", "--ca-file"],
        ),
        (&["sim", "--help"], &["mqtts://", "--ca-file"]),
    ] {
        let help = ota(tmp.path(), args).ok().stdout;
        for w in words {
            assert!(
                help.contains(w),
                "`ota {}` lacks {w:?}:\n{help}",
                args.join(" ")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_runs_end_to_end_over_mutual_tls_on_mosquitto() {
    let (tmp, _m, _service, devices) = setup().await;
    let dir = tmp.path();
    let _serve = Serve::start(&dir.join("ota.toml"));
    until_ok(dir, &["group", "list", "--config", "ota.toml"]).await;

    // Devices with certificates of their own, in their provisioning files.
    #[rustfmt::skip]
    let out = ota_async(dir, &[
        "devices", "provision", "tls-00001", "tls-00002", "--mtls", "--ca", "pki",
        "--out", "factory", "--config", "ota.toml", "--json",
    ]).await.ok();
    let p = Provisioning::from_json(&std::fs::read(dir.join("factory/tls-00001.json")).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(p.broker_url, format!("mqtts://127.0.0.1:{devices}"));
    let t = p.tls.as_ref().expect("a tls section");
    assert_eq!(
        t.ca_cert_pem,
        std::fs::read_to_string(dir.join("pki/ca.crt")).unwrap()
    );
    assert!(t.client_key_pem.as_deref().unwrap().contains("PRIVATE KEY"));

    let release = push_firmware(dir).await;
    #[rustfmt::skip]
    ota_async(dir, &["group", "put", "tls", "--selector", "line=tls", "--config", "ota.toml"])
        .await.ok();
    // The fleet: the files' broker (mqtts://), CA and certificates.
    #[rustfmt::skip]
    let _sim = Sim(
        std::process::Command::new(env!("CARGO_BIN_EXE_ota"))
            .args([
                "sim", "--provisioning", "factory", "--factory-line", "tls",
                "--devices", "2", "--duration", "150",
            ])
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ota sim starts"),
    );
    until_ok(
        dir,
        &["devices", "show", "tls-00002", "--config", "ota.toml"],
    )
    .await;
    #[rustfmt::skip]
    ota_async(dir, &[
        "campaign", "create", "--id", "fw-tls", "--release", &release, "--wave", "tls=100%",
        "--success-bar", "100%", "--min-sample", "1", "--config", "ota.toml",
    ]).await.ok();
    ota_async(
        dir,
        &["campaign", "start", "fw-tls", "--config", "ota.toml"],
    )
    .await
    .ok();
    // `campaign watch` follows the bridge's events and returns when the
    // campaign ends: the wait is for that event, bounded.
    tokio::time::timeout(
        CAMPAIGN_DEADLINE,
        ota_async(
            dir,
            &[
                "campaign", "watch", "fw-tls", "--json", "--config", "ota.toml",
            ],
        ),
    )
    .await
    .expect("the campaign ends within its deadline")
    .ok();
    #[rustfmt::skip]
    let run = ota_async(dir, &["campaign", "status", "fw-tls", "--json", "--config", "ota.toml"])
        .await.ok();
    let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(status["state"], "completed", "{status:#}");
    let list = ota_async(dir, &["devices", "list", "--json", "--config", "ota.toml"])
        .await
        .ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let on: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["versions"]["main"].as_str())
        .collect();
    assert_eq!(on, ["1.1.0", "1.1.0"], "{v:#}");
}

/// An `ota sim` process, killed (and reaped) on drop.
struct Sim(std::process::Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_a_wrong_name_and_no_certificate_are_one_line_each() {
    let (tmp, _m, service, devices) = setup().await;
    let dir = tmp.path();
    let s = service.to_string();
    let ca_line = format!(
        "error: TLS to 127.0.0.1:{service} failed: the broker's certificate is signed by an unknown CA"
    );

    // The CLI: another CA than the broker's.
    let run = ota_async(
        dir,
        &[
            "group",
            "list",
            "--config",
            "ota.toml",
            "--ca-file",
            "other/ca.crt",
        ],
    )
    .await
    .fails_with(1, &["set ca_file (--ca-file)"]);
    assert!(run.stderr.starts_with(&ca_line), "{}", run.stderr);

    // The CLI: a name the certificate is not for (it is for 127.0.0.1).
    let broker = format!("mqtts://localhost:{s}");
    #[rustfmt::skip]
    let run = ota_async(dir, &[
        "group", "list", "--broker", &broker, "--key", "operator.key", "--ca-file", "pki/ca.crt",
        "--client-cert", "pki/clients/alice.crt", "--client-key", "pki/clients/alice.key",
        "--username", ALICE.0, "--password", ALICE.1,
    ]).await.fails_with(1, &["(it is for 127.0.0.1)"]);
    assert!(
        run.stderr.starts_with(&format!(
            "error: TLS to localhost:{service} failed: the broker's certificate is not valid for the name \"localhost\""
        )),
        "{}",
        run.stderr
    );

    // The CLI without a certificate: the broker requires one.
    #[rustfmt::skip]
    let run = ota_async(dir, &[
        "group", "list", "--broker", &format!("mqtts://127.0.0.1:{s}"), "--key", "operator.key",
        "--ca-file", "pki/ca.crt", "--username", ALICE.0, "--password", ALICE.1,
    ]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("client certificate"),
        "no word of the missing certificate: {}",
        run.stderr
    );

    // ota sim: provisioned devices, then the same two mistakes.
    let serve = Serve::start(&dir.join("ota.toml"));
    until_ok(dir, &["group", "list", "--config", "ota.toml"]).await;
    #[rustfmt::skip]
    ota_async(dir, &[
        "devices", "provision", "tls-00001", "--mtls", "--ca", "pki", "--out", "factory",
        "--config", "ota.toml",
    ]).await.ok();
    drop(serve);
    let sim = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "sim",
            "--factory-line",
            "tls",
            "--devices",
            "1",
            "--duration",
            "120",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tokio::time::timeout(Duration::from_secs(30), ota_async(dir, &args))
                .await
                .expect("ota sim still retries a TLS failure after 30 s")
        }
    };
    let run = sim(&["--provisioning", "factory", "--ca-file", "other/ca.crt"])
        .await
        .fails_with(1, &["the simulator stopped"]);
    assert!(
        run.stderr.starts_with(&format!(
            "error: tls-00001: TLS to 127.0.0.1:{devices} failed: the broker's certificate is signed by an unknown CA"
        )),
        "{}",
        run.stderr
    );
    // The attacker's device: a certificate for tls-00001 from another CA.
    #[rustfmt::skip]
    ota_async(dir, &["pki", "device", "tls-00001", "--ca", "other", "--out", "forged"]).await.ok();
    let mut forged =
        Provisioning::from_json(&std::fs::read(dir.join("factory/tls-00001.json")).unwrap())
            .unwrap();
    let t = forged.tls.as_mut().unwrap();
    t.client_cert_pem = Some(std::fs::read_to_string(dir.join("forged/tls-00001.crt")).unwrap());
    t.client_key_pem = Some(std::fs::read_to_string(dir.join("forged/tls-00001.key")).unwrap());
    std::fs::create_dir_all(dir.join("forged/files")).unwrap();
    std::fs::write(dir.join("forged/files/tls-00001.json"), forged.to_json()).unwrap();
    let run = sim(&["--provisioning", "forged/files"])
        .await
        .fails_with(1, &["client certificate"]);
    assert!(
        run.stderr.starts_with(&format!(
            "error: tls-00001: TLS to 127.0.0.1:{devices} failed: "
        )),
        "{}",
        run.stderr
    );
    let broker = format!("mqtts://localhost:{devices}");
    let run = sim(&["--provisioning", "factory", "--broker", &broker])
        .await
        .fails_with(1, &["(it is for 127.0.0.1)"]);
    assert!(
        run.stderr.starts_with(&format!(
            "error: tls-00001: TLS to localhost:{devices} failed: the broker's certificate is not valid for the name \"localhost\""
        )),
        "{}",
        run.stderr
    );
}

/// The bridge with a `ca_file` that is not its broker's CA says so in its
/// log, one line naming the host and the reason, and keeps retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_logs_a_wrong_ca_in_one_line() {
    let (tmp, _m, service, _) = setup().await;
    let dir = tmp.path();
    let text = std::fs::read_to_string(dir.join("ota.toml")).unwrap();
    std::fs::write(
        dir.join("ota.toml"),
        text.replacen(
            "ca_file = \"pki/ca.crt\"\nclient_cert",
            "ca_file = \"other/ca.crt\"\nclient_cert",
            1,
        ),
    )
    .unwrap();
    let (_serve, lines) = Serve::start_logged(&dir.join("ota.toml"), "warn,rumqttd=off");
    let want = format!(
        "TLS to 127.0.0.1:{service} failed: the broker's certificate is signed by an unknown CA"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line with {want:?} within 30 s"));
        if line.contains(&want) {
            assert!(line.contains("ERROR"), "{line}");
            break;
        }
    }
}
