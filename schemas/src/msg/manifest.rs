//! Manifest: what an image is, signed inside a COSE_Sign1 envelope; and the
//! device's steps 1 (pick) and 2 (verify) over a release.

use super::common::{ErrorCode, Kind};
use super::delta::Delta;
use super::limits::{MAX_BLOCK_SIZE, MAX_MANIFEST_BYTES, MIN_BLOCK_SIZE};
use super::{DecodeError, WireMessage};
use crate::cbor::{MapBuilder, MapReader, Value};
use crate::cose::{self, TrustStore};
use crate::ids::{ArtifactId, ComponentName};

/// The `arch` that matches every device.
pub const ANY_ARCH: &str = "any";

/// The payload of a release entry's COSE_Sign1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Unique id of this image.
    pub artifact: ArtifactId,
    /// Firmware, app or config.
    pub kind: Kind,
    /// What it replaces on the device, e.g. `main`.
    pub component: ComponentName,
    /// Semver 2.0.
    pub version: String,
    /// `esp32`, `armv7`, ... or `any`.
    pub arch: String,
    /// Bytes of the whole image (at least 1).
    pub size: u64,
    /// SHA-256 of the whole image.
    pub sha256: [u8; 32],
    /// A power of two, 256..=65536.
    pub block_size: u32,
    /// ceil(size / block_size).
    pub blocks: u32,
    /// Root of the block Merkle tree.
    pub merkle_root: [u8; 32],
    /// Unix seconds.
    pub created: u64,
    /// The device needs at least this installed first.
    pub min_version: Option<String>,
    /// Default false.
    pub allow_downgrade: bool,
    /// E3: present on a delta manifest only (see [`super::delta`]).
    pub delta: Option<Delta>,
}

impl WireMessage for Manifest {
    const NAME: &'static str = "Manifest";
    const MAX_BYTES: usize = MAX_MANIFEST_BYTES;

    fn to_value(&self) -> Value {
        MapBuilder::new()
            .put("artifact", self.artifact.as_str())
            .put("kind", self.kind.as_str())
            .put("component", self.component.as_str())
            .put("version", self.version.as_str())
            .put("arch", self.arch.as_str())
            .put("size", self.size)
            .put_bytes("sha256", &self.sha256)
            .put("block_size", u64::from(self.block_size))
            .put("blocks", u64::from(self.blocks))
            .put_bytes("merkle_root", &self.merkle_root)
            .put("created", self.created)
            .put_opt("min_version", self.min_version.as_deref())
            .put_opt("allow_downgrade", self.allow_downgrade.then_some(true))
            .put_opt("delta", self.delta.as_ref().map(Delta::to_value))
            .build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        let artifact = r.name("artifact")?;
        let kind = Kind::from_text("kind", &r.text("kind", 32)?)?;
        let component = r.name("component")?;
        let version = r.text("version", 128)?;
        if !crate::version::is_valid_semver(&version) {
            return Err(DecodeError::Invalid {
                key: "version",
                reason: format!("{version:?} is not semver 2.0"),
            });
        }
        let arch = r.text("arch", 64)?;
        if !crate::ids::is_valid_name(&arch) {
            return Err(DecodeError::Invalid {
                key: "arch",
                reason: format!("{arch:?} is not a name of [A-Za-z0-9._-]"),
            });
        }
        let size = r.uint("size")?;
        if size == 0 {
            return Err(DecodeError::Invalid {
                key: "size",
                reason: "must be at least 1".into(),
            });
        }
        let sha256 = r.hash32("sha256")?;
        let block_size = r.uint("block_size")?;
        if !(u64::from(MIN_BLOCK_SIZE)..=u64::from(MAX_BLOCK_SIZE)).contains(&block_size)
            || !block_size.is_power_of_two()
        {
            return Err(DecodeError::Invalid {
                key: "block_size",
                reason: format!("{block_size} is not a power of two in 256..=65536"),
            });
        }
        let blocks = r.uint("blocks")?;
        let expected = size.div_ceil(block_size);
        if blocks != expected || blocks > u64::from(u32::MAX) {
            return Err(DecodeError::Invalid {
                key: "blocks",
                reason: format!("{blocks} is not ceil(size / block_size) = {expected}"),
            });
        }
        let merkle_root = r.hash32("merkle_root")?;
        let created = r.uint("created")?;
        let min_version = r.opt_text("min_version", 128)?;
        if let Some(m) = &min_version {
            if !crate::version::is_valid_semver(m) {
                return Err(DecodeError::Invalid {
                    key: "min_version",
                    reason: format!("{m:?} is not semver 2.0"),
                });
            }
        }
        Ok(Manifest {
            artifact,
            kind,
            component,
            version,
            arch,
            size,
            sha256,
            block_size: block_size as u32,
            blocks: blocks as u32,
            merkle_root,
            created,
            min_version,
            allow_downgrade: r.opt_bool("allow_downgrade")?.unwrap_or(false),
            delta: r.opt_value("delta").map(Delta::from_value).transpose()?,
        })
    }
}

