//! Bad BlockRequests are refused and counted, a flood from one device is
//! throttled, and a well-behaved device downloads all the same.

mod blocks_common;
mod common;

use blocks_common::*;
use bridge::blocks::{BlocksConfig, Refusal};
use schemas::cbor::MapBuilder;
use schemas::msg::{BlockRequest, WireMessage};
use schemas::topic::Topic;
use schemas::ArtifactId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_counted_and_good_devices_still_download() {
    let stack = stack(BlocksConfig {
        device_requests_per_sec: 5,
        device_request_burst: 10,
        ..BlocksConfig::default()
    })
    .await;
    let img = image(40_000, 4);
    let m = store(&stack, &img, "fw-good", 1024).await;
    let evil = stack.device("evil-1").await;
    let topic = Topic::Request(evil.id.clone());
    let req = |artifact: &str, offset: u32, bitmap: Vec<u8>| {
        BlockRequest {
            artifact: ArtifactId::new(artifact).expect("an id"),
            offset,
            bitmap,
        }
        .encode()
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not cbor", vec![0xff, 0x00, 0x13]),
        ("empty bitmap", req("fw-good", 0, vec![])),
        ("129-byte bitmap", req("fw-good", 0, vec![0xff; 129])),
        (
            "artifact outside the alphabet",
            MapBuilder::new()
                .put("artifact", "a/b")
                .put("offset", 0u64)
                .put_bytes("bitmap", &[1])
                .encode(),
        ),
        ("unknown artifact", req("fw-nope", 0, vec![1])),
        ("offset past the end", req("fw-good", m.blocks, vec![1])),
        ("no wanted bit", req("fw-good", 0, vec![0])),
    ];
    for (_, payload) in &bad {
        evil.publish(&topic, payload.clone()).await;
    }
    let metrics = stack.bridge().blocks().metrics().clone();
    common::until("every bad request to be counted", || {
        metrics.snapshot().refused_total() >= bad.len() as u64
    })
    .await;
    let s = metrics.snapshot();
    assert_eq!(s.refused(Refusal::Malformed), 4, "{s:?}");
    assert_eq!(s.refused(Refusal::UnknownArtifact), 1, "{s:?}");
    assert_eq!(s.refused(Refusal::PastEnd), 1, "{s:?}");
    assert_eq!(s.refused(Refusal::Empty), 1, "{s:?}");

    // A flood: far over the device's rate.
    let flood = tokio::spawn(async move {
        for _ in 0..300 {
            evil.publish(&topic, req("fw-good", 0, vec![0xff; 8])).await;
        }
        evil
    });
    let good = device(&stack, "good-1", &m).await;
    let report = good
        .download(&m, &quick())
        .await
        .expect("the good device completes");
    assert_eq!(report.image.as_deref(), Some(img.as_slice()));
    let _evil = flood.await.expect("the flood task");
    common::until("the flood to be throttled", || {
        metrics.snapshot().refused(Refusal::RateLimited) > 200
    })
    .await;
    let s = metrics.snapshot();
    assert!(
        s.requests <= 20 + report.requests,
        "at most the burst and the rate got through: {s:?}"
    );
}
