//! [`TlsError`]: what can go wrong before a TLS connection is tried.

use std::path::PathBuf;

/// A TLS setting that cannot be used, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not PEM: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("ca_file {path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("no system root certificates could be loaded ({0}): set ca_file to the CA that signed the broker's certificate")]
    NoSystemRoots(String),
    #[error("client_cert is given without client_key (or the other way round): give both")]
    HalfIdentity,
    #[error("client certificate {cert} and key {key} cannot be used together: {reason}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate generation: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}
