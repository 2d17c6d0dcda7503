//! Where core calls the campaign manager: at start, on every committed
//! batch of status changes, when devices' groups change or a device
//! registers, and once a [`TICK`]. Each hands the manager the one
//! [`crate::campaign::Ctx`]. Only a store or connection failure stops the
//! bridge; anything else about one campaign is logged and left to the
//! operator.

use schemas::{ArtifactId, DeviceId};
use tracing::warn;

pub use crate::campaign::{FIRST_TICK, TICK};

use super::{CoreError, CoreState};
use crate::campaign::CampaignError;
use crate::rt::unix_now;
use crate::status::StatusUpdate;

/// What stops core; anything else is the campaign's, logged.
fn fatal(e: CampaignError, what: &'static str) -> Result<(), CoreError> {
    match e {
        CampaignError::Store(s) => Err(CoreError::Store(s)),
        CampaignError::Publish(p) => Err(CoreError::Publish(p)),
        CampaignError::ArtifactStore(a) => Err(CoreError::Artifacts(a)),
        other => {
            warn!(error = %other, during = what, "campaign step refused");
            Ok(())
        }
    }
}

/// Core is ready: live campaigns get their members and fresh counts.
pub async fn started(state: &mut CoreState) -> Result<(), CoreError> {
    let (ctx, c) = state.campaigns_mut();
    c.started(&ctx, unix_now())
        .await
        .or_else(|e| fatal(e, "start"))
}

/// A committed batch of campaign state changes.
pub async fn statuses(state: &mut CoreState, updates: &[StatusUpdate]) -> Result<(), CoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    let (ctx, c) = state.campaigns_mut();
    c.statuses(&ctx, updates, unix_now())
        .await
        .or_else(|e| fatal(e, "status"))
}

/// Devices whose groups changed, or that registered.
pub async fn devices_changed(state: &mut CoreState, devices: &[DeviceId]) -> Result<(), CoreError> {
    if devices.is_empty() {
        return Ok(());
    }
    let (ctx, c) = state.campaigns_mut();
    c.devices_changed(&ctx, devices, unix_now())
        .await
        .or_else(|e| fatal(e, "membership"))
}

/// The tick.
pub async fn tick(state: &mut CoreState) -> Result<(), CoreError> {
    let now = unix_now();
    let (ctx, c) = state.campaigns_mut();
    c.tick(&ctx, now).await.or_else(|e| fatal(e, "tick"))?;
    super::rollback::run_due(state, now).await
}

/// The artifact delete guard: the campaign (not completed or aborted)
/// that uses `artifact`.
pub fn user_of(state: &CoreState, artifact: &ArtifactId) -> Option<String> {
    state.campaigns().user_of(artifact).map(|c| c.to_string())
}
