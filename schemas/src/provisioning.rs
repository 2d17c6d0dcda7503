//! The provisioning file: everything one device needs to log in and to
//! trust what it is sent (PROTOCOL.md E1, E2), written by
//! `ota devices provision` for a factory line to flash, and the password
//! hash the bridge's registry keeps instead of the password.
//!
//! The file is JSON, one object (docs/protocol.md "Provisioning file"):
//!
//! ```json
//! {
//!   "version": 1,
//!   "device_id": "dev-0001",
//!   "broker_url": "mqtt://broker.example:1883",
//!   "prefix": "ota/v1",
//!   "username": "dev-0001",
//!   "password": "kq3…43 characters…",
//!   "labels": {"customer": "acme"},
//!   "release_keys": ["64 hex characters"],
//!   "director_keys": [],
//!   "tls": null
//! }
//! ```
//!
//! Readers ignore keys they do not know; a change a reader must understand
//! bumps `version`, and a reader refuses a version it does not know.
//!
//! # The password and its hash
//!
//! The password is 32 random bytes from the operating system (256 bits),
//! base64url without padding: 43 characters, safe in any config syntax.
//! Against a secret that cannot be guessed, a fast salted hash is as strong
//! as a slow one, and a slow one (argon2 at its defaults costs tens of
//! milliseconds) would run on the broker's single listener thread for every
//! CONNECT: a 10,000-device connect storm would take minutes. So the
//! registry keeps Mosquitto's `$6$` format, salted SHA-512
//! (`$6$` base64(salt) `$` base64(SHA-512(password ‖ salt)), 12 random
//! bytes of salt), which costs about a microsecond to check and which
//! Mosquitto reads directly in its `password_file`: one stored hash serves
//! the embedded broker and an external one. The hash is computed where the
//! password is generated, on the operator's side; the password itself never
//! reaches the bridge.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::ids::DeviceId;
use crate::keys::{parse_verifying_key, verifying_key_to_text, VerifyingKey};
use crate::topic::Topics;

/// The provisioning file version this crate writes and reads.
pub const PROVISIONING_VERSION: u32 = 1;

/// Random bytes in a generated password.
pub const PASSWORD_BYTES: usize = 32;

/// Salt bytes in a `$6$` hash (Mosquitto's own length).
pub const SALT_BYTES: usize = 12;

/// The largest provisioning file we read, in bytes.
pub const MAX_PROVISIONING_BYTES: usize = 256 * 1024;

/// The largest PEM text of one `tls` field (a CA bundle of a few
/// certificates, a certificate, a key).
pub const MAX_PEM_BYTES: usize = 32 * 1024;

/// One device's provisioning file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provisioning {
    /// [`PROVISIONING_VERSION`].
    pub version: u32,
    pub device_id: DeviceId,
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub broker_url: String,
    /// The topic prefix, e.g. `ota/v1`.
    pub prefix: String,
    /// The MQTT username: the device id.
    pub username: String,
    /// The MQTT password: the device's secret.
    pub password: String,
    /// Labels the device should report in its Hello.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Release public keys: who may sign what the device installs.
    #[serde(with = "hex_keys", default)]
    pub release_keys: Vec<VerifyingKey>,
    /// Director public keys (PROTOCOL.md E2): who may sign control
    /// messages. Empty: the device reads control messages as in v1.
    #[serde(with = "hex_keys", default)]
    pub director_keys: Vec<VerifyingKey>,
    /// TLS material, PEM text; `None` for plain MQTT.
    #[serde(default)]
    pub tls: Option<ProvisioningTls>,
}

/// TLS material for a device, PEM text inline so that one file is all a
/// factory line flashes (`ota devices provision --ca DIR [--mtls]`). Each
/// field at most [`MAX_PEM_BYTES`], PEM (`-----BEGIN `) when not empty.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningTls {
    /// The CA certificate(s) the broker's certificate must chain to;
    /// empty: the device's system roots (a broker with a public certificate).
    #[serde(default)]
    pub ca_cert_pem: String,
    /// The device's client certificate (subject CN = device id), for mTLS.
    #[serde(default)]
    pub client_cert_pem: Option<String>,
    /// The client certificate's private key.
    #[serde(default)]
    pub client_key_pem: Option<String>,
}

