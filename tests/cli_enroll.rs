//! Enrollment (issue 12, `[devices] admission = "enroll"`, docs/protocol.md
//! "Enrollment") against the real `ota serve` and its embedded broker:
//!
//! - `ota devices enrollment-token` writes the token and its hash; the
//!   bridge's config names the hash, never the token;
//! - a wrong token, a short secret, the token under a provisioned id, the
//!   bridge's client id, its account or an operator's id are refused;
//! - a device that logs in with the token and a secret of its own is
//!   pending: it says Hello, `ota devices list --json` shows it pending, it
//!   may not subscribe to `P/emergency`, a group's topics or an artifact's
//!   blocks, nor publish a Status or a block request, and its id is bound
//!   to its secret (the token with another secret is refused);
//! - a campaign to a group whose selector matches the pending device
//!   counts only the active one (pre-flight and gates);
//! - `ota devices accept` lets it take part: it is in the group and the
//!   next campaign counts it, and its secret alone logs it in;
//! - `ota devices reject` closes the other pending device's connection
//!   and refuses it from then on;
//! - `[devices] registrations_per_minute` bounds enrollments, counted as
//!   `registration_rate`.

mod cli_support;
mod serve_support;

use std::path::Path;

use bridge::campaign::view::CampaignStatus;
use bridge::ops::fleet_cmds::DeviceList;
use cli_support::ota_ok as ota;
use device_sim::agent::SharedImages;
use harness::raw::RawClient;
use rumqttc::{MqttOptions, QoS, SubscribeReasonCode};
use schemas::ops::Command as Op;
use schemas::provisioning::{enrollment_password, Provisioning};
use schemas::topic::{Topic, Topics};
use schemas::{ArtifactId, CampaignId, DeviceId, GroupName};
use serve_support::*;

/// Secrets the test's devices choose (32 characters at least).
const NEWBIE_SECRET: &str = "newbie-secret-0123456789abcdefghij";
const SQUATTER_SECRET: &str = "squatter-secret-0123456789abcdefgh";

/// Writes the enrollment token with the CLI, and `ota.toml` with
/// admission "enroll" naming its hash; returns the token.
fn setup(dir: &Path, port: u16, per_minute: u32) -> String {
    cli_support::ota(dir, &["devices", "enrollment-token", "--out", "keys"]).ok();
    let token = std::fs::read_to_string(dir.join("keys/enrollment.token")).unwrap();
    secured_config(
        dir,
        port,
        "metrics_interval_secs = 1\n",
        &format!(
            "[devices]\n\
             admission = \"enroll\"\n\
             enrollment_token_hash = \"keys/enrollment.hash\"\n\
             registrations_per_minute = {per_minute}\n\
             [blocks]\nmerge_window_ms = 20\n"
        ),
    );
    let config = std::fs::read_to_string(dir.join("ota.toml")).unwrap();
    assert!(!config.contains(token.trim()), "the config holds the token");
    token.trim().to_string()
}

/// `ota devices list --json`.
async fn list(dir: &Path) -> DeviceList {
    let run = ota(dir, &["devices", "list", "--json"]).await;
    serde_json::from_str(&run.stdout).expect("devices list --json")
}

