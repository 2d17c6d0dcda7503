//! `ota demo`, the README's first command, as a test at 200 devices: every
//! step ends as the demo tells it (the firmware, the app and the emergency
//! complete; the bad build halts in its canary wave and its rollback
//! brings back the devices that installed it; a factory line brings its
//! fresh devices onto the firmware), and every Status sent is acknowledged.
//! It runs as `ota serve` does: the broker has accounts and every device
//! logs in with its own provisioned password.

use harness::demo::{run, DemoOptions};

/// One demo at a time: each runs a broker, a bridge and hundreds of
/// devices. Run together on the shared 2-core machine, the plain demo
/// once counted one identity refusal (not seen when it ran alone; the
/// cause was not found).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_its_story() {
    let _one = ONE_AT_A_TIME.lock().await;
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

/// `ota demo --tls`: the same story over mutual TLS, at 100 devices. Every
/// device connect is a certificate login (the fleet has no passwords, so
/// a device on the plain listener could not log in at all), and the only
/// password logins are the bridge's and the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_its_story_over_mutual_tls() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = run(DemoOptions {
        devices: 100,
        keep: None,
        json: true,
        progress: false,
        tls: true,
        ..DemoOptions::default()
    })
    .await
    .expect("the demo runs to its end over mutual TLS");
    assert!(s.tls);
    let states: Vec<&str> = s.campaigns.iter().map(|c| c.state.as_str()).collect();
    assert_eq!(
        states,
        [
            "completed",
            "completed",
            "completed",
            "halted",
            "completed",
            "standing"
        ]
    );
    let line = &s.campaigns[5];
    assert_eq!((line.success, line.targeted), (100, 100), "{line:?}");
    assert_eq!(s.statuses_acked, s.statuses_sent);
    assert_eq!(s.provisioned, 200, "100 in the fleet, 100 off the line");
    assert_eq!(s.identity_refused, 0);
    // Each of the 200 devices connected at least once, by certificate.
    assert!(s.certificate_logins >= 200, "{s:?}");
    // The bridge's two connections and the operator's: no device.
    assert!(s.password_logins <= 6, "{s:?}");
}
