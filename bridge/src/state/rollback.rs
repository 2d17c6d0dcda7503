//! Rolling a campaign back (`--rollback-release`): when it halts, the next
//! tick starts its rollback campaign; `ota campaign rollback` does the
//! same at once. The rollback takes exactly the devices that installed
//! the release (reported `success`, or rebooting into it), through an
//! explicit group named after it, and runs in its own waves. A campaign
//! that halted before any device installed has nothing to roll back: no
//! rollback campaign is made (and `ota campaign rollback` says so).
//!
//! Order, so that a bridge killed at any point rolls back once: the group
//! is put (idempotent), the child campaign created, the parent records
//! its child, then the child starts. A parent found halted with a
//! rollback and no child at start is rolled back then
//! (`Campaigns::started`); a child created but not started is left a
//! draft for the operator, named in the parent's status.

use schemas::{CampaignId, GroupName};
use tracing::{info, warn};

use super::{CoreError, CoreState};
use crate::campaign::followup::{self, FollowUpError};
use crate::campaign::manager::send_event;
use crate::campaign::view::CampaignStatus;
use crate::campaign::CampaignError;
use crate::fleet::Group;
use crate::store::StoreError;

/// Starts the rollbacks that halts made due. Only a store or connection
/// failure stops core; a refused rollback is logged.
pub async fn run_due(state: &mut CoreState, now: u64) -> Result<(), CoreError> {
    let due = state.campaigns_mut().1.take_rollbacks_due();
    for id in due {
        match start(state, &id, now).await {
            Ok(child) => info!(
                campaign = %id,
                rollback = %child.summary.id,
                devices = child.preflight.targeted,
                "campaign halted: its rollback started"
            ),
            Err(CampaignError::Store(e)) => return Err(CoreError::Store(e)),
            Err(CampaignError::Publish(e)) => return Err(CoreError::Publish(e)),
            Err(CampaignError::ArtifactStore(e)) => return Err(CoreError::Artifacts(e)),
            Err(CampaignError::FollowUp(FollowUpError::NothingInstalled(_))) => info!(
                campaign = %id,
                "campaign halted before any device installed its release: no rollback needed"
            ),
            Err(e) => warn!(campaign = %id, error = %e, "rollback not started"),
        }
    }
    Ok(())
}

/// Rolls `id` back now: creates and starts its rollback campaign, and
/// returns the child's status.
pub async fn start(
    state: &mut CoreState,
    id: &CampaignId,
    now: u64,
) -> Result<CampaignStatus, CampaignError> {
    let (spec, release, installed) = {
        let (ctx, c) = state.campaigns_mut();
        c.rollback_plan(&ctx, id, now).await?
    };
    if installed.is_empty() {
        return Err(FollowUpError::NothingInstalled(id.clone()).into());
    }
    let rb = spec
        .rollback
        .as_ref()
        .ok_or_else(|| FollowUpError::NoRollback(id.clone()))?;
    let child = followup::rollback_id(id).ok_or_else(|| FollowUpError::NoRollback(id.clone()))?;
    let group =
        GroupName::new(child.as_str()).map_err(|_| FollowUpError::Taken(child.to_string()))?;
    let child_spec = followup::rollback_spec(&spec, rb, child.clone(), group.clone());
    let members: Vec<_> = installed.into_iter().collect();
    let g = Group::new(group, None, Some(&members), now)
        .map_err(|e| CampaignError::SpecJson(e.to_string()))?;
    state.put_group(g).await.map_err(core_error)?;
    let (ctx, c) = state.campaigns_mut();
    if !c.exists(&child)? {
        c.create(&ctx, child_spec, release, None, now)?;
        if let Some(ev) = c.created_event(&child, now) {
            send_event(&ctx, &ev).await?;
        }
    }
    c.set_rollback_child(id, child.clone())?;
    c.start(&ctx, &child, now).await
}

fn core_error(e: CoreError) -> CampaignError {
    match e {
        CoreError::Store(s) => CampaignError::Store(s),
        CoreError::Publish(p) => CampaignError::Publish(p),
        CoreError::Artifacts(a) => CampaignError::ArtifactStore(a),
        CoreError::Task(t) => CampaignError::Store(StoreError::Corrupt {
            tree: "groups",
            key: "rollback".into(),
            reason: t,
        }),
    }
}
