//! Steps 1 to 3 of "What a device does with an announcement": pick the
//! release entry for this arch, verify it, and compare versions. A pure
//! function of the announcement and what the device has; the machine turns
//! its [`Verdict`] into Statuses.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use schemas::cose::TrustStore;
use schemas::msg::manifest::{pick, verify_entry, Pick};
use schemas::msg::{Announcement, ErrorCode, Manifest, StatusState};
use schemas::version::cmp_precedence;
use schemas::{ArtifactId, ComponentName};

/// The detail of a `success` for an image already installed.
pub const ALREADY_INSTALLED: &str = "already_installed";

/// What steps 1 to 3 decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// All checks passed: report `accepted` and queue it.
    Accept(Box<Manifest>),
    /// A terminal report; nothing is downloaded.
    Terminal(Terminal),
}

/// A terminal Status decided before any download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// `success` (already installed) or `failed`.
    pub state: StatusState,
    /// The error code of a `failed`.
    pub error: Option<ErrorCode>,
    /// Human detail.
    pub detail: Option<String>,
    /// The picked artifact, when the manifest could be read.
    pub artifact: Option<ArtifactId>,
}

impl Terminal {
    fn failed(error: ErrorCode, detail: impl Into<String>, artifact: Option<&ArtifactId>) -> Self {
        Self {
            state: StatusState::Failed,
            error: Some(error),
            detail: Some(clip(detail.into())),
            artifact: artifact.cloned(),
        }
    }
}

/// Steps 1 (pick), 2 (verify) and 3 (versions, room).
pub fn evaluate(
    ann: &Announcement,
    arch: &str,
    trust: &TrustStore,
    versions: &BTreeMap<ComponentName, String>,
    room_bytes: Option<u64>,
) -> Verdict {
    // Step 1: pick.
    let index = match pick(&ann.release, arch) {
        Pick::Entry(i) => i,
        Pick::Incompatible => {
            return Verdict::Terminal(Terminal::failed(
                ErrorCode::IncompatibleArch,
                format!("no release entry for arch {arch} or any"),
                None,
            ))
        }
        Pick::Unreadable => {
            return Verdict::Terminal(Terminal::failed(
                ErrorCode::BadManifest,
                "no release entry matches and one could not be read",
                None,
            ))
        }
    };
    // Step 2: verify.
    let manifest = match verify_entry(&ann.release[index], trust) {
        Ok(m) => m,
        Err(e) => return Verdict::Terminal(Terminal::failed(e.code, e.detail, None)),
    };
    let artifact = Some(&manifest.artifact);
    if manifest.kind != ann.kind {
        return Verdict::Terminal(Terminal::failed(
            ErrorCode::BadManifest,
            format!(
                "manifest kind {} differs from the announcement's {}",
                manifest.kind, ann.kind
            ),
            artifact,
        ));
    }
    let Some(installed) = versions.get(&manifest.component) else {
        return Verdict::Terminal(Terminal::failed(
            ErrorCode::UnknownComponent,
            format!("no component {}", manifest.component),
            artifact,
        ));
    };
    // Step 3: versions, then room.
    match cmp_precedence(&manifest.version, installed) {
        Ordering::Equal => {
            return Verdict::Terminal(Terminal {
                state: StatusState::Success,
                error: None,
                detail: Some(ALREADY_INSTALLED.into()),
                artifact: artifact.cloned(),
            })
        }
        Ordering::Less if !manifest.allow_downgrade => {
            return Verdict::Terminal(Terminal::failed(
                ErrorCode::VersionRejected,
                format!("{} is below the installed {installed}", manifest.version),
                artifact,
            ))
        }
        _ => {}
    }
    if let Some(min) = &manifest.min_version {
        if cmp_precedence(installed, min) == Ordering::Less {
            return Verdict::Terminal(Terminal::failed(
                ErrorCode::MinVersion,
                format!("installed {installed} is below min_version {min}"),
                artifact,
            ));
        }
    }
    if let Some(room) = room_bytes {
        if manifest.size > room {
            return Verdict::Terminal(Terminal::failed(
                ErrorCode::NoSpace,
                format!("image of {} bytes, room for {room}", manifest.size),
                artifact,
            ));
        }
    }
    Verdict::Accept(Box::new(manifest))
}

/// What the device holds of the picked entry's component, for E3.
#[derive(Debug, Clone, Copy)]
pub struct InstalledImage<'a> {
    /// The installed version, as in its Hello.
    pub version: &'a str,
    /// SHA-256 of the installed image, read from where it runs.
    pub sha256: &'a [u8; 32],
}

