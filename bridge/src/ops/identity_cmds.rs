//! `ota devices provision | rotate | revoke`: the credentials tree and the
//! in-memory registry the broker asks (`crate::identity`), changed together.
//! The store is flushed by [`super::handle`] before the reply.

use schemas::ops::{ProvisionEntry, MAX_PROVISION_BATCH, MAX_TRUSTS};
use schemas::provisioning::PasswordHash;
use schemas::DeviceId;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::OpsError;
use crate::identity::{CredentialRecord, Standing};
use crate::state::CoreState;

/// One device's credentials, as `device_provision` and `device_revoke` say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub id: DeviceId,
    pub standing: Standing,
    /// True when the device had credentials before (rotated or revoked).
    pub replaced: bool,
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    // Invariant: ids, an enum and a bool.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// The result of `device_provision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provisioned {
    pub devices: Vec<CredentialView>,
}

/// `devices provision` (and `rotate`, with `replace`): every entry is
/// checked first, so a batch is taken whole or not at all.
pub async fn provision(
    state: &mut CoreState,
    entries: Vec<ProvisionEntry>,
    replace: bool,
    upsert: bool,
    now: u64,
) -> Result<serde_json::Value, OpsError> {
    if entries.is_empty() || entries.len() > MAX_PROVISION_BATCH {
        return Err(OpsError::Invalid(format!(
            "a provision command holds 1 to {MAX_PROVISION_BATCH} devices, got {}",
            entries.len()
        )));
    }
    let mut records = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for e in entries {
        let id = e.id;
        if !seen.insert(id.clone()) {
            return Err(OpsError::Invalid(format!("{id} is named twice")));
        }
        if state.identity().is_reserved(id.as_str()) {
            return Err(OpsError::Invalid(format!(
                "{id} is reserved for the bridge or an operator (its client ids, `ota-cli-…`, and the [broker.users] accounts): choose another device id"
            )));
        }
        if PasswordHash::parse(&e.hash).is_none() {
            return Err(OpsError::Invalid(format!(
                "{id}: hash is not a `$6$salt$digest` password hash: provision with `ota devices provision`, which makes one"
            )));
        }
        let old = state.credentials().get(&id)?;
        if old.is_some() && !replace && !upsert {
            return Err(OpsError::Invalid(format!(
                "{id} is provisioned already: `ota devices rotate {id}` gives it a new password"
            )));
        }
        if old.is_none() && replace && !upsert {
            return Err(OpsError::NotFound(format!(
                "{id} is not provisioned: `ota devices provision {id}` first"
            )));
        }
        if e.trusts.as_ref().is_some_and(|t| t.len() > MAX_TRUSTS) {
            return Err(OpsError::Invalid(format!(
                "{id}: trusts names more than {MAX_TRUSTS} release keys"
            )));
        }
        if let Some(c) = &e.cert_sha256 {
            if c.len() != 64 || !c.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(OpsError::Invalid(format!(
                    "{id}: cert_sha256 is not a SHA-256 fingerprint (64 lowercase hex digits)"
                )));
            }
        }
        // Its certificate so far is refused from now on, unless it keeps it.
        let revoked_certs = match old.clone() {
            None => Vec::new(),
            Some(mut o) => {
                if o.cert_sha256 != e.cert_sha256 {
                    o.retire_cert();
                }
                o.revoked_certs
            }
        };
        if let Some(c) = e.cert_sha256.as_ref().filter(|c| revoked_certs.contains(c)) {
            return Err(OpsError::Invalid(format!(
                "{id}: its certificate {c} was revoked (rotated or revoked before): issue it a \
                 new one (`ota pki device {id}`)"
            )));
        }
        let trusts = e
            .trusts
            .or_else(|| old.as_ref().and_then(|o| o.trusts.clone()));
        records.push(CredentialRecord {
            id,
            hash: e.hash,
            standing: Standing::Active,
            trusts,
            cert_sha256: e.cert_sha256,
            revoked_certs,
            created: old.as_ref().map(|o| o.created).unwrap_or(now),
            labels: if e.labels.is_empty() {
                old.map(|o| o.labels).unwrap_or_default()
            } else {
                e.labels
            },
            updated: now,
        });
    }
    let mut views = Vec::with_capacity(records.len());
    for r in &records {
        state.credentials().put(r)?;
        state.identity().upsert(r);
        let rotated = replace || upsert;
        if rotated {
            // The old password (and certificate) is refused from now on;
            // a session logged in with it goes too.
            state.identity().disconnect(r.id.as_str());
        }
        views.push(CredentialView {
            id: r.id.clone(),
            standing: Standing::Active,
            replaced: rotated,
        });
    }
    // The reply waits (off core, `super::Ops::handle`) until an external
    // Mosquitto has the new passwords: a device logs in as soon as `ota
    // devices provision` returns.
    info!(
        devices = records.len(),
        rotated = replace,
        "devices provisioned"
    );
    let ids: Vec<&DeviceId> = records.iter().map(|r| &r.id).collect();
    state
        .event(
            if replace {
                "device.rotated"
            } else {
                "device.provisioned"
            },
            format!(
                "{} device(s) {}",
                ids.len(),
                if replace {
                    "have new credentials"
                } else {
                    "provisioned"
                }
            ),
            serde_json::json!({ "devices": ids }),
        )
        .await?;
    Ok(to_json(&Provisioned { devices: views }))
}

/// `devices revoke`: refused at login from now on, and disconnected.
pub async fn revoke(
    state: &mut CoreState,
    id: DeviceId,
    now: u64,
) -> Result<serde_json::Value, OpsError> {
    let Some(mut record) = state.credentials().get(&id)? else {
        return Err(OpsError::NotFound(format!(
            "{id} is not provisioned: see `ota devices list`"
        )));
    };
    let replaced = record.standing != Standing::Revoked;
    // Its certificate stays refused should it be provisioned again.
    record.retire_cert();
    set_standing(state, &mut record, Standing::Revoked, now)?;
    // An external Mosquitto drops it when it reloads its files; the reply
    // waits for that (off core, `super::Ops::handle`).
    standing_changed(state, id, "revoked", Standing::Revoked, replaced).await
}

/// Gives `record` its `standing` at `now`: stored, known to the broker's
/// authority, and the device disconnected, so that it logs in again under
/// it (or is refused).
pub(super) fn set_standing(
    state: &mut CoreState,
    record: &mut CredentialRecord,
    standing: Standing,
    now: u64,
) -> Result<(), OpsError> {
    record.standing = standing;
    record.updated = now;
    state.credentials().put(record)?;
    state.identity().upsert(record);
    state.identity().disconnect(record.id.as_str());
    Ok(())
}

/// Tells the operators that device `id` was `done` (`accepted`,
/// `rejected`, `revoked`): a log line, the event `device.<done>`, and the
/// reply, its credentials' new `standing`.
pub(super) async fn standing_changed(
    state: &CoreState,
    id: DeviceId,
    done: &str,
    standing: Standing,
    replaced: bool,
) -> Result<serde_json::Value, OpsError> {
    info!(device = %id, "device {done}");
    state
        .event(
            &format!("device.{done}"),
            format!("device {id} {done}"),
            serde_json::json!({ "device": id }),
        )
        .await?;
    Ok(to_json(&CredentialView {
        id,
        standing,
        replaced,
    }))
}
