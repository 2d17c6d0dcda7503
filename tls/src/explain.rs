//! A failed TLS connection in one line: which host, and the reason a user
//! can act on (unknown CA, name mismatch, expired, a client certificate the
//! broker refused). rustls' error is found anywhere in the error's chain,
//! also inside the `std::io::Error` that tokio-rustls and rumqttc wrap it in.

use std::error::Error as StdError;
use std::fmt;

use rustls::{AlertDescription, CertificateError};

/// What went wrong, for scripts and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server's certificate does not chain to our roots (`ca_file`).
    UnknownCa,
    /// The server's certificate is not for the host we connected to.
    NameMismatch,
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is not valid yet (check the clock).
    NotYetValid,
    /// The server's certificate was revoked.
    Revoked,
    /// The server's certificate is malformed, badly signed or for another use.
    BadCertificate,
    /// The broker wants a client certificate and we sent none.
    ClientCertRequired,
    /// The broker refused our client certificate.
    ClientCertRefused,
    /// Another TLS failure (protocol, cipher suites, ...).
    Other,
}

/// A TLS failure, ready to print: `TLS to HOST:PORT failed: REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// `host:port`.
    pub endpoint: String,
    /// One line, ending with what to do.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS to {} failed: {}", self.endpoint, self.reason)
    }
}

impl std::error::Error for Failure {}

/// The TLS failure inside `err`, if its cause is one.
pub fn explain(host: &str, port: u16, err: &(dyn StdError + 'static)) -> Option<Failure> {
    let tls = find_rustls(err)?;
    let (kind, reason) = classify(host, tls);
    Some(Failure {
        kind,
        endpoint: endpoint(host, port),
        reason,
    })
}

fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The first `rustls::Error` in the chain, looking inside `io::Error`s
/// (whose `source()` skips the error they wrap).
fn find_rustls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                let inner: &'a (dyn StdError + 'static) = inner;
                if let Some(r) = find_rustls(inner) {
                    return Some(r);
                }
            }
        }
        next = e.source();
    }
    None
}

fn classify(host: &str, e: &rustls::Error) -> (FailureKind, String) {
    use FailureKind::*;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => (
                UnknownCa,
                "the broker's certificate is signed by an unknown CA: set ca_file (--ca-file) \
                 to the CA that signed it"
                    .into(),
            ),
            CertificateError::NotValidForName => (
                NameMismatch,
                format!("the broker's certificate is not valid for the name {host:?}: connect with a name the certificate lists"),
            ),
            CertificateError::NotValidForNameContext { presented, .. } => (
                NameMismatch,
                format!(
                    "the broker's certificate is not valid for the name {host:?} (it is for {}): \
                     connect with one of those names, or reissue the certificate",
                    presented
                        .iter()
                        .map(|p| plain_name(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                Expired,
                format!("the broker's certificate has expired{}: renew it", when(c)),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                NotYetValid,
                format!(
                    "the broker's certificate is not valid yet{}: check this machine's clock",
                    when(c)
                ),
            ),
            // webpki found a CA of the issuer's name among our roots, but
            // not the one that signed: another CA of the same name.
            CertificateError::BadSignature => (
                UnknownCa,
                "the broker's certificate does not verify against the CA of ca_file \
                 (a CA of the same name, not the one that signed it): set ca_file (--ca-file) \
                 to the CA that signed it"
                    .into(),
            ),
            CertificateError::Revoked => (Revoked, "the broker's certificate is revoked".into()),
            other => (
                BadCertificate,
                format!("the broker's certificate is refused: {other:?}"),
            ),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => (
                ClientCertRequired,
                "the broker requires a client certificate: set client_cert and client_key \
                 (--client-cert, --client-key)"
                    .into(),
            ),
            AlertDescription::UnknownCA => (
                ClientCertRefused,
                "the broker does not trust the CA of our client certificate".into(),
            ),
            AlertDescription::CertificateRevoked => (
                ClientCertRefused,
                "the broker refused our client certificate: it is revoked".into(),
            ),
            AlertDescription::CertificateExpired => (
                ClientCertRefused,
                "the broker refused our client certificate: it has expired".into(),
            ),
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied => (
                ClientCertRefused,
                format!("the broker refused our client certificate ({alert:?})"),
            ),
            other => (Other, format!("the broker sent the alert {other:?}")),
        },
        other => (Other, other.to_string()),
    }
}

/// A name as webpki's Debug shows it (`DnsName("b.example")`,
/// `IpAddress(10.0.0.1)`), as a user writes it.
fn plain_name(p: &str) -> &str {
    for (open, close) in [("DnsName(\"", "\")"), ("IpAddress(", ")")] {
        if let Some(inner) = p.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
            return inner;
        }
    }
    p
}

/// " (not after 2026-..)" from a context variant, as seconds since the epoch.
fn when(c: &CertificateError) -> String {
    match c {
        CertificateError::ExpiredContext { not_after, .. } => {
            format!(" (not valid after {} s since 1970)", not_after.as_secs())
        }
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!(" (not valid before {} s since 1970)", not_before.as_secs())
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rustls_inside_io_inside_a_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let f = explain("broker.example", 8883, &Outer(io)).unwrap();
        assert_eq!(f.kind, FailureKind::UnknownCa);
        let line = f.to_string();
        assert!(
            line.starts_with("TLS to broker.example:8883 failed: "),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn presented_names_read_as_written() {
        assert_eq!(plain_name("DnsName(\"b.example\")"), "b.example");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }

    #[test]
    fn a_same_named_ca_is_an_unknown_ca() {
        let e = rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        let f = explain("b", 8883, &e).unwrap();
        assert_eq!(f.kind, FailureKind::UnknownCa);
        assert!(f.reason.contains("set ca_file (--ca-file)"), "{}", f.reason);
    }

    #[test]
    fn a_plain_io_error_is_no_tls_failure() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(explain("h", 1, &io).is_none());
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let e = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let f = explain("::1", 8883, &e).unwrap();
        assert_eq!(f.endpoint, "[::1]:8883");
        assert_eq!(f.kind, FailureKind::ClientCertRequired);
    }
}
