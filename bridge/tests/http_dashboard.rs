//! The dashboard in a real browser: headless Chromium loads `/` from a
//! bridge running a live campaign (one canary holds its wave open by
//! deferring), runs the page's script, and the DOM it leaves shows the
//! campaign's id, state and the same counts as `/api/campaigns/{id}`.
//! Needs Debian's `chromium` (.ci/run installs it).

mod blocks_common;
mod campaign_common;
mod common;
mod http_common;

use std::time::Duration;

use campaign_common::*;
use http_common::{get, two_waves, Rollout};
use serde_json::{json, Value};

/// The counts as the page writes them (`countsText` in dashboard.html).
fn counts_text(c: &Value) -> String {
    format!(
        "{} ok · {} failed · {} n/a · {} pending of {}",
        c["success"], c["failure"], c["not_applicable"], c["pending"], c["members"]
    )
}

/// The opening tag of the element with `id` in `dom`.
fn tag_with_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let needle = format!("id=\"{id}\"");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no element {needle} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap_or(0);
    let end = at + dom[at..].find('>').unwrap_or(0);
    &dom[start..=end]
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom`,
/// `--screenshot=FILE`), its console logged to stderr.
async fn chromium_run(
    chromium: &std::path::Path,
    profile: &std::path::Path,
    url: &str,
    action: &str,
) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1280,1600",
                // Lets the page's fetches and a few polls run first.
                "--virtual-time-budget=6000",
                action,
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.join("profile").display()
            ))
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium ends within 90 s")
    .expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_live_campaign() {
    let chromium = common::which("chromium").unwrap_or_else(|| {
        panic!(
            "chromium is not installed, and this test loads the dashboard in it: \
             `apt-get install -y chromium` (CI's .ci/run does) and run again"
        )
    });
    let devices = vec![
        DeviceOpts::new("canary-1", "canary"),
        DeviceOpts::new("canary-2", "canary"),
        DeviceOpts::new("canary-3", "canary").always_deferring(),
        DeviceOpts::new("acme-1", "acme"),
    ];
    let Rollout {
        ops,
        addr,
        mut devices,
        // Held to the end: it owns the broker, the bridge and its data.
        stack: _stack,
    } = Rollout::start("3.0.0", devices).await;
    two_waves(&ops, "fw-live", "3.0.0", 600).await;
    // Two canaries done, the third deferring: wave 1 stays open.
    wait_status(&ops, "fw-live", "two successes in wave 1", |s| {
        s.summary
            .counts
            .is_some_and(|c| c.success == 2 && c.pending == 1)
    })
    .await;
    let api = get(addr, "/api/campaigns/fw-live", &[]).await.json();
    assert_eq!(api["state"], json!("running"), "{api}");

    let profile = tempfile::tempdir().expect("a temp dir");
    let url = format!("http://{addr}/");
    let out = chromium_run(&chromium, profile.path(), &url, "--dump-dom").await;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium failed ({}): {log}",
        out.status
    );
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the script did not finish a poll:\n{dom}"
    );
    // The page's console stays silent: no script error, no CSP violation.
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the page's console: {console:#?}");
    assert!(
        !dom.contains("[object "),
        "an object rendered as text:\n{dom}"
    );

    // The campaign's card: its id, its state, the API's counts.
    let card = tag_with_id(&dom, "campaign-fw-live");
    assert!(card.contains("data-state=\"running\""), "{card}");
    let now = get(addr, "/api/campaigns/fw-live", &[]).await.json();
    let want = format!("current wave: {}", counts_text(&now["counts"]));
    assert!(
        dom.contains(&want),
        "the page does not show {want:?}:\n{dom}"
    );
    assert!(
        dom.contains("data-wave=\"1\" data-state=\"pending\""),
        "{dom}"
    );
    // The gate's decisions, as a timeline.
    assert!(dom.contains("data-decision=\"wave_started\""), "{dom}");
    // The fleet's tiles.
    let fleet = get(addr, "/api/fleet", &[]).await.json();
    let tile = format!("id=\"fleet-registered\"><b>{}</b>", fleet["registered"]);
    assert!(dom.contains(&tile), "no {tile:?} in:\n{dom}");
    // The devices table, one page.
    assert!(dom.contains("4 devices match; showing 4"), "{dom}");

    // A screenshot, kept in the test's temp dir.
    let png = profile.path().join("dashboard.png");
    let shot = format!("--screenshot={}", png.display());
    let out = chromium_run(&chromium, profile.path(), &url, &shot).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("the screenshot is written");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    devices.stop_all().await;
}
