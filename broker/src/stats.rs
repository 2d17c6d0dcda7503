//! What a scrape (the bridge's `/metrics`, `ota demo`'s summary) reads
//! from the embedded broker: logins admitted, by the credential they used,
//! and failed TLS handshakes by kind. [`BrokerCounters`] is a cheap handle
//! on the broker's own atomics; nothing is counted twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::authority::Login;
use crate::handshakes::{HandshakeFailure, Handshakes, ALL};

/// The credential an admitted CONNECT logged in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// A client certificate (mutual TLS): no username, or its CN.
    Certificate,
    /// A username and password over mutual TLS (an account's login beside
    /// a fleet certificate).
    PasswordWithCertificate,
    /// A username and password, without a client certificate (plain
    /// MQTT, or TLS without `client_ca_file`).
    Password,
}

impl LoginKind {
    pub const ALL: [LoginKind; 3] = [
        LoginKind::Certificate,
        LoginKind::PasswordWithCertificate,
        LoginKind::Password,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoginKind::Certificate => "certificate",
            LoginKind::PasswordWithCertificate => "password_with_certificate",
            LoginKind::Password => "password",
        }
    }

    pub(crate) fn of(login: &Login<'_>) -> Self {
        match login {
            Login::Certificate { .. } => LoginKind::Certificate,
            Login::PasswordWithCertificate { .. } => LoginKind::PasswordWithCertificate,
            Login::Password { .. } => LoginKind::Password,
        }
    }
}

/// Admitted logins by kind.
#[derive(Debug, Default)]
pub(crate) struct Logins([AtomicU64; 3]);

impl Logins {
    pub(crate) fn admitted(&self, kind: LoginKind) {
        self.0[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, kind: LoginKind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }
}

/// A handle on the broker's counters; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct BrokerCounters {
    pub(crate) handshakes: Arc<Handshakes>,
    pub(crate) logins: Arc<Logins>,
    /// Whether a TLS listener runs (its failures are shown only then).
    pub(crate) tls: bool,
}

impl BrokerCounters {
    /// CONNECTs admitted with this kind of credential since start (an
    /// anonymous broker admits without a login and counts none).
    pub fn logins(&self, kind: LoginKind) -> u64 {
        self.logins.get(kind)
    }

    /// Every kind with its count.
    pub fn logins_by_kind(&self) -> Vec<(&'static str, u64)> {
        LoginKind::ALL
            .iter()
            .map(|k| (k.as_str(), self.logins(*k)))
            .collect()
    }

    /// TLS handshakes of this kind that failed since start.
    pub fn handshake_failures(&self, kind: HandshakeFailure) -> u64 {
        self.handshakes.get(kind)
    }

    /// Every kind of failed handshake with its count; empty without a TLS
    /// listener.
    pub fn handshake_failures_by_kind(&self) -> Vec<(&'static str, u64)> {
        if !self.tls {
            return Vec::new();
        }
        ALL.iter()
            .map(|k| (k.as_str(), self.handshake_failures(*k)))
            .collect()
    }
}