/// A release entry refused, with the protocol's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ManifestError {
    /// `bad_manifest`, `unknown_key` or `bad_signature`.
    pub code: ErrorCode,
    /// What was wrong, for logs and the Status `detail`.
    pub detail: String,
}

/// Step 2, "Verify": envelope, kid, signature, then the manifest itself.
pub fn verify_entry(envelope: &[u8], trust: &TrustStore) -> Result<Manifest, ManifestError> {
    let payload = cose::verify(envelope, trust).map_err(|e| ManifestError {
        code: ErrorCode::parse(e.code()).unwrap_or(ErrorCode::BadManifest),
        // The code is shown beside the detail: keep the detail free of it.
        detail: match e {
            cose::CoseError::BadManifest(reason) => reason,
            cose::CoseError::UnknownKey => "the kid names no trusted release key".into(),
            cose::CoseError::BadSignature => "the signature does not verify".into(),
        },
    })?;
    Manifest::decode(&payload).map_err(|e| ManifestError {
        code: ErrorCode::BadManifest,
        detail: e.to_string(),
    })
}

/// The result of step 1, "Pick".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The index in `release` of the entry to verify.
    Entry(usize),
    /// No entry is for this arch (nor `any`): `failed` / `incompatible_arch`.
    Incompatible,
    /// No entry matches and at least one could not be read: `failed` / `bad_manifest`.
    Unreadable,
}

/// Step 1, "Pick": read each entry leniently (a COSE array whose payload is
/// a map with a text `arch`); the first whose `arch` equals `arch`, else the
/// first with `any`.
pub fn pick(release: &[Vec<u8>], arch: &str) -> Pick {
    let mut any = None;
    let mut unreadable = false;
    for (i, entry) in release.iter().enumerate() {
        match peek_arch(entry) {
            Some(a) if a == arch => return Pick::Entry(i),
            Some(a) if a == ANY_ARCH => {
                any.get_or_insert(i);
            }
            Some(_) => {}
            None => unreadable = true,
        }
    }
    match any {
        Some(i) => Pick::Entry(i),
        None if unreadable => Pick::Unreadable,
        None => Pick::Incompatible,
    }
}

/// The unverified `arch` of a release entry, if it can be read at all.
pub fn peek_arch(envelope: &[u8]) -> Option<String> {
    let payload = cose::peek_payload(envelope)?;
    let v: Value = ciborium::de::from_reader(payload.as_slice()).ok()?;
    match v {
        Value::Map(entries) => entries.into_iter().find_map(|(k, v)| match (k, v) {
            (Value::Text(k), Value::Text(v)) if k == "arch" => Some(v),
            _ => None,
        }),
        _ => None,
    }
}

