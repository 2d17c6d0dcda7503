//! Building a release manifest from an image: what `ota artifact sign`
//! signs. Pure: the caller reads the image file and the clock, this module
//! hashes, cuts and checks.
//!
//! The manifest built here is checked against the same decoder every device
//! and the bridge use ([`Manifest::decode`]), so a manifest that builds is
//! one that every reader accepts.

use sha2::{Digest, Sha256};

use crate::cbor::Value;
use crate::ids::{ArtifactId, ComponentName, NameError, MAX_NAME_LEN};
use crate::keys::Kid;
use crate::merkle::{MerkleError, MerkleTree, DEFAULT_BLOCK_SIZE};
use crate::msg::{DecodeError, Kind, Manifest, WireMessage};

/// The largest image `ota artifact sign` accepts: 64 MiB.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// The longest version string a manifest may carry (the decoder's bound).
pub const MAX_VERSION_LEN: usize = 128;

/// What the operator says about an image; the rest comes from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSpec {
    /// Firmware, app or config.
    pub kind: Kind,
    /// What the image replaces on the device.
    pub component: ComponentName,
    /// Semver 2.0.
    pub version: String,
    /// The devices' architecture, or `any`.
    pub arch: String,
    /// A power of two, 256..=65536.
    pub block_size: u32,
    /// The artifact id; `None` derives one with [`default_artifact_id`].
    pub artifact: Option<ArtifactId>,
    /// The device needs at least this installed first.
    pub min_version: Option<String>,
    /// Let devices install a lower version than they run.
    pub allow_downgrade: bool,
    /// Unix seconds.
    pub created: u64,
}

impl ReleaseSpec {
    /// A spec with the default block size, no artifact id, no minimum
    /// version and no downgrade.
    pub fn new(
        kind: Kind,
        component: ComponentName,
        version: impl Into<String>,
        arch: impl Into<String>,
        created: u64,
    ) -> Self {
        Self {
            kind,
            component,
            version: version.into(),
            arch: arch.into(),
            block_size: DEFAULT_BLOCK_SIZE,
            artifact: None,
            min_version: None,
            allow_downgrade: false,
            created,
        }
    }
}

/// Why a manifest could not be built. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the image is empty: an artifact needs at least one byte")]
    EmptyImage,
    #[error("the image is {size} bytes, over the limit of {max} (64 MiB)")]
    ImageTooLarge { size: u64, max: u64 },
    #[error("{field} {value:?} is not a semver 2.0 version (e.g. 1.4.0 or 2.0.0-rc.1)")]
    BadVersion { field: &'static str, value: String },
    #[error("{field} is {len} characters long: at most {MAX_VERSION_LEN} are allowed")]
    VersionTooLong { field: &'static str, len: usize },
    #[error(
        "arch {0:?} is not a name of 1-64 characters of [A-Za-z0-9._-] (e.g. esp32, armv7, any)"
    )]
    BadArch(String),
    #[error("block size {0} is not allowed: use a power of two from 256 to 65536")]
    BadBlockSize(u32),
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("a delta from {0} to the same version rebuilds nothing: give an older image")]
    DeltaFromItself(String),
    #[error("zstd failed to make the delta: {0}")]
    Zstd(String),
    #[error("the delta does not go with its full image: {0}")]
    NotItsDelta(crate::msg::delta::Mismatch),
    /// A field the checks above let through was refused by the decoder.
    #[error("the manifest would be refused by devices: {0}")]
    Refused(DecodeError),
}

/// The artifact id `ota artifact sign` uses when none is given:
/// `{component}-{version}-{arch}`, every character outside
/// `[A-Za-z0-9._-]` replaced by `-` (a `+` of build metadata, say). An id
/// over 64 characters keeps its first 55 and appends `-` and 8 hex
/// characters of the SHA-256 of the whole, so two long ids stay distinct.
pub fn default_artifact_id(component: &ComponentName, version: &str, arch: &str) -> ArtifactId {
    sanitized_id(&format!("{component}-{version}-{arch}"))
}

