//! Who may connect as whom, and who may publish and subscribe where
//! (PROTOCOL.md E1). The embedded broker asks an [`Authority`]; the bridge
//! implements it from its device registry and its grants, so the broker
//! crate knows nothing of devices, groups or campaigns.
//!
//! Every method runs on a broker thread (the listener's single-threaded
//! runtime, or the router), for every CONNECT, PUBLISH, SUBSCRIBE and will:
//! it must answer from memory in microseconds. No I/O, no blocking, no
//! async, no sled. A panic counts as a refusal.

use std::sync::Arc;

/// How a client proved who it is.
///
/// Over mutual TLS (`[broker.tls] client_ca_file`) every client presents a
/// certificate the CA signed. A device logs in by it: it sends no
/// username, or its CN as the username, and the password (if any) is not
/// checked. A client that sends another username (an operator, the
/// bridge) logs in with that account's password, its certificate only
/// having let it through the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login<'a> {
    /// An MQTT username and password, no client certificate.
    Password {
        username: &'a str,
        password: &'a str,
    },
    /// A TLS client certificate that verified against `[broker.tls]
    /// client_ca_file`: its subject common name, and its SHA-256
    /// fingerprint (`tls::fingerprint`) for revocation lists.
    Certificate {
        common_name: &'a str,
        fingerprint: &'a str,
    },
    /// A username other than the certificate's CN, with its password, over
    /// mutual TLS: an account's login (the certificate is still checked
    /// against revocation lists).
    PasswordWithCertificate {
        username: &'a str,
        password: &'a str,
        common_name: &'a str,
        fingerprint: &'a str,
    },
}

/// The answer to a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectVerdict {
    Accept,
    /// Refused, with a short reason for the broker's (rate-limited) log:
    /// `"bad_credentials"`, `"client_id_mismatch"`, `"revoked"`,
    /// `"certificate_revoked"`, ...
    Refuse(&'static str),
}

/// The decisions of PROTOCOL.md E1.
pub trait Authority: Send + Sync + 'static {
    /// May this login connect with this client id? The identity a login
    /// proves (a device's username or certificate CN, the bridge's or an
    /// operator's account) must be the client id, so that no one can take
    /// over another's session.
    fn connect(&self, client_id: &str, login: Login<'_>) -> ConnectVerdict;

    /// May the client connected as `client_id` publish on `topic`? Also
    /// asked for its will at CONNECT. A refused publish is dropped.
    fn may_publish(&self, client_id: &str, topic: &str) -> bool;

    /// May the client connected as `client_id` subscribe to `filter`? A
    /// refused filter gets the SUBACK failure code 0x80.
    fn may_subscribe(&self, client_id: &str, filter: &str) -> bool;
}

/// The authority a broker holds.
pub type SharedAuthority = Arc<dyn Authority>;