/// Signs a manifest with a release key: the bytes of one release entry.
pub fn sign(manifest: &Manifest, key: &crate::keys::SigningKey) -> Vec<u8> {
    cose::sign(&manifest.encode(), key)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::msg::testutil::*;

    pub fn sample(arch: &str) -> Manifest {
        Manifest {
            artifact: ArtifactId::new(format!("fw-1.3.0-{arch}")).unwrap(),
            kind: Kind::Firmware,
            component: ComponentName::new("main").unwrap(),
            version: "1.3.0".into(),
            arch: arch.into(),
            size: 10_000,
            sha256: [7; 32],
            block_size: 4096,
            blocks: 3,
            merkle_root: [9; 32],
            created: 1_790_000_000,
            min_version: None,
            allow_downgrade: false,
            delta: None,
        }
    }

    fn key(seed: u8) -> crate::keys::SigningKey {
        crate::keys::SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn round_trips() {
        round_trip(&sample("esp32"));
        let mut m = sample("any");
        m.min_version = Some("1.0.0".into());
        m.allow_downgrade = true;
        round_trip(&m);
    }

    #[test]
    fn refuses_inconsistent_fields() {
        let mut m = sample("esp32");
        m.blocks = 2;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(DecodeError::Invalid { key: "blocks", .. })
        ));
        let mut m = sample("esp32");
        m.block_size = 1000;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(DecodeError::Invalid {
                key: "block_size",
                ..
            })
        ));
        let mut m = sample("esp32");
        m.size = 0;
        m.blocks = 0;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(DecodeError::Invalid { key: "size", .. })
        ));
        let mut m = sample("esp32");
        m.version = "1.3".into();
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(DecodeError::Invalid { key: "version", .. })
        ));
    }

    #[test]
    fn verify_maps_errors_to_codes() {
        let k = key(1);
        let trust = TrustStore::new([k.verifying_key()]);
        let env = sign(&sample("esp32"), &k);
        assert_eq!(verify_entry(&env, &trust).unwrap(), sample("esp32"));

        let other = TrustStore::new([key(2).verifying_key()]);
        assert_eq!(
            verify_entry(&env, &other).unwrap_err().code,
            ErrorCode::UnknownKey
        );

        let mut bad = env.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(
            verify_entry(&bad, &trust).unwrap_err().code,
            ErrorCode::BadSignature
        );

        assert_eq!(
            verify_entry(&[0x01], &trust).unwrap_err().code,
            ErrorCode::BadManifest
        );

        // A validly signed payload that is not a valid manifest.
        let env = cose::sign(&MapBuilder::new().put("arch", "esp32").encode(), &k);
        assert_eq!(
            verify_entry(&env, &trust).unwrap_err().code,
            ErrorCode::BadManifest
        );
        // A duplicate key inside a signed manifest is bad_manifest.
        let mut payload = sample("esp32").encode();
        payload[0] += 1; // one more entry in the map header
        payload.extend_from_slice(&[0x64, b'a', b'r', b'c', b'h', 0x61, b'x']);
        let env = cose::sign(&payload, &k);
        assert_eq!(
            verify_entry(&env, &trust).unwrap_err().code,
            ErrorCode::BadManifest
        );
    }

    #[test]
    fn pick_follows_step_1() {
        let k = key(1);
        let esp = sign(&sample("esp32"), &k);
        let arm = sign(&sample("armv7"), &k);
        let any = sign(&sample("any"), &k);
        assert_eq!(pick(&[esp.clone(), arm.clone()], "armv7"), Pick::Entry(1));
        assert_eq!(pick(&[any.clone(), arm.clone()], "armv7"), Pick::Entry(1));
        assert_eq!(pick(&[esp.clone(), any.clone()], "armv7"), Pick::Entry(1));
        assert_eq!(
            pick(std::slice::from_ref(&esp), "armv7"),
            Pick::Incompatible
        );
        assert_eq!(pick(&[esp.clone(), vec![0xff]], "armv7"), Pick::Unreadable);
        assert_eq!(pick(&[vec![0xff], esp], "esp32"), Pick::Entry(1));
    }
}
