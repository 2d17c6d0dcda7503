//! Why an artifact command or store operation failed. Every message says
//! what was wrong and what the operator can do about it; the text is what
//! `ota artifact ...` prints.

use std::path::PathBuf;

use schemas::msg::ErrorCode;
use schemas::ArtifactId;

/// An artifact refused or a store failure.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("the manifest is not standard base64: {0}")]
    ManifestEncoding(String),
    #[error("the manifest is refused ({code}): {detail}; devices would refuse it too: sign it with a release key listed in [bridge] release_keys")]
    Manifest { code: ErrorCode, detail: String },
    #[error("the bridge trusts no release key, so it would store what every device refuses: add the release public key file to [bridge] release_keys and restart the bridge")]
    NoReleaseKeys,
    #[error("the image is {size} bytes, over the limit of {max} bytes (64 MiB): split the update or compress the image")]
    TooLarge { size: u64, max: u64 },
    #[error("the chunk is not standard base64: {0}")]
    ChunkEncoding(String),
    #[error(
        "the chunk is {len} bytes, over the limit of {max}: send chunks of at most {max} bytes"
    )]
    ChunkTooLarge { len: usize, max: usize },
    #[error("the chunk ends at byte {end}, past the image size {size} in the manifest: the image is not the one the manifest was made from")]
    PastEnd { end: u64, size: u64 },
    #[error("artifact {id} is already stored with another manifest: delete it first (`ota artifact delete {id}`) or sign the image with another artifact id")]
    Exists { id: ArtifactId },
    #[error("a push of artifact {id} with another manifest is in progress: send offset 0 to start over with the new manifest")]
    ManifestChanged { id: ArtifactId },
    #[error("the image's sha256 is {actual}, the manifest says {expected}: the upload is discarded; check that the image is the one you signed and push again")]
    HashMismatch { expected: String, actual: String },
    #[error("the image's Merkle root is {actual}, the manifest says {expected}: the manifest was not made from this image; sign it again (`ota artifact sign`) and push again")]
    RootMismatch { expected: String, actual: String },
    #[error("no artifact {0}: `ota artifact list` shows what the bridge holds")]
    NotFound(ArtifactId),
    #[error("artifact {id} is used by campaign {campaign}: abort it or wait until it ends, then delete the artifact")]
    InUse { id: ArtifactId, campaign: String },
    #[error("artifact store: {op} {path}: {source} (check free disk space and the data_dir's permissions)")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("artifact database: {0} (check free disk space and the data_dir's permissions)")]
    Sled(#[from] sled::Error),
    #[error("artifact record {id} is unreadable: {reason} (delete it with `ota artifact delete` and push the image again)")]
    Corrupt { id: String, reason: String },
    #[error("{0} is not an artifact command")]
    NotArtifactCommand(&'static str),
    #[error(
        "the artifact task stopped before answering: {0} (a bug in ota; the upload can be resumed)"
    )]
    Task(String),
}

impl ArtifactError {
    /// A failure of the disk or the database (never something wrong with
    /// what was sent): the bridge stops rather than go on without its store.
    pub fn is_storage(&self) -> bool {
        matches!(self, ArtifactError::Io { .. } | ArtifactError::Sled(_))
    }

    /// An I/O error with what was being done and where.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ArtifactError::Io { op, path, source }
    }
}
