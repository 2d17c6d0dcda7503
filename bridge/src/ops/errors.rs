//! The ops layer's error, [`OpsError`], and how the errors of the layers
//! below map into it: what was wrong with the command becomes the reply's
//! text; a failure of the store itself stays typed, so that
//! [`OpsError::fatal`] can stop the bridge after the reply.

use crate::artifacts::ArtifactError;
use crate::campaign::CampaignError;
use crate::mqtt::PublishError;
use crate::state::CoreError;
use crate::store::StoreError;

/// Why an accepted command failed. The message is the reply's `error`: it
/// says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The bridge cannot take it now; the same command later can succeed.
    #[error("{0}")]
    Busy(String),
    #[error("the bridge's store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the bridge's artifact store failed: {0}")]
    ArtifactStore(#[source] ArtifactError),
    #[error("the bridge could not publish: {0}")]
    Publish(#[from] PublishError),
}

impl OpsError {
    /// The failure that stops the bridge (once the reply is out), if this
    /// is one: the store's. A publish failure shows up again on the reply.
    pub fn fatal(self) -> Option<CoreError> {
        match self {
            OpsError::Store(e) => Some(CoreError::Store(e)),
            OpsError::ArtifactStore(e) => Some(CoreError::Artifacts(e)),
            _ => None,
        }
    }
}

impl From<CoreError> for OpsError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Store(s) => OpsError::Store(s),
            CoreError::Publish(p) => OpsError::Publish(p),
            CoreError::Artifacts(a) => OpsError::ArtifactStore(a),
            CoreError::Task(t) => OpsError::Invalid(t),
        }
    }
}

impl From<CampaignError> for OpsError {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::Store(s) => OpsError::Store(s),
            CampaignError::Publish(p) => OpsError::Publish(p),
            CampaignError::ArtifactStore(a) => OpsError::ArtifactStore(a),
            e @ (CampaignError::NotFound(_) | CampaignError::NoArtifact(_)) => {
                OpsError::NotFound(e.to_string())
            }
            other => OpsError::Invalid(other.to_string()),
        }
    }
}

impl From<ArtifactError> for OpsError {
    fn from(e: ArtifactError) -> Self {
        match e {
            e if e.is_storage() => OpsError::ArtifactStore(e),
            e @ ArtifactError::NotFound(_) => OpsError::NotFound(e.to_string()),
            other => OpsError::Invalid(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::ArtifactId;

    fn io() -> ArtifactError {
        ArtifactError::Io {
            op: "write",
            path: "/data/artifacts/x.part".into(),
            source: std::io::Error::other("disk full"),
        }
    }

    #[test]
    fn a_storage_failure_under_a_command_stops_the_bridge() {
        // Artifact store: a file or database failure is fatal, with its cause.
        let e = OpsError::from(io());
        assert!(e.to_string().contains("disk full"), "{e}");
        assert!(matches!(
            e.fatal(),
            Some(CoreError::Artifacts(ArtifactError::Io { .. }))
        ));
        // Through a campaign's release check, too.
        let e = OpsError::from(CampaignError::ArtifactStore(io()));
        assert!(matches!(e.fatal(), Some(CoreError::Artifacts(_))));
        // And core's own store.
        let e = OpsError::from(CoreError::Store(StoreError::Corrupt {
            tree: "groups",
            key: "g".into(),
            reason: "x".into(),
        }));
        assert!(matches!(e.fatal(), Some(CoreError::Store(_))));
    }

    #[test]
    fn what_is_wrong_with_the_command_is_only_a_reply() {
        let id = ArtifactId::new("fw").unwrap();
        for e in [
            OpsError::from(ArtifactError::NotFound(id.clone())),
            OpsError::from(ArtifactError::InUse {
                id: id.clone(),
                campaign: "c".into(),
            }),
            OpsError::from(CampaignError::NoArtifact(id.clone())),
            OpsError::from(CampaignError::BadArtifact(
                id.clone(),
                ArtifactError::Corrupt {
                    id: "fw".into(),
                    reason: "bad json".into(),
                },
            )),
        ] {
            let text = e.to_string();
            assert!(e.fatal().is_none(), "{text}");
        }
        assert!(matches!(
            OpsError::from(ArtifactError::NotFound(id)),
            OpsError::NotFound(_)
        ));
    }
}
