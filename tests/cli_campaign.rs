//! Campaigns through the real `ota` binary: `ota serve` (embedded broker),
//! reference device agents, and `ota campaign create | start | watch |
//! status | list` as an operator types them. Mid-campaign the bridge is
//! killed with SIGKILL (its broker dies with it) and started again; the
//! campaign still ends completed, every device updated.

mod cli_support;
mod serve_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bridge::campaign::view::CampaignStatus;
use device_sim::agent::SharedImages;
use schemas::ops::Command as Op;
use schemas::CampaignId;
use serve_support::*;

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    open_config(
        dir,
        &format!(
            "listen = \"127.0.0.1:{port}\"\n\
             segment_size = 1048576\n\
             segment_count = 3\n\
             allow_anonymous = true\n"
        ),
    )
}

/// Runs `ota args...` off the runtime.
async fn ota(dir: &Path, args: &[&str]) -> cli_support::Run {
    cli_support::ota_async(dir, args).await
}

async fn status(client: &bridge::client::OpsClient) -> CampaignStatus {
    client
        .call_ok(Op::CampaignStatus {
            id: CampaignId::new("fw-5").unwrap(),
        })
        .await
        .expect("campaign status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_survives_kill_9_of_the_bridge_and_the_cli_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let operator = operator_key(d);
    let release = release_key(d, 11);
    let port = free_port();
    let cfg = config(d, port);
    let serve = Serve::start(&cfg);
    let client = wait_ready(port, &operator).await;

    // A signed image, pushed as `ota artifact push` does, and its
    // rollback release: the earlier version, allowed to downgrade.
    push_firmware(&client, &release, "fw-5-esp32", "5.0.0", false).await;
    push_firmware(&client, &release, "fw-4-esp32", "4.0.0", true).await;

    // Before any device registered, the empty group says why.
    let put = ota(
        d,
        &[
            "group",
            "put",
            "acme",
            "--selector",
            "customer=acme",
            "--config",
            "ota.toml",
        ],
    )
    .await
    .ok();
    assert!(
        put.stdout.contains("no device has registered yet"),
        "{}",
        put.stdout
    );
    let images = SharedImages::new();
    let devices: Vec<_> = (1..=6)
        .map(|i| {
            agent(
                &format!("acme-{i}"),
                port,
                &release,
                images.clone(),
                ("customer", "acme"),
                None,
            )
        })
        .collect();
    wait_registered(&client, 6).await;

    // A selector that matches none of them lists the labels they have.
    let typo = ota(
        d,
        &[
            "group",
            "put",
            "acme2",
            "--selector",
            "customer=Acme",
            "--config",
            "ota.toml",
        ],
    )
    .await
    .ok();
    assert!(typo.stdout.contains("customer = acme"), "{}", typo.stdout);
    // No --kind: the CLI asks the bridge for the artifact's. A maintenance
    // window open for the next hour, a stop time in an hour, a rollback.
    let now = bridge::unix_now();
    let hms = |t: u64| {
        let s = t % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    };
    let window = format!("acme=daily {}-{} UTC", hms(now - 60), hms(now + 3600));
    let created = ota(
        d,
        &[
            "campaign",
            "create",
            "--config",
            "ota.toml",
            "--id",
            "fw-5",
            "--release",
            "fw-5-esp32",
            "--wave",
            "acme=50%",
            "--wave",
            "acme=100%",
            "--success-bar",
            "100%",
            "--min-sample",
            "1",
            "--wave-timeout",
            "60s",
            "--window",
            &window,
            "--stop-at",
            "+1h",
            "--rollback-release",
            "fw-4-esp32",
        ],
    )
    .await
    .ok();
    assert!(created.stdout.contains("expires at"), "{}", created.stdout);
    assert!(
        created.stdout.contains("pre-flight: 6 devices targeted"),
        "{}",
        created.stdout
    );
    assert!(
        created.stdout.contains("next: ota campaign start fw-5"),
        "{}",
        created.stdout
    );
    ota(d, &["campaign", "start", "fw-5", "--config", "ota.toml"])
        .await
        .ok();

    let at_kill = within("a first device to succeed", async {
        loop {
            let s = status(&client).await;
            if s.current.as_ref().map_or(0, |c| c.counts.success) > 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_ne!(
        at_kill.summary.state, "completed",
        "the kill must come mid-campaign"
    );
    client.close().await;
    // SIGKILL mid-campaign: the bridge and its embedded broker die at once.
    serve.kill9();
    let serve = Serve::start(&cfg);
    let client = wait_ready(port, &operator).await;

    // `watch` follows it to the end and exits 0 with the summary.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_ota"))
        .args(["campaign", "watch", "fw-5", "--config", "ota.toml"])
        .current_dir(d)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ota campaign watch runs");
    let code = within("ota campaign watch to end", async {
        loop {
            if let Some(s) = watch.try_wait().expect("wait") {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let out = watch.wait_with_output().expect("the watch output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        code.success(),
        "watch failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("campaign fw-5: firmware main 5.0.0 (completed"),
        "{stdout}"
    );

    let s = status(&client).await;
    assert_eq!(s.summary.state, "completed");
    assert_eq!(s.windows.len(), 1, "the window survived the kill");
    assert!(s.windows[0].open);
    let c = s.current.expect("a tally").counts;
    assert_eq!((c.members, c.success, c.failure), (6, 6, 0));
    let json = ota(
        d,
        &[
            "campaign", "status", "fw-5", "--json", "--config", "ota.toml",
        ],
    )
    .await
    .ok();
    let parsed: CampaignStatus =
        serde_json::from_str(&json.stdout).expect("status --json reads back");
    assert_eq!(parsed.summary.state, "completed");
    let list = ota(d, &["campaign", "list", "--config", "ota.toml"])
        .await
        .ok();
    assert!(
        list.stdout.contains("fw-5") && list.stdout.contains("completed"),
        "{}",
        list.stdout
    );
    // Watching an ended campaign prints its end at once (JSON lines).
    let lines = ota(
        d,
        &[
            "campaign", "watch", "fw-5", "--json", "--config", "ota.toml",
        ],
    )
    .await
    .ok();
    let last: serde_json::Value =
        serde_json::from_str(lines.stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(last["kind"], "campaign.final");
    // A refused command: one line saying what to do.
    ota(d, &["campaign", "start", "nope", "--config", "ota.toml"])
        .await
        .fails_with(1, &["no campaign nope", "ota campaign list"]);

    client.close().await;
    for t in devices {
        t.abort();
    }
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_brings_its_batches_to_its_release_across_a_retarget_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let operator = operator_key(d);
    let release = release_key(d, 11);
    let port = free_port();
    let cfg = config(d, port);
    let serve = Serve::start(&cfg);
    let client = wait_ready(port, &operator).await;
    push_firmware(&client, &release, "fw-5-esp32", "5.0.0", false).await;
    push_firmware(&client, &release, "fw-6-esp32", "6.0.0", false).await;

    let put = ota(
        d,
        &[
            "line",
            "put",
            "line-3",
            "--release",
            "fw-5-esp32",
            "--min-sample",
            "1",
            "--config",
            "ota.toml",
        ],
    )
    .await
    .ok();
    assert!(
        put.stdout
            .contains("line line-3: made, standing campaign line-3"),
        "{}",
        put.stdout
    );
    let images = SharedImages::new();
    let line = ("line", "line-3");
    let mut devices: Vec<_> = (1..=3)
        .map(|i| {
            agent(
                &format!("b1-{i}"),
                port,
                &release,
                images.clone(),
                line,
                None,
            )
        })
        .collect();
    within("three devices brought up", async {
        loop {
            let out = ota(d, &["line", "status", "line-3", "--config", "ota.toml"]).await;
            if out.stdout.contains("brought up: 3 today, 3 in all") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    // A newer release: the line's campaign is retargeted.
    let put = ota(
        d,
        &[
            "line",
            "put",
            "line-3",
            "--release",
            "fw-6-esp32",
            "--config",
            "ota.toml",
        ],
    )
    .await
    .ok();
    assert!(
        put.stdout.contains("retargeted from main 5.0.0 to 6.0.0"),
        "{}",
        put.stdout
    );
    // The bridge dies mid-line, and comes back.
    client.close().await;
    serve.kill9();
    let serve = Serve::start(&cfg);
    let client = wait_ready(port, &operator).await;
    devices.extend((1..=2).map(|i| {
        agent(
            &format!("b2-{i}"),
            port,
            &release,
            images.clone(),
            line,
            None,
        )
    }));
    within("every device on 6.0.0", async {
        loop {
            let s: CampaignStatus = client
                .call_ok(Op::CampaignStatus {
                    id: CampaignId::new("line-3-r2").unwrap(),
                })
                .await
                .expect("status");
            if s.line.as_ref().is_some_and(|l| l.success_total == 5) {
                assert_eq!(s.summary.state, "standing");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let list = ota(d, &["line", "list", "--json", "--config", "ota.toml"])
        .await
        .ok();
    let lines: serde_json::Value = serde_json::from_str(&list.stdout).expect("--json");
    assert_eq!(lines.as_array().map(Vec::len), Some(1), "{lines}");
    assert_eq!(lines[0]["id"], "line-3-r2");
    ota(d, &["line", "status", "nope", "--config", "ota.toml"])
        .await
        .fails_with(1, &["no line nope", "ota line put nope"]);
    client.close().await;
    for t in devices {
        t.abort();
    }
    drop(serve);
}
