//! Why core has to stop: its store or its connection failed. Everything
//! else (a refused command, a campaign step refused) ends in a reply or a
//! log line and core goes on.

use crate::artifacts::ArtifactError;
use crate::mqtt::PublishError;
use crate::store::StoreError;

/// A failure core cannot go on after; [`crate::BridgeError`] wraps it.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The artifact store's disk or database (never a refused artifact).
    #[error(transparent)]
    Artifacts(ArtifactError),
    /// A blocking task of core's panicked.
    #[error("a core task failed: {0}")]
    Task(String),
}
