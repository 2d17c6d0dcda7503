//! Key text formats and kids.
//!
//! A key file holds 64 hex characters and a newline: the 32-byte ed25519
//! seed for a private (signing) key, the 32-byte public key for a public
//! (verifying) key (ARCHITECTURE.md "Keys as text"). We write lowercase and
//! read either case; surrounding whitespace is ignored. The two kinds of
//! file look the same, so the file name must say which one it is.
//!
//! A key's kid is the first 8 bytes of SHA-256 of its 32-byte public key.
//! It names release keys in COSE manifests (PROTOCOL.md "Signed manifests")
//! and operator keys in command envelopes (as hex).

use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// A key id: the first 8 bytes of SHA-256 of a public key.
pub type Kid = [u8; 8];

/// Why a key or kid text was refused. The messages never echo the text: it
/// may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected 64 hex characters (a 32-byte {what}), found {found} characters")]
    Length { what: &'static str, found: usize },
    #[error("expected 64 hex characters (a 32-byte {what}), found a non-hex character at position {position}")]
    NotHex { what: &'static str, position: usize },
    #[error("the 64 hex characters are not a valid ed25519 public key")]
    InvalidPoint,
    #[error("expected a kid of 16 hex characters (8 bytes), found {0:?}")]
    BadKid(String),
}

/// Decodes exactly `N` bytes of hex from trimmed `text`.
fn decode_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], KeyError> {
    let text = text.trim();
    if let Some(position) = text.chars().position(|c| !c.is_ascii_hexdigit()) {
        return Err(KeyError::NotHex { what, position });
    }
    // All ASCII now, so bytes and characters agree.
    if text.len() != 2 * N {
        return Err(KeyError::Length {
            what,
            found: text.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| KeyError::NotHex { what, position: 0 })?;
    Ok(out)
}

/// A new random signing key from the operating system's RNG.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut OsRng)
}

/// The text of a private key file: the seed as 64 lowercase hex characters
/// and a newline.
pub fn signing_key_to_text(key: &SigningKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// Reads a private key file's text. Every 32-byte seed is a valid key.
pub fn parse_signing_key(text: &str) -> Result<SigningKey, KeyError> {
    let seed = decode_hex::<32>(text, "ed25519 private key seed")?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The text of a public key file: 64 lowercase hex characters and a newline.
pub fn verifying_key_to_text(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.as_bytes()))
}

/// Reads a public key file's text; refuses bytes that are not a point on
/// the curve.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = decode_hex::<32>(text, "ed25519 public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPoint)
}

/// The kid of a public key.
pub fn kid(key: &VerifyingKey) -> Kid {
    let digest = Sha256::digest(key.as_bytes());
    let mut kid = [0u8; 8];
    kid.copy_from_slice(&digest[..8]);
    kid
}

/// A kid as 16 lowercase hex characters, as command envelopes carry it.
pub fn kid_to_hex(kid: &Kid) -> String {
    hex::encode(kid)
}

/// Reads a kid from 16 hex characters.
pub fn parse_kid_hex(text: &str) -> Result<Kid, KeyError> {
    let t = text.trim();
    let mut kid = [0u8; 8];
    if t.len() != 16 || hex::decode_to_slice(t, &mut kid).is_err() {
        return Err(KeyError::BadKid(text.chars().take(40).collect()));
    }
    Ok(kid)
}

/// Serde for an optional list of kids as 16-hex-character strings, as
/// `device_provision` entries carry the release keys a device trusts.
pub mod opt_kids_hex {
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    use super::{kid_to_hex, parse_kid_hex, Kid};

    pub fn serialize<S: Serializer>(v: &Option<Vec<Kid>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref()
            .map(|kids| kids.iter().map(kid_to_hex).collect::<Vec<_>>())
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Kid>>, D::Error> {
        let Some(texts) = Option::<Vec<String>>::deserialize(d)? else {
            return Ok(None);
        };
        texts
            .iter()
            .map(|t| parse_kid_hex(t).map_err(D::Error::custom))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_text_round_trips() {
        let k = generate();
        let text = signing_key_to_text(&k);
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert!(text[..64]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(parse_signing_key(&text).unwrap().to_bytes(), k.to_bytes());
        // Whitespace around and uppercase are accepted.
        let loose = format!("  {}\r\n\n", text.trim().to_uppercase());
        assert_eq!(parse_signing_key(&loose).unwrap().to_bytes(), k.to_bytes());
    }

    #[test]
    fn verifying_key_text_round_trips() {
        let k = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let text = verifying_key_to_text(&k);
        assert_eq!(text, format!("{}\n", hex::encode(k.as_bytes())));
        assert_eq!(parse_verifying_key(&text).unwrap(), k);
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(generate().to_bytes(), generate().to_bytes());
    }

    #[test]
    fn bad_text_is_refused() {
        assert_eq!(
            parse_signing_key(""),
            Err(KeyError::Length {
                what: "ed25519 private key seed",
                found: 0
            })
        );
        assert!(matches!(
            parse_signing_key(&"a".repeat(63)),
            Err(KeyError::Length { found: 63, .. })
        ));
        assert!(matches!(
            parse_signing_key(&"a".repeat(66)),
            Err(KeyError::Length { found: 66, .. })
        ));
        let mut s = "a".repeat(64);
        s.replace_range(10..11, "g");
        assert!(matches!(
            parse_signing_key(&s),
            Err(KeyError::NotHex { position: 10, .. })
        ));
        assert!(matches!(
            parse_verifying_key("é"),
            Err(KeyError::NotHex { position: 0, .. })
        ));
        // Two keys on one line is not a key.
        let two = format!("{} {}", "a".repeat(64), "b".repeat(64));
        assert!(parse_signing_key(&two).is_err());
        // The message says what was expected and never echoes the text.
        let e = parse_signing_key("secret-ish").unwrap_err().to_string();
        assert!(e.contains("expected 64 hex characters"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn invalid_points_are_refused() {
        // y = 2 has no x on the curve (decompression fails).
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        assert_eq!(
            parse_verifying_key(&hex::encode(bytes)),
            Err(KeyError::InvalidPoint)
        );
    }

    #[test]
    fn kid_is_sha256_prefix() {
        let k = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let d = Sha256::digest(k.as_bytes());
        assert_eq!(kid(&k), d[..8]);
        let hex = kid_to_hex(&kid(&k));
        assert_eq!(hex.len(), 16);
        assert_eq!(parse_kid_hex(&hex), Ok(kid(&k)));
        assert!(matches!(parse_kid_hex("abc"), Err(KeyError::BadKid(_))));
        assert!(matches!(
            parse_kid_hex(&"z".repeat(16)),
            Err(KeyError::BadKid(_))
        ));
        assert_ne!(
            kid(&k),
            kid(&SigningKey::from_bytes(&[2; 32]).verifying_key())
        );
    }
}
