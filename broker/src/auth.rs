//! The decision behind rumqttd's connect handler (our patch 9): who may
//! connect.
//!
//! rumqttd calls the handler for each CONNECT with its client id, its
//! username and password if it has any, and the certificate its TLS client
//! presented (only over `[broker.tls] client_ca_file`, where the handshake
//! verified it), and disconnects a refused client without a CONNACK. Here
//! a client is admitted when, in this order:
//!
//! 1. its client id is one rumqttd's router will take (no `+ $ # /`) and not
//!    the id of our own internal link: the router drops such a client after
//!    the listener has registered it, and a retry with the same id then
//!    panics the listener (upstream issue #991, the same path as the
//!    connection limit);
//! 2. it has a username or a certificate, which gives its [`Login`]: a
//!    certificate with no username or its CN as the username is a
//!    certificate login (the password is not checked), a certificate with
//!    another username a password login for that account;
//! 3. with an [`Authority`](crate::Authority) set, it accepts the login
//!    for this client id (it knows `[broker.users]` too); without one, its
//!    username and password are in `[broker.users]`, or the pluggable
//!    credential check (the bridge's device registry) accepts them, or
//!    its certificate's CN is its client id;
//! 4. the connection guard has room (`guard.rs`).
//!
//! The decision is synchronous and quick: it runs on the listener's single
//! thread, between two accepts.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tracing::{error, warn};

use crate::authority::{ConnectVerdict, Login, SharedAuthority};
use crate::guard::{Admission, GuardState};
use crate::stats::{LoginKind, Logins};

/// A credential check: `(client_id, username, password) -> accept`.
///
/// It runs on rumqttd's listener thread for every login that
/// `[broker.users]` does not accept, so it must answer from memory in
/// microseconds: no I/O, no blocking, no async. A panic counts as a refusal.
pub type CredentialCheck = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

/// The client id of the broker's own in-process link (`meter.rs`). Refused
/// to remote clients so that none can take it over.
pub(crate) const TICK_CLIENT_ID: &str = "ota-broker-tick";

/// Characters rumqttd's router refuses in a client id.
const ROUTER_REFUSED: [char; 4] = ['+', '$', '#', '/'];

pub(crate) struct Auth {
    users: BTreeMap<String, String>,
    check: RwLock<Option<CredentialCheck>>,
    authority: RwLock<Option<SharedAuthority>>,
    pub(crate) guard: Mutex<GuardState>,
    pub(crate) logins: Arc<Logins>,
}

impl Auth {
    pub(crate) fn new(users: BTreeMap<String, String>, limit: usize) -> Self {
        Auth {
            users,
            check: RwLock::new(None),
            authority: RwLock::new(None),
            guard: Mutex::new(GuardState::new(limit)),
            logins: Arc::default(),
        }
    }

    pub(crate) fn set_check(&self, check: CredentialCheck) {
        // The lock only guards an Arc swap: a poisoned lock holds a valid value.
        *self.check.write().unwrap_or_else(PoisonError::into_inner) = Some(check);
    }

    pub(crate) fn set_authority(&self, authority: SharedAuthority) {
        *self
            .authority
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(authority);
    }

    /// The authority, if one was set (`acl.rs` asks it too).
    pub(crate) fn authority(&self) -> Option<SharedAuthority> {
        self.authority
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn guard(&self) -> std::sync::MutexGuard<'_, GuardState> {
        // GuardState's methods cannot panic halfway through an update.
        self.guard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A password login's answer (no client certificate).
    #[cfg(test)]
    pub(crate) fn authorize(&self, client_id: &str, username: &str, password: &str) -> bool {
        self.connect(client_id, Some((username, password)), None)
    }

    /// The connect handler's answer: `login` as the CONNECT carried it,
    /// `peer` the TLS client's certificate (DER), which the listener
    /// verified against `[broker.tls] client_ca_file`.
    pub(crate) fn connect(
        &self,
        client_id: &str,
        login: Option<(&str, &str)>,
        peer: Option<&[u8]>,
    ) -> bool {
        let username = login.map(|(u, _)| u).unwrap_or("");
        if client_id.contains(ROUTER_REFUSED) || client_id == TICK_CLIENT_ID {
            warn!(
                client_id,
                username, "mqtt connect refused: client id not allowed"
            );
            return false;
        }
        let peer = match peer.map(tls::peer_identity).transpose() {
            Ok(p) => p,
            Err(e) => {
                warn!(client_id, error = %e, "mqtt connect refused: client certificate");
                return false;
            }
        };
        let Some(login) = classify(login, peer.as_ref()) else {
            warn!(
                client_id,
                "mqtt connect refused: no username and no client certificate"
            );
            return false;
        };
        let kind = LoginKind::of(&login);
        if let Some(authority) = self.authority() {
            // The authority counts and logs its refusals (once per interval).
            let verdict = guarded("connect", client_id, || {
                authority.connect(client_id, login) == ConnectVerdict::Accept
            });
            if !verdict {
                return false;
            }
        } else if !self.login_ok(client_id, login) {
            warn!(client_id, username, "mqtt connect refused: bad credentials");
            return false;
        }
        let mut guard = self.guard();
        match guard.admit() {
            Admission::Admitted => {
                self.logins.admitted(kind);
                true
            }
            Admission::Refused { estimate } => {
                warn!(
                    client_id,
                    estimate,
                    limit = guard.limit(),
                    "mqtt connect refused: [broker] max_connections reached"
                );
                false
            }
        }
    }

    /// Without an authority: `[broker.users]` or the credential check for
    /// passwords; a certificate (which the client CA signed) for its CN.
    fn login_ok(&self, client_id: &str, login: Login<'_>) -> bool {
        match login {
            Login::Certificate { common_name, .. } => common_name == client_id,
            Login::Password { username, password }
            | Login::PasswordWithCertificate {
                username, password, ..
            } => self.credentials_ok(client_id, username, password),
        }
    }

    fn credentials_ok(&self, client_id: &str, username: &str, password: &str) -> bool {
        if let Some(expected) = self.users.get(username) {
            if constant_time_eq(expected.as_bytes(), password.as_bytes()) {
                return true;
            }
        }
        let check = self
            .check
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(check) = check else {
            return false;
        };
        guarded("credential check", client_id, || {
            check(client_id, username, password)
        })
    }
}

/// What a CONNECT proves (`authority.rs`, [`Login`]): with a client
/// certificate, no username or the certificate's CN is a certificate
/// login, another username a password login over it. `None`: neither a
/// username nor a certificate.
fn classify<'a>(
    login: Option<(&'a str, &'a str)>,
    peer: Option<&'a tls::PeerIdentity>,
) -> Option<Login<'a>> {
    match (login, peer) {
        (None, None) => None,
        (Some((username, password)), None) => Some(Login::Password { username, password }),
        (Some((username, password)), Some(p)) if username != p.common_name => {
            Some(Login::PasswordWithCertificate {
                username,
                password,
                common_name: &p.common_name,
                fingerprint: &p.fingerprint,
            })
        }
        (_, Some(p)) => Some(Login::Certificate {
            common_name: &p.common_name,
            fingerprint: &p.fingerprint,
        }),
    }
}

