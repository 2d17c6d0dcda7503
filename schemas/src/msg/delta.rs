//! The `delta` map of a delta manifest (E3), and the device's pick of a
//! delta among an announcement's `deltas`.
//!
//! A delta manifest is a [`Manifest`] whose `size`, `sha256`, `blocks` and
//! `merkle_root` describe the delta payload (what is downloaded), and whose
//! `delta` map names the image it applies to and the image it rebuilds.

use super::manifest::{peek_arch, verify_entry, Manifest};
use super::DecodeError;
use crate::cbor::{MapBuilder, MapReader, Value};
use crate::cose::TrustStore;

/// The only `format` of E3: one zstd frame, the installed image as a
/// raw-content reference prefix (`zstd --patch-from`).
pub const FORMAT_ZSTD: &str = "zstd";

/// What a device lists in its Hello `features` when it applies E3 deltas.
pub const FEATURE_DELTA_ZSTD: &str = "delta-zstd";

/// `delta = { "format", "from_version", "from_sha256", "target_size", "target_sha256" }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// `zstd` ([`FORMAT_ZSTD`]); a reader refuses any other.
    pub format: String,
    /// The installed version the delta applies to, compared character for
    /// character.
    pub from_version: String,
    /// SHA-256 of the installed image the delta applies to.
    pub from_sha256: [u8; 32],
    /// Bytes of the rebuilt image: the full image's `size`.
    pub target_size: u64,
    /// SHA-256 of the rebuilt image: the full image's `sha256`.
    pub target_sha256: [u8; 32],
}

impl Delta {
    /// The map as a CBOR value.
    pub fn to_value(&self) -> Value {
        MapBuilder::new()
            .put("format", self.format.as_str())
            .put("from_version", self.from_version.as_str())
            .put_bytes("from_sha256", &self.from_sha256)
            .put("target_size", self.target_size)
            .put_bytes("target_sha256", &self.target_sha256)
            .build()
    }

