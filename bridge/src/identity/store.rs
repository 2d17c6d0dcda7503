//! The `credentials` tree: one JSON [`CredentialRecord`] per device id,
//! written by the core actor (provision, rotate, revoke, accept, reject),
//! read once at start into the in-memory registry the broker asks.

use std::collections::BTreeMap;

use schemas::keys::Kid;
use schemas::DeviceId;
use serde::{Deserialize, Serialize};

use crate::store::records::{Record, Records};

const TREE: &str = "credentials";

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Provisioned or accepted: may log in and take part.
    Active,
    /// Enrolled with the fleet token, waiting for `ota devices accept`:
    /// may log in and say Hello, takes part in nothing.
    Pending,
    /// Revoked or rejected: refused at login.
    Revoked,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Active => "active",
            Standing::Pending => "pending",
            Standing::Revoked => "revoked",
        }
    }
}

/// One device's credentials: the `$6$` hash of its password, never the
/// password (`schemas::provisioning`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    pub id: DeviceId,
    /// `$6$salt$digest`.
    pub hash: String,
    pub standing: Standing,
    /// Labels given at provisioning (the device reports its own in Hello).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The kids of the release keys its provisioning file trusts; `None`
    /// when not known (enrolled, or provisioned by an older CLI).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "schemas::keys::opt_kids_hex"
    )]
    pub trusts: Option<Vec<Kid>>,
    /// The SHA-256 fingerprint of its current client certificate, when
    /// its provisioning said (`ota devices provision --mtls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// Fingerprints of its certificates that are refused at login: its
    /// earlier certificates, from each rotate and revoke.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_certs: Vec<String>,
    /// Unix seconds of provisioning (or enrollment).
    pub created: u64,
    /// Unix seconds of the last change (rotate, revoke, accept).
    pub updated: u64,
}

impl CredentialRecord {
    /// A record of `password` (only its hash is kept), with no labels,
    /// made at `now`.
    pub fn new(id: DeviceId, password: &str, standing: Standing, now: u64) -> Self {
        CredentialRecord {
            id,
            hash: schemas::provisioning::hash_password(password),
            standing,
            labels: BTreeMap::new(),
            trusts: None,
            cert_sha256: None,
            revoked_certs: Vec::new(),
            created: now,
            updated: now,
        }
    }

    /// Its current certificate is refused from now on (rotate, revoke).
    pub fn retire_cert(&mut self) {
        if let Some(c) = self.cert_sha256.take() {
            if !self.revoked_certs.contains(&c) {
                self.revoked_certs.push(c);
            }
        }
    }
}

/// The `credentials` tree.
pub type CredentialStore = Records<CredentialRecord>;

impl Record for CredentialRecord {
    const TREE: &'static str = TREE;
    fn id(&self) -> &DeviceId {
        &self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_all() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let s = CredentialStore::open(&db).unwrap();
        let mut r =
            CredentialRecord::new(DeviceId::new("dev-1").unwrap(), "pw", Standing::Active, 1);
        r.cert_sha256 = Some("ab".repeat(32));
        r.retire_cert();
        r.retire_cert();
        assert_eq!((r.cert_sha256.as_ref(), r.revoked_certs.len()), (None, 1));
        crate::store::records::assert_round_trip(&s, r);
    }
}
