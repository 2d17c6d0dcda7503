//! Helpers for the block server and artifact tests: a stack whose bridge
//! trusts a release key and uses a chosen `[blocks]` config, signed images,
//! and protocol-speaking download devices (`harness::downloader`).

#![allow(dead_code)]

use std::time::Duration;

use bridge::blocks::BlocksConfig;
use harness::downloader::{Device, DownloadConfig};
use rumqttc::MqttOptions;
use schemas::keys::SigningKey;
use schemas::msg::{Kind, Manifest};
use schemas::release::{build_manifest, ReleaseSpec};
use schemas::topic::Topics;
use schemas::{ArtifactId, ComponentName, DeviceId};

use crate::common::{self, BrokerKind, Stack};

/// The release key the test bridges trust.
pub fn release_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// A broker and a bridge trusting [`release_key`], with `blocks` as its
/// `[blocks]` section.
pub async fn stack(blocks: BlocksConfig) -> Stack {
    stack_with(blocks, |_| {}).await
}

/// [`stack`], its config adjusted by `tune` before the bridge starts.
pub async fn stack_with(blocks: BlocksConfig, tune: impl FnOnce(&mut bridge::Config)) -> Stack {
    Stack::start_with(BrokerKind::Rumqttd, |config| {
        let vk = release_key().verifying_key();
        config.bridge.release_keys = [(schemas::keys::kid(&vk), vk)].into();
        config.blocks = blocks;
        tune(config);
    })
    .await
}

/// Reproducible, incompressible bytes.
pub fn image(len: usize, seed: u64) -> Vec<u8> {
    harness::bench::download_run::xorshift_bytes(len, seed)
}

/// The manifest of `image` as `id`, and its signed envelope.
pub fn signed(image: &[u8], id: &str, block_size: u32, key: &SigningKey) -> (Manifest, Vec<u8>) {
    let mut spec = ReleaseSpec::new(
        Kind::Firmware,
        ComponentName::new("main").expect("a name"),
        "2.0.0",
        "esp32",
        1_790_000_000,
    );
    spec.artifact = Some(ArtifactId::new(id).expect("an artifact id"));
    spec.block_size = block_size;
    let m = build_manifest(image, &spec).expect("a manifest");
    let env = schemas::msg::manifest::sign(&m, key);
    (m, env)
}

/// Stores an artifact in the running bridge's store, as an upload would.
pub async fn store(stack: &Stack, image: &[u8], id: &str, block_size: u32) -> Manifest {
    let (m, env) = signed(image, id, block_size, &release_key());
    upload(stack, image.to_vec(), env).await;
    m
}

/// Stores `bytes` under its signed manifest `env`, as `ota artifact push`
/// does (a full image or a delta payload).
pub async fn upload(stack: &Stack, bytes: Vec<u8>, env: Vec<u8>) {
    use base64::Engine as _;
    let store = stack.bridge().artifacts().clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    let trust = schemas::cose::TrustStore::new([release_key().verifying_key()]);
    tokio::task::spawn_blocking(move || {
        let env = b64.encode(&env);
        let mut at = 0usize;
        loop {
            let end = (at + schemas::ops::UPLOAD_CHUNK).min(bytes.len());
            let p = store
                .accept_chunk(&trust, &env, at as u64, &b64.encode(&bytes[at..end]), 0)
                .expect("the chunk is accepted");
            if p.complete {
                return;
            }
            at = p.received as usize;
        }
    })
    .await
    .expect("the store task");
}

/// A download device connected to the stack's broker and subscribed.
pub async fn device(stack: &Stack, id: &str, manifest: &Manifest) -> Device {
    let mut o = MqttOptions::new(id, "127.0.0.1", stack.port());
    o.set_keep_alive(Duration::from_secs(30));
    Device::connect(
        o,
        Topics::default(),
        DeviceId::new(id).expect("a device id"),
        manifest,
        common::WAIT,
    )
    .await
    .expect("the device connects and subscribes")
}

/// Quick quiet spells: tests need not wait the protocol's 2 to 4 s.
pub fn quick() -> DownloadConfig {
    DownloadConfig {
        quiet: Duration::from_millis(300),
        jitter: Duration::from_millis(200),
        deadline: Duration::from_secs(60),
        ..DownloadConfig::default()
    }
}
