//! The dashboard in a real browser, live: headless Chromium (Debian's
//! `chromium`, driven over WebDriver by Debian's `chromium-driver`) loads
//! `/` from a bridge running a campaign whose first wave one canary holds
//! open by deferring. The page shows the waves and counts of `ota campaign
//! status --json`; the canary is then replaced by one that installs, and
//! without a reload the page follows the campaign through its second wave
//! to its halt (one acme device fails its install): waves and counts
//! again as the CLI has them, the failed device with its error and
//! detail, the commands to copy. An emergency stands out. A wrong token
//! and a stopped bridge each get their message. A screenshot is saved in
//! the test's temp dir (and copied to `$OTA_DASHBOARD_PNG` when set); the
//! page's console has no error throughout. Needs Debian's `chromium` and
//! `chromium-driver` (.ci/run installs them).

mod blocks_common;
mod campaign_common;
mod common;
mod http_common;

use bridge::client::OpsClient;
use campaign_common::*;
use http_common::browser::Browser;
use http_common::{get, two_waves, Rollout};
use schemas::ops::Command;
use serde_json::{json, Value};

/// The counts as the page writes them (`countsText` in dashboard.html).
fn counts_text(c: &Value) -> String {
    format!(
        "{} ok · {} failed · {} n/a · {} pending of {}",
        c["success"], c["failure"], c["not_applicable"], c["pending"], c["members"]
    )
}

/// `ota campaign status ID --json`: the CLI's reply, as JSON.
async fn cli_status(ops: &OpsClient, id: &str) -> Value {
    ops.call_ok(Command::CampaignStatus { id: cid(id) })
        .await
        .expect("campaign status")
}

/// What each wave's row should say, from the CLI's status: (state, counts
/// text), as `renderCampaign` draws it (an ended wave its end's counts,
/// the live one the current counts, a pending one none).
fn waves_of(s: &Value) -> Vec<(String, String)> {
    s["plan"]
        .as_array()
        .expect("a plan")
        .iter()
        .map(|w| {
            let live = w["wave"] == s["wave"] && w.get("end").is_none();
            let counts = match w.get("end") {
                Some(end) => counts_text(&end["counts"]),
                None if live && !s["counts"].is_null() => counts_text(&s["counts"]),
                None => String::new(),
            };
            (w["state"].as_str().expect("a state").to_string(), counts)
        })
        .collect()
}

