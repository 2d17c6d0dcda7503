//! Failed TLS handshakes on the embedded broker's TLS listener, counted by
//! kind and logged once per interval with their counts, never one line
//! each: a port scan or a fleet of devices with a stale certificate must
//! not flood the log ([`Tally`]). rumqttd tells us of each one (our
//! patch 8) on the listener's thread.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttd::TlsFailure;
use tls::rustls;
use tracing::warn;

use crate::tally::Tally;

/// How often, at most, failures are logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a TLS client did not get through its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No finished handshake within `[broker] connection_timeout_ms` (a
    /// silent or very slow client).
    TimedOut,
    /// Mutual TLS, and the client presented no certificate.
    NoCertificate,
    /// Its certificate did not verify: another CA, expired, not for a
    /// client.
    BadCertificate,
    /// It hung up before the handshake finished (a port probe).
    Closed,
    /// Anything else (not TLS, no common protocol version or cipher).
    Other,
}

pub(crate) const ALL: [HandshakeFailure; 5] = [
    HandshakeFailure::TimedOut,
    HandshakeFailure::NoCertificate,
    HandshakeFailure::BadCertificate,
    HandshakeFailure::Closed,
    HandshakeFailure::Other,
];

impl HandshakeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::TimedOut => "timed_out",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::BadCertificate => "bad_certificate",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    fn of(failure: &TlsFailure<'_>) -> Self {
        match failure {
            TlsFailure::TimedOut => HandshakeFailure::TimedOut,
            TlsFailure::Handshake(e) => Self::of_io(e),
            TlsFailure::Other(_) => HandshakeFailure::Other,
        }
    }

    fn of_io(e: &io::Error) -> Self {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::NoCertificatesPresented) => HandshakeFailure::NoCertificate,
            Some(rustls::Error::InvalidCertificate(_)) => HandshakeFailure::BadCertificate,
            Some(_) => HandshakeFailure::Other,
            None => match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => HandshakeFailure::Closed,
                _ => HandshakeFailure::Other,
            },
        }
    }
}

/// The counters.
#[derive(Debug, Default)]
pub(crate) struct Handshakes(Tally<{ ALL.len() }>);

impl Handshakes {
    /// Counts one failure, and logs the interval's failures if it is over
    /// (a client hanging up before its handshake is counted, not logged:
    /// every readiness probe does it).
    pub(crate) fn failed(&self, addr: SocketAddr, failure: TlsFailure<'_>) {
        let kind = HandshakeFailure::of(&failure);
        if kind == HandshakeFailure::Closed {
            return self.0.count_quietly(kind as usize);
        }
        self.0.count(kind as usize);
        let Some(counts) = self.0.due(LOG_INTERVAL) else {
            return;
        };
        let counts: Vec<String> = counts
            .into_iter()
            .map(|(i, n)| format!("{} {n}", ALL[i].as_str()))
            .collect();
        let reason = match &failure {
            TlsFailure::TimedOut => "no handshake within [broker] connection_timeout_ms".into(),
            TlsFailure::Handshake(e) => e.to_string(),
            TlsFailure::Other(e) => e.clone(),
        };
        warn!(
            counts = %counts.join(", "),
            last_client = %addr,
            last_reason = %reason,
            "TLS handshakes failed on the embedded broker's TLS listener (counted by kind since \
             the last such line; a device refused for its certificate needs one the \
             [broker.tls] client_ca_file CA signed)"
        );
    }

    /// Failures of this kind since start.
    pub(crate) fn get(&self, kind: HandshakeFailure) -> u64 {
        self.0.get(kind as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_are_sorted_by_what_to_do() {
        let io = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (
                io(rustls::Error::NoCertificatesPresented),
                HandshakeFailure::NoCertificate,
            ),
            (
                io(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                HandshakeFailure::BadCertificate,
            ),
            (io(rustls::Error::DecryptError), HandshakeFailure::Other),
            (
                io::Error::from(io::ErrorKind::UnexpectedEof),
                HandshakeFailure::Closed,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(HandshakeFailure::of_io(&e), want, "{e}");
        }
    }

    #[test]
    fn failures_are_counted_by_kind() {
        let h = Handshakes::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        h.failed(addr, TlsFailure::TimedOut);
        h.failed(addr, TlsFailure::TimedOut);
        h.failed(addr, TlsFailure::Other("x".into()));
        assert_eq!(h.get(HandshakeFailure::TimedOut), 2);
        assert_eq!(h.get(HandshakeFailure::Other), 1);
        assert_eq!(h.get(HandshakeFailure::NoCertificate), 0);
    }
}
