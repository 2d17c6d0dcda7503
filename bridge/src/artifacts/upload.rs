//! Accepting a push, chunk by chunk (`Command::ArtifactUpload`).
//!
//! 1. The manifest is verified against the release keys, exactly as a
//!    device would (`verify_entry`), so the bridge never stores an image
//!    devices refuse; images over 64 MiB are refused.
//! 2. Chunks are accepted in order only. A chunk at another offset than the
//!    bytes held is not written: the answer's `received` says where to go
//!    on, so a push that broke off (or an empty chunk at offset 0, "where do
//!    I stand?") resumes there. The partial image is a file and its
//!    manifest a sled record, so a bridge restart resumes too.
//! 3. On the last byte: size and sha256, then the Merkle root is rebuilt and
//!    compared with `merkle_root`; a mismatch discards the upload. The file
//!    is fsynced and renamed to its content address, then the record is
//!    written and flushed.
//!
//! Partial chunks are not fsynced one by one: after a crash `received` is
//! the file's length, and the final sha256 check catches a torn tail.

use std::io::{Read, Write};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use schemas::cose::TrustStore;
use schemas::merkle::MerkleTree;
use schemas::msg::limits::MAX_MANIFEST_BYTES;
use schemas::msg::manifest::verify_entry;
use schemas::msg::Manifest;
use schemas::ops::UPLOAD_CHUNK;
use schemas::release::MAX_IMAGE_BYTES;

use super::{ArtifactError, ArtifactRecord, ArtifactStore};
use crate::store::private;

/// Where a push stands after one chunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = UploadProgress)]
pub struct Progress {
    pub artifact: schemas::ArtifactId,
    /// Bytes the bridge holds: the offset of the next chunk.
    pub received: u64,
    /// The image's size from the manifest.
    pub size: u64,
    /// True once the artifact is stored.
    pub complete: bool,
    /// True when this chunk was written (false: wrong offset, empty chunk,
    /// or already complete).
    pub accepted: bool,
}

