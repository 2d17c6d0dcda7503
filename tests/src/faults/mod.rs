//! Helpers for the fault suite (`tests/tests/faults/`): the suite's size
//! (CI or full), a lock that runs its tests one at a time, a panic counter,
//! deterministic images, campaigns driven to their end, and the check that
//! no acknowledged Status was lost.
//!
//! # Layout
//!
//! - [`serve`]: the real `ota serve` process over an external broker,
//!   killed with SIGKILL.
//! - [`payloads`]: seeded random and mutated payloads for the topic fuzz.
//!
//! Sizes: each test has a CI size (the whole suite in a few minutes on 2
//! cores) and a full size, chosen by `OTA_FAULTS_FULL=1`. `OTA_FAULTS_SEED`
//! replaces the default seed (1) of every random choice.

pub mod payloads;
pub mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use bridge::campaign::view::CampaignStatus;
use bridge::client::{ClientError, OpsClient};
use bridge::store::Store;
use schemas::msg::Kind;
use schemas::ops::Command;
use schemas::release::{build_manifest, ReleaseSpec};
use schemas::{ArtifactId, CampaignId, ComponentName, DeviceId, GroupName};

/// Why a fault-suite step failed.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("operator command: {0}")]
    Client(#[from] ClientError),
    #[error("store: {0}")]
    Store(#[from] bridge::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Stalled(String),
    #[error(
        "the ota binary is not at {0}: build it with `cargo build -p ota --bin ota` \
         (`cargo test --workspace` does), or set OTA_BIN"
    )]
    NoBinary(std::path::PathBuf),
}

/// True when `OTA_FAULTS_FULL=1`: every test runs at its full size.
pub fn full() -> bool {
    std::env::var("OTA_FAULTS_FULL").is_ok_and(|v| v == "1")
}

/// `ci` in CI and by default, `full` under `OTA_FAULTS_FULL=1`.
pub fn sized<T>(ci: T, full_size: T) -> T {
    if full() {
        full_size
    } else {
        ci
    }
}

