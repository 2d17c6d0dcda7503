//! The operator commands on artifacts (`artifact_upload`, `artifact_list`,
//! `artifact_show`, `artifact_delete`), as the ops dispatch calls them:
//! [`ArtifactOps::handle`] turns a [`Command`] into the reply's JSON or the
//! error text the operator sees. The store work runs on a blocking thread.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use schemas::cose::TrustStore;
use schemas::keys::{Kid, VerifyingKey};
use schemas::ops::Command;
use schemas::ArtifactId;

use super::{ArtifactError, ArtifactStore};
use crate::blocks::BlockServerHandle;

/// Answers whether a campaign uses an artifact: `Some(campaign id)` when
/// one does (delete is then refused).
pub type InUse<'a> = &'a (dyn Fn(&ArtifactId) -> Option<String> + Send + Sync);

/// What the artifact commands need: the store, the release keys uploads
/// are checked against, and the block server to tell about deletions.
#[derive(Clone)]
pub struct ArtifactOps {
    store: ArtifactStore,
    trust: TrustStore,
    blocks: Option<BlockServerHandle>,
}

impl ArtifactOps {
    /// `release_keys` as `[bridge] release_keys` gives them.
    pub fn new(
        store: ArtifactStore,
        release_keys: &BTreeMap<Kid, VerifyingKey>,
        blocks: Option<BlockServerHandle>,
    ) -> Self {
        Self {
            store,
            trust: TrustStore::new(release_keys.values().copied()),
            blocks,
        }
    }

    /// The store.
    pub fn store(&self) -> &ArtifactStore {
        &self.store
    }

    /// The block server, if one runs (campaigns mark emergency artifacts).
    pub fn blocks(&self) -> Option<&BlockServerHandle> {
        self.blocks.as_ref()
    }

    /// Carries out one artifact command. `Err` is the reply's error text.
    /// Other commands are refused (the dispatch should not send them).
    pub async fn handle(&self, cmd: &Command, in_use: InUse<'_>) -> Result<Value, String> {
        self.run(cmd, in_use).await.map_err(|e| e.to_string())
    }

    async fn run(&self, cmd: &Command, in_use: InUse<'_>) -> Result<Value, ArtifactError> {
        match cmd {
            Command::ArtifactUpload {
                manifest,
                offset,
                data,
            } => {
                let (store, trust) = (self.store.clone(), self.trust.clone());
                let (manifest, data, offset) = (manifest.clone(), data.clone(), *offset);
                let now = crate::artifacts::unix_now();
                let progress =
                    blocking(move || store.accept_chunk(&trust, &manifest, offset, &data, now))
                        .await?;
                Ok(progress.to_json())
            }
            Command::ArtifactList => {
                let store = self.store.clone();
                blocking(move || {
                    let artifacts: Vec<Value> = store.list()?.iter().map(|r| r.summary()).collect();
                    let uploads: Vec<Value> =
                        store.uploads()?.iter().map(|p| p.to_json()).collect();
                    Ok(json!({ "artifacts": artifacts, "uploads": uploads }))
                })
                .await
            }
            Command::ArtifactShow { id } => match self.store.get(id)? {
                Some(record) => Ok(record.detail()),
                None => Err(ArtifactError::NotFound(id.clone())),
            },
            Command::ArtifactDelete { id } => {
                if let Some(campaign) = in_use(id) {
                    return Err(ArtifactError::InUse {
                        id: id.clone(),
                        campaign,
                    });
                }
                let (store, target) = (self.store.clone(), id.clone());
                blocking(move || store.delete(&target)).await?;
                if let Some(blocks) = &self.blocks {
                    blocks.artifact_removed(id.clone());
                }
                tracing::info!(artifact = %id, "artifact deleted");
                Ok(json!({ "deleted": id }))
            }
            other => Err(ArtifactError::Task(format!(
                "{} is not an artifact command",
                other.name()
            ))),
        }
    }
}

/// Runs store work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArtifactError> + Send + 'static,
) -> Result<T, ArtifactError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArtifactError::Task(e.to_string()))?
}