impl Progress {
    /// The reply's JSON.
    pub fn to_json(&self) -> serde_json::Value {
        // Invariant: a name, numbers and bools.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl ArtifactStore {
    /// One chunk of a push: `manifest_b64` and `data_b64` as the command
    /// carries them. Blocks (file writes; at the end, hashing up to 64 MiB).
    pub fn accept_chunk(
        &self,
        trust: &TrustStore,
        manifest_b64: &str,
        offset: u64,
        data_b64: &str,
        now: u64,
    ) -> Result<Progress, ArtifactError> {
        let verified = VerifiedManifest::verify(trust, manifest_b64)?;
        self.accept_verified(&verified, offset, data_b64, now)
    }

    /// One chunk of a push whose manifest was verified already (the upload
    /// actor verifies it once per push, not once per chunk). Blocks.
    pub fn accept_verified(
        &self,
        verified: &VerifiedManifest,
        offset: u64,
        data_b64: &str,
        now: u64,
    ) -> Result<Progress, ArtifactError> {
        let (manifest, envelope) = (&verified.manifest, &verified.envelope);
        // base64 grows 4/3: refuse absurd text before decoding it.
        if data_b64.len() > UPLOAD_CHUNK.div_ceil(3) * 4 + 4 {
            return Err(ArtifactError::ChunkTooLarge {
                len: data_b64.len() / 4 * 3,
                max: UPLOAD_CHUNK,
            });
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(data_b64)
            .map_err(|e| ArtifactError::ChunkEncoding(e.to_string()))?;
        if data.len() > UPLOAD_CHUNK {
            return Err(ArtifactError::ChunkTooLarge {
                len: data.len(),
                max: UPLOAD_CHUNK,
            });
        }
        let id = manifest.artifact.clone();
        let progress = |received, complete, accepted| Progress {
            artifact: id.clone(),
            received,
            size: manifest.size,
            complete,
            accepted,
        };

        let _guard = self.lock();
        if let Some(stored) = self.get(&id)? {
            if stored.manifest_bytes()? == *envelope {
                return Ok(progress(manifest.size, true, false));
            }
            return Err(ArtifactError::Exists { id });
        }

        let part = self.part_path(&id);
        let mut received = match self.inner.uploads.get(id.as_str())? {
            Some(held) if held.as_ref() == envelope.as_slice() => part_len(&part)?,
            Some(_) if offset != 0 => return Err(ArtifactError::ManifestChanged { id }),
            // A new push, or offset 0 with a new manifest: start over.
            _ => {
                create_part(&part).map_err(ArtifactError::io("create", &part))?;
                self.inner
                    .uploads
                    .insert(id.as_str(), envelope.as_slice())?;
                self.inner.db.flush()?;
                0
            }
        };
        if received > manifest.size {
            // Only a damaged file can be longer than the manifest says.
            tracing::warn!(artifact = %id, received, size = manifest.size, "partial upload too long, starting over");
            create_part(&part).map_err(ArtifactError::io("truncate", &part))?;
            received = 0;
        }
        if offset != received || data.is_empty() {
            return Ok(progress(received, false, false));
        }
        let end = received + data.len() as u64;
        if end > manifest.size {
            return Err(ArtifactError::PastEnd {
                end,
                size: manifest.size,
            });
        }
        let mut file = private::file_options()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(ArtifactError::io("open", &part))?;
        file.write_all(&data)
            .map_err(ArtifactError::io("write", &part))?;
        if end < manifest.size {
            return Ok(progress(end, false, true));
        }
        drop(file);
        match self.finish(manifest, envelope, now) {
            Ok(()) => Ok(progress(end, true, true)),
            Err(e) => {
                // A finished image that does not match is useless: drop it
                // so the next push starts clean.
                if matches!(
                    e,
                    ArtifactError::HashMismatch { .. } | ArtifactError::RootMismatch { .. }
                ) {
                    let _ = std::fs::remove_file(&part);
                    let _ = self.inner.uploads.remove(id.as_str());
                    let _ = self.inner.db.flush();
                }
                Err(e)
            }
        }
    }

    /// The last byte is in: check, move to the content address, index.
    fn finish(&self, manifest: &Manifest, envelope: &[u8], now: u64) -> Result<(), ArtifactError> {
        let id = &manifest.artifact;
        let part = self.part_path(id);
        let mut image = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
        let mut file = std::fs::File::open(&part).map_err(ArtifactError::io("open", &part))?;
        file.read_to_end(&mut image)
            .map_err(ArtifactError::io("read", &part))?;
        let sha: [u8; 32] = Sha256::digest(&image).into();
        if image.len() as u64 != manifest.size || sha != manifest.sha256 {
            return Err(ArtifactError::HashMismatch {
                expected: hex::encode(manifest.sha256),
                actual: hex::encode(sha),
            });
        }
        let tree = MerkleTree::build(&image, manifest.block_size).map_err(|e| {
            ArtifactError::RootMismatch {
                expected: hex::encode(manifest.merkle_root),
                actual: e.to_string(),
            }
        })?;
        if tree.root() != manifest.merkle_root {
            return Err(ArtifactError::RootMismatch {
                expected: hex::encode(manifest.merkle_root),
                actual: hex::encode(tree.root()),
            });
        }
        file.sync_all().map_err(ArtifactError::io("fsync", &part))?;
        drop(file);
        let kid = schemas::release::read_unverified(envelope).and_then(|u| u.kid);
        let record = ArtifactRecord::new(manifest, envelope, kid, now);
        let blob = self.blob_path(&record);
        if blob.exists() {
            // The same bytes are stored under another id: share the file.
            std::fs::remove_file(&part).map_err(ArtifactError::io("remove", &part))?;
        } else {
            std::fs::rename(&part, &blob).map_err(ArtifactError::io("rename into", &blob))?;
            sync_dir(&self.inner.blobs)?;
        }
        let json = serde_json::to_vec(&record).map_err(|e| ArtifactError::Corrupt {
            id: id.to_string(),
            reason: e.to_string(),
        })?;
        self.inner.index.insert(id.as_str(), json)?;
        self.inner.uploads.remove(id.as_str())?;
        self.inner.db.flush()?;
        tracing::info!(artifact = %id, size = manifest.size, blocks = manifest.blocks, "artifact stored");
        Ok(())
    }

    /// Partial uploads: (artifact, bytes received, size).
    pub fn uploads(&self) -> Result<Vec<Progress>, ArtifactError> {
        let mut out = Vec::new();
        for entry in self.inner.uploads.iter() {
            let (_, envelope) = entry?;
            let Some(m) =
                schemas::release::read_unverified(&envelope).and_then(|u| u.manifest.ok())
            else {
                continue;
            };
            let received = part_len(&self.part_path(&m.artifact)).unwrap_or(0);
            out.push(Progress {
                artifact: m.artifact,
                received,
                size: m.size,
                complete: false,
                accepted: false,
            });
        }
        Ok(out)
    }
}

/// An upload's manifest, checked against the release keys as a device
/// would check it, with its exact signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    pub manifest: Manifest,
    pub envelope: Vec<u8>,
}

impl VerifiedManifest {
    /// Decodes and verifies the manifest of an upload command.
    pub fn verify(trust: &TrustStore, manifest_b64: &str) -> Result<Self, ArtifactError> {
        let (manifest, envelope) = verify_manifest(trust, manifest_b64)?;
        Ok(Self { manifest, envelope })
    }
}

fn verify_manifest(
    trust: &TrustStore,
    manifest_b64: &str,
) -> Result<(Manifest, Vec<u8>), ArtifactError> {
    if trust.is_empty() {
        return Err(ArtifactError::NoReleaseKeys);
    }
    if manifest_b64.len() > MAX_MANIFEST_BYTES.div_ceil(3) * 4 + 4 {
        return Err(ArtifactError::ManifestEncoding(format!(
            "{} characters, longer than any manifest ({MAX_MANIFEST_BYTES} bytes)",
            manifest_b64.len()
        )));
    }
    let envelope = base64::engine::general_purpose::STANDARD
        .decode(manifest_b64)
        .map_err(|e| ArtifactError::ManifestEncoding(e.to_string()))?;
    let manifest = verify_entry(&envelope, trust).map_err(|e| ArtifactError::Manifest {
        code: e.code,
        detail: e.detail,
    })?;
    if manifest.size > MAX_IMAGE_BYTES {
        return Err(ArtifactError::TooLarge {
            size: manifest.size,
            max: MAX_IMAGE_BYTES,
        });
    }
    Ok((manifest, envelope))
}

fn part_len(part: &std::path::Path) -> Result<u64, ArtifactError> {
    match std::fs::metadata(part) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(ArtifactError::io("stat", part)(e)),
    }
}

/// Creates (or empties) a partial upload, mode 0600.
fn create_part(part: &std::path::Path) -> std::io::Result<std::fs::File> {
    private::file_options()
        .create(true)
        .truncate(true)
        .open(part)
}

/// Makes a rename durable.
fn sync_dir(dir: &std::path::Path) -> Result<(), ArtifactError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ArtifactError::io("fsync directory", dir))
}
