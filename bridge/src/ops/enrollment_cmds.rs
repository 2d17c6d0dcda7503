//! `ota devices accept | reject`, and the pending devices `devices list`
//! shows: devices that enrolled with the fleet token
//! (`[devices] admission = "enroll"`, `crate::identity`), waiting for an
//! operator. The store is flushed by [`super::handle`] before the reply.

use std::collections::BTreeMap;

use schemas::ops::MAX_PAGE;
use schemas::{DeviceId, GroupName};
use serde::{Deserialize, Serialize};

use super::fleet_cmds::{self, DeviceList};
use super::identity_cmds::{set_standing, standing_changed};
use super::OpsError;
use crate::identity::Standing;
use crate::state::{enrollment, CoreState};

/// A pending device as `devices list` shows it: what it said in its last
/// Hello, if it said one since the bridge started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingView {
    pub id: DeviceId,
    /// Unix seconds of its enrollment.
    pub enrolled: u64,
    /// From its last Hello; absent before one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Unix seconds of its last Hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hello: Option<u64>,
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    // Invariant: ids, strings, numbers and maps.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// `devices list`: a page of the fleet, and on the first page of the
/// whole fleet (no group) the pending devices, at most [`MAX_PAGE`].
pub fn device_list(
    state: &CoreState,
    group: Option<&GroupName>,
    after: Option<&DeviceId>,
    limit: Option<u32>,
) -> Result<serde_json::Value, OpsError> {
    let mut list: DeviceList = fleet_cmds::device_page(state.fleet(), group, None, after, limit)?;
    if group.is_none() && after.is_none() {
        let ids = state.identity().pending();
        list.pending_total = ids.len();
        for id in ids.into_iter().take(MAX_PAGE as usize) {
            list.pending.push(pending_view(state, id)?);
        }
    }
    Ok(to_json(&list))
}

fn pending_view(state: &CoreState, id: DeviceId) -> Result<PendingView, OpsError> {
    let enrolled = state
        .credentials()
        .get(&id)?
        .map(|r| r.created)
        .unwrap_or(0);
    let held = state.held_hello(&id);
    Ok(PendingView {
        enrolled,
        arch: held.map(|(h, _)| h.arch.clone()),
        labels: held.map(|(h, _)| h.labels.clone()).unwrap_or_default(),
        last_hello: held.map(|(_, at)| *at),
        id,
    })
}

/// The pending device's record, or why there is none.
fn pending_record(
    state: &CoreState,
    id: &DeviceId,
    verb: &str,
) -> Result<crate::identity::CredentialRecord, OpsError> {
    let Some(record) = state.credentials().get(id)? else {
        return Err(OpsError::NotFound(format!(
            "{id} has not enrolled: pending devices are listed by `ota devices list`"
        )));
    };
    match record.standing {
        Standing::Pending => Ok(record),
        Standing::Active => Err(OpsError::Invalid(format!(
            "{id} is active, not pending: nothing to {verb} (`ota devices revoke {id}` shuts it out)"
        ))),
        Standing::Revoked => Err(OpsError::Invalid(format!(
            "{id} was revoked or rejected: nothing to {verb} (`ota devices rotate {id}` issues it \
             new credentials)"
        ))),
    }
}

/// `devices accept ID`: a pending device takes part from now on (its held
/// Hello registers it, its groups follow), logging in with the secret it
/// bound at enrollment. Its connection is closed, so that it logs in again
/// and subscribes with its full rights.
pub async fn accept(
    state: &mut CoreState,
    id: DeviceId,
    now: u64,
) -> Result<serde_json::Value, OpsError> {
    let mut record = pending_record(state, &id, "accept")?;
    set_standing(state, &mut record, Standing::Active, now)?;
    if let Some((hello, at)) = state.take_held_hello(&id) {
        enrollment::register(state, &id, &hello, at).await?;
    }
    standing_changed(state, id, "accepted", Standing::Active, true).await
}

/// `devices reject ID`: a pending device is disconnected and refused from
/// then on, its id taken (`rotate` lets it in again, with new credentials).
pub async fn reject(
    state: &mut CoreState,
    id: DeviceId,
    now: u64,
) -> Result<serde_json::Value, OpsError> {
    let mut record = pending_record(state, &id, "reject")?;
    set_standing(state, &mut record, Standing::Revoked, now)?;
    state.take_held_hello(&id);
    standing_changed(state, id, "rejected", Standing::Revoked, true).await
}