/// The seed of every random choice: `OTA_FAULTS_SEED`, or 1.
pub fn seed() -> u64 {
    std::env::var("OTA_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for the whole of a fault test: on 2 cores, two fleets at once
/// would make each other's timeouts, so the suite runs one test at a time
/// (a tokio lock: it is held across awaits, and works across the tests'
/// runtimes).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

static PANICS: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

/// Panics in any thread of this process (the embedded broker's included)
/// since the first call. The first call installs a counting hook in front
/// of the default one.
pub fn panics() -> u64 {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// Deterministic image bytes: SHA-256 in counter mode over a seed.
pub fn image(seed: &str, size: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(size + 32);
    let mut i = 0u32;
    while out.len() < size {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(i.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(size);
    out
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T, FaultError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(FaultError::Stalled(format!("{what}: not within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts group `name` with a label selector.
pub async fn group(ops: &OpsClient, name: &str, selector: &str) -> Result<(), FaultError> {
    let name = GroupName::new(name)
        .map_err(|e| FaultError::Stalled(format!("group name {name:?}: {e}")))?;
    ops.call_ok::<serde_json::Value>(Command::GroupPut {
        name,
        selector: Some(selector.to_string()),
        members: None,
    })
    .await?;
    Ok(())
}

/// Waits until the bridge knows `n` devices (event-driven:
/// [`crate::stack::wait_registered`]).
pub async fn registered(ops: &OpsClient, n: usize, limit: Duration) -> Result<(), FaultError> {
    crate::stack::wait_registered(ops, n, limit, |_| {})
        .await
        .map_err(|e| FaultError::Stalled(e.to_string()))
}

pub use crate::campaigns::start_campaign;

/// The campaign's status, or None while the bridge does not answer.
pub async fn campaign(ops: &OpsClient, id: &CampaignId) -> Option<CampaignStatus> {
    ops.call_ok(Command::CampaignStatus { id: id.clone() })
        .await
        .ok()
}

/// Waits until the campaign is completed, halted or aborted.
pub async fn campaign_end(
    ops: &OpsClient,
    id: &CampaignId,
    limit: Duration,
) -> Result<CampaignStatus, FaultError> {
    poll(&format!("campaign {id} to end"), limit, || async {
        campaign(ops, id)
            .await
            .filter(|s| matches!(s.summary.state.as_str(), "completed" | "halted" | "aborted"))
    })
    .await
}

/// The (device, seq) pairs in `acked` that the store does not hold under
/// any of the device's epochs: acknowledged reports that were lost.
pub fn lost_acks(
    store: &Store,
    acked: &BTreeMap<DeviceId, BTreeSet<u64>>,
) -> Result<Vec<(DeviceId, u64)>, FaultError> {
    let mut epochs: BTreeMap<DeviceId, Vec<schemas::Epoch>> = BTreeMap::new();
    for (dev, rec) in store.status.epochs()? {
        epochs.entry(dev).or_default().push(rec.epoch);
    }
    let mut lost = Vec::new();
    for (dev, seqs) in acked {
        let mine = epochs.get(dev).map(Vec::as_slice).unwrap_or_default();
        for &seq in seqs {
            let mut found = false;
            for e in mine {
                if store.status.is_stored(dev, e, seq)? {
                    found = true;
                    break;
                }
            }
            if !found {
                lost.push((dev.clone(), seq));
            }
        }
    }
    Ok(lost)
}

/// How many (device, seq) pairs `acked` holds.
pub fn ack_count(acked: &BTreeMap<DeviceId, BTreeSet<u64>>) -> usize {
    acked.values().map(BTreeSet::len).sum()
}

/// The label every fault-suite device carries (`suite=faults`), and the
/// group that selects them all.
pub const GROUP: &str = "everyone";

/// A fleet profile for the suite: esp32 devices on `main 1.0.0`, labelled
/// `suite=faults`, ids `{prefix}-00001`..., connecting at `rate` per second.
pub fn profile(prefix: &str, rate: u32) -> device_sim::fleet::Profile {
    device_sim::fleet::Profile {
        id_prefix: prefix.into(),
        connects_per_second: rate,
        seed: seed(),
        arches: vec![("esp32".into(), 1)],
        labels: [("suite".to_string(), vec!["faults".to_string()])].into(),
        versions: ComponentName::new("main")
            .into_iter()
            .map(|c| (c, vec!["1.0.0".to_string()]))
            .collect(),
        ..device_sim::fleet::Profile::default()
    }
}

/// Quick protocol timings for a test fleet: short quiet spells and resend
/// waits, so that a stalled download or an unacknowledged outbox is
/// retried within a second, not the protocol's minutes.
pub fn quick(mut cfg: device_sim::fleet::FleetConfig) -> device_sim::fleet::FleetConfig {
    cfg.timing.quiet_ms = 300;
    cfg.timing.quiet_jitter_ms = 300;
    cfg.timing.resend_wait_ms = 500;
    cfg.timing.resend_every_ms = 2_000;
    cfg
}

/// Signs `main {version}` for esp32 (`size` bytes) with `release` and
/// pushes it through `ops`; returns the artifact id.
pub async fn push_firmware(
    ops: &OpsClient,
    release: &schemas::keys::SigningKey,
    version: &str,
    size: usize,
) -> Result<ArtifactId, FaultError> {
    let component = ComponentName::new("main")
        .map_err(|e| FaultError::Stalled(format!("component name: {e}")))?;
    let spec = ReleaseSpec::new(
        Kind::Firmware,
        component,
        version,
        "esp32",
        bridge::unix_now(),
    );
    let image = image(&format!("main-{version}"), size);
    let m =
        build_manifest(&image, &spec).map_err(|e| FaultError::Stalled(format!("manifest: {e}")))?;
    let id = m.artifact.clone();
    let envelope = schemas::msg::manifest::sign(&m, release);
    bridge::client::push::push(ops, &envelope, &image, |_, _| {})
        .await
        .map_err(|e| FaultError::Stalled(format!("push {id}: {e}")))?;
    Ok(id)
}

/// A one-wave firmware campaign to every device of [`GROUP`], gated so
/// that it completes only once every device succeeded (a success bar of
/// 100%, a wave timeout of 10 min).
pub fn one_wave(id: &str, artifact: &ArtifactId) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "kind": "firmware",
        "release": [artifact],
        "waves": [{"cohorts": {GROUP: 10000}}],
        "gates": {"success_bar_bp": 10000, "failure_halt_bp": 1000, "min_sample": 1,
                  "wave_timeout_secs": 600, "soak_secs": 0},
    })
}
