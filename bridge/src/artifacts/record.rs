//! What the bridge keeps about one stored artifact: the signed manifest's
//! exact bytes (what announcements carry) and its decoded fields (what
//! `ota artifact list/show` print), as one JSON record in the sled index.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use schemas::msg::{Manifest, WireMessage};
use schemas::{ArtifactId, ComponentName};

use super::ArtifactError;

/// One stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub artifact: ArtifactId,
    /// `firmware`, `app` or `config`.
    pub kind: String,
    pub component: ComponentName,
    pub version: String,
    pub arch: String,
    pub size: u64,
    /// Hex.
    pub sha256: String,
    pub block_size: u32,
    pub blocks: u32,
    /// Hex.
    pub merkle_root: String,
    /// The manifest's `created` (Unix seconds).
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default)]
    pub allow_downgrade: bool,
    /// Hex of the kid that signed the manifest.
    pub kid: String,
    /// When the bridge stored it (Unix seconds).
    pub stored_at: u64,
    /// Standard base64 of the COSE_Sign1 manifest, exactly as signed.
    pub manifest: String,
}

/// One line of `ota artifact list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactSummary {
    pub artifact: ArtifactId,
    /// `firmware`, `app` or `config`.
    pub kind: String,
    pub component: ComponentName,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub blocks: u32,
    /// When the bridge stored it (Unix seconds).
    pub stored_at: u64,
}

impl ArtifactRecord {
    /// The record of a verified manifest.
    pub fn new(manifest: &Manifest, envelope: &[u8], kid: Option<[u8; 8]>, stored_at: u64) -> Self {
        Self {
            artifact: manifest.artifact.clone(),
            kind: manifest.kind.as_str().to_string(),
            component: manifest.component.clone(),
            version: manifest.version.clone(),
            arch: manifest.arch.clone(),
            size: manifest.size,
            sha256: hex::encode(manifest.sha256),
            block_size: manifest.block_size,
            blocks: manifest.blocks,
            merkle_root: hex::encode(manifest.merkle_root),
            created: manifest.created,
            min_version: manifest.min_version.clone(),
            allow_downgrade: manifest.allow_downgrade,
            kid: kid.map(hex::encode).unwrap_or_default(),
            stored_at,
            manifest: base64::engine::general_purpose::STANDARD.encode(envelope),
        }
    }

    /// The COSE_Sign1 manifest's bytes, as signed: a release entry of an
    /// announcement.
    pub fn manifest_bytes(&self) -> Result<Vec<u8>, ArtifactError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.manifest)
            .map_err(|e| self.corrupt(format!("manifest is not base64: {e}")))
    }

    /// The manifest decoded again from its signed bytes (verified when it
    /// was stored; not verified again here).
    pub fn manifest(&self) -> Result<Manifest, ArtifactError> {
        let bytes = self.manifest_bytes()?;
        let payload = schemas::cose::peek_payload(&bytes)
            .ok_or_else(|| self.corrupt("manifest is not a COSE_Sign1"))?;
        Manifest::decode(&payload).map_err(|e| self.corrupt(format!("manifest: {e}")))
    }

    /// The merkle root as bytes.
    pub fn root(&self) -> Result<[u8; 32], ArtifactError> {
        hex32(&self.merkle_root).ok_or_else(|| self.corrupt("merkle_root is not 32 bytes of hex"))
    }

    /// One line of `ota artifact list --json`.
    pub fn summary(&self) -> ArtifactSummary {
        ArtifactSummary {
            artifact: self.artifact.clone(),
            kind: self.kind.clone(),
            component: self.component.clone(),
            version: self.version.clone(),
            arch: self.arch.clone(),
            size: self.size,
            blocks: self.blocks,
            stored_at: self.stored_at,
        }
    }

    /// `ota artifact show --json`: every field.
    pub fn detail(&self) -> Value {
        // Invariant: the record holds only strings, numbers and bools.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn corrupt(&self, reason: impl Into<String>) -> ArtifactError {
        ArtifactError::Corrupt {
            id: self.artifact.to_string(),
            reason: reason.into(),
        }
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
