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
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use bridge::campaign::view::CampaignStatus;
use bridge::client::{ClientError, OpsClient};
use bridge::store::Store;
use schemas::ops::Command;
use schemas::{CampaignId, DeviceId, GroupName};

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

static SERIAL: Mutex<()> = Mutex::new(());

/// Held for the whole of a fault test: on 2 cores, two fleets at once
/// would make each other's timeouts, so the suite runs one test at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    // A test that panicked poisons the lock; the next test may still run.
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
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
            return Err(FaultError::Stalled(format!(
                "{what}: not within {limit:?}"
            )));
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

/// Waits until the bridge knows `n` devices.
pub async fn registered(ops: &OpsClient, n: usize, limit: Duration) -> Result<(), FaultError> {
    poll(&format!("{n} devices registered"), limit, || async {
        match ops.all_devices(None).await {
            Ok(d) if d.len() >= n => Some(()),
            _ => None,
        }
    })
    .await
}

/// Creates and starts a campaign from its JSON spec; returns its id.
pub async fn start_campaign(
    ops: &OpsClient,
    spec: serde_json::Value,
) -> Result<CampaignId, FaultError> {
    let created: CampaignStatus = ops.call_ok(Command::CampaignCreate { spec }).await?;
    let id = created.summary.id.clone();
    let _: CampaignStatus = ops
        .call_ok(Command::CampaignStart { id: id.clone() })
        .await?;
    Ok(id)
}

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
        campaign(ops, id).await.filter(|s| {
            matches!(
                s.summary.state.as_str(),
                "completed" | "halted" | "aborted"
            )
        })
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