/// Runs a pluggable decision; a panic refuses. A panicking check must not
/// take the listener's task (or the router thread) down with it.
pub(crate) fn guarded(what: &str, client_id: &str, decide: impl FnOnce() -> bool) -> bool {
    match catch_unwind(AssertUnwindSafe(decide)) {
        Ok(accept) => accept,
        Err(_) => {
            error!(client_id, what, "broker decision panicked: refused");
            false
        }
    }
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(limit: usize) -> Auth {
        Auth::new([("bridge".to_owned(), "pw".to_owned())].into(), limit)
    }

    #[test]
    fn static_users() {
        let a = auth(10);
        assert!(a.authorize("b1", "bridge", "pw"));
        assert!(!a.authorize("b1", "bridge", "pW"));
        assert!(!a.authorize("b1", "bridge", ""));
        assert!(!a.authorize("b1", "nobody", "pw"));
    }

    #[test]
    fn credential_check_is_consulted_after_the_users() {
        let a = auth(10);
        assert!(!a.authorize("dev-1", "dev-1", "token"));
        a.set_check(Arc::new(|id, user, pass| id == user && pass == "token"));
        assert!(a.authorize("dev-1", "dev-1", "token"));
        assert!(!a.authorize("dev-2", "dev-1", "token"));
        assert!(a.authorize("b", "bridge", "pw"));
    }

    #[test]
    fn a_panicking_check_refuses() {
        let a = auth(10);
        a.set_check(Arc::new(|_, _, _| panic!("registry bug")));
        assert!(!a.authorize("dev-1", "dev-1", "token"));
        assert!(a.authorize("b", "bridge", "pw"));
    }

    #[test]
    fn client_ids_the_router_would_drop_are_refused() {
        let a = auth(10);
        for id in ["a+b", "a/b", "$sys", "x#", TICK_CLIENT_ID] {
            assert!(!a.authorize(id, "bridge", "pw"), "{id}");
        }
        // Refusals do not use up the guard.
        assert_eq!(a.guard().estimate(), 0);
    }

    #[test]
    fn the_guard_refuses_past_the_limit() {
        let a = auth(2);
        assert!(a.authorize("a", "bridge", "pw"));
        assert!(!a.authorize("b", "bridge", "bad"));
        assert!(a.authorize("b", "bridge", "pw"));
        assert!(!a.authorize("c", "bridge", "pw"));
    }

    #[test]
    fn a_certificate_is_a_login_for_its_cn() {
        let ca = tls::pki::FleetCa::generate("test ca", 1).unwrap();
        let dev = ca
            .issue_device("dev-1", tls::pki::Validity::days(1))
            .unwrap();
        let der = Some(dev.der.as_slice());
        let a = auth(10);
        // No username, or the CN: the certificate is the credential.
        assert!(a.connect("dev-1", None, der));
        assert!(a.connect("dev-1", Some(("dev-1", "")), der));
        assert!(a.connect("dev-1", Some(("dev-1", "not checked")), der));
        // Its CN is not this client id.
        assert!(!a.connect("dev-2", None, der));
        // Another username: that account's password decides.
        assert!(a.connect("b1", Some(("bridge", "pw")), der));
        assert!(!a.connect("b1", Some(("bridge", "bad")), der));
        assert!(!a.connect("dev-2", Some(("dev-2", "x")), der));
        // Neither a username nor a certificate; a certificate that does
        // not parse.
        assert!(!a.connect("dev-1", None, None));
        assert!(!a.connect("dev-1", None, Some(b"junk".as_slice())));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