/// Waits until `ota devices list --json` satisfies `ok`.
async fn wait_list(dir: &Path, what: &str, ok: impl Fn(&DeviceList) -> bool) -> DeviceList {
    within(what, async {
        loop {
            let l = list(dir).await;
            if ok(&l) {
                return l;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
}

/// A login of client id `client` as `username` with `password`.
async fn login_as(
    port: u16,
    client: &str,
    username: &str,
    password: &str,
) -> Result<RawClient, harness::raw::RawError> {
    let mut o = MqttOptions::new(client, "127.0.0.1", port);
    o.set_credentials(username, password);
    RawClient::connect(o).await
}

/// Creates and starts campaign `id` of `release` to group acme, and waits
/// for it to complete; returns its final counts (members, success).
async fn run_campaign(
    dir: &Path,
    client: &bridge::client::OpsClient,
    id: &str,
    release: &str,
) -> (u64, u64) {
    cli_support::create_to_acme(dir, id, release).await;
    let campaign = CampaignId::new(id).unwrap();
    let mut events = client.events().await.expect("the event stream");
    ota(dir, &["campaign", "start", id]).await;
    wait_event(
        &mut events,
        &campaign,
        bridge::campaign::events::kind::COMPLETED,
    )
    .await;
    let done: CampaignStatus = client
        .call_ok(Op::CampaignStatus { id: campaign })
        .await
        .expect("campaign status");
    assert_eq!(done.summary.state, "completed");
    let c = done.current.expect("a tally").counts;
    assert_eq!(c.failure, 0);
    (u64::from(c.members), u64::from(c.success))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_device_is_pending_until_accepted_and_the_token_opens_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let operator = operator_key(d);
    let release = release_key(d, 12);
    let port = free_port();
    let token = setup(d, port, 100);
    let serve = Serve::start(&d.join("ota.toml"));
    let client = wait_ready_as(port, &operator, Some(ALICE_LOGIN)).await;
    let t = Topics::default();
    let enroll = |secret: &str| enrollment_password(&token, secret);

    push_firmware(&client, &release, "fw-e1-esp32", "6.0.0", false).await;
    ota(d, &["group", "put", "acme", "--selector", "customer=acme"]).await;
    ota(d, &["devices", "provision", "acme-1", "--out", "factory"]).await;
    let acme1 = {
        let bytes = std::fs::read(d.join("factory/acme-1.json")).unwrap();
        let p = Provisioning::from_json(&bytes).unwrap();
        (p.username, p.password)
    };

    // The token opens nothing but an unknown id, with a secret of its own.
    let refused = [
        ("newbie", "newbie", format!("wrong-token:{NEWBIE_SECRET}")),
        ("newbie", "newbie", enroll("short")),
        ("acme-1", "acme-1", enroll(NEWBIE_SECRET)),
        ("ota-bridge", "ota-bridge", enroll(NEWBIE_SECRET)),
        ("ota-bridge-out", "ota-bridge-out", enroll(NEWBIE_SECRET)),
        ("ota-bridge", BRIDGE_LOGIN.0, enroll(NEWBIE_SECRET)),
        ("ota-cli-x", ALICE_LOGIN.0, enroll(NEWBIE_SECRET)),
        ("ota-cli-x", "ota-cli-x", enroll(NEWBIE_SECRET)),
        ("alice", "alice", enroll(NEWBIE_SECRET)),
    ];
    for (client_id, user, password) in &refused {
        assert!(
            login_as(port, client_id, user, password).await.is_err(),
            "{client_id} as {user} logged in with the token"
        );
    }
    let l = list(d).await;
    assert!(l.pending.is_empty() && l.devices.is_empty(), "{l:?}");

    // The real device, provisioned, and a device that enrolls: both in
    // acme's selector.
    let images = SharedImages::new();
    let real = agent(
        "acme-1",
        port,
        &release,
        images.clone(),
        ("customer", "acme"),
        Some(acme1),
    );
    let newbie = agent(
        "newbie",
        port,
        &release,
        images.clone(),
        ("customer", "acme"),
        Some(("newbie".into(), enroll(NEWBIE_SECRET))),
    );
    let l = wait_list(
        d,
        "acme-1 registered and newbie pending with its Hello",
        |l| {
            l.devices.len() == 1
                && l.pending
                    .iter()
                    .any(|p| p.id.as_str() == "newbie" && p.arch.is_some())
        },
    )
    .await;
    assert_eq!(l.devices[0].record.id.as_str(), "acme-1");
    assert_eq!(l.pending_total, 1);
    assert_eq!(
        l.pending[0].labels.get("customer").map(String::as_str),
        Some("acme")
    );

    // A second pending device, by hand: what it may not do.
    let sq = DeviceId::new("squatter").unwrap();
    let mut squatter = RawClient::login(port, "squatter", &enroll(SQUATTER_SECRET))
        .await
        .expect("the token enrolls an unknown id");
    squatter.hello(&t, &sq, "acme").await.unwrap();
    let acme = GroupName::new("acme").unwrap();
    let forbidden = vec![
        t.build(&Topic::Emergency),
        t.build(&Topic::GroupCampaign(acme.clone())),
        t.build(&Topic::GroupEmergency(acme.clone())),
        t.build(&Topic::ArtifactBlocks(
            ArtifactId::new("fw-e1-esp32").unwrap(),
        )),
        "#".to_string(),
    ];
    let mut filters = forbidden.clone();
    filters.push(t.build(&Topic::Groups(sq.clone())));
    let (codes, _) = squatter.subscribe(&filters).await.unwrap();
    let mut want = vec![SubscribeReasonCode::Failure; forbidden.len()];
    want.push(SubscribeReasonCode::Success(QoS::AtLeastOnce));
    assert_eq!(codes, want, "a pending device's SUBACK for {filters:?}");
    // No Status, no block request: acked and dropped.
    squatter
        .publish(&t.build(&Topic::Status(sq.clone())), false, b"x".to_vec())
        .await
        .unwrap();
    squatter
        .publish(&t.build(&Topic::Request(sq.clone())), false, b"x".to_vec())
        .await
        .unwrap();
    squatter.pubacks(3).await.unwrap();
    // Its id is bound to its secret: the token with another one is refused.
    assert!(RawClient::login(port, "squatter", &enroll(NEWBIE_SECRET))
        .await
        .is_err());
    wait_list(d, "two pending devices", |l| l.pending_total == 2).await;

    // A campaign to acme: the pending device in its selector counts nowhere.
    let plan = ota(
        d,
        &[
            "campaign",
            "plan",
            "--id",
            "fw-e1",
            "--release",
            "fw-e1-esp32",
            "--wave",
            "acme=100%",
            "--json",
        ],
    )
    .await;
    let plan: bridge::campaign::plan::Plan =
        serde_json::from_str(&plan.stdout).expect("plan --json");
    assert_eq!((plan.targeted, plan.waves[0].members), (1, 1), "{plan:?}");
    assert_eq!(
        run_campaign(d, &client, "fw-e1", "fw-e1-esp32").await,
        (1, 1)
    );

    // Accepted: newbie logs in again with its full rights, is in acme, and
    // the next campaign counts it.
    ota(d, &["devices", "accept", "newbie"]).await;
    let l = wait_list(d, "newbie active in acme", |l| {
        l.devices
            .iter()
            .any(|v| v.record.id.as_str() == "newbie" && v.groups == vec![acme.clone()])
    })
    .await;
    assert_eq!(l.pending_total, 1, "{l:?}");
    push_firmware(&client, &release, "fw-e2-esp32", "7.0.0", false).await;
    assert_eq!(
        run_campaign(d, &client, "fw-e2", "fw-e2-esp32").await,
        (2, 2)
    );
    newbie.abort();
    let own = RawClient::login(port, "newbie", NEWBIE_SECRET).await;
    assert!(
        own.is_ok(),
        "an accepted device logs in with its own secret alone"
    );

    // Rejected: disconnected at once, refused from then on.
    ota(d, &["devices", "reject", "squatter"]).await;
    within(
        "the rejected device's connection to close",
        squatter.closed(),
    )
    .await
    .unwrap();
    assert!(RawClient::login(port, "squatter", &enroll(SQUATTER_SECRET))
        .await
        .is_err());
    let l = list(d).await;
    assert!(l.pending.is_empty(), "{l:?}");
    cli_support::ota_async(
        d,
        &["devices", "accept", "squatter", "--config", "ota.toml"],
    )
    .await
    .fails_with(1, &["rejected"]);

    client.close().await;
    real.abort();
    serve.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_per_minute_bounds_enrollments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let operator = operator_key(d);
    release_key(d, 12);
    let port = free_port();
    let token = setup(d, port, 3);
    let (serve, log) = Serve::start_logged(&d.join("ota.toml"), "warn,bridge=info,rumqttd=off");
    let client = wait_ready_as(port, &operator, Some(ALICE_LOGIN)).await;
    let secret = |i: u32| format!("secret-{i}-0123456789abcdefghijklmnop");
    for i in 1..=3 {
        let id = format!("r-{i}");
        RawClient::login(port, &id, &enrollment_password(&token, &secret(i)))
            .await
            .unwrap_or_else(|e| panic!("{id} enrolls within the bound: {e}"));
    }
    // The fourth in the same minute is refused; enrolled devices still log in.
    assert!(
        RawClient::login(port, "r-4", &enrollment_password(&token, &secret(4)))
            .await
            .is_err()
    );
    RawClient::login(port, "r-1", &secret(1))
        .await
        .expect("an enrolled device's login takes nothing from the bound");
    let l = wait_list(d, "three pending devices", |l| l.pending_total == 3).await;
    assert!(l.pending.iter().all(|p| p.id.as_str() != "r-4"));
    // Counted and logged in the counters line.
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = log
                .recv_timeout(left)
                .expect("a counters line with registration_rate=1");
            if line.contains(" counters ") && line.contains("registration_rate=1") {
                return;
            }
        }
    })
    .await
    .unwrap();
    client.close().await;
    serve.terminate().await;
}