/// `raw` with every character outside the alphabet replaced by `-`,
/// shortened to 64 characters with a hash suffix when longer.
fn sanitized_id(raw: &str) -> ArtifactId {
    let mut id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.len() > MAX_NAME_LEN {
        let digest = Sha256::digest(raw.as_bytes());
        // All characters are ASCII now, so byte 55 is a char boundary.
        id.truncate(MAX_NAME_LEN - 9);
        id.push('-');
        id.push_str(&hex::encode(&digest[..4]));
    }
    // Invariant: callers pass a raw id that starts with a non-empty valid
    // name; every character is in the alphabet and it is at most 64 long.
    ArtifactId::new(id).expect("a sanitized, truncated id is a valid name")
}

fn check_version(field: &'static str, value: &str) -> Result<(), ReleaseError> {
    if value.len() > MAX_VERSION_LEN {
        return Err(ReleaseError::VersionTooLong {
            field,
            len: value.chars().count(),
        });
    }
    if !crate::version::is_valid_semver(value) {
        return Err(ReleaseError::BadVersion {
            field,
            value: value.chars().take(80).collect(),
        });
    }
    Ok(())
}

/// Checks the operator's fields without looking at an image: a CLI calls
/// this before it reads a large file.
pub fn check_spec(spec: &ReleaseSpec) -> Result<(), ReleaseError> {
    check_version("version", &spec.version)?;
    if let Some(m) = &spec.min_version {
        check_version("min version", m)?;
    }
    if !crate::ids::is_valid_name(&spec.arch) {
        return Err(ReleaseError::BadArch(spec.arch.chars().take(80).collect()));
    }
    if !crate::merkle::is_valid_block_size(spec.block_size) {
        return Err(ReleaseError::BadBlockSize(spec.block_size));
    }
    Ok(())
}

/// Builds the manifest of `image`: its size, SHA-256, block count and
/// Merkle root, with the operator's fields from `spec`.
pub fn build_manifest(image: &[u8], spec: &ReleaseSpec) -> Result<Manifest, ReleaseError> {
    check_spec(spec)?;
    let size = image.len() as u64;
    if size == 0 {
        return Err(ReleaseError::EmptyImage);
    }
    if size > MAX_IMAGE_BYTES {
        return Err(ReleaseError::ImageTooLarge {
            size,
            max: MAX_IMAGE_BYTES,
        });
    }
    let tree = MerkleTree::build(image, spec.block_size)?;
    let artifact = match &spec.artifact {
        Some(a) => a.clone(),
        None => default_artifact_id(&spec.component, &spec.version, &spec.arch),
    };
    let manifest = Manifest {
        artifact,
        kind: spec.kind,
        component: spec.component.clone(),
        version: spec.version.clone(),
        arch: spec.arch.clone(),
        size,
        sha256: Sha256::digest(image).into(),
        block_size: spec.block_size,
        blocks: tree.blocks(),
        merkle_root: tree.root(),
        created: spec.created,
        min_version: spec.min_version.clone(),
        allow_downgrade: spec.allow_downgrade,
        delta: None,
    };
    // Every reader decodes with this; refuse here what they would refuse.
    Manifest::decode(&manifest.encode()).map_err(ReleaseError::Refused)?;
    Ok(manifest)
}

/// The artifact id of a delta when none is given: the full image's id
/// with `.from-{from_version}`, sanitized and shortened as
/// [`default_artifact_id`] does.
pub fn default_delta_id(full: &ArtifactId, from_version: &str) -> ArtifactId {
    sanitized_id(&format!("{full}.from-{from_version}"))
}

