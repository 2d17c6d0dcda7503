//! [`Identity`]'s answer to a CONNECT: which login may take which client
//! id (the table in `authority.rs`), for passwords and, over mutual TLS,
//! client certificates and the registry's revocation list.

use broker::Login;
use schemas::DeviceId;

use super::{Admission, Identity, Refused, Role, Standing};

impl Identity {
    /// The bridge's or an operator's account name.
    pub(super) fn is_account(&self, username: &str) -> bool {
        self.config.operators.contains_key(username)
            || self
                .config
                .bridge_login
                .as_ref()
                .is_some_and(|(u, _)| u == username)
    }

    /// Is this certificate on the revocation list?
    pub fn cert_revoked(&self, fingerprint: &str) -> bool {
        self.read().revoked_certs.contains(fingerprint)
    }

    pub(super) fn decide_connect(&self, client_id: &str, login: Login<'_>) -> Result<(), Refused> {
        let (username, password) = match login {
            Login::Certificate {
                common_name,
                fingerprint,
            } => {
                if common_name != client_id {
                    return Err(Refused::ClientIdMismatch);
                }
                if self.is_reserved(client_id) {
                    return Err(Refused::Reserved);
                }
                // Unknown or revoked devices first: their reason says more.
                self.device_login(client_id, None)?;
                if self.cert_revoked(fingerprint) {
                    return Err(Refused::CertificateRevoked);
                }
                return Ok(());
            }
            Login::PasswordWithCertificate {
                username,
                password,
                fingerprint,
                ..
            } => {
                if self.cert_revoked(fingerprint) {
                    return Err(Refused::CertificateRevoked);
                }
                // A device's username over mutual TLS is its certificate's
                // CN: another device's password does not count here.
                if !self.is_account(username) {
                    return Err(Refused::ClientIdMismatch);
                }
                (username, password)
            }
            Login::Password { username, password } => (username, password),
        };
        if let Some((user, pass)) = &self.config.bridge_login {
            if username == user {
                if !ct_eq(password, pass) {
                    return Err(Refused::BadCredentials);
                }
                return match self.role(client_id) {
                    Role::Bridge | Role::Operator => Ok(()),
                    Role::Device(_) => Err(Refused::ClientIdMismatch),
                };
            }
        }
        if let Some(pass) = self.config.operators.get(username) {
            if !ct_eq(password, pass) {
                return Err(Refused::BadCredentials);
            }
            return match self.role(client_id) {
                Role::Operator => Ok(()),
                Role::Bridge | Role::Device(_) => Err(Refused::ClientIdMismatch),
            };
        }
        if self.is_reserved(client_id) {
            return Err(Refused::Reserved);
        }
        if username != client_id {
            return Err(Refused::ClientIdMismatch);
        }
        self.device_login(client_id, Some(password))
    }

    /// A device's login: `password` `None` for a verified certificate.
    fn device_login(&self, client_id: &str, password: Option<&str>) -> Result<(), Refused> {
        let id = DeviceId::new(client_id).map_err(|_| Refused::BadCredentials)?;
        let state = self.read();
        match state.devices.get(&id) {
            Some(e) if e.standing == Standing::Revoked => Err(Refused::Revoked),
            Some(e) => match (password, &e.hash) {
                (None, _) => Ok(()),
                (Some(p), Some(h)) if h.verify(p) => Ok(()),
                // An enrolled device's enrollment login still works: the
                // token with the secret it bound (docs/protocol.md
                // "Enrollment"); the token with any other secret does not.
                (Some(p), Some(h)) if self.enrollment_secret(p).is_some_and(|s| h.verify(s)) => {
                    Ok(())
                }
                _ => Err(Refused::BadCredentials),
            },
            None if self.config.admission == Admission::Open => Ok(()),
            None => {
                drop(state);
                match password {
                    Some(p) => self.enroll(&id, p),
                    None => Err(Refused::BadCredentials),
                }
            }
        }
    }
}

/// Compares without an early exit on the first differing byte.
fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
