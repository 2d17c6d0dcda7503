//! Artifacts: signed images the bridge holds and serves block by block.
//!
//! # Layout
//!
//! - [`store`]: [`ArtifactStore`], a sled index of [`ArtifactRecord`]s and
//!   the images in content-addressed files under `data_dir/artifacts`.
//! - [`upload`]: accepting a push chunk by chunk, resumable, verified
//!   (signature, size, sha256, Merkle root) before anything is stored.
//! - [`record`]: [`ArtifactRecord`], what is kept about one artifact.
//! - [`ops`]: [`ArtifactOps::handle`], the `artifact_*` operator commands.
//! - [`push`]: the operator's side of a push ([`push::push`]), resuming a
//!   broken-off one.
//! - [`error`]: what can go wrong, [`ArtifactError`].

pub mod error;
pub mod ops;
pub mod push;
pub mod record;
pub mod store;
pub mod upload;

pub use error::ArtifactError;
pub use ops::{ArtifactOps, InUse};
pub use record::ArtifactRecord;
pub use store::ArtifactStore;
pub use upload::Progress;

pub use schemas::release::MAX_IMAGE_BYTES;

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
