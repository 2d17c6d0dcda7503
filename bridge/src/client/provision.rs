//! The operator's side of provisioning: passwords generated here, only
//! their hashes sent to the bridge, in signed commands of at most
//! [`MAX_PROVISION_BATCH`] devices.

use std::collections::BTreeMap;

use schemas::keys::{kid, VerifyingKey};
use schemas::ops::{Command, ProvisionEntry, MAX_PROVISION_BATCH};
use schemas::provisioning::{generate_password, hash_password};
use schemas::DeviceId;

use super::{ClientError, OpsClient};

/// How long a provisioning's or a revocation's reply may take at least
/// ([`OpsClient::call`]): the bridge replies once an external Mosquitto's
/// files hold the change, which takes a
/// debounce window and a rewrite (about 25 s at 100,000 devices).
pub const PROVISION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How a provision command treats ids that have credentials already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse them (`ota devices provision`).
    New,
    /// Only them (`ota devices rotate`).
    Rotate,
    /// Either (a simulator's fleet).
    Upsert,
}

/// Sends one batch (at most [`MAX_PROVISION_BATCH`] devices, each with the
/// password it will log in with), all or none taken. `trusts`: the release
/// keys their provisioning trusts, when known, so that the bridge can
/// refuse a campaign none of them could verify.
pub async fn send_batch(
    client: &OpsClient,
    batch: &[(DeviceId, BTreeMap<String, String>, String)],
    mode: Mode,
    trusts: Option<&[VerifyingKey]>,
) -> Result<(), ClientError> {
    send_batch_with_certs(client, batch, &[], mode, trusts).await
}

/// [`send_batch`], telling the bridge the SHA-256 fingerprint of each
/// device's client certificate (`certs[i]` for `batch[i]`; missing: none),
/// so that rotating or revoking the device refuses that certificate from
/// then on.
pub async fn send_batch_with_certs(
    client: &OpsClient,
    batch: &[(DeviceId, BTreeMap<String, String>, String)],
    certs: &[Option<String>],
    mode: Mode,
    trusts: Option<&[VerifyingKey]>,
) -> Result<(), ClientError> {
    send_part(client, batch, certs, mode, trusts, false).await
}

/// [`send_batch_with_certs`] as one part of many: with `more_batches`,
/// the reply does not wait for an external broker's files (the last
/// part's reply waits for them all).
pub async fn send_part(
    client: &OpsClient,
    batch: &[(DeviceId, BTreeMap<String, String>, String)],
    certs: &[Option<String>],
    mode: Mode,
    trusts: Option<&[VerifyingKey]>,
    more_batches: bool,
) -> Result<(), ClientError> {
    let trusts: Option<Vec<_>> = trusts.map(|keys| keys.iter().map(kid).collect());
    let devices = batch
        .iter()
        .enumerate()
        .map(|(i, (id, labels, password))| ProvisionEntry {
            id: id.clone(),
            hash: hash_password(password),
            labels: labels.clone(),
            trusts: trusts.clone(),
            cert_sha256: certs.get(i).cloned().flatten(),
        })
        .collect();
    let cmd = Command::DeviceProvision {
        devices,
        replace: mode == Mode::Rotate,
        upsert: mode == Mode::Upsert,
        more_batches,
    };
    // `call` waits up to PROVISION_TIMEOUT for a settled reply
    // (`Command::settles`: the last part).
    client.call_ok::<serde_json::Value>(cmd).await.map(|_| ())
}

/// Provisions `ids` (new or again) with fresh passwords and returns each
/// one's login, username = id: what `ota sim`, `ota demo` and the bench
/// give their simulated devices. `trusts` as for [`send_batch`].
pub async fn logins(
    client: &OpsClient,
    ids: &[DeviceId],
    trusts: Option<&[VerifyingKey]>,
) -> Result<BTreeMap<DeviceId, (String, String)>, ClientError> {
    let mut out = BTreeMap::new();
    let parts = ids.len().div_ceil(MAX_PROVISION_BATCH);
    for (i, chunk) in ids.chunks(MAX_PROVISION_BATCH).enumerate() {
        let batch: Vec<_> = chunk
            .iter()
            .map(|id| (id.clone(), BTreeMap::new(), generate_password()))
            .collect();
        send_part(client, &batch, &[], Mode::Upsert, trusts, i + 1 < parts).await?;
        for (id, _, pw) in batch {
            out.insert(id.clone(), (id.to_string(), pw));
        }
    }
    Ok(out)
}
