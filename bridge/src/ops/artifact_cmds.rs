//! The operator commands on artifacts (`artifact_list`, `artifact_show`,
//! `artifact_delete`), as the ops dispatch calls them: [`handle`] turns a
//! [`Command`] into the reply's JSON or an [`ArtifactError`] (which `ops`
//! maps into the reply, or into a stop when the store itself failed). The
//! store work runs on a blocking thread. `artifact_upload` is the upload
//! actor's ([`super::uploads`]).

use serde_json::{json, Value};

use schemas::ops::Command;
use schemas::ArtifactId;

use crate::artifacts::{ArtifactError, ArtifactStore};
use crate::blocks::BlockServerHandle;

/// `ota artifact list --json` (and `/api/v1/artifacts`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ArtifactList {
    pub artifacts: Vec<crate::artifacts::record::ArtifactSummary>,
    /// Pushes under way: bytes received of each image.
    pub uploads: Vec<crate::artifacts::upload::Progress>,
}

/// Answers whether a campaign uses an artifact: `Some(campaign id)` when
/// one does (delete is then refused).
pub type InUse<'a> = &'a (dyn Fn(&ArtifactId) -> Option<String> + Send + Sync);

/// Carries out one artifact command on `store`, telling `blocks` about
/// deletions. Uploads go to the upload actor ([`super::uploads`]); this
/// and other commands are refused here (the dispatch does not send them).
pub async fn handle(
    store: &ArtifactStore,
    blocks: Option<&BlockServerHandle>,
    cmd: &Command,
    in_use: InUse<'_>,
) -> Result<Value, ArtifactError> {
    match cmd {
        Command::ArtifactList => {
            let store = store.clone();
            blocking(move || {
                let list = ArtifactList {
                    artifacts: store.list()?.iter().map(|r| r.summary()).collect(),
                    uploads: store.uploads()?,
                };
                // Invariant: names, strings, numbers and bools.
                Ok(serde_json::to_value(list).unwrap_or(Value::Null))
            })
            .await
        }
        Command::ArtifactShow { id } => {
            let (store, target) = (store.clone(), id.clone());
            match blocking(move || store.get(&target)).await? {
                Some(record) => Ok(record.detail()),
                None => Err(ArtifactError::NotFound(id.clone())),
            }
        }
        Command::ArtifactDelete { id } => {
            if let Some(campaign) = in_use(id) {
                return Err(ArtifactError::InUse {
                    id: id.clone(),
                    campaign,
                });
            }
            let (store, target) = (store.clone(), id.clone());
            blocking(move || store.delete(&target)).await?;
            if let Some(blocks) = blocks {
                blocks.artifact_removed(id.clone());
            }
            tracing::info!(artifact = %id, "artifact deleted");
            Ok(json!({ "deleted": id }))
        }
        other => Err(ArtifactError::NotArtifactCommand(other.name())),
    }
}

/// Runs store work on a blocking thread.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArtifactError> + Send + 'static,
) -> Result<T, ArtifactError> {
    crate::rt::blocking(f)
        .await
        .map_err(|e| ArtifactError::Task(e.to_string()))?
}
