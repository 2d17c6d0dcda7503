//! `ota demo`, the README's first command, as a test at 200 devices: every
//! step ends as the demo tells it (the firmware, the app and the emergency
//! complete; the bad build halts in its canary wave and its rollback
//! brings back the devices that installed it; a factory line brings its
//! fresh devices onto the firmware), and every Status sent is acknowledged.
//! It runs as `ota serve` does: the broker has accounts and every device
//! logs in with its own provisioned password.

use harness::demo::{run, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_its_story() {
    let s = run(DemoOptions {
        devices: 200,
        keep: None,
        json: true,
        progress: false,
        ..DemoOptions::default()
    })
    .await
    .expect("the demo runs to its end");
    let url = s.dashboard.as_deref().expect("the demo runs the dashboard");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let states: Vec<(&str, &str)> = s
        .campaigns
        .iter()
        .map(|c| (c.campaign.as_str(), c.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("fw-main-1.1.0", "completed"),
            ("app-dashboard-2.1.0", "completed"),
            ("emergency-settings-1.0.1", "completed"),
            ("fw-main-1.2.0", "halted"),
            ("fw-main-1.2.0-rollback", "completed"),
            ("press-1", "standing"),
        ]
    );
    // Every fresh device of the factory line came off it on the release.
    let line = &s.campaigns[5];
    assert_eq!((line.success, line.targeted), (100, 100), "{line:?}");
    let (bad, back) = (&s.campaigns[3], &s.campaigns[4]);
    // The rollback takes the devices that installed by the tick after the
    // halt: those counted at the halt, and any that finished meanwhile.
    assert!(back.targeted >= bad.success, "{back:?} {bad:?}");
    assert!(back.targeted <= bad.targeted);
    assert_eq!(back.success, back.targeted);
    assert_eq!(s.statuses_acked, s.statuses_sent);
    // Every device logged in with its own provisioned password, on a
    // broker that checks it (one refusal would be a device off E1).
    assert_eq!(s.provisioned, 300, "200 in the fleet, 100 off the line");
    assert_eq!(s.identity_refused, 0);
}