/// Builds the delta manifest (E3) of `payload`, which rebuilds `full`'s
/// image from the image `from_sha256` of version `from_version`: the
/// payload's size, sha256, blocks and Merkle root, `full`'s other fields,
/// and the `delta` map. Checked against `full` as every reader checks it.
pub fn build_delta_manifest(
    payload: &[u8],
    full: &Manifest,
    from_version: &str,
    from_sha256: [u8; 32],
    artifact: Option<ArtifactId>,
) -> Result<Manifest, ReleaseError> {
    check_version("from version", from_version)?;
    if payload.is_empty() {
        return Err(ReleaseError::EmptyImage);
    }
    if payload.len() as u64 > MAX_IMAGE_BYTES {
        return Err(ReleaseError::ImageTooLarge {
            size: payload.len() as u64,
            max: MAX_IMAGE_BYTES,
        });
    }
    if from_version == full.version {
        return Err(ReleaseError::DeltaFromItself(from_version.to_string()));
    }
    let tree = MerkleTree::build(payload, full.block_size)?;
    let manifest = Manifest {
        artifact: artifact.unwrap_or_else(|| default_delta_id(&full.artifact, from_version)),
        size: payload.len() as u64,
        sha256: Sha256::digest(payload).into(),
        blocks: tree.blocks(),
        merkle_root: tree.root(),
        delta: Some(crate::msg::Delta {
            format: crate::msg::delta::FORMAT_ZSTD.into(),
            from_version: from_version.to_string(),
            from_sha256,
            target_size: full.size,
            target_sha256: full.sha256,
        }),
        ..full.clone()
    };
    let back = Manifest::decode(&manifest.encode()).map_err(ReleaseError::Refused)?;
    crate::msg::delta::check_against(&back, full).map_err(ReleaseError::NotItsDelta)?;
    Ok(manifest)
}

/// Makes the delta payload that rebuilds `new` (whose manifest is `full`)
/// from `old`, installed as `from_version`, checks that it does, and
/// builds its manifest.
pub fn build_delta(
    old: &[u8],
    new: &[u8],
    full: &Manifest,
    from_version: &str,
) -> Result<(Vec<u8>, Manifest), ReleaseError> {
    if old.is_empty() {
        return Err(ReleaseError::EmptyImage);
    }
    let payload =
        crate::delta_zstd::make(old, new).map_err(|e| ReleaseError::Zstd(e.to_string()))?;
    crate::delta_zstd::apply(old, &payload, full.size, &full.sha256, std::io::sink())
        .map_err(|e| ReleaseError::Zstd(format!("the delta does not rebuild the image: {e}")))?;
    let from_sha256 = Sha256::digest(old).into();
    let manifest = build_delta_manifest(&payload, full, from_version, from_sha256, None)?;
    Ok((payload, manifest))
}

/// What can be read from a release entry without verifying it: for
/// `ota artifact inspect`, which shows a manifest even when no trusted key
/// is at hand. Never act on it: [`crate::msg::manifest::verify_entry`] is
/// the only way to trust a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// True when the envelope carries the COSE_Sign1 tag (18).
    pub tagged: bool,
    /// The kid of the unprotected header (label 4), when it is 8 bytes.
    pub kid: Option<Kid>,
    /// The payload decoded as a manifest, or why it could not be.
    pub manifest: Result<Manifest, DecodeError>,
}

