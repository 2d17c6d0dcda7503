//! From a command to its handler: the one place that knows every command.
//! Each area adds its arm (artifacts, campaigns) calling its own module.

use schemas::ops::Command;

use super::{fleet_cmds, identity_cmds, OpsError};
use crate::core::CoreState;

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
        Command::GroupList => fleet_cmds::group_list(state),
        Command::DeviceList {
            group,
            after,
            limit,
        } => fleet_cmds::device_list(state, group.as_ref(), after.as_ref(), limit),
        Command::DeviceShow { id } => fleet_cmds::device_show(state, &id),
        Command::DeviceProvision {
            devices,
            replace,
            upsert,
        } => identity_cmds::provision(state, devices, replace, upsert, now).await,
        Command::DeviceRevoke { id } => identity_cmds::revoke(state, id, now).await,
        cmd @ (Command::ArtifactUpload { .. }
        | Command::ArtifactList
        | Command::ArtifactShow { .. }
        | Command::ArtifactDelete { .. }) => {
            // Delete is refused while a campaign that has not ended uses it.
            let in_use = |a: &schemas::ArtifactId| crate::campaign::hooks::user_of(state, a);
            state
                .artifacts
                .handle(&cmd, &in_use)
                .await
                .map_err(OpsError::Invalid)
        }
        cmd @ (Command::CampaignCreate { .. }
        | Command::CampaignStart { .. }
        | Command::CampaignPause { .. }
        | Command::CampaignResume { .. }
        | Command::CampaignAbort { .. }
        | Command::CampaignSetGates { .. }
        | Command::CampaignStatus { .. }
        | Command::CampaignList
        | Command::Emergency { .. }) => crate::campaign::ops::handle(state, cmd, now).await,
    }
}