/// E3 after steps 1 to 3 accepted `full`: the delta manifest to download
/// instead, when the announcement carries one that fits (see
/// [`schemas::msg::delta::pick_delta`]) and the room holds the payload
/// and the rebuilt target together. `None`: take the full image, as in
/// v1; a delta that does not fit never fails a campaign.
pub fn choose_delta(
    ann: &Announcement,
    full: &Manifest,
    installed: InstalledImage<'_>,
    trust: &TrustStore,
    room_bytes: Option<u64>,
) -> Option<Manifest> {
    let installed = schemas::msg::delta::Installed {
        version: installed.version,
        sha256: installed.sha256,
    };
    let d = schemas::msg::delta::pick_delta(&ann.deltas, full, installed, trust)?;
    let needs = d.size.saturating_add(full.size);
    match room_bytes {
        Some(room) if needs > room => None,
        _ => Some(d),
    }
}

/// Details go on the wire: keep them within the Status text bound.
pub(crate) fn clip(s: String) -> String {
    const MAX: usize = schemas::msg::limits::MAX_TEXT;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::msg::manifest::sign;
    use schemas::msg::{CampaignState, Kind};
    use schemas::release::{build_delta, build_manifest, ReleaseSpec};
    use schemas::CampaignId;
    use sha2::{Digest, Sha256};

    struct Fixture {
        ann: Announcement,
        full: Manifest,
        old_sha: [u8; 32],
        trust: TrustStore,
    }

    fn fixture() -> Fixture {
        let key = schemas::keys::SigningKey::from_bytes(&[5; 32]);
        let old: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[100..140].fill(0xee);
        let spec = ReleaseSpec::new(
            Kind::Firmware,
            ComponentName::new("main").unwrap(),
            "1.3.0",
            "esp32",
            1,
        );
        let full = build_manifest(&new, &spec).unwrap();
        let (_, delta) = build_delta(&old, &new, &full, "1.2.0").unwrap();
        let ann = Announcement {
            campaign: CampaignId::new("c").unwrap(),
            kind: Kind::Firmware,
            release: vec![sign(&full, &key)],
            cohort: 10_000,
            emergency: false,
            state: CampaignState::Active,
            deadline: None,
            deltas: vec![sign(&delta, &key)],
        };
        Fixture {
            ann,
            full,
            old_sha: Sha256::digest(&old).into(),
            trust: TrustStore::new([key.verifying_key()]),
        }
    }

    #[test]
    fn takes_the_delta_that_fits_else_the_full_image() {
        let f = fixture();
        let at = |version, sha256| InstalledImage { version, sha256 };
        let d = choose_delta(&f.ann, &f.full, at("1.2.0", &f.old_sha), &f.trust, None).unwrap();
        assert_eq!(d.delta.as_ref().unwrap().from_version, "1.2.0");
        assert!(d.size < f.full.size);
        // Another installed version, or the same version of another build.
        assert!(choose_delta(&f.ann, &f.full, at("1.1.0", &f.old_sha), &f.trust, None).is_none());
        assert!(choose_delta(&f.ann, &f.full, at("1.2.0", &[0; 32]), &f.trust, None).is_none());
        // Room for the full image but not for payload plus target.
        let room = Some(f.full.size + d.size - 1);
        assert!(choose_delta(&f.ann, &f.full, at("1.2.0", &f.old_sha), &f.trust, room).is_none());
        let room = Some(f.full.size + d.size);
        assert!(choose_delta(&f.ann, &f.full, at("1.2.0", &f.old_sha), &f.trust, room).is_some());
    }

    #[test]
    fn a_forged_or_mismatched_delta_is_never_taken() {
        let f = fixture();
        let at = InstalledImage {
            version: "1.2.0",
            sha256: &f.old_sha,
        };
        // Signed by a key the device does not trust.
        let rogue = schemas::keys::SigningKey::from_bytes(&[6; 32]);
        let mut forged = f.ann.clone();
        let payload = schemas::cose::peek_payload(&f.ann.deltas[0]).unwrap();
        forged.deltas = vec![schemas::cose::sign(&payload, &rogue)];
        assert!(choose_delta(&forged, &f.full, at, &f.trust, None).is_none());
        // A delta of another target (a newer full image with the same version).
        let mut other = f.full.clone();
        other.sha256 = [1; 32];
        assert!(choose_delta(&f.ann, &other, at, &f.trust, None).is_none());
        // Garbage in deltas is ignored.
        let mut junk = f.ann.clone();
        junk.deltas.insert(0, vec![0xff; 10]);
        assert!(choose_delta(&junk, &f.full, at, &f.trust, None).is_some());
    }
}
