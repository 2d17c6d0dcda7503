//! What the messages share: the enumerations (kind, campaign state, Status
//! state and error codes, each with its exact wire string) and the
//! `versions` map that Hello and Status both carry.

use std::collections::BTreeMap;

use super::limits::{MAX_MAP_ENTRIES, MAX_TEXT};
use crate::cbor::{DecodeError, MapBuilder, MapReader};
use crate::ids::ComponentName;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $ty:ident { $($(#[$vdoc:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $ty {
            $($(#[$vdoc])* #[serde(rename = $s)] $var),+
        }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$var),+];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$var => $s),+ }
            }

            /// Parses the wire string.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($ty::$var),)+ _ => None }
            }

            /// Reads it from a text value of `key`.
            pub fn from_text(key: &'static str, s: &str) -> Result<Self, DecodeError> {
                Self::parse(s).ok_or_else(|| DecodeError::Invalid {
                    key,
                    reason: format!("{:?} is not one of {}", s.chars().take(40).collect::<String>(),
                        [$($s),+].join(", ")),
                })
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s).ok_or_else(|| format!("{s:?} is not one of {}", [$($s),+].join(", ")))
            }
        }
    };
}

wire_enum!(
    /// What an image is.
    Kind {
        Firmware = "firmware",
        App = "app",
        Config = "config",
    }
);

wire_enum!(
    /// A campaign's state as announced to devices.
    CampaignState {
        Active = "active",
        Paused = "paused",
        Aborted = "aborted",
    }
);

wire_enum!(
    /// A device's state for one campaign, as reported in Status.
    StatusState {
        Accepted = "accepted",
        Deferred = "deferred",
        Downloading = "downloading",
        Downloaded = "downloaded",
        Installing = "installing",
        Rebooting = "rebooting",
        Success = "success",
        Failed = "failed",
        RolledBack = "rolled_back",
        Cancelled = "cancelled",
    }
);

impl StatusState {
    /// Terminal states end a device's part in a campaign.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StatusState::Success
                | StatusState::Failed
                | StatusState::RolledBack
                | StatusState::Cancelled
        )
    }
}

wire_enum!(
    /// Why a device failed or refused.
    ErrorCode {
        IncompatibleArch = "incompatible_arch",
        BadSignature = "bad_signature",
        UnknownKey = "unknown_key",
        BadManifest = "bad_manifest",
        UnknownComponent = "unknown_component",
        HashMismatch = "hash_mismatch",
        VersionRejected = "version_rejected",
        MinVersion = "min_version",
        NoSpace = "no_space",
        InstallFailed = "install_failed",
        BootFailed = "boot_failed",
        Timeout = "timeout",
    }
);

/// How wave gating counts a terminal report (PROTOCOL.md, "Status order and
/// what gating counts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `success`, including `already_installed`.
    Success,
    /// Counted apart: wrong arch, missing component, version rules, cancelled.
    NotApplicable,
    /// Every other `failed`, and `rolled_back`.
    Failure,
}

/// The gating outcome of a Status, or `None` when it is not terminal.
pub fn outcome(state: StatusState, error: Option<ErrorCode>) -> Option<Outcome> {
    match state {
        StatusState::Success => Some(Outcome::Success),
        StatusState::Cancelled => Some(Outcome::NotApplicable),
        StatusState::RolledBack => Some(Outcome::Failure),
        StatusState::Failed => Some(match error {
            Some(
                ErrorCode::IncompatibleArch
                | ErrorCode::UnknownComponent
                | ErrorCode::VersionRejected
                | ErrorCode::MinVersion,
            ) => Outcome::NotApplicable,
            _ => Outcome::Failure,
        }),
        _ => None,
    }
}

/// Puts `"versions": { * component => version }` (Hello and Status).
pub(crate) fn put_versions(
    b: MapBuilder,
    versions: &BTreeMap<ComponentName, String>,
) -> MapBuilder {
    let versions = versions
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    b.put_text_map("versions", &versions)
}

/// Reads `"versions"`, bounded, each key a valid component name.
pub(crate) fn read_versions(
    r: &mut MapReader,
) -> Result<BTreeMap<ComponentName, String>, DecodeError> {
    let mut versions = BTreeMap::new();
    for (k, v) in r.text_map("versions", MAX_MAP_ENTRIES, MAX_TEXT)? {
        let k = ComponentName::new(k).map_err(|e| DecodeError::Invalid {
            key: "versions",
            reason: e.to_string(),
        })?;
        versions.insert(k, v);
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for k in StatusState::ALL {
            assert_eq!(StatusState::parse(k.as_str()), Some(*k));
        }
        for k in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(k.as_str()), Some(*k));
        }
        assert_eq!(ErrorCode::ALL.len(), 12);
        assert_eq!(StatusState::ALL.len(), 10);
        assert_eq!(
            serde_json::to_string(&StatusState::RolledBack).unwrap(),
            "\"rolled_back\""
        );
    }

    #[test]
    fn gating_outcomes_follow_the_spec() {
        use ErrorCode::*;
        use StatusState::*;
        assert_eq!(outcome(Success, None), Some(Outcome::Success));
        for e in [
            IncompatibleArch,
            UnknownComponent,
            VersionRejected,
            MinVersion,
        ] {
            assert_eq!(outcome(Failed, Some(e)), Some(Outcome::NotApplicable));
        }
        for e in [
            BadSignature,
            UnknownKey,
            BadManifest,
            HashMismatch,
            NoSpace,
            InstallFailed,
            BootFailed,
            Timeout,
        ] {
            assert_eq!(outcome(Failed, Some(e)), Some(Outcome::Failure));
        }
        assert_eq!(outcome(Failed, None), Some(Outcome::Failure));
        assert_eq!(
            outcome(RolledBack, Some(BootFailed)),
            Some(Outcome::Failure)
        );
        assert_eq!(outcome(Cancelled, None), Some(Outcome::NotApplicable));
        assert_eq!(outcome(Downloading, None), None);
    }
}
