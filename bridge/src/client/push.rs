//! The operator's side of a push (`ota artifact push`): checks the image
//! against its manifest before sending a byte, then sends it in chunks of
//! [`UPLOAD_CHUNK`] as `artifact_upload` commands, following the bridge's
//! `received`. The first command asks where the bridge stands (offset 0),
//! so a push that broke off, or a bridge restarted meanwhile, resumes
//! where the bytes end; a lost reply is asked again the same way.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use schemas::ops::{Command, UPLOAD_CHUNK};
use schemas::release::{read_unverified, MAX_IMAGE_BYTES};

use super::{ClientError, OpsClient};

/// Replies lost in a row before a push gives up.
const MAX_RETRIES: u32 = 5;

/// Why a push stopped.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the image is {size} bytes, over the limit of {max} bytes (64 MiB): nothing was sent")]
    TooLarge { size: u64, max: u64 },
    #[error(
        "the manifest cannot be read: {0} (give the .manifest file `ota artifact sign` wrote)"
    )]
    BadManifest(String),
    #[error("the manifest was not made from this image ({0}): sign the image again with `ota artifact sign`")]
    Mismatch(String),
    #[error("the bridge refused the upload: {0}")]
    Refused(String),
    #[error("the bridge answered {0}: not an upload reply (is the bridge the same version as this client?)")]
    BadReply(String),
    #[error("{0}; run the same push again to resume where it stopped")]
    Client(#[from] ClientError),
}

/// The bridge's answer to one chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadReply {
    pub artifact: String,
    pub received: u64,
    pub size: u64,
    pub complete: bool,
    #[serde(default)]
    pub accepted: bool,
}

/// Pushes `image` with its signed `manifest`. `progress(received, size)` is
/// called after every answer. Returns the final answer (`complete`).
///
/// Hashes the image first on the caller's task (about 0.2 s for 64 MiB):
/// meant for the CLI and tests, not for a task of the bridge itself.
pub async fn push(
    client: &OpsClient,
    manifest: &[u8],
    image: &[u8],
    mut progress: impl FnMut(u64, u64),
) -> Result<UploadReply, PushError> {
    let size = image.len() as u64;
    if size > MAX_IMAGE_BYTES {
        return Err(PushError::TooLarge {
            size,
            max: MAX_IMAGE_BYTES,
        });
    }
    check_pair(manifest, image)?;
    let manifest_b64 = base64::engine::general_purpose::STANDARD.encode(manifest);
    let mut offset = 0u64;
    let mut lost = 0;
    loop {
        let end = (offset as usize + UPLOAD_CHUNK).min(image.len());
        let chunk = image.get(offset as usize..end).unwrap_or_default();
        let cmd = Command::ArtifactUpload {
            manifest: manifest_b64.clone(),
            offset,
            data: base64::engine::general_purpose::STANDARD.encode(chunk),
        };
        let reply = match client.call(cmd).await {
            Ok(r) => r,
            Err(ClientError::NoReply(_)) if lost < MAX_RETRIES => {
                // The chunk may or may not have landed: ask again. The
                // bridge writes only at the offset it expects.
                lost += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        lost = 0;
        if !reply.ok {
            return Err(PushError::Refused(
                reply.error.unwrap_or_else(|| "no reason given".into()),
            ));
        }
        let value = reply.result.unwrap_or_default();
        let answer: UploadReply = serde_json::from_value(value.clone())
            .map_err(|_| PushError::BadReply(value.to_string()))?;
        progress(answer.received, answer.size);
        if answer.complete {
            return Ok(answer);
        }
        if answer.received > size {
            return Err(PushError::BadReply(value.to_string()));
        }
        offset = answer.received;
    }
}

/// The manifest's size and sha256 must be the image's: refuse before
/// sending anything rather than after 64 MiB.
fn check_pair(manifest: &[u8], image: &[u8]) -> Result<(), PushError> {
    let unverified = read_unverified(manifest)
        .ok_or_else(|| PushError::BadManifest("not a COSE_Sign1 envelope".into()))?;
    let m = unverified
        .manifest
        .map_err(|e| PushError::BadManifest(e.to_string()))?;
    if m.size != image.len() as u64 {
        return Err(PushError::Mismatch(format!(
            "the manifest says {} bytes, the image has {}",
            m.size,
            image.len()
        )));
    }
    if <[u8; 32]>::from(Sha256::digest(image)) != m.sha256 {
        return Err(PushError::Mismatch("the sha256 differs".into()));
    }
    Ok(())
}
