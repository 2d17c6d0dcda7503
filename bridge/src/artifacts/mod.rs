//! Artifacts: signed images the bridge holds and serves block by block.
//!
//! # Layout
//!
//! - [`store`]: [`ArtifactStore`], a sled index of [`ArtifactRecord`]s and
//!   the images in content-addressed files under `data_dir/artifacts`.
//! - [`upload`]: accepting a push chunk by chunk, resumable, verified
//!   (signature, size, sha256, Merkle root) before anything is stored.
//! - [`record`]: [`ArtifactRecord`], what is kept about one artifact.
//! - [`error`]: what can go wrong, [`ArtifactError`].
//!
//! The `artifact_*` commands are `ops::artifact_cmds`; the operator's side
//! of a push is `client::push`.

pub mod error;
pub mod record;
pub mod store;
pub mod upload;

pub use error::ArtifactError;
pub use record::ArtifactRecord;
pub use store::ArtifactStore;
pub use upload::{Progress, VerifiedManifest};

pub use schemas::release::MAX_IMAGE_BYTES;

#[cfg(test)]
mod tests;