impl std::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioning")
            .field("version", &self.version)
            .field("device_id", &self.device_id)
            .field("broker_url", &self.broker_url)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &"<secret>")
            .field("labels", &self.labels)
            .field("release_keys", &self.release_keys.len())
            .field("director_keys", &self.director_keys.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl std::fmt::Debug for ProvisioningTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningTls")
            .field("client_cert", &self.client_cert_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a provisioning file was refused. Never echoes the password.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    #[error("not a provisioning file: {0}")]
    Json(#[source] serde_json::Error),
    #[error("provisioning file is {0} bytes, more than the {MAX_PROVISIONING_BYTES} we read")]
    TooLarge(usize),
    #[error("provisioning file version {0} is not known here (this build reads version {PROVISIONING_VERSION}): upgrade the agent")]
    Version(u32),
    #[error("provisioning file for {device}: {message}")]
    Invalid { device: String, message: String },
}

impl Provisioning {
    /// Reads a provisioning file and checks it.
    pub fn from_json(bytes: &[u8]) -> Result<Provisioning, ProvisioningError> {
        if bytes.len() > MAX_PROVISIONING_BYTES {
            return Err(ProvisioningError::TooLarge(bytes.len()));
        }
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(ProvisioningError::Json)?;
        if head.version != PROVISIONING_VERSION {
            return Err(ProvisioningError::Version(head.version));
        }
        let p: Provisioning = serde_json::from_slice(bytes).map_err(ProvisioningError::Json)?;
        p.check()?;
        Ok(p)
    }

    /// The file's text: pretty JSON and a newline.
    pub fn to_json(&self) -> String {
        // Invariant: strings, maps and key hex only; always serializes.
        let mut s = serde_json::to_string_pretty(self).expect("a provisioning file serializes");
        s.push('\n');
        s
    }

    /// The rules a reader relies on.
    pub fn check(&self) -> Result<(), ProvisioningError> {
        let bad = |message: &str| ProvisioningError::Invalid {
            device: self.device_id.to_string(),
            message: message.to_string(),
        };
        if self.version != PROVISIONING_VERSION {
            return Err(ProvisioningError::Version(self.version));
        }
        if self.username != self.device_id.as_str() {
            return Err(bad("username must be the device id (PROTOCOL.md E1)"));
        }
        if self.password.is_empty() {
            return Err(bad("password is empty"));
        }
        if Topics::new(self.prefix.as_str()).is_err() {
            return Err(bad("prefix is not a valid topic prefix"));
        }
        if parse_broker_url(&self.broker_url).is_none() {
            return Err(bad(
                "broker_url must be mqtt://host:port or mqtts://host:port",
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.client_cert_pem.is_some() != tls.client_key_pem.is_some() {
                return Err(bad("tls: client_cert_pem and client_key_pem come together"));
            }
            let fields = [
                ("tls.ca_cert_pem", Some(&tls.ca_cert_pem)),
                ("tls.client_cert_pem", tls.client_cert_pem.as_ref()),
                ("tls.client_key_pem", tls.client_key_pem.as_ref()),
            ];
            for (name, text) in fields {
                let Some(text) = text else { continue };
                if text.len() > MAX_PEM_BYTES {
                    return Err(bad(&format!("{name} is over {MAX_PEM_BYTES} bytes")));
                }
                let required = name != "tls.ca_cert_pem";
                if (required || !text.trim().is_empty()) && !text.contains("-----BEGIN ") {
                    return Err(bad(&format!("{name} is not PEM (-----BEGIN ...)")));
                }
            }
        }
        Ok(())
    }

    /// The topic set under [`Provisioning::prefix`].
    pub fn topics(&self) -> Topics {
        // Checked by `check` (and by `from_json`); a struct built in code
        // with a bad prefix falls back to the default.
        Topics::new(self.prefix.as_str()).unwrap_or_default()
    }

    /// `(host, port, tls)` of [`Provisioning::broker_url`].
    pub fn broker(&self) -> Option<(String, u16, bool)> {
        parse_broker_url(&self.broker_url)
    }
}

/// `mqtt://host[:port]` (default 1883) or `mqtts://host[:port]` (8883).
pub fn parse_broker_url(url: &str) -> Option<(String, u16, bool)> {
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else {
        return None;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('@') {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (rest, default_port),
    };
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host.trim_matches(['[', ']']).to_string(), port, tls))
}

/// A new device password: [`PASSWORD_BYTES`] random bytes from the
/// operating system, base64url without padding.
pub fn generate_password() -> String {
    let mut bytes = [0u8; PASSWORD_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The shortest device-chosen secret an enrollment login may bind
/// (docs/protocol.md "Enrollment"): 32 characters, e.g. 32 hex digits or
/// [`generate_password`]'s 43, so at least 128 bits when random.
pub const MIN_ENROLL_SECRET: usize = 32;

/// The password of an enrollment login (`[devices] admission = "enroll"`):
/// the fleet enrollment token, `:`, then the secret the device chose for
/// itself. The token never holds a `:` ([`generate_password`]'s
/// alphabet), so the first `:` splits them.
pub fn enrollment_password(token: &str, secret: &str) -> String {
    format!("{token}:{secret}")
}

/// `(token, secret)` of an enrollment login's password, when it has that
/// form; a device's own password ([`generate_password`]) has no `:`.
pub fn split_enrollment(password: &str) -> Option<(&str, &str)> {
    password.split_once(':')
}

/// The `$6$` hash of `password` with a new random salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    hash_with_salt(password, &salt)
}

fn hash_with_salt(password: &str, salt: &[u8]) -> String {
    let digest = Sha512::new()
        .chain_update(password.as_bytes())
        .chain_update(salt)
        .finalize();
    format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(digest))
}

/// A stored `$6$` hash, parsed once so that a check is one SHA-512.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    salt: Vec<u8>,
    digest: [u8; 64],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash($6$…)")
    }
}

impl PasswordHash {
    /// Parses `$6$salt$digest`; `None` for anything else.
    pub fn parse(text: &str) -> Option<PasswordHash> {
        let rest = text.strip_prefix("$6$")?;
        let (salt, digest) = rest.split_once('$')?;
        let salt = STANDARD.decode(salt).ok()?;
        let digest: [u8; 64] = STANDARD.decode(digest).ok()?.try_into().ok()?;
        if salt.is_empty() || salt.len() > 64 {
            return None;
        }
        Some(PasswordHash { salt, digest })
    }

    /// Does `password` hash to this? Compares without an early exit.
    pub fn verify(&self, password: &str) -> bool {
        let got = Sha512::new()
            .chain_update(password.as_bytes())
            .chain_update(&self.salt)
            .finalize();
        got.iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The `$6$` text (as Mosquitto's `password_file` holds it).
    pub fn to_text(&self) -> String {
        format!(
            "$6${}${}",
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.digest)
        )
    }
}

/// Public keys as 64-hex-character strings (the key file format).
mod hex_keys {
    use super::*;
    use serde::de::Error;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(keys: &[VerifyingKey], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            keys.iter()
                .map(|k| verifying_key_to_text(k).trim_end().to_string()),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<VerifyingKey>, D::Error> {
        let texts: Vec<String> = Vec::deserialize(d)?;
        texts
            .iter()
            .map(|t| parse_verifying_key(t).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provisioning {
        Provisioning {
            version: PROVISIONING_VERSION,
            device_id: DeviceId::new("dev-1").unwrap(),
            broker_url: "mqtt://127.0.0.1:1883".into(),
            prefix: "ota/v1".into(),
            username: "dev-1".into(),
            password: generate_password(),
            labels: [("customer".to_string(), "acme".to_string())].into(),
            release_keys: vec![crate::keys::generate().verifying_key()],
            director_keys: vec![],
            tls: None,
        }
    }

    #[test]
    fn round_trip() {
        let p = sample();
        let text = p.to_json();
        assert_eq!(Provisioning::from_json(text.as_bytes()).unwrap(), p);
        assert!(!format!("{p:?}").contains(&p.password));
    }

    #[test]
    fn unknown_keys_are_ignored_unknown_versions_refused() {
        let p = sample();
        let mut v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        v["future"] = serde_json::json!(1);
        let text = serde_json::to_vec(&v).unwrap();
        assert_eq!(Provisioning::from_json(&text).unwrap(), p);
        v["version"] = serde_json::json!(2);
        let text = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Provisioning::from_json(&text),
            Err(ProvisioningError::Version(2))
        ));
    }

    #[test]
    fn bad_files_are_refused() {
        let mut p = sample();
        p.username = "dev-2".into();
        assert!(Provisioning::from_json(p.to_json().as_bytes()).is_err());
        let mut p = sample();
        p.broker_url = "http://x".into();
        assert!(Provisioning::from_json(p.to_json().as_bytes()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["release_keys"] = serde_json::json!(["zz"]);
        assert!(Provisioning::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
        assert!(Provisioning::from_json(b"[]").is_err());
        assert!(Provisioning::from_json(&vec![b' '; MAX_PROVISIONING_BYTES + 1]).is_err());
    }

    #[test]
    fn tls_fields_are_optional_bounded_and_pem() {
        // A file of before TLS, without the key at all, still reads.
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("tls");
        assert!(Provisioning::from_json(&serde_json::to_vec(&v).unwrap())
            .unwrap()
            .tls
            .is_none());
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let mut p = sample();
        p.tls = Some(ProvisioningTls {
            ca_cert_pem: pem.into(),
            client_cert_pem: Some(pem.into()),
            client_key_pem: Some("-----BEGIN PRIVATE KEY-----\nAA==\n".into()),
        });
        let text = p.to_json();
        assert_eq!(Provisioning::from_json(text.as_bytes()).unwrap(), p);
        assert!(!format!("{p:?}").contains("PRIVATE KEY"));
        let refused = |f: &dyn Fn(&mut ProvisioningTls)| {
            let mut q = p.clone();
            f(q.tls.as_mut().unwrap());
            Provisioning::from_json(q.to_json().as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&|t| t.client_key_pem = None).contains("come together"));
        assert!(refused(&|t| t.client_cert_pem = Some("hello".into())).contains("not PEM"));
        assert!(refused(&|t| t.ca_cert_pem = "x".repeat(MAX_PEM_BYTES + 1)).contains("over"));
        // An empty CA: the system's roots.
        let mut q = p.clone();
        q.tls.as_mut().unwrap().ca_cert_pem = String::new();
        assert!(Provisioning::from_json(q.to_json().as_bytes()).is_ok());
    }

    #[test]
    fn broker_urls() {
        assert_eq!(parse_broker_url("mqtt://h:1"), Some(("h".into(), 1, false)));
        assert_eq!(
            parse_broker_url("mqtts://h"),
            Some(("h".into(), 8883, true))
        );
        assert_eq!(
            parse_broker_url("mqtt://[::1]:1883"),
            Some(("::1".into(), 1883, false))
        );
        for bad in ["h:1", "mqtt://", "mqtt://h:0", "mqtt://u@h:1", "mqtt://h:x"] {
            assert_eq!(parse_broker_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn passwords_are_long_and_distinct() {
        let a = generate_password();
        assert_eq!(a.len(), 43);
        assert_ne!(a, generate_password());
    }

    #[test]
    fn hashes_verify() {
        let pw = generate_password();
        let text = hash_password(&pw);
        assert!(text.starts_with("$6$"));
        let h = PasswordHash::parse(&text).unwrap();
        assert!(h.verify(&pw));
        assert!(!h.verify("wrong"));
        assert!(!h.verify(""));
        assert_eq!(h.to_text(), text);
        assert_ne!(hash_password(&pw), text, "salted");
        for bad in ["", "$6$", "$7$a$b", "$6$!!$x", "plain"] {
            assert!(PasswordHash::parse(bad).is_none(), "{bad}");
        }
    }

    /// The digest is Mosquitto's: SHA-512 of the password, then the salt.
    #[test]
    fn mosquitto_format() {
        let text = hash_with_salt("secret", b"0123456789ab");
        let expect = Sha512::digest(b"secret0123456789ab");
        assert_eq!(
            text,
            format!(
                "$6${}${}",
                STANDARD.encode(b"0123456789ab"),
                STANDARD.encode(expect)
            )
        );
    }
}