    /// Reads the map strictly: a format other than `zstd`, a `from_version`
    /// that is not semver, or an empty target is refused.
    pub fn from_value(v: Value) -> Result<Self, DecodeError> {
        let mut r = MapReader::new(v, "delta").map_err(|_| DecodeError::WrongType {
            key: "delta",
            expected: "a map",
        })?;
        let format = r.text("format", 32)?;
        if format != FORMAT_ZSTD {
            return Err(DecodeError::Invalid {
                key: "format",
                reason: format!("{format:?} is not a known delta format (only \"zstd\")"),
            });
        }
        let from_version = r.text("from_version", 128)?;
        if !crate::version::is_valid_semver(&from_version) {
            return Err(DecodeError::Invalid {
                key: "from_version",
                reason: format!("{from_version:?} is not semver 2.0"),
            });
        }
        let from_sha256 = r.hash32("from_sha256")?;
        let target_size = r.uint("target_size")?;
        if target_size == 0 {
            return Err(DecodeError::Invalid {
                key: "target_size",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Delta {
            format,
            from_version,
            from_sha256,
            target_size,
            target_sha256: r.hash32("target_sha256")?,
        })
    }
}

/// Why a delta manifest does not go with its full image: the checks of
/// E3 between a delta and the release entry it rebuilds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("the manifest has no delta map: it is a full image, not a delta")]
    NotADelta,
    #[error("{0} differs from the full image's")]
    Field(&'static str),
    #[error("target_size/target_sha256 are not the full image's size/sha256")]
    Target,
    #[error("the delta and the full image have the same artifact id")]
    SameArtifact,
}

/// Checks that `delta` is a delta of `full`: same `kind`, `component`,
/// `version`, `arch`, `min_version` and `allow_downgrade`; its target is
/// `full`'s size and sha256; its own artifact id.
pub fn check_against(delta: &Manifest, full: &Manifest) -> Result<(), Mismatch> {
    let d = delta.delta.as_ref().ok_or(Mismatch::NotADelta)?;
    if delta.kind != full.kind {
        return Err(Mismatch::Field("kind"));
    }
    if delta.component != full.component {
        return Err(Mismatch::Field("component"));
    }
    if delta.version != full.version {
        return Err(Mismatch::Field("version"));
    }
    if delta.arch != full.arch {
        return Err(Mismatch::Field("arch"));
    }
    if delta.min_version != full.min_version {
        return Err(Mismatch::Field("min_version"));
    }
    if delta.allow_downgrade != full.allow_downgrade {
        return Err(Mismatch::Field("allow_downgrade"));
    }
    if d.target_size != full.size || d.target_sha256 != full.sha256 {
        return Err(Mismatch::Target);
    }
    if delta.artifact == full.artifact {
        return Err(Mismatch::SameArtifact);
    }
    Ok(())
}

/// What the device knows of its installed image of the picked entry's
/// component.
#[derive(Debug, Clone, Copy)]
pub struct Installed<'a> {
    /// The installed version, as in its Hello.
    pub version: &'a str,
    /// SHA-256 of the installed image.
    pub sha256: &'a [u8; 32],
}

/// E3's pick: among `deltas` (read leniently), the first whose `arch` is the
/// picked entry's and whose `delta.from_version` is the installed version;
/// it is taken when it verifies, goes with `full` ([`check_against`]) and
/// its `from_sha256` is the installed image's. `None` means "take the full
/// image": a delta that does not fit never fails a campaign.
pub fn pick_delta(
    deltas: &[Vec<u8>],
    full: &Manifest,
    installed: Installed<'_>,
    trust: &TrustStore,
) -> Option<Manifest> {
    let entry = deltas.iter().find(|e| {
        peek_arch(e).as_deref() == Some(full.arch.as_str())
            && peek_from_version(e).as_deref() == Some(installed.version)
    })?;
    let m = verify_entry(entry, trust).ok()?;
    check_against(&m, full).ok()?;
    let d = m.delta.as_ref()?;
    (&d.from_sha256 == installed.sha256).then_some(m)
}

/// The unverified `delta.from_version` of an entry, if it can be read.
fn peek_from_version(envelope: &[u8]) -> Option<String> {
    let payload = crate::cose::peek_payload(envelope)?;
    let v: Value = ciborium::de::from_reader(payload.as_slice()).ok()?;
    let Value::Map(entries) = v else { return None };
    let delta = entries.into_iter().find_map(|(k, v)| match k {
        Value::Text(k) if k == "delta" => Some(v),
        _ => None,
    })?;
    let Value::Map(d) = delta else { return None };
    d.into_iter().find_map(|(k, v)| match (k, v) {
        (Value::Text(k), Value::Text(v)) if k == "from_version" => Some(v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ArtifactId;
    use crate::msg::manifest::{sign, tests::sample};
    use crate::msg::testutil::round_trip;
    use crate::msg::WireMessage;

    pub(crate) fn delta_of(full: &Manifest, from: &str, from_sha: [u8; 32]) -> Manifest {
        let mut m = full.clone();
        m.artifact = ArtifactId::new(format!("{}.from-{from}", full.artifact)).unwrap();
        m.size = 900;
        m.sha256 = [5; 32];
        m.blocks = 1;
        m.merkle_root = [6; 32];
        m.delta = Some(Delta {
            format: FORMAT_ZSTD.into(),
            from_version: from.into(),
            from_sha256: from_sha,
            target_size: full.size,
            target_sha256: full.sha256,
        });
        m
    }

    fn key() -> crate::keys::SigningKey {
        crate::keys::SigningKey::from_bytes(&[1; 32])
    }

    #[test]
    fn round_trips_and_old_readers_ignore_it() {
        let full = sample("esp32");
        let d = delta_of(&full, "1.2.0", [3; 32]);
        round_trip(&d);
        // A v1 reader that knows no `delta` key would see a full manifest;
        // ours reads `delta` back.
        assert_eq!(Manifest::decode(&d.encode()).unwrap().delta, d.delta);
    }

    #[test]
    fn refuses_bad_delta_maps() {
        let full = sample("esp32");
        let mut d = delta_of(&full, "1.2.0", [3; 32]);
        d.delta.as_mut().unwrap().format = "bsdiff".into();
        assert!(matches!(
            Manifest::decode(&d.encode()),
            Err(DecodeError::Invalid { key: "format", .. })
        ));
        let mut d = delta_of(&full, "1.2", [3; 32]);
        assert!(matches!(
            Manifest::decode(&d.encode()),
            Err(DecodeError::Invalid {
                key: "from_version",
                ..
            })
        ));
        d = delta_of(&full, "1.2.0", [3; 32]);
        d.delta.as_mut().unwrap().target_size = 0;
        assert!(matches!(
            Manifest::decode(&d.encode()),
            Err(DecodeError::Invalid {
                key: "target_size",
                ..
            })
        ));
    }

    #[test]
    fn checks_a_delta_against_its_full_image() {
        let full = sample("esp32");
        let d = delta_of(&full, "1.2.0", [3; 32]);
        assert_eq!(check_against(&d, &full), Ok(()));
        assert_eq!(check_against(&full, &full), Err(Mismatch::NotADelta));
        let mut bad = d.clone();
        bad.version = "1.3.1".into();
        assert_eq!(check_against(&bad, &full), Err(Mismatch::Field("version")));
        let mut bad = d.clone();
        bad.delta.as_mut().unwrap().target_sha256 = [0; 32];
        assert_eq!(check_against(&bad, &full), Err(Mismatch::Target));
        let mut bad = d;
        bad.artifact = full.artifact.clone();
        assert_eq!(check_against(&bad, &full), Err(Mismatch::SameArtifact));
    }

    #[test]
    fn picks_by_arch_version_and_hash() {
        let k = key();
        let trust = TrustStore::new([k.verifying_key()]);
        let full = sample("esp32");
        let on_120 = [3; 32];
        let d110 = sign(&delta_of(&full, "1.1.0", [4; 32]), &k);
        let d120 = sign(&delta_of(&full, "1.2.0", on_120), &k);
        let mut arm = sample("armv7");
        arm.version = full.version.clone();
        let arm120 = sign(&delta_of(&arm, "1.2.0", on_120), &k);
        let deltas = vec![arm120, d110, d120.clone()];
        let at = |v, sha| Installed {
            version: v,
            sha256: sha,
        };
        let got = pick_delta(&deltas, &full, at("1.2.0", &on_120), &trust).unwrap();
        assert_eq!(got.delta.unwrap().from_version, "1.2.0");
        assert!(pick_delta(&deltas, &full, at("1.1.0", &[4; 32]), &trust).is_some());
        // Same version, another build: the full image.
        assert!(pick_delta(&deltas, &full, at("1.2.0", &[9; 32]), &trust).is_none());
        // No delta from this version, or none at all.
        assert!(pick_delta(&deltas, &full, at("1.0.0", &on_120), &trust).is_none());
        assert!(pick_delta(&[], &full, at("1.2.0", &on_120), &trust).is_none());
        // Signed by an unknown key, or for another target: the full image.
        let other =
            TrustStore::new([crate::keys::SigningKey::from_bytes(&[2; 32]).verifying_key()]);
        assert!(pick_delta(&deltas, &full, at("1.2.0", &on_120), &other).is_none());
        let mut newer = full.clone();
        newer.sha256 = [8; 32];
        assert!(pick_delta(&deltas, &newer, at("1.2.0", &on_120), &trust).is_none());
        // Garbage first does not hide a good entry.
        let with_junk = vec![vec![0xff], d120];
        assert!(pick_delta(&with_junk, &full, at("1.2.0", &on_120), &trust).is_some());
    }
}