/// A script's JSON literal for `s`.
fn lit(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A script: true when campaign `id`'s card shows exactly `waves` and the
/// card's state is `state`.
fn shows_waves(id: &str, state: &str, waves: &[(String, String)]) -> String {
    format!(
        r#"const card = document.getElementById({card});
        if (!card || card.dataset.state !== {state}) return false;
        const rows = [...card.querySelectorAll(".wave")].map(w => [w.dataset.state, w.querySelector(".nums").textContent]);
        return JSON.stringify(rows) === {want};"#,
        card = lit(&format!("campaign-{id}")),
        state = lit(state),
        want = lit(&serde_json::to_string(waves).expect("JSON")),
    )
}

/// A script: true when the red banner is up and says `says`, and the
/// header's connection word is `conn`.
fn banner(says: &str, conn: &str) -> String {
    format!(
        r#"const b = document.getElementById("banner");
        return b.classList.contains("on") && b.textContent.includes({says})
            && document.getElementById("conn").textContent === {conn};"#,
        says = lit(says),
        conn = lit(conn),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_campaign_live() {
    let devices = vec![
        DeviceOpts::new("canary-1", "canary"),
        DeviceOpts::new("canary-2", "canary"),
        DeviceOpts::new("canary-3", "canary").always_deferring(),
        DeviceOpts::new("acme-1", "acme"),
        DeviceOpts::new("acme-2", "acme").failing(),
    ];
    let Rollout {
        ops,
        addr,
        mut devices,
        mut stack,
    } = Rollout::start("3.0.0", devices).await;
    two_waves(&ops, "fw-live", "3.0.0", 600).await;
    // Two canaries done, the third deferring: wave 1 stays open.
    wait_status(&ops, "fw-live", "two successes in wave 1", |s| {
        s.summary
            .counts
            .is_some_and(|c| c.success == 2 && c.pending == 1)
    })
    .await;

    let dir = tempfile::tempdir().expect("a temp dir");
    let browser = Browser::start(dir.path()).await;
    let url = format!("http://{addr}/");
    browser.goto(&url).await;
    browser
        .until(
            "a finished poll",
            "return document.body.dataset.loaded === '1'",
        )
        .await;
    // Marks this document: a reload would lose it.
    browser
        .js("window.otaSameDocument = true; return true")
        .await;

    // Wave 1 running with the CLI's counts, wave 2 pending.
    let before = cli_status(&ops, "fw-live").await;
    assert_eq!(before["state"], json!("running"), "{before}");
    let waves = waves_of(&before);
    assert_eq!(waves[0].1, counts_text(&before["counts"]));
    assert_eq!(waves[1], ("pending".to_string(), String::new()));
    browser
        .until(
            &format!("wave rows {waves:?}"),
            &shows_waves("fw-live", "running", &waves),
        )
        .await;
    // The fleet's tiles and the devices table match the API.
    let fleet = get(addr, "/api/v1/fleet", &[]).await.json();
    let registered = browser
        .js("return document.querySelector('#fleet-registered b').textContent")
        .await;
    assert_eq!(registered, json!(fleet["registered"].to_string()));
    browser
        .until(
            "the devices table",
            "return document.getElementById('devices').textContent.includes('5 devices match; showing 5')",
        )
        .await;
    // The gate's decisions as a timeline; the commands of a running campaign.
    let text = browser
        .js("return document.getElementById('campaign-fw-live').innerHTML")
        .await;
    let text = text.as_str().unwrap_or_default();
    assert!(text.contains("data-decision=\"wave_started\""), "{text}");
    for cmd in [
        "ota campaign pause fw-live",
        "ota campaign abort fw-live",
        "ota campaign set-gates fw-live --success-bar 100% --halt-above 5% --min-sample 1 --wave-timeout 600s",
    ] {
        assert!(text.contains(cmd), "no {cmd:?} in:\n{text}");
    }

    // The deferring canary gives way to one that installs: the campaign
    // moves on, and the page follows without a reload.
    devices.stop(&"canary-3".parse().expect("an id")).await;
    devices.spawn(&stack, DeviceOpts::new("canary-3", "canary"));
    browser
        .until(
            "wave 1 passed and wave 2 started",
            r#"const w = document.querySelectorAll('#campaign-fw-live .wave');
            return w.length === 2 && w[0].dataset.state === "passed" && w[1].dataset.state !== "pending";"#,
        )
        .await;
    // acme-2 fails: the gate halts wave 2.
    let halted = wait_state(&ops, "fw-live", "halted", LONG).await;
    assert_eq!(halted.summary.state, "halted");
    let after = cli_status(&ops, "fw-live").await;
    let waves = waves_of(&after);
    assert_eq!(waves[0].0, "passed");
    assert_eq!(waves[1].0, "halted");
    browser
        .until(
            &format!("wave rows {waves:?}"),
            &shows_waves("fw-live", "halted", &waves),
        )
        .await;
    assert_eq!(
        browser.js("return window.otaSameDocument === true").await,
        json!(true),
        "the page was reloaded"
    );
    assert_ne!(before["counts"], after["counts"], "nothing changed");

    // The failed device, as the API's members list has it.
    let members = get(
        addr,
        "/api/v1/campaigns/fw-live/members?outcome=failure",
        &[],
    )
    .await
    .json();
    assert_eq!(members["total"], json!(1), "{members}");
    let failed = &members["members"][0];
    assert_eq!(failed["id"], json!("acme-2"), "{members}");
    let error = failed["error"].as_str().expect("an error code");
    browser
        .until(
            "acme-2 in the failed devices",
            &format!(
                r#"const r = document.querySelector('#campaign-fw-live [data-role=failed] tr[data-device="acme-2"]');
                return !!r && r.textContent.includes({error}) && r.textContent.includes({detail});"#,
                error = lit(error),
                detail = lit(failed["detail"].as_str().unwrap_or_default()),
            ),
        )
        .await;
    // A halted campaign's commands.
    let cmds = browser
        .js("return document.querySelector('#campaign-fw-live [data-role=commands]').textContent")
        .await;
    let cmds = cmds.as_str().unwrap_or_default();
    for cmd in [
        "ota campaign resume fw-live",
        "ota campaign set-gates fw-live",
        "ota campaign abort fw-live",
        "ota campaign retry fw-live",
    ] {
        assert!(cmds.contains(cmd), "no {cmd:?} in {cmds:?}");
    }
    // It was created without --rollback-release: nothing to roll back to.
    assert!(
        !cmds.contains("ota campaign rollback"),
        "a rollback offered for a campaign without a rollback release: {cmds:?}"
    );

    // An emergency stands out: its card and its row are marked.
    http_common::firmware(&stack, "3.0.1").await;
    ops.call_ok::<Value>(Command::Emergency {
        id: cid("em-1"),
        release: vec!["fw-3.0.1-esp32".parse().expect("an id")],
        groups: vec!["canary".parse().expect("a group")],
        all: false,
    })
    .await
    .expect("emergency");
    browser
        .until(
            "the emergency marked",
            r#"const card = document.getElementById("campaign-em-1");
            const row = document.querySelector('tr[data-campaign="em-1"]');
            return !!card && card.classList.contains("emergency") && !!row && row.classList.contains("emergency")
                && card.textContent.includes("EMERGENCY");"#,
        )
        .await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the page's console: {errors:#?}");
    let png = dir.path().join("dashboard.png");
    browser.screenshot(&png).await;
    if let Some(to) = std::env::var_os("OTA_DASHBOARD_PNG") {
        std::fs::copy(&png, to).expect("copy the screenshot");
    }

    // A wrong token: the page says access is refused, and how to fix it.
    // A new document (a change of the fragment alone would not load one).
    browser.goto(&format!("{url}?again#token=ota_wrong")).await;
    browser
        .until("the refusal", &banner("access refused", "not authorised"))
        .await;
    // The bridge gone: the page says it cannot reach it.
    devices.stop_all().await;
    stack.stop_bridge().await;
    browser
        .until(
            "the bridge gone",
            &banner("cannot be reached", "disconnected"),
        )
        .await;
    // Only the refused reads and the failed fetches were logged since.
    let errors = browser.console_errors().await;
    assert!(
        errors.iter().all(|e| e.contains("401")
            || e.contains("Failed to load")
            || e.contains("ERR_CONNECTION_REFUSED")),
        "the page's console: {errors:#?}"
    );
    browser.close().await;
}
