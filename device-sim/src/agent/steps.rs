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
