//! Where the core actor calls the campaign manager: at start, on every
//! committed batch of status changes, when devices' groups change or a
//! device registers, and once a [`TICK`]. Each borrows what the manager
//! needs from core's state. Only a store or connection failure stops the
//! bridge; anything else about one campaign is logged and left to the
//! operator.

use std::time::Duration;

use schemas::{ArtifactId, DeviceId};
use tracing::warn;

use super::error::CampaignError;
use super::manager::Ctx;
use crate::core::CoreState;
use crate::status::StatusUpdate;
use crate::BridgeError;

/// How often due gates are stepped and progress events sent.
pub const TICK: Duration = Duration::from_secs(1);

/// The first tick comes this long after start: a timer that fell due while
/// the bridge was down is judged once the reports the broker held for it
/// (its persistent session) have been stored and counted, not before.
pub const FIRST_TICK: Duration = Duration::from_secs(3);

fn split(state: &mut CoreState) -> (Ctx<'_>, &mut super::Campaigns) {
    (
        Ctx {
            fleet: &state.fleet,
            store: &state.store,
            publisher: &state.publisher,
            blocks: state.artifacts.blocks(),
        },
        &mut state.campaigns,
    )
}

fn fatal(e: CampaignError, what: &'static str) -> Result<(), BridgeError> {
    match e {
        CampaignError::Store(s) => Err(BridgeError::Store(s)),
        CampaignError::Publish(p) => Err(BridgeError::Publish(p)),
        other => {
            warn!(error = %other, during = what, "campaign step refused");
            Ok(())
        }
    }
}

/// Core is ready: live campaigns get their members and fresh counts.
pub async fn started(state: &mut CoreState) -> Result<(), BridgeError> {
    let (ctx, c) = split(state);
    match c.started(&ctx, crate::unix_now()).await {
        Ok(()) => Ok(()),
        Err(e) => fatal(e, "start"),
    }
}

/// A committed batch of campaign state changes.
pub async fn statuses(state: &mut CoreState, updates: &[StatusUpdate]) -> Result<(), BridgeError> {
    if updates.is_empty() {
        return Ok(());
    }
    let (ctx, c) = split(state);
    match c.statuses(&ctx, updates, crate::unix_now()).await {
        Ok(()) => Ok(()),
        Err(e) => fatal(e, "status"),
    }
}

/// Devices whose groups changed, or that registered.
pub async fn devices_changed(
    state: &mut CoreState,
    devices: &[DeviceId],
) -> Result<(), BridgeError> {
    if devices.is_empty() {
        return Ok(());
    }
    let (ctx, c) = split(state);
    match c.devices_changed(&ctx, devices, crate::unix_now()).await {
        Ok(()) => Ok(()),
        Err(e) => fatal(e, "membership"),
    }
}

/// The tick.
pub async fn tick(state: &mut CoreState) -> Result<(), BridgeError> {
    let (ctx, c) = split(state);
    match c.tick(&ctx, crate::unix_now()).await {
        Ok(()) => Ok(()),
        Err(e) => fatal(e, "tick"),
    }
}

/// The artifact delete guard: the campaign (not completed or aborted)
/// that uses `artifact`.
pub fn user_of(state: &CoreState, artifact: &ArtifactId) -> Option<String> {
    state.campaigns.user_of(artifact).map(|c| c.to_string())
}
