//! Validated names: device ids, group names, component names, campaign ids,
//! artifact ids. PROTOCOL.md: 1–64 characters of `[A-Za-z0-9._-]`.
//!
//! Every name that crosses the wire is parsed into one of these types before
//! it is used; a name outside the alphabet is an error, never a panic.

use std::fmt;
use std::str::FromStr;

/// The longest name the protocol allows.
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} is empty: use 1-64 characters of [A-Za-z0-9._-]")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long: at most 64 are allowed")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} {name:?} has {ch:?}, outside [A-Za-z0-9._-]")]
    BadChar {
        kind: &'static str,
        name: String,
        ch: char,
    },
}

/// True when `s` is a valid protocol name.
pub fn is_valid_name(s: &str) -> bool {
    check_name("name", s).is_ok()
}

fn check_name(kind: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            len: s.chars().count(),
        });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            kind,
            name: s.chars().take(80).collect(),
            ch,
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(compact_str::CompactString);

        impl $ty {
            /// What this kind of name is called in error messages.
            pub const KIND: &'static str = $kind;

            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check_name($kind, &s)?;
                Ok(Self(compact_str::CompactString::from(s)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned string.
            pub fn into_string(self) -> String {
                self.0.into_string()
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.0)
            }
        }

        /// A string of the name's characters (the HTTP API's OpenAPI
        /// document).
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!(
                        $kind,
                        ": 1 to 64 letters, digits, '.', '_' or '-'"
                    )))
                    .pattern(Some("^[A-Za-z0-9._-]+$"))
                    .max_length(Some(MAX_NAME_LEN))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $ty {}

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Inline when short: no allocation for a typical id.
                let s = compact_str::CompactString::deserialize(d)?;
                check_name($kind, &s).map_err(serde::de::Error::custom)?;
                Ok(Self(s))
            }
        }
    };
}

name_type!(
    /// A device id: the device's MQTT client id.
    DeviceId, "device id"
);
name_type!(
    /// A group name, e.g. `acme-line-3`.
    GroupName, "group name"
);
name_type!(
    /// A component on a device that an image replaces, e.g. `main`.
    ComponentName, "component name"
);
name_type!(
    /// A campaign id, e.g. `camp-2026-001`.
    CampaignId, "campaign id"
);
name_type!(
    /// The unique id of one image.
    ArtifactId, "artifact id"
);
name_type!(
    /// A Status epoch: names a device's seq counter (8 to 32 characters by
    /// the spec for devices that choose one; any valid name is accepted).
    Epoch, "epoch"
);

name_type!(
    /// The unique id of one operator command (its reply topic's last level).
    RequestId, "request id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet() {
        assert!(DeviceId::new("dev-0001").is_ok());
        assert!(DeviceId::new("A.b_c-9").is_ok());
        assert!(DeviceId::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_outside_the_alphabet() {
        assert!(matches!(DeviceId::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            DeviceId::new("x".repeat(65)),
            Err(NameError::TooLong { .. })
        ));
        for bad in ["a/b", "a+b", "a#", "a b", "é", "a\0"] {
            assert!(
                matches!(DeviceId::new(bad), Err(NameError::BadChar { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn serde_validates() {
        let ok: Result<GroupName, _> = serde_json::from_str("\"acme\"");
        assert!(ok.is_ok());
        let bad: Result<GroupName, _> = serde_json::from_str("\"ac/me\"");
        assert!(bad.is_err());
    }
}
