//! A device downloads through the real bridge and broker: every block's
//! proof verified and the image's sha256 matching, by unicast alone and by
//! broadcast together, and through 30% loss.

mod blocks_common;
mod common;

use blocks_common::*;
use bridge::blocks::BlocksConfig;
use harness::downloader::{DownloadError, DownloadReport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_device_gets_its_blocks_by_unicast() {
    let stack = stack(BlocksConfig::default()).await;
    let img = image(50_000, 1);
    let m = store(&stack, &img, "fw-alone", 1024).await;
    let dev = device(&stack, "dev-alone", &m).await;
    let report = dev
        .download(&m, &quick())
        .await
        .expect("the download completes");
    assert_eq!(
        report.image.as_deref(),
        Some(img.as_slice()),
        "sha256 checked, bytes equal"
    );
    assert_eq!(report.rejected, 0, "every proof verified");
    assert_eq!(report.via_broadcast, 0);
    assert!(report.via_unicast >= u64::from(m.blocks));
    let s = stack.bridge().blocks().metrics().snapshot();
    assert_eq!(s.blocks_broadcast, 0);
    assert_eq!(s.blocks_unicast, u64::from(m.blocks));
    assert_eq!(s.refused_total(), 0);
}

/// Each download of `runs` completed with `img`: their reports.
async fn completed(
    runs: Vec<tokio::task::JoinHandle<Result<DownloadReport, DownloadError>>>,
    img: &[u8],
) -> Vec<DownloadReport> {
    let mut reports = Vec::with_capacity(runs.len());
    for run in runs {
        let report = run
            .await
            .expect("the task")
            .expect("the download completes");
        assert_eq!(report.image.as_deref(), Some(img));
        reports.push(report);
    }
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_devices_together_get_broadcast() {
    // A slow egress spreads the image over several merge windows, so the
    // five requests merge whatever the windows' phase.
    let stack = stack(BlocksConfig {
        egress_bytes_per_sec: 100 * 1024,
        ..BlocksConfig::default()
    })
    .await;
    let img = image(60_000, 2);
    let m = store(&stack, &img, "fw-together", 1024).await;
    let mut devices = Vec::new();
    for i in 0..5 {
        devices.push(device(&stack, &format!("dev-{i}"), &m).await);
    }
    let cfg = quick();
    let runs: Vec<_> = devices
        .into_iter()
        .map(|d| {
            let (m, cfg) = (m.clone(), cfg.clone());
            tokio::spawn(async move { d.download(&m, &cfg).await })
        })
        .collect();
    for report in completed(runs, &img).await {
        assert_eq!(report.rejected, 0);
        assert!(
            report.via_broadcast > 0,
            "blocks came on the artifact's topic"
        );
    }
    let s = stack.bridge().blocks().metrics().snapshot();
    assert!(s.blocks_broadcast >= u64::from(m.blocks), "{s:?}");
    // Five unicast downloads would send 5x the image; merged, far less.
    assert!(
        s.egress_bytes() < 2 * img.len() as u64,
        "egress {} for {} bytes",
        s.egress_bytes(),
        img.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_30_percent_of_blocks_lost_every_device_completes() {
    let stack = stack(BlocksConfig::default()).await;
    let img = image(80_000, 3);
    let m = store(&stack, &img, "fw-lossy", 1024).await;
    let mut runs = Vec::new();
    for i in 0..3 {
        let d = device(&stack, &format!("lossy-{i}"), &m).await;
        let cfg = harness::downloader::DownloadConfig {
            drop_rate: 0.3,
            seed: 100 + i,
            ..quick()
        };
        let m = m.clone();
        runs.push(tokio::spawn(async move { d.download(&m, &cfg).await }));
    }
    for report in completed(runs, &img).await {
        assert!(report.dropped > 0, "blocks were dropped");
        assert!(report.requests > 1, "missing blocks were asked again");
    }
}
