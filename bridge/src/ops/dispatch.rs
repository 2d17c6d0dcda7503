//! From a command to its handler: the one place that knows every command.
//! Each handler borrows what it needs from core's state; its error maps
//! into [`OpsError`] here (`?`, the `From` impls of [`super::errors`]).

use schemas::ops::Command;

use super::{artifact_cmds, campaign_cmds, enrollment_cmds, fleet_cmds, identity_cmds, OpsError};
use crate::state::{campaigns, CoreState};

/// Runs an accepted command; its JSON result is the reply's `result`.
pub async fn dispatch(
    state: &mut CoreState,
    cmd: Command,
    now: u64,
) -> Result<serde_json::Value, OpsError> {
    match cmd {
        Command::GroupPut {
            name,
            selector,
            members,
        } => fleet_cmds::group_put(state, name, selector, members, now).await,
        Command::GroupDelete { name } => fleet_cmds::group_delete(state, name).await,
        Command::GroupList => fleet_cmds::group_list(state.fleet()),
        Command::DeviceList {
            group,
            after,
            limit,
        } => enrollment_cmds::device_list(state, group.as_ref(), after.as_ref(), limit),
        Command::DeviceShow { id } => fleet_cmds::device_show(state.fleet(), state.store(), &id),
        Command::DeviceProvision {
            devices,
            replace,
            upsert,
            more_batches: _,
        } => identity_cmds::provision(state, devices, replace, upsert, now).await,
        Command::DeviceRevoke { id } => identity_cmds::revoke(state, id, now).await,
        Command::DeviceAccept { id } => enrollment_cmds::accept(state, id, now).await,
        Command::DeviceReject { id } => enrollment_cmds::reject(state, id, now).await,
        // `Ops::handle` hands every upload chunk to the upload actor first.
        Command::ArtifactUpload { .. } => Err(OpsError::Invalid(
            "artifact_upload goes to the upload actor, not the dispatch".into(),
        )),
        cmd @ (Command::ArtifactList
        | Command::ArtifactShow { .. }
        | Command::ArtifactDelete { .. }) => {
            // Delete is refused while a campaign that has not ended uses it.
            let in_use = |a: &schemas::ArtifactId| campaigns::user_of(state, a);
            Ok(artifact_cmds::handle(state.artifacts(), state.blocks(), &cmd, &in_use).await?)
        }
        cmd @ (Command::CampaignCreate { .. }
        | Command::CampaignPlan { .. }
        | Command::CampaignStart { .. }
        | Command::CampaignPause { .. }
        | Command::CampaignResume { .. }
        | Command::CampaignAbort { .. }
        | Command::CampaignSetGates { .. }
        | Command::CampaignStatus { .. }
        | Command::CampaignList
        | Command::Emergency { .. }) => Ok(campaign_cmds::handle(state, cmd, now).await?),
        Command::CampaignRollback { id } => campaign_cmds::rollback(state, id, now).await,
        Command::CampaignRetry { id, new_id, only } => {
            campaign_cmds::retry(state, id, new_id, only, now).await
        }
        Command::CampaignRetarget {
            id,
            release,
            new_id,
        } => Ok(campaign_cmds::retarget(state, id, release, new_id, now).await?),
    }
}