/// Reads a release entry without verifying it. `None` when it is not a
/// COSE_Sign1 array at all (4 elements, tagged 18 or not, a bstr payload).
pub fn read_unverified(envelope: &[u8]) -> Option<Unverified> {
    let payload = crate::cose::peek_payload(envelope)?;
    let value: Value = ciborium::de::from_reader(envelope).ok()?;
    let (tagged, value) = match value {
        Value::Tag(crate::cose::COSE_SIGN1_TAG, inner) => (true, *inner),
        other => (false, other),
    };
    let kid = match value {
        Value::Array(items) => match items.get(1) {
            Some(Value::Map(header)) => header.iter().find_map(|(label, v)| match (label, v) {
                (Value::Integer(l), Value::Bytes(b))
                    if i128::from(*l) == crate::cose::HEADER_KID =>
                {
                    Kid::try_from(b.as_slice()).ok()
                }
                _ => None,
            }),
            _ => None,
        },
        _ => None,
    };
    Some(Unverified {
        tagged,
        kid,
        manifest: Manifest::decode(&payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ReleaseSpec {
        ReleaseSpec::new(
            Kind::Firmware,
            ComponentName::new("main").unwrap(),
            "1.3.0",
            "esp32",
            1_790_000_000,
        )
    }

    #[test]
    fn builds_from_the_image() {
        let image: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let m = build_manifest(&image, &spec()).unwrap();
        assert_eq!(m.size, 10_000);
        assert_eq!(m.blocks, 3);
        assert_eq!(m.block_size, 4096);
        assert_eq!(m.sha256, <[u8; 32]>::from(Sha256::digest(&image)));
        assert_eq!(
            m.merkle_root,
            MerkleTree::build(&image, 4096).unwrap().root()
        );
        assert_eq!(m.artifact.as_str(), "main-1.3.0-esp32");
        assert_eq!(m.created, 1_790_000_000);
    }

    #[test]
    fn refuses_bad_fields() {
        assert_eq!(build_manifest(&[], &spec()), Err(ReleaseError::EmptyImage));
        let mut s = spec();
        s.version = "1.3".into();
        assert!(matches!(
            build_manifest(&[1], &s),
            Err(ReleaseError::BadVersion {
                field: "version",
                ..
            })
        ));
        let mut s = spec();
        s.min_version = Some("one".into());
        assert!(matches!(
            build_manifest(&[1], &s),
            Err(ReleaseError::BadVersion {
                field: "min version",
                ..
            })
        ));
        let mut s = spec();
        s.version = format!("1.0.0-{}", "a".repeat(200));
        assert!(matches!(
            build_manifest(&[1], &s),
            Err(ReleaseError::VersionTooLong { .. })
        ));
        let mut s = spec();
        s.block_size = 1000;
        assert_eq!(
            build_manifest(&[1], &s),
            Err(ReleaseError::BadBlockSize(1000))
        );
        let mut s = spec();
        s.arch = "arm v7".into();
        assert!(matches!(
            build_manifest(&[1], &s),
            Err(ReleaseError::BadArch(_))
        ));
    }

    #[test]
    fn reads_a_signed_entry_unverified() {
        let key = crate::keys::SigningKey::from_bytes(&[3; 32]);
        let m = build_manifest(&[1, 2, 3], &spec()).unwrap();
        let env = crate::msg::manifest::sign(&m, &key);
        let u = read_unverified(&env).unwrap();
        assert!(u.tagged);
        assert_eq!(u.kid, Some(crate::keys::kid(&key.verifying_key())));
        assert_eq!(u.manifest, Ok(m));
        assert_eq!(read_unverified(&[0x01]), None);
        assert_eq!(read_unverified(b"not cbor at all"), None);
    }

    #[test]
    fn builds_a_delta_manifest() {
        let full = build_manifest(&[7; 10_000], &spec()).unwrap();
        let d = build_delta_manifest(&[1; 900], &full, "1.2.0", [3; 32], None).unwrap();
        assert_eq!(d.artifact.as_str(), "main-1.3.0-esp32.from-1.2.0");
        assert_eq!((d.size, d.blocks), (900, 1));
        let info = d.delta.as_ref().unwrap();
        assert_eq!(
            (info.target_size, info.target_sha256),
            (full.size, full.sha256)
        );
        assert_eq!(crate::msg::delta::check_against(&d, &full), Ok(()));
        assert!(matches!(
            build_delta_manifest(&[1], &full, "1.3.0", [3; 32], None),
            Err(ReleaseError::DeltaFromItself(_))
        ));
        assert!(matches!(
            build_delta_manifest(&[1], &full, "1.2", [3; 32], None),
            Err(ReleaseError::BadVersion { .. })
        ));
        assert!(matches!(
            build_delta_manifest(&[1], &full, "1.2.0", [3; 32], Some(full.artifact.clone())),
            Err(ReleaseError::NotItsDelta(_))
        ));
        let long = default_delta_id(&full.artifact, &format!("1.0.0-{}", "x".repeat(80)));
        assert_eq!(long.as_str().len(), 64);
    }

    #[test]
    fn derives_ids_in_the_alphabet() {
        let c = ComponentName::new("main").unwrap();
        assert_eq!(
            default_artifact_id(&c, "1.3.0+build.5", "esp32").as_str(),
            "main-1.3.0-build.5-esp32"
        );
        let long = default_artifact_id(&c, &format!("1.0.0-{}", "x".repeat(80)), "armv7");
        assert_eq!(long.as_str().len(), 64);
        let other = default_artifact_id(&c, &format!("1.0.0-{}", "x".repeat(80)), "esp32");
        assert_ne!(long, other);
    }
}
