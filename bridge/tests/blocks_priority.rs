//! While a large normal download runs, an emergency artifact's download
//! (started later) completes first: its blocks take nine tenths of the
//! egress.

mod blocks_common;
mod common;

use blocks_common::*;
use bridge::blocks::BlocksConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_download_overtakes_a_running_normal_one() {
    // 200 KiB/s: the normal 1 MiB image needs about 5 s alone.
    let stack = stack(BlocksConfig {
        egress_bytes_per_sec: 200 * 1024,
        ..BlocksConfig::default()
    })
    .await;
    let normal_img = image(1024 * 1024, 10);
    let urgent_img = image(64 * 1024, 11);
    let normal = store(&stack, &normal_img, "fw-normal", 4096).await;
    let urgent = store(&stack, &urgent_img, "fw-urgent", 4096).await;
    let cfg = quick();

    let d = device(&stack, "slow-1", &normal).await;
    let (m, c) = (normal.clone(), cfg.clone());
    let normal_run = tokio::spawn(async move { d.download(&m, &c).await });
    // Wait until the normal download is well under way.
    let metrics = stack.bridge().blocks().metrics().clone();
    common::until("the normal download to be under way", || {
        metrics.snapshot().egress_bytes() > 100 * 1024
    })
    .await;

    assert!(
        stack
            .bridge()
            .blocks()
            .set_priority(urgent.artifact.clone(), true)
            .await
    );
    let d = device(&stack, "urgent-1", &urgent).await;
    let urgent_report = d
        .download(&urgent, &cfg)
        .await
        .expect("the emergency download completes");
    let normal_report = normal_run
        .await
        .expect("the task")
        .expect("the normal download completes too");
    assert_eq!(urgent_report.image.as_deref(), Some(urgent_img.as_slice()));
    assert_eq!(normal_report.image.as_deref(), Some(normal_img.as_slice()));
    let (u, n) = (
        urgent_report.finished.expect("finished"),
        normal_report.finished.expect("finished"),
    );
    assert!(
        u < n,
        "the emergency finished {:?} after the normal one",
        u - n
    );
    assert!(
        n - u > std::time::Duration::from_secs(1),
        "the normal download still had most of its way to go: it ended {:?} after the emergency",
        n - u
    );
}
